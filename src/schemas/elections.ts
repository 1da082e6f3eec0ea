import { Type } from 'typebox';
import { LeaseId } from './common.js';
import { WaitOptions } from './locks.js';

export const ElectionParams = Type.Object({
  name: Type.String({
    minLength: 1,
    description: 'Election name, as given to `etcdctl elect`. Percent-encode slashes (`%2F`). Keys are `<name>/<lease hex>`.',
  }),
});

export const CampaignBody = Type.Object(
  { value: Type.String({ description: 'The value to lead with (etcdctl elect\'s proposal).' }), ...WaitOptions },
  { additionalProperties: false },
);

const Term = {
  key: Type.Optional(Type.String({ minLength: 1, description: 'The candidate key campaigning answered.' })),
  lease: Type.Optional(Type.String({ pattern: '^[0-9a-f]{1,16}$', description: 'Or the candidate\'s lease (hex): the key is `<name>/<lease>`.' })),
  revision: Type.Optional(
    Type.Integer({ minimum: 1, description: 'Create revision of the key (campaign\'s `revision`): refuses if the key was created again since.' }),
  ),
};

export const ProclaimBody = Type.Object(
  { ...Term, value: Type.String({ description: 'The new value.' }) },
  { additionalProperties: false },
);

export const ResignQuery = Type.Object(Term, { additionalProperties: false });

export const ElectionLeaderSchema = Type.Object(
  {
    name: Type.String(),
    key: Type.String({ description: 'The leader\'s key `<name>/<lease hex>`.' }),
    value: Type.Optional(Type.String({ description: 'The leader\'s value, where it is valid UTF-8.' })),
    value_base64: Type.Optional(Type.String({ description: 'The value in base64, where it is not valid UTF-8.' })),
    lease: Type.Union([LeaseId, Type.Null()]),
    revision: Type.Integer({ description: 'Create revision of the leader\'s key: identifies the term (give it to proclaim and resign).' }),
  },
  { $id: 'ElectionLeader', title: 'ElectionLeader' },
);

export const ResignedSchema = Type.Object(
  {
    resigned: Type.Boolean(),
    lease_revoked: Type.Boolean({ description: 'Whether the lease the gateway granted for this candidacy was revoked too.' }),
  },
  { $id: 'Resigned', title: 'Resigned' },
);
