// The watch protocol: websocket messages, SSE and long-poll parameters. The
// client message schemas validate what arrives on a socket and, with the
// server message schemas, document the protocol in openapi/openapi.json.
import { Type, type Static } from 'typebox';
import { Flag, LeaseId, Revision } from './common.js';
import { KeyEncodingQuery, KeyValueRef } from './kv.js';

const SubscriptionId = Type.String({ minLength: 1, maxLength: 128, description: 'Chosen by the client; unique on its socket.' });

export const WatchSubscribeSchema = Type.Object(
  {
    type: Type.Literal('subscribe'),
    id: SubscriptionId,
    key: Type.Optional(Type.String({ description: 'The key (UTF-8); `""` with prefix watches everything.' })),
    key_base64: Type.Optional(Type.String({ description: 'The key as base64, for keys that are not UTF-8.' })),
    prefix: Type.Optional(Type.Boolean()),
    range_end: Type.Optional(Type.String()),
    range_end_base64: Type.Optional(Type.String()),
    from_key: Type.Optional(Type.Boolean()),
    start_revision: Type.Optional(Revision),
    prev_kv: Type.Optional(Type.Boolean()),
    filters: Type.Optional(Type.Array(Type.Enum(['noput', 'nodelete']), { maxItems: 2 })),
    progress_notify: Type.Optional(Type.Boolean()),
    initial: Type.Optional(
      Type.Boolean({ description: 'Send the current pairs first (events with `initial: true`), then `synced`, then live events.' }),
    ),
  },
  { $id: 'WatchSubscribe', title: 'WatchSubscribe', additionalProperties: false },
);
export type WatchSubscribe = Static<typeof WatchSubscribeSchema>;

export const WatchUnsubscribeSchema = Type.Object(
  { type: Type.Literal('unsubscribe'), id: SubscriptionId },
  { $id: 'WatchUnsubscribe', title: 'WatchUnsubscribe', additionalProperties: false },
);

export const WatchKeepAliveSchema = Type.Object(
  { type: Type.Literal('keepalive'), lease: LeaseId },
  { $id: 'WatchKeepAlive', title: 'WatchKeepAlive', additionalProperties: false, description: 'Renew a lease once; send it before the TTL runs out.' },
);

export const WatchObserveSchema = Type.Object(
  {
    type: Type.Literal('observe'),
    id: SubscriptionId,
    election: Type.String({ minLength: 1, description: 'The election name, as in /v1/elections/{name} and etcdctl elect.' }),
  },
  {
    $id: 'WatchObserve',
    title: 'WatchObserve',
    additionalProperties: false,
    description: 'Follow an election\'s leader (etcdctl elect -l): `leader` now and at each change, `no_leader` when none. `unsubscribe` ends it.',
  },
);
export type WatchObserve = Static<typeof WatchObserveSchema>;

export const WatchClientMessage = Type.Union([WatchSubscribeSchema, WatchUnsubscribeSchema, WatchKeepAliveSchema, WatchObserveSchema]);
export type WatchClientMessage = Static<typeof WatchClientMessage>;

const WatchEvent = Type.Object({
  type: Type.Enum(['put', 'delete']),
  kv: KeyValueRef,
  prev_kv: Type.Optional(KeyValueRef),
});

export const WatchServerMessageSchema = Type.Union(
  [
    Type.Object({ type: Type.Literal('created'), id: Type.String(), start_revision: Type.Integer() }, { title: 'created' }),
    Type.Object(
      {
        type: Type.Literal('events'),
        id: Type.String(),
        revision: Type.Integer({ description: 'All events of this etcd revision, in order.' }),
        events: Type.Array(WatchEvent),
        initial: Type.Optional(Type.Boolean({ description: 'Synthetic put events of the current state (`initial` subscriptions).' })),
      },
      { title: 'events' },
    ),
    Type.Object({ type: Type.Literal('synced'), id: Type.String(), revision: Type.Integer() }, { title: 'synced' }),
    Type.Object(
      { type: Type.Literal('progress'), id: Type.String(), revision: Type.Integer({ description: 'Nothing at or below this revision is pending.' }) },
      { title: 'progress' },
    ),
    Type.Object({ type: Type.Literal('canceled'), id: Type.String() }, { title: 'canceled' }),
    Type.Object(
      {
        type: Type.Literal('leader'),
        id: Type.String(),
        name: Type.String(),
        key: Type.String({ description: 'The leader\'s candidate key (base64 if not UTF-8).' }),
        value: Type.Optional(Type.String()),
        value_base64: Type.Optional(Type.String()),
        lease: Type.Union([LeaseId, Type.Null()]),
        revision: Type.Integer({ description: 'The leader\'s term: the create revision of its key.' }),
      },
      { title: 'leader' },
    ),
    Type.Object({ type: Type.Literal('no_leader'), id: Type.String(), name: Type.String(), revision: Type.Integer() }, { title: 'no_leader' }),
    Type.Object({ type: Type.Literal('keepalive'), lease: LeaseId, ttl: Type.Integer() }, { title: 'keepalive' }),
    Type.Object(
      {
        type: Type.Literal('error'),
        id: Type.Optional(Type.String({ description: 'The subscription that ended; absent for errors about the message itself.' })),
        status: Type.Integer(),
        code: Type.String(),
        message: Type.String(),
        compact_revision: Type.Optional(Type.Integer()),
        resume: Type.Optional(Type.Record(Type.String(), Type.Integer())),
      },
      { title: 'error' },
    ),
    Type.Object(
      {
        type: Type.Literal('shutdown'),
        resume: Type.Record(Type.String(), Type.Integer(), { description: 'start_revision to resubscribe with, per subscription.' }),
      },
      { title: 'shutdown' },
    ),
  ],
  { $id: 'WatchServerMessage', title: 'WatchServerMessage' },
);

export const SseWatchQuery = Type.Object(
  {
    key_encoding: Type.Optional(KeyEncodingQuery),
    prefix: Type.Optional(Flag),
    range_end: Type.Optional(Type.String()),
    from_key: Type.Optional(Flag),
    start_revision: Type.Optional(Revision),
    prev_kv: Type.Optional(Flag),
    no_put: Type.Optional(Flag),
    no_delete: Type.Optional(Flag),
    progress_notify: Type.Optional(Flag),
    initial: Type.Optional(Flag),
    ticket: Type.Optional(Type.String({ description: 'A single-use ticket from POST /v1/auth/ticket (EventSource cannot send headers).' })),
  },
  { additionalProperties: false },
);
export type SseWatchQuery = Static<typeof SseWatchQuery>;

export const LongPollResultSchema = Type.Object(
  {
    events: Type.Array(WatchEvent),
    revision: Type.Integer({ description: 'Revision of the last event, or the revision waited from when none came.' }),
    next_start_revision: Type.Integer({ description: 'Pass as `start_revision` to wait for what comes next, losing nothing.' }),
  },
  { $id: 'LongPollResult', title: 'LongPollResult' },
);
