import { Type } from 'typebox';
import { Flag, LeaseId } from './common.js';

export const LeaseSchema = Type.Object(
  {
    id: LeaseId,
    ttl: Type.Integer({ description: 'Seconds the lease has left (after a grant or keep-alive: the full TTL etcd chose).' }),
  },
  { $id: 'Lease', title: 'Lease' },
);

export const LeaseInfoSchema = Type.Object(
  {
    id: LeaseId,
    ttl: Type.Integer({ description: 'Seconds left; the lease expires in under ttl + 1 seconds.' }),
    granted_ttl: Type.Integer({ description: 'The TTL the lease was granted (or last renewed) with.' }),
    keys: Type.Optional(
      Type.Array(
        Type.Object({ key: Type.Optional(Type.String()), key_base64: Type.Optional(Type.String()) }),
        { description: 'With `?keys`: the keys attached to the lease (`key_base64` where not UTF-8).' },
      ),
    ),
  },
  { $id: 'LeaseInfo', title: 'LeaseInfo' },
);

export const LeaseListSchema = Type.Object(
  { leases: Type.Array(Type.Object({ id: LeaseId }), { description: 'Every live lease of the cluster, by ID.' }) },
  { $id: 'LeaseList', title: 'LeaseList' },
);

export const LeaseRevokedSchema = Type.Object(
  {
    id: LeaseId,
    revision: Type.Integer({ description: 'Store revision after the revoke (its keys are deleted in it).' }),
  },
  { $id: 'LeaseRevoked', title: 'LeaseRevoked' },
);

export const GrantLeaseBody = Type.Object(
  {
    ttl: Type.Integer({ minimum: 1, description: 'Time to live in seconds. etcd may raise it to its minimum lease TTL.' }),
    id: Type.Optional(Type.String({ pattern: '^[0-9a-f]{1,16}$', description: 'Ask for this ID (hex); etcd picks one otherwise.' })),
  },
  { additionalProperties: false },
);

export const LeaseParams = Type.Object({ id: LeaseId });

export const LeaseInfoQuery = Type.Object(
  { keys: Type.Optional(Flag) },
  { additionalProperties: false },
);
