import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Compile } from 'typebox/compile';
import { Problem, toProblem } from '../errors.js';
import { leaseHex, num } from '../kv/codec.js';
import { keyRange, rangeOf } from '../kv/range.js';
import { errorResponses, isSet } from '../schemas/common.js';
import { KeyParams } from '../schemas/kv.js';
import { SseWatchQuery, WatchClientMessage, type WatchObserve, type WatchSubscribe } from '../schemas/watch.js';
import { electionPrefix } from '../concurrency/election.js';
import { followLeader, leaderMessage } from '../watch/leader.js';
import { leaseOwnerGuard } from '../auth/lease-owners.js';
import { keepAliveOnce, leaseIdToEtcd } from '../kv/lease.js';
import { eventsJson, type EventBatch, type WatchEventJson } from '../watch/events.js';
import type { WatchError } from '../watch/hub.js';
import { checkReadable, openWatch, type TransportSink, type WatchContext } from '../watch/session.js';
import { SseStream, watchErrorMessage } from '../watch/sse.js';
import { checkOrigin } from '../auth/origin.js';
import { dropUnlessDrained, registerStream } from '../watch/lifecycle.js';

export interface WatchRoutesOptions {
  maxSubscriptions: number;
  maxBufferedBytes: number;
  heartbeatMs: number;
  listMaxKeys: number;
  requestTimeoutMs: number;
  /** Browser origins allowed to open a websocket besides the gateway's own. */
  corsOrigins: string[];
}

/** Close codes of the websocket protocol (4000-4999 are the application's). */
export const CLOSE_SLOW_CONSUMER = 4008;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_TOKEN_EXPIRED = 4001;

const checkClientMessage = Compile(WatchClientMessage);

function problemToWatchError(err: unknown): WatchError {
  const p = toProblem(err);
  return { status: p.status, code: p.code, message: p.message };
}

const watchRoutes: FastifyPluginAsyncTypebox<WatchRoutesOptions> = async (app, opts) => {
  const watchContext = (req: FastifyRequest): WatchContext => ({
    hub: app.watchHub,
    kv: req.etcd.kv,
    maxKeys: opts.listMaxKeys,
    checkRead: app.authEnabled,
  });
  const clients = app.watchClients;

  app.route({
    method: 'GET',
    url: '/v1/watch',
    onRequest: async (req) => checkOrigin(req, opts.corsOrigins),
    // Documented by hand in src/plugins/openapi.ts (OpenAPI cannot model the stream).
    schema: { hide: true },
    handler: async () => {
      throw new Problem(426, 'upgrade_required', 'GET /v1/watch is a websocket: connect with a websocket client', { headers: { upgrade: 'websocket' } });
    },
    wsHandler: (socket, req) => {
      if (!app.streamCaps.acquireSocket(socket, req)) return;
      type SubState = { resume: number | undefined; close: (() => void) | undefined; range?: { key: Buffer; rangeEnd: Buffer } };
      const subs = new Map<string, SubState>();
      const resume = () => {
        const out: Record<string, number> = {};
        for (const [id, s] of subs) if (s.resume !== undefined) out[id] = s.resume;
        return out;
      };
      /** Ends one subscription with an error (permission revoked). */
      const endSub = (id: string, err: WatchError) => {
        const s = subs.get(id);
        if (!s) return;
        subs.delete(id);
        s.close?.();
        send(watchErrorMessage(err, id));
      };
      let cut = false;

      /** Sends; false when the message could not go out (and never will). */
      const send = (msg: Record<string, unknown> | string): boolean => {
        if (cut || socket.readyState !== socket.OPEN) return false;
        // A client that does not read must not grow our memory: cut it off,
        // telling it where each subscription resumes.
        if (socket.bufferedAmount > opts.maxBufferedBytes) {
          cut = true;
          socket.send(
            JSON.stringify({ type: 'error', status: 503, code: 'slow_consumer', message: 'the client fell too far behind and was disconnected', resume: resume() }),
          );
          socket.close(CLOSE_SLOW_CONSUMER, 'slow consumer: resume from the error message');
          // Nothing more is queued after the error and the close frame.
          dropUnlessDrained(() => socket.terminate());
          teardown();
          return false;
        }
        socket.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
        return true;
      };

      const life = registerStream(clients, req.caller, {
        shutdown: () => {
          socket.send(JSON.stringify({ type: 'shutdown', resume: resume() }));
          socket.close(CLOSE_GOING_AWAY, 'gateway shutting down');
        },
        recheck: () => {
          for (const [id, s] of subs) {
            if (!s.range) continue;
            checkReadable(req.etcd.kv, s.range).catch((err) => endSub(id, problemToWatchError(err)));
          }
        },
        // The socket lives no longer than the token that opened it.
        expire: () => {
          send({ type: 'error', status: 401, code: 'token_expired', message: 'the token expired: reconnect with a new one and resume', resume: resume() });
          socket.close(CLOSE_TOKEN_EXPIRED, 'token expired');
          teardown();
        },
      });
      life.own(() => {
        for (const s of subs.values()) s.close?.();
        subs.clear();
      });
      const teardown = () => life.end();

      /** A new subscription's place on the socket, or undefined (and an error sent) when it cannot have one. */
      const reserve = (id: string, range?: SubState['range']): SubState | undefined => {
        // Messages still arrive while a socket closes: nothing subscribes after the end.
        if (life.ended) return undefined;
        if (subs.has(id)) return void send(watchErrorMessage({ status: 409, code: 'duplicate_id', message: `subscription ${id} exists on this socket` }, id));
        if (subs.size >= opts.maxSubscriptions) {
          return void send(watchErrorMessage({ status: 429, code: 'too_many_subscriptions', message: `at most ${opts.maxSubscriptions} subscriptions per socket (WATCH_MAX_SUBSCRIPTIONS)` }, id));
        }
        const state: SubState = { resume: undefined, close: undefined, range };
        subs.set(id, state);
        return state;
      };

      const subscribe = async (m: WatchSubscribe) => {
        const state = reserve(m.id);
        if (!state) return;
        const sink: TransportSink = {
          created: (start) => {
            state.resume = start;
            send({ type: 'created', id: m.id, start_revision: start });
          },
          initial: (events, revision) => send({ type: 'events', id: m.id, revision, events, initial: true }),
          synced: (revision) => send({ type: 'synced', id: m.id, revision }),
          // The resume revision only moves past what actually went out.
          events: (batch: EventBatch) => {
            const msg = `{"type":"events","id":${JSON.stringify(m.id)},"revision":${batch.revision},"events":${eventsJson(batch)}}`;
            if (send(msg)) state.resume = batch.revision + 1;
          },
          progress: (revision) => {
            if (send({ type: 'progress', id: m.id, revision })) state.resume = revision + 1;
          },
          error: (err) => {
            subs.delete(m.id);
            send(watchErrorMessage(err, m.id));
          },
        };
        try {
          if (m.key !== undefined && m.key_base64 !== undefined) throw new Problem(400, 'invalid_option', 'use key or key_base64, not both');
          const key = m.key_base64 !== undefined ? Buffer.from(m.key_base64, 'base64') : Buffer.from(m.key ?? '', 'utf8');
          const rangeEnd = m.range_end_base64 !== undefined ? Buffer.from(m.range_end_base64, 'base64') : m.range_end !== undefined ? Buffer.from(m.range_end, 'utf8') : undefined;
          const range = rangeOf(key, { prefix: m.prefix, fromKey: m.from_key, rangeEnd });
          state.range = range;
          const close = await openWatch(watchContext(req), {
            range,
            startRevision: m.start_revision,
            prevKv: m.prev_kv,
            filters: { noPut: m.filters?.includes('noput'), noDelete: m.filters?.includes('nodelete') },
            progressNotify: m.progress_notify,
            initial: m.initial,
          }, sink);
          // Unsubscribed (or the socket closed) while the initial state was read.
          if (subs.get(m.id) !== state) close();
          else state.close = close;
        } catch (err) {
          subs.delete(m.id);
          send(watchErrorMessage(problemToWatchError(err), m.id));
        }
      };

      // An election's leader (etcdctl elect -l), as the SSE observe sends it:
      // `leader` now and at each change of leader or value, `no_leader` when
      // the last candidate leaves. Each (re)subscription starts with the
      // current state, so there is no revision to resume from.
      const observe = async (m: WatchObserve) => {
        const state = reserve(m.id, rangeOf(Buffer.from(electionPrefix(m.election)), { prefix: true }));
        if (!state) return;
        const sink: TransportSink = {
          created: (start) => void send({ type: 'created', id: m.id, start_revision: start }),
          ...followLeader((lead, revision) =>
            send(lead ? { type: 'leader', id: m.id, ...leaderMessage(m.election, lead) } : { type: 'no_leader', id: m.id, name: m.election, revision }),
          ),
          progress: () => undefined,
          error: (err) => {
            subs.delete(m.id);
            send(watchErrorMessage(err, m.id));
          },
        };
        try {
          const close = await openWatch(watchContext(req), { range: state.range!, initial: true }, sink);
          if (subs.get(m.id) !== state) close();
          else state.close = close;
        } catch (err) {
          subs.delete(m.id);
          send(watchErrorMessage(problemToWatchError(err), m.id));
        }
      };

      // Listeners are attached synchronously: messages that arrive during
      // async work would otherwise be lost (@fastify/websocket README).
      socket.on('message', (data, isBinary) => {
        let msg: unknown;
        try {
          msg = isBinary ? undefined : JSON.parse(data.toString());
        } catch {
          msg = undefined;
        }
        if (!checkClientMessage.Check(msg)) {
          const first = msg === undefined ? undefined : [...checkClientMessage.Errors(msg)][0];
          return void send(watchErrorMessage({ status: 400, code: 'invalid_message', message: first ? `${first.instancePath || '/'} ${first.message}` : 'messages are JSON text' }, typeof (msg as { id?: unknown })?.id === 'string' ? (msg as { id: string }).id : undefined));
        }
        if (msg.type === 'subscribe') return void subscribe(msg);
        if (msg.type === 'observe') return void observe(msg);
        if (msg.type === 'unsubscribe') {
          const s = subs.get(msg.id);
          if (!s) return void send(watchErrorMessage({ status: 404, code: 'unknown_subscription', message: `no subscription ${msg.id}` }, msg.id));
          subs.delete(msg.id);
          s.close?.();
          return void send({ type: 'canceled', id: msg.id });
        }
        Promise.resolve(leaseOwnerGuard(app.etcd, req)?.check(leaseIdToEtcd(msg.lease)))
          .then(() => keepAliveOnce(req.etcd.lease, msg.lease, opts.requestTimeoutMs))
          .then((res) => send({ type: 'keepalive', lease: leaseHex(res.ID) ?? msg.lease, ttl: num(res.TTL) }))
          .catch((err) => send({ ...watchErrorMessage(problemToWatchError(err)), lease: msg.lease }));
      });
      socket.on('close', teardown);
      socket.on('error', (err) => req.log.debug({ err }, 'websocket error'));

      // Ping/pong: a peer that vanished without a close is noticed and dropped.
      let alive = true;
      socket.on('pong', () => (alive = true));
      const pinger = setInterval(() => {
        if (!alive) {
          socket.terminate();
          return;
        }
        alive = false;
        socket.ping();
      }, opts.heartbeatMs);
      life.own(() => clearInterval(pinger));
    },
  });

  app.get(
    '/v1/watch/*',
    {
      schema: {
        tags: ['watch'],
        summary: 'Watch a key or range as Server-Sent Events',
        description:
          'Each event batch is an SSE message whose `id` is its revision; reconnecting with `Last-Event-ID` resumes right after it. ' +
          'Named events: `created`, `synced` (initial state sent), `progress`, `error` (then the stream ends). Comment lines are heartbeats.',
        params: KeyParams,
        querystring: SseWatchQuery,
        response: {
          200: { description: 'An event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          ...errorResponses(404, 410),
        },
      },
    },
    async (req, reply) => {
      const q = req.query;
      const range = keyRange(req.params['*'], { key_encoding: q.key_encoding, prefix: isSet(q.prefix), range_end: q.range_end, from_key: isSet(q.from_key) });
      let startRevision = q.start_revision;
      const lastEventId = req.headers['last-event-id'];
      if (lastEventId !== undefined) {
        if (!/^\d{1,16}$/.test(String(lastEventId))) throw new Problem(400, 'invalid_last_event_id', 'Last-Event-ID must be a revision');
        startRevision = Number(lastEventId) + 1;
      }
      const sse = new SseStream(req, reply, {
        heartbeatMs: opts.heartbeatMs,
        maxBufferedBytes: opts.maxBufferedBytes,
        clients,
        recheck: () => checkReadable(req.etcd.kv, range),
      });

      let ready!: (start: number) => void;
      let refused!: (err: WatchError) => void;
      const started = new Promise<number>((resolve, reject) => {
        ready = resolve;
        refused = (err) => reject(new Problem(err.status, err.code, err.message, { extra: err.compact_revision ? { compact_revision: err.compact_revision } : {} }));
      });
      // A stream that ends while it opens (expiry, shutdown) stops waiting: sse.open() answers why.
      sse.onEnd = () => ready(0);
      const sink: TransportSink = {
        created: (start) => {
          sse.send(JSON.stringify({ start_revision: start }), { event: 'created' });
          // A compacted start: wait for etcd's cancel, which carries compact_revision.
          if (!compacted) ready(start);
        },
        initial: (events: WatchEventJson[], revision) => sse.send(JSON.stringify({ revision, events }), { event: 'initial' }),
        synced: (revision) => sse.send(JSON.stringify({ revision }), { event: 'synced', id: revision }),
        events: (batch) => sse.send(`{"revision":${batch.revision},"events":${eventsJson(batch)}}`, { id: batch.revision }),
        progress: (revision) => sse.send(JSON.stringify({ revision }), { event: 'progress', id: revision }),
        error: (err) => (sse.isOpen ? sse.fail(err) : refused(err)),
      };
      // etcd accepts a watch on a compacted revision and cancels it a moment
      // later. Probe history first so that case is a plain 410 (which
      // EventSource does not retry) rather than a stream that dies at once.
      let compacted = false;
      if (startRevision !== undefined) {
        compacted = await req.etcd.kv
          .range({ key: range.key, range_end: range.rangeEnd, revision: startRevision, count_only: true })
          .then(() => false, (err) => toProblem(err).code === 'revision_compacted');
      }
      try {
        sse.onEnd = await openWatch(watchContext(req), {
          range,
          startRevision,
          prevKv: isSet(q.prev_kv),
          filters: { noPut: isSet(q.no_put), noDelete: isSet(q.no_delete) },
          progressNotify: isSet(q.progress_notify),
          initial: isSet(q.initial),
        }, sink);
        // Wait for etcd to accept the watch, so that a compacted or refused
        // start is a plain HTTP error (EventSource does not retry those).
        await started;
      } catch (err) {
        sse.end();
        throw err;
      }
      sse.open();
    },
  );
};

export default watchRoutes;
