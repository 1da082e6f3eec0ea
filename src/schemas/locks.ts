import { Type } from 'typebox';
import { LeaseId } from './common.js';

export const LockName = Type.String({
  minLength: 1,
  description: 'Lock name, as given to `etcdctl lock`. Percent-encode slashes (`%2F`). Keys are `<name>/<lease hex>`.',
});

/** How a lock or campaign waits: with which lease, for how long. */
export const WaitOptions = {
  ttl: Type.Optional(
    Type.Integer({
      minimum: 1,
      description: 'Grant a new lease with this TTL in seconds (default 60 when neither ttl nor lease is given). The gateway revokes it on release.',
    }),
  ),
  lease: Type.Optional(Type.String({ pattern: '^[0-9a-f]{1,16}$', description: 'Use this existing lease (hex) instead of a new one.' })),
  timeout: Type.Optional(
    Type.Number({
      minimum: 0,
      maximum: 86400,
      description: 'Seconds to wait in line before giving up (409); 0 tries once. Without it, waits until held or the client disconnects.',
    }),
  ),
};

export const LockParams = Type.Object({ name: LockName });
export const LockQuery = Type.Object(WaitOptions, { additionalProperties: false });
export const LockBody = Type.Object(WaitOptions, { additionalProperties: false });
export const ReleaseQuery = Type.Object(
  { key: Type.String({ minLength: 1, description: 'The `key` that acquiring the lock answered.' }) },
  { additionalProperties: false },
);

export const LockSchema = Type.Object(
  {
    key: Type.String({ description: 'The lock key `<name>/<lease hex>`, as etcdctl lock prints it; release with it.' }),
    lease: LeaseId,
    revision: Type.Integer({ description: 'Create revision of the lock key: grows with every acquisition, usable as a fencing token.' }),
  },
  { $id: 'Lock', title: 'Lock' },
);

export const LockReleasedSchema = Type.Object(
  {
    released: Type.Boolean(),
    lease_revoked: Type.Boolean({ description: 'Whether the lease the gateway granted for this lock was revoked too.' }),
  },
  { $id: 'LockReleased', title: 'LockReleased' },
);
