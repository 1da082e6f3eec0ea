import { Type } from 'typebox';

/** etcd member IDs (uint64) in hex, as etcdctl member list prints them (`%x`, no padding). */
export const MemberId = Type.String({ pattern: '^[0-9a-f]{1,16}$', description: 'Member ID in lowercase hex, as etcdctl member list prints it.' });

const PeerUrls = Type.Array(
  Type.String({ pattern: '^https?://[^/?#\\s]+$', description: 'scheme://host:port, without a path' }),
  { minItems: 1, description: 'Peer URLs the member listens on for its peers.' },
);

export const MemberSchema = Type.Object(
  {
    id: MemberId,
    name: Type.String({ description: 'Empty until the member has started and joined.' }),
    peer_urls: Type.Array(Type.String()),
    client_urls: Type.Array(Type.String()),
    is_learner: Type.Boolean(),
    started: Type.Boolean({ description: 'Whether the member has started (etcdctl member list: started / unstarted).' }),
  },
  { $id: 'Member', title: 'Member' },
);

export const MemberListSchema = Type.Object(
  { members: Type.Array(Type.Ref('Member'), { description: 'Every member, learners included, ordered by ID.' }) },
  { $id: 'MemberList', title: 'MemberList' },
);

export const MemberAddedSchema = Type.Object(
  {
    member: Type.Ref('Member'),
    members: Type.Array(Type.Ref('Member')),
    initial_cluster: Type.Optional(
      Type.String({ description: 'With `name`: ETCD_INITIAL_CLUSTER for starting the new member, as etcdctl member add prints it.' }),
    ),
    initial_cluster_state: Type.Literal('existing', { description: 'ETCD_INITIAL_CLUSTER_STATE for the new member.' }),
  },
  { $id: 'MemberAdded', title: 'MemberAdded' },
);

export const MemberAddBody = Type.Object(
  {
    peer_urls: PeerUrls,
    is_learner: Type.Optional(Type.Boolean({ description: 'Add as a learner (non-voting until promoted).' })),
    name: Type.Optional(Type.String({ minLength: 1, description: 'Name the new member will start with; only used to compute `initial_cluster`.' })),
  },
  { additionalProperties: false },
);

export const MemberUpdateBody = Type.Object({ peer_urls: PeerUrls }, { additionalProperties: false });

export const MemberParams = Type.Object({ id: MemberId });

const Probe = {
  endpoint: Type.String({ description: 'A configured etcd endpoint (ETCD_ENDPOINTS).' }),
  took_ms: Type.Number({ description: 'Milliseconds the call to this member took.' }),
  error: Type.Optional(Type.String({ description: 'Why the member could not answer (unreachable, deadline, no leader, ...).' })),
};

export const EndpointStatusSchema = Type.Object(
  {
    ...Probe,
    reachable: Type.Boolean(),
    id: Type.Optional(MemberId),
    version: Type.Optional(Type.String({ description: 'etcd server version.' })),
    db_size: Type.Optional(Type.Integer({ description: 'Backend database size in bytes (DB SIZE).' })),
    db_size_in_use: Type.Optional(Type.Integer({ description: 'Bytes in use; db_size minus this is what defragmentation frees.' })),
    leader: Type.Optional(Type.String({ description: 'Member ID of the leader as this member sees it (hex; "0" when it has none).' })),
    is_leader: Type.Optional(Type.Boolean()),
    is_learner: Type.Optional(Type.Boolean()),
    raft_term: Type.Optional(Type.Integer()),
    raft_index: Type.Optional(Type.Integer()),
    raft_applied_index: Type.Optional(Type.Integer()),
    errors: Type.Optional(Type.Array(Type.String(), { description: 'Alarm errors the member reports (ERRORS).' })),
  },
  { $id: 'EndpointStatus', title: 'EndpointStatus' },
);

export const ClusterStatusSchema = Type.Object(
  { endpoints: Type.Array(Type.Ref('EndpointStatus'), { description: 'One entry per configured endpoint, in ETCD_ENDPOINTS order.' }) },
  { $id: 'ClusterStatus', title: 'ClusterStatus' },
);

export const ClusterHealthSchema = Type.Object(
  {
    healthy: Type.Boolean({ description: 'Whether every endpoint is healthy.' }),
    endpoints: Type.Array(
      Type.Object({ ...Probe, healthy: Type.Boolean() }),
      { description: 'One entry per configured endpoint: healthy when it committed a linearizable read and no alarm is raised.' },
    ),
  },
  { $id: 'ClusterHealth', title: 'ClusterHealth' },
);
