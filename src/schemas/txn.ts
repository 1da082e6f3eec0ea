// POST /v1/txn in plain JSON: keys and values are strings, with *_base64
// twins for bytes that are not UTF-8; enums are words and operators, mapped to
// etcd3's numeric enums in src/txn/convert.ts. The op and compare objects are
// single objects with optional members rather than unions, so a mistake is
// reported at its exact path instead of as "no branch of anyOf matched".
import { Type, type Static } from 'typebox';
import { LeaseId, Revision } from './common.js';
import { KeyValueRef } from './kv.js';

/** etcd's default --max-txn-ops: compares and each branch hold at most this many entries. */
export const MAX_TXN_OPS = 128;

const ValueFields = {
  value: Type.Optional(Type.String({ description: 'The value as a UTF-8 string.' })),
  value_base64: Type.Optional(Type.String({ description: 'The value in base64, for bytes that are not UTF-8 (instead of `value`).' })),
};

const KeyFields = {
  key: Type.Optional(Type.String({ description: 'The key (UTF-8). Exactly one of `key` and `key_base64`.' })),
  key_base64: Type.Optional(Type.String({ description: 'The key in base64, for keys that are not UTF-8.' })),
};

const RangeFields = {
  prefix: Type.Optional(Type.Boolean({ description: 'Every key starting with `key` (an empty key: the whole keyspace).' })),
  range_end: Type.Optional(Type.String({ description: 'Exclusive end of the range `[key, range_end)`.' })),
  range_end_base64: Type.Optional(Type.String({ description: '`range_end` in base64.' })),
  from_key: Type.Optional(Type.Boolean({ description: 'Every key from `key` on.' })),
};

export const TxnCompareSchema = Type.Object(
  {
    ...KeyFields,
    ...RangeFields,
    target: Type.Enum(['value', 'version', 'create_revision', 'mod_revision', 'lease'], {
      description: 'What to compare; the operand is the member of the same name.',
    }),
    result: Type.Enum(['==', '=', '!=', '<', '>'], { description: 'The comparison (`=` is etcdctl\'s spelling of `==`).' }),
    ...ValueFields,
    version: Type.Optional(Type.Integer({ minimum: 0, description: 'Operand for `target: version` (0: the key does not exist).' })),
    create_revision: Type.Optional(
      Type.Integer({ minimum: 0, description: 'Operand for `target: create_revision` (0: the key does not exist).' }),
    ),
    mod_revision: Type.Optional(Type.Integer({ minimum: 0, description: 'Operand for `target: mod_revision`.' })),
    lease: Type.Optional(LeaseId),
  },
  {
    $id: 'TxnCompare',
    title: 'TxnCompare',
    description:
      'One predicate, as etcdctl\'s `value("/k") = "v"` or `mod("/k") > "5"`: the operand is the member named by `target` ' +
      '(`lease` in hex, `0` for no lease; a `version` or `create_revision` of 0 means the key does not exist). ' +
      'Over a range (`prefix`, `range_end`, `from_key`) it must hold for every key in it.',
    additionalProperties: false,
  },
);

const PutOp = Type.Object(
  {
    ...KeyFields,
    ...ValueFields,
    lease: Type.Optional(LeaseId),
    prev_kv: Type.Optional(Type.Boolean({ description: 'Return the pair this put replaced.' })),
    ignore_value: Type.Optional(Type.Boolean({ description: 'Keep the current value (the key must exist; give no value).' })),
    ignore_lease: Type.Optional(Type.Boolean({ description: 'Keep the current lease (the key must exist; give no lease).' })),
  },
  { title: 'TxnPut', additionalProperties: false },
);

const GetOp = Type.Object(
  {
    ...KeyFields,
    ...RangeFields,
    limit: Type.Optional(Type.Integer({ minimum: 1, description: 'At most this many keys (capped at LIST_MAX_KEYS, the default).' })),
    keys_only: Type.Optional(Type.Boolean()),
    count_only: Type.Optional(Type.Boolean()),
    sort: Type.Optional(Type.Enum(['key', 'version', 'create', 'mod', 'value'], { description: 'Sort target.' })),
    order: Type.Optional(Type.Enum(['asc', 'desc'])),
    revision: Type.Optional(Revision),
    min_create_revision: Type.Optional(Revision),
    max_create_revision: Type.Optional(Revision),
    min_mod_revision: Type.Optional(Revision),
    max_mod_revision: Type.Optional(Revision),
  },
  { title: 'TxnGet', description: 'A read with the options of a listing.', additionalProperties: false },
);

const DeleteOp = Type.Object(
  {
    ...KeyFields,
    ...RangeFields,
    prev_kv: Type.Optional(Type.Boolean({ description: 'Return the deleted pairs.' })),
  },
  { title: 'TxnDelete', additionalProperties: false },
);

export const TxnOpSchema = Type.Object(
  {
    put: Type.Optional(PutOp),
    get: Type.Optional(GetOp),
    delete: Type.Optional(DeleteOp),
    txn: Type.Optional(Type.Ref('TxnRequest')),
  },
  {
    $id: 'TxnOp',
    title: 'TxnOp',
    description: 'One operation: exactly one of `put`, `get`, `delete`, `txn`.',
    additionalProperties: false,
    minProperties: 1,
    maxProperties: 1,
  },
);

const branch = (description: string) =>
  Type.Optional(Type.Array(Type.Ref('TxnOp'), { maxItems: MAX_TXN_OPS, description }));

export const TxnRequestSchema = Type.Object(
  {
    compare: Type.Optional(
      Type.Array(Type.Ref('TxnCompare'), { maxItems: MAX_TXN_OPS, description: 'All must hold for `success` to run.' }),
    ),
    success: branch('Run, in order, when every compare holds.'),
    failure: branch('Run, in order, otherwise.'),
  },
  {
    $id: 'TxnRequest',
    title: 'TxnRequest',
    description: `An etcd transaction. Each of \`compare\`, \`success\` and \`failure\` holds at most ${MAX_TXN_OPS} entries (etcd's default --max-txn-ops).`,
    additionalProperties: false,
  },
);

export const TxnOpResponseSchema = Type.Union(
  [
    Type.Object(
      { type: Type.Literal('put'), prev_kv: Type.Optional(KeyValueRef) },
      { title: 'TxnPutResponse', additionalProperties: false },
    ),
    Type.Object(
      {
        type: Type.Literal('get'),
        count: Type.Integer({ description: 'Number of keys in the range.' }),
        more: Type.Boolean({ description: 'Whether keys remain beyond `limit`.' }),
        kvs: Type.Array(KeyValueRef),
      },
      { title: 'TxnGetResponse', additionalProperties: false },
    ),
    Type.Object(
      { type: Type.Literal('delete'), deleted: Type.Integer(), prev_kvs: Type.Optional(Type.Array(KeyValueRef)) },
      { title: 'TxnDeleteResponse', additionalProperties: false },
    ),
    Type.Object(
      { type: Type.Literal('txn'), succeeded: Type.Boolean(), responses: Type.Array(Type.Ref('TxnOpResponse')) },
      { title: 'TxnTxnResponse', additionalProperties: false },
    ),
  ],
  { $id: 'TxnOpResponse', title: 'TxnOpResponse', description: 'The result of one operation, named by `type`.' },
);

export const TxnResponseSchema = Type.Object(
  {
    succeeded: Type.Boolean({ description: 'Whether every compare held (so `success` ran).' }),
    revision: Type.Integer({ description: 'Store revision after the transaction.' }),
    responses: Type.Array(Type.Ref('TxnOpResponse'), { description: 'One per operation of the branch that ran, in order.' }),
  },
  { $id: 'TxnResponse', title: 'TxnResponse' },
);

export type TxnCompareJson = Static<typeof TxnCompareSchema>;
export type TxnPutJson = Static<typeof PutOp>;
export type TxnGetJson = Static<typeof GetOp>;
export type TxnDeleteJson = Static<typeof DeleteOp>;
// The nested `txn` is a $ref, which Static<> cannot follow: spelled out here.
export interface TxnRequestJson {
  compare?: TxnCompareJson[];
  success?: TxnOpJson[];
  failure?: TxnOpJson[];
}
export interface TxnOpJson {
  put?: TxnPutJson;
  get?: TxnGetJson;
  delete?: TxnDeleteJson;
  txn?: TxnRequestJson;
}
