// Cluster membership and per-member status and health, called as the caller
// (req.etcd). Registered in the admin scope (src/auth/admin.ts), which lets
// only etcd's root role through: etcd 3.4 refuses member changes to others
// itself, but gives every user the member list, the status and the alarms.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { AlarmAction, AlarmType, type IAlarmResponse, type IMember, type IRangeResponse, type IStatusResponse } from 'etcd3';
import { Type } from 'typebox';
import type { EtcdCallOptions, MemberResult } from '../etcd/connection.js';
import { Problem } from '../errors.js';
import { idFromHex, idHex, num } from '../kv/codec.js';
import { probeError } from '../maintenance/probe.js';
import { MemberAddBody, MemberParams, MemberUpdateBody } from '../schemas/cluster.js';
import { errorResponses } from '../schemas/common.js';

export interface ClusterRoutesOptions {
  /** Deadline of each per-member probe (status, health): short, so a dead member cannot stall the answer. */
  probeTimeoutMs: number;
}

const memberNotFound = (id: string) => new Problem(404, 'member_not_found', `no member has the ID ${id}`);

function memberJson(m: IMember) {
  return {
    id: idHex(m.ID),
    name: m.name,
    peer_urls: m.peerURLs,
    client_urls: m.clientURLs,
    is_learner: Boolean(m.isLearner),
    started: m.name !== '',
  };
}

function statusJson({ endpoint, tookMs, result: s, error }: MemberResult<IStatusResponse>) {
  if (!s) return { endpoint, took_ms: tookMs, reachable: false, error: probeError(error) };
  return {
    endpoint,
    took_ms: tookMs,
    reachable: true,
    id: idHex(s.header.member_id),
    version: s.version,
    db_size: num(s.dbSize),
    db_size_in_use: num(s.dbSizeInUse),
    leader: idHex(s.leader),
    is_leader: s.leader !== '0' && s.leader === s.header.member_id,
    is_learner: Boolean(s.isLearner),
    raft_term: num(s.raftTerm),
    raft_index: num(s.raftIndex),
    raft_applied_index: num(s.raftAppliedIndex),
    errors: s.errors ?? [],
  };
}

/** etcdctl endpoint health's verdict: any raised alarm makes every member unhealthy. */
function alarmVerdict(alarms: IAlarmResponse | undefined): string | undefined {
  if (!alarms) return 'Unable to fetch the alarm list';
  if (alarms.alarms.length === 0) return undefined;
  return `Active Alarm(s): ${alarms.alarms.map((a) => String(a.alarm).toUpperCase()).join(' ')}`;
}

const clusterRoutes: FastifyPluginAsyncTypebox<ClusterRoutesOptions> = async (app, opts) => {
  const probe = () => ({ deadline: Date.now() + opts.probeTimeoutMs });

  app.get(
    '/v1/cluster/members',
    {
      schema: {
        tags: ['cluster'],
        summary: 'List the members, learners included (etcdctl member list)',
        response: { 200: Type.Ref('MemberList'), ...errorResponses() },
      },
    },
    async (req, reply) => {
      const res = await req.etcd.cluster.memberList({ linearizable: true });
      reply.etcdHeaders(res.header);
      return { members: res.members.map(memberJson) };
    },
  );

  app.post(
    '/v1/cluster/members',
    {
      schema: {
        tags: ['cluster'],
        summary: 'Add a member or a learner (etcdctl member add)',
        description: 'Then start etcd on the new member with `initial_cluster` and `--initial-cluster-state=existing`.',
        body: MemberAddBody,
        response: { 201: Type.Ref('MemberAdded'), ...errorResponses(409) },
      },
    },
    async (req, reply) => {
      const res = await req.etcd.cluster.memberAdd({ peerURLs: req.body.peer_urls, isLearner: req.body.is_learner ?? false });
      reply.etcdHeaders(res.header);
      const member = memberJson(res.member);
      const { name } = req.body;
      const initialCluster =
        name === undefined
          ? undefined
          : res.members
              .flatMap((m) => m.peerURLs.map((url) => `${m.ID === res.member.ID ? name : m.name}=${url}`))
              .join(',');
      reply.header('location', `/v1/cluster/members/${member.id}`);
      return reply.code(201).send({
        member,
        members: res.members.map(memberJson),
        initial_cluster: initialCluster,
        initial_cluster_state: 'existing' as const,
      });
    },
  );

  app.delete(
    '/v1/cluster/members/:id',
    {
      schema: {
        tags: ['cluster'],
        summary: 'Remove a member (etcdctl member remove)',
        params: MemberParams,
        response: { 200: Type.Ref('MemberList'), ...errorResponses(404, 409) },
      },
    },
    async (req, reply) => {
      const res = await req.etcd.cluster.memberRemove({ ID: idFromHex(req.params.id) });
      reply.etcdHeaders(res.header);
      return { members: res.members.map(memberJson) };
    },
  );

  app.put(
    '/v1/cluster/members/:id',
    {
      schema: {
        tags: ['cluster'],
        summary: "Update a member's peer URLs (etcdctl member update)",
        description: 'Refused for a learner (409 `learner_update_refused`): etcd 3.4 would record it as a voting member (etcd-io/etcd#21694).',
        params: MemberParams,
        body: MemberUpdateBody,
        response: { 200: Type.Ref('MemberList'), ...errorResponses(404, 409) },
      },
    },
    async (req, reply) => {
      // etcd up to 3.4.23 (and 3.5/3.6 before the fixes for etcd-io/etcd#21694)
      // records an updated learner as a voting member while raft still treats
      // it as a learner: the cluster looks more resilient than it is and the
      // learner can no longer be promoted. Refuse rather than cause that.
      const { members } = await req.etcd.cluster.memberList({ linearizable: true });
      if (members.find((m) => m.ID === idFromHex(req.params.id))?.isLearner) {
        throw new Problem(
          409,
          'learner_update_refused',
          'updating the peer URLs of a learner makes etcd forget it is a learner (etcd-io/etcd#21694): promote it first, or remove it and add it again with the new URLs',
        );
      }
      const res = await req.etcd.cluster.memberUpdate({ ID: idFromHex(req.params.id), peerURLs: req.body.peer_urls });
      reply.etcdHeaders(res.header);
      return { members: res.members.map(memberJson) };
    },
  );

  app.post(
    '/v1/cluster/members/:id/promote',
    {
      schema: {
        tags: ['cluster'],
        summary: 'Promote a learner to a voting member (etcdctl member promote)',
        description: 'etcd refuses (409 `learner_not_ready`) until the learner has caught up with the leader.',
        params: MemberParams,
        response: { 200: Type.Ref('MemberList'), ...errorResponses(404, 409) },
      },
    },
    async (req, reply) => {
      // A follower forwards a promotion to the leader over the peer API, and
      // etcd 3.4 keeps retrying there until its request timeout when the ID
      // was removed; answer from the member list instead, whichever member
      // serves the call.
      const { members } = await req.etcd.cluster.memberList({ linearizable: true });
      const target = members.find((m) => m.ID === idFromHex(req.params.id));
      if (!target) throw memberNotFound(req.params.id);
      if (!target.isLearner) throw new Problem(400, 'member_not_learner', `member ${req.params.id} is already a voting member`);
      const res = await req.etcd.cluster.memberPromote({ ID: idFromHex(req.params.id) });
      reply.etcdHeaders(res.header);
      return { members: res.members.map(memberJson) };
    },
  );

  app.get(
    '/v1/cluster/status',
    {
      schema: {
        tags: ['cluster'],
        summary: 'Status of every configured endpoint (etcdctl endpoint status -w table)',
        description:
          'Asks each endpoint in ETCD_ENDPOINTS directly and in parallel, with a short deadline: a member that is down or frozen is listed with `reachable: false` and its error.',
        response: { 200: Type.Ref('ClusterStatus'), ...errorResponses() },
      },
    },
    async (req, reply) => {
      const results = await req.etcd.execOnEach<IStatusResponse>('Maintenance', 'status', {}, probe());
      reply.etcdHeaders(results.find((r) => r.result)?.result?.header);
      return { endpoints: results.map(statusJson) };
    },
  );

  app.get(
    '/v1/cluster/health',
    {
      schema: {
        tags: ['cluster'],
        summary: 'Health of every configured endpoint (etcdctl endpoint health)',
        description:
          'As etcdctl: an endpoint is healthy when it answers a linearizable read (which needs a leader and a quorum) within the short deadline and no alarm is raised. `took_ms` times the read.',
        response: { 200: Type.Ref('ClusterHealth'), ...errorResponses() },
      },
    },
    async (req, reply) => {
      // A member without a leader answers "no leader" at once instead of
      // holding the read until the deadline.
      const leaderRequired: EtcdCallOptions & { requireLeader: boolean } = { ...probe(), requireLeader: true };
      // Each endpoint is asked for the alarm list itself, as etcdctl does: a
      // list fetched from whichever member the connection picks would let one
      // frozen member make every endpoint look unhealthy.
      const [reads, alarms] = await Promise.all([
        req.etcd.execOnEach<IRangeResponse>('KV', 'range', { key: Buffer.from('health') }, leaderRequired),
        req.etcd.execOnEach<IAlarmResponse>('Maintenance', 'alarm', { action: AlarmAction.Get, memberID: 0, alarm: AlarmType.None }, probe()),
      ]);
      reply.etcdHeaders(reads.find((r) => r.result)?.result?.header);
      const endpoints = reads.map(({ endpoint, tookMs, result, error }, i) => {
        const why = result ? alarmVerdict(alarms[i]!.result) : probeError(error);
        return { endpoint, took_ms: tookMs, healthy: why === undefined, ...(why === undefined ? {} : { error: why }) };
      });
      return { healthy: endpoints.every((e) => e.healthy), endpoints };
    },
  );
};

export default clusterRoutes;
