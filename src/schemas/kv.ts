import { Type, type Static } from 'typebox';
import { Flag, LeaseId, Revision } from './common.js';

export const KeyValueSchema = Type.Object(
  {
    key: Type.Optional(Type.String({ description: 'The key, where it is valid UTF-8.' })),
    key_base64: Type.Optional(Type.String({ description: 'The key in base64, where it is not valid UTF-8.' })),
    value: Type.Optional(Type.String({ description: 'The value, where it is valid UTF-8 (absent with keys_only).' })),
    value_base64: Type.Optional(Type.String({ description: 'The value in base64, where it is not valid UTF-8.' })),
    create_revision: Type.Integer(),
    mod_revision: Type.Integer(),
    version: Type.Integer(),
    lease: Type.Union([LeaseId, Type.Null()], { description: 'Attached lease (hex), or null.' }),
    ttl: Type.Optional(
      Type.Integer({
        description:
          "Seconds left on the key's lease (reading one key as JSON, when it has a lease). A minimum, not an exact time: etcd extends leases across leader elections.",
      }),
    ),
  },
  { $id: 'KeyValue', title: 'KeyValue' },
);
export const KeyValueRef = Type.Ref('KeyValue');

export const KeyEncodingQuery = Type.Enum(['utf8', 'base64url'], {
  description:
    'How the key in the path (and `range_end`) is written: `utf8` (default, percent-encoded as URLs are) or `base64url` for keys that are not valid UTF-8.',
});

const RangeSelection = {
  key_encoding: Type.Optional(KeyEncodingQuery),
  prefix: Type.Optional(Flag),
  range_end: Type.Optional(Type.String({ description: 'Exclusive end of the key range (same encoding as the key).' })),
  from_key: Type.Optional(Flag),
};

export const GetKeyQuery = Type.Object(
  {
    ...RangeSelection,
    revision: Type.Optional(Revision),
    serializable: Type.Optional(Flag),
    limit: Type.Optional(Type.Integer({ minimum: 1 })),
    keys_only: Type.Optional(Flag),
    count_only: Type.Optional(Flag),
    sort: Type.Optional(
      Type.Enum(['key', 'version', 'create', 'mod', 'value'], { description: 'Sort target.' }),
    ),
    order: Type.Optional(Type.Enum(['asc', 'desc'])),
    min_create_revision: Type.Optional(Revision),
    max_create_revision: Type.Optional(Revision),
    min_mod_revision: Type.Optional(Revision),
    max_mod_revision: Type.Optional(Revision),
    separator: Type.Optional(
      Type.String({ minLength: 1, description: 'Directory view: immediate children of the prefix, deeper keys rolled up.' }),
    ),
    cursor: Type.Optional(Type.String({ minLength: 1, description: 'The `next` of a previous page.' })),
    wait: Type.Optional(Flag),
    start_revision: Type.Optional(Type.Integer({ minimum: 1, description: 'With `wait`: the first revision to wait for (default: the next one).' })),
    timeout: Type.Optional(Type.Integer({ minimum: 1, description: 'With `wait`: seconds to wait before answering with no events (default 60).' })),
    prev_kv: Type.Optional(Flag),
  },
  { additionalProperties: false },
);
export type GetKeyQuery = Static<typeof GetKeyQuery>;

export const ListingSchema = Type.Object(
  {
    revision: Type.Integer({ description: 'Store revision the listing was read at.' }),
    count: Type.Integer({ description: 'Number of keys in the range (from the cursor on).' }),
    more: Type.Boolean({ description: 'Whether keys remain beyond this page.' }),
    kvs: Type.Array(KeyValueRef),
    prefixes: Type.Optional(
      Type.Array(
        Type.Object({ key: Type.Optional(Type.String()), key_base64: Type.Optional(Type.String()) }),
        { description: 'With `separator`: the sub-prefixes that roll up deeper keys.' },
      ),
    ),
    next: Type.Optional(Type.String({ description: 'Opaque cursor: repeat the request with `cursor=<next>`.' })),
  },
  { $id: 'Listing', title: 'Listing' },
);

export const PutKeyQuery = Type.Object(
  {
    key_encoding: Type.Optional(KeyEncodingQuery),
    prev_kv: Type.Optional(Flag),
    lease: Type.Optional(LeaseId),
    ttl: Type.Optional(Type.Integer({ minimum: 1, description: 'Grant a new lease of this many seconds and attach it.' })),
  },
  { additionalProperties: false },
);
export type PutKeyQuery = Static<typeof PutKeyQuery>;

export const PutResultSchema = Type.Object(
  {
    revision: Type.Integer(),
    created: Type.Optional(
      Type.Boolean({ description: 'Whether the key was created (201) or replaced (200); absent when the caller may write but not read the key.' }),
    ),
    lease: Type.Optional(LeaseId),
    prev_kv: Type.Optional(KeyValueRef),
  },
  { $id: 'PutResult', title: 'PutResult' },
);

export const DeleteKeyQuery = Type.Object(
  {
    ...RangeSelection,
    prev_kv: Type.Optional(Flag),
  },
  { additionalProperties: false },
);
export type DeleteKeyQuery = Static<typeof DeleteKeyQuery>;

export const DeleteResultSchema = Type.Object(
  {
    revision: Type.Integer(),
    deleted: Type.Integer(),
    prev_kvs: Type.Optional(Type.Array(KeyValueRef)),
  },
  { $id: 'DeleteResult', title: 'DeleteResult' },
);

// Fastify names the wildcard `*`; the OpenAPI transform (src/plugins/openapi.ts)
// publishes it as `{key}`.
export const KeyParams = Type.Object({
  '*': Type.String({ description: 'The key, literally: everything after /v1/kv/, percent-decoded.' }),
});
