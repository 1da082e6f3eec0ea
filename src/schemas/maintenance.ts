import { Type } from 'typebox';
import { MemberId } from './cluster.js';
import { Revision } from './common.js';

export const EndpointQuery = Type.Object(
  { endpoint: Type.Optional(Type.String({ minLength: 1, description: 'One configured etcd endpoint (ETCD_ENDPOINTS), exactly as configured.' })) },
  { additionalProperties: false },
);

export const CompactionBody = Type.Object(
  {
    revision: Type.Integer({ minimum: 1, description: 'Discard the history before this revision.' }),
    physical: Type.Optional(Type.Boolean({ description: 'Answer only once the space is reclaimed in the backend (etcdctl compaction --physical).' })),
  },
  { additionalProperties: false },
);

export const CompactionSchema = Type.Object(
  { compact_revision: Revision, physical: Type.Boolean() },
  { $id: 'Compaction', title: 'Compaction' },
);

export const DefragmentSchema = Type.Object(
  {
    endpoints: Type.Array(
      Type.Object({
        endpoint: Type.String(),
        defragmented: Type.Boolean(),
        took_ms: Type.Number(),
        error: Type.Optional(Type.String()),
      }),
      { description: 'One entry per member defragmented, in order (one at a time).' },
    ),
  },
  { $id: 'Defragment', title: 'Defragment' },
);

export const AlarmListSchema = Type.Object(
  {
    alarms: Type.Array(
      Type.Object({
        member_id: MemberId,
        alarm: Type.String({ description: '`NOSPACE` (backend quota exhausted: writes refused) or `CORRUPT`.' }),
      }),
    ),
  },
  { $id: 'AlarmList', title: 'AlarmList' },
);

export const HashKvQuery = Type.Object(
  { revision: Type.Optional(Type.Integer({ minimum: 1, description: 'Hash the keys up to this revision (default: the current one).' })) },
  { additionalProperties: false },
);

export const HashKvSchema = Type.Object(
  {
    endpoints: Type.Array(
      Type.Object({
        endpoint: Type.String(),
        took_ms: Type.Number(),
        id: Type.Optional(MemberId),
        hash: Type.Optional(Type.Integer({ description: 'Hash of the MVCC key-values up to the revision: equal on consistent members.' })),
        revision: Type.Optional(Type.Integer({ description: 'The member\'s store revision when it answered.' })),
        compact_revision: Type.Optional(Type.Integer({ description: 'The member\'s compacted revision (-1: never compacted).' })),
        error: Type.Optional(Type.String({ description: 'Why this member did not answer.' })),
      }),
      { description: 'One entry per configured endpoint. If every member refuses, the request fails with that error instead.' },
    ),
  },
  { $id: 'HashKv', title: 'HashKv' },
);

export const MoveLeaderBody = Type.Object(
  { to: Type.String({ pattern: '^[0-9a-f]{1,16}$', description: 'Member ID (hex) of the voting member to hand leadership to.' }) },
  { additionalProperties: false },
);

export const MoveLeaderSchema = Type.Object(
  { leader: MemberId, previous: MemberId },
  { $id: 'MoveLeader', title: 'MoveLeader' },
);

export const CheckPerfBody = Type.Object(
  {
    load: Type.Optional(
      Type.Enum(['s', 'small', 'm', 'medium', 'l', 'large', 'xl', 'xLarge'], {
        default: 's',
        description: "etcdctl's workload model: s 150 puts/s from 50 clients, m 1000/200, l 8000/500, xl 15000/1000.",
      }),
    ),
    prefix: Type.Optional(Type.String({ minLength: 1, default: '/etcdctl-check-perf/', description: 'Where the test keys go; it must be empty.' })),
    duration: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 600, default: 60, description: 'Seconds of load (etcdctl always runs 60; shorter runs are for a quick look).' }),
    ),
    auto_compact: Type.Optional(Type.Boolean({ default: false, description: 'Compact at the revision of the clean-up afterwards.' })),
    auto_defrag: Type.Optional(Type.Boolean({ default: false, description: 'Defragment every configured member afterwards.' })),
  },
  { additionalProperties: false },
);

export const CheckPerfSchema = Type.Object(
  {
    load: Type.Enum(['s', 'm', 'l', 'xl']),
    limit: Type.Integer({ description: 'Target puts per second.' }),
    clients: Type.Integer({ description: 'Concurrent puts at most.' }),
    duration_seconds: Type.Integer(),
    writes: Type.Integer({ description: 'Puts that succeeded.' }),
    errors: Type.Record(Type.String(), Type.Integer(), { description: 'Failed puts by error message.' }),
    throughput: Type.Number({ description: 'Puts per second achieved.' }),
    slowest: Type.Number({ description: 'Seconds.' }),
    average: Type.Number({ description: 'Seconds.' }),
    stddev: Type.Number({ description: 'Seconds.' }),
    checks: Type.Array(Type.Object({ pass: Type.Boolean(), message: Type.String({ description: "etcdctl's line, e.g. `PASS: Throughput is 151 writes/s`." }) })),
    pass: Type.Boolean({ description: 'Every check passed (etcdctl prints PASS).' }),
    compacted_revision: Type.Optional(Revision),
    defragmented: Type.Optional(Type.Array(Type.String())),
  },
  { $id: 'CheckPerf', title: 'CheckPerf' },
);
