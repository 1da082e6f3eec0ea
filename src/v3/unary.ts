// The unary calls of etcd's /v3 protocol: etcd's path table, each call made
// to etcd as the caller (req.etcd) with the same lease-ownership and txn
// guards as /v1, and etcd's lock and election services on the concurrency
// code /v1 uses. src/routes/v3.ts registers them.
import { status as GrpcStatus } from '@grpc/grpc-js';
import { SortOrder, SortTarget } from 'etcd3';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isOwnerRecord } from '../auth/lease-owners.js';
import { guardedPut, txnGuard } from '../auth/txn-guard.js';
import { campaign, proclaim, resign } from '../concurrency/election.js';
import { acquire } from '../concurrency/mutex.js';
import { DEFAULT_TTL, GrantedLeases, revokeQuietly, sessionDeps } from '../concurrency/session.js';
import { Waits, type WaitClient } from '../concurrency/wait.js';
import type { EtcdScope } from '../etcd/connection.js';
import { Problem } from '../errors.js';
import { leaseHex, num, prefixEnd } from '../kv/codec.js';
import { leaseIdToEtcd } from '../kv/lease.js';
import { etcdRefusal, etcdRefused } from './errors.js';
import { utf8Name } from './observe.js';
import { encodeMessage, V3Error } from './protojson.js';

/** `from`: the HTTP request, for the caller's lease ownership and the txn guard (src/auth/txn-guard.ts). */
export type Call = (etcd: EtcdScope, req: Record<string, unknown>, from: FastifyRequest) => Promise<unknown>;

export interface UnaryRoute {
  paths: string[];
  request: string;
  response: string;
  call: Call;
}

// etcd3's request types, which the decoded message matches by construction.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const r = (req: Record<string, unknown>) => req as any;

// etcd's path table (api/etcdserverpb/rpc.proto http rules).
export const UNARY: UnaryRoute[] = [
  { paths: ['kv/range'], request: 'RangeRequest', response: 'RangeResponse', call: (e, q) => e.kv.range(r(q)) },
  { paths: ['kv/put'], request: 'PutRequest', response: 'PutResponse', call: (e, q, from) => etcdRefusal(guardedPut(e, guardOf(from), r(q))) },
  { paths: ['kv/deleterange'], request: 'DeleteRangeRequest', response: 'DeleteRangeResponse', call: (e, q) => e.kv.deleteRange(r(q)) },
  {
    paths: ['kv/txn'],
    request: 'TxnRequest',
    response: 'TxnResponse',
    call: async (e, q, from) => {
      await etcdRefusal(guardOf(from)?.txn(r(q)));
      return e.kv.txn(r(q));
    },
  },

  // Lease ownership as in /v1 (src/auth/lease-owners.ts): the grant records
  // the caller; another subject's revoke, and its time to live with keys, are refused.
  {
    paths: ['lease/grant'],
    request: 'LeaseGrantRequest',
    response: 'LeaseGrantResponse',
    call: async (e, q, from) => {
      const res = await e.lease.leaseGrant(r(q));
      await guardOf(from)?.owners.record(String(res.ID));
      return res;
    },
  },
  {
    paths: ['lease/revoke', 'kv/lease/revoke'],
    request: 'LeaseRevokeRequest',
    response: 'LeaseRevokeResponse',
    call: async (e, q, from) => {
      const owners = guardOf(from)?.owners;
      const id = String(q.ID ?? '0');
      await etcdRefusal(owners?.check(id));
      const revoke = () => e.lease.leaseRevoke(r(q));
      return owners ? owners.revoke(id, revoke) : revoke();
    },
  },
  {
    paths: ['lease/timetolive', 'kv/lease/timetolive'],
    request: 'LeaseTimeToLiveRequest',
    response: 'LeaseTimeToLiveResponse',
    call: async (e, q, from) => {
      if (q.keys === true) await etcdRefusal(guardOf(from)?.owners.check(String(q.ID ?? '0')));
      const res = await e.lease.leaseTimeToLive(r(q));
      if (res.keys) res.keys = res.keys.filter((k) => !isOwnerRecord(k));
      return res;
    },
  },
];

// Root only: registered by v3AdminRoutes in the admin scope (src/auth/admin.ts).
export const ADMIN_UNARY: UnaryRoute[] = [
  { paths: ['kv/compaction'], request: 'CompactionRequest', response: 'CompactionResponse', call: (e, q) => e.kv.compact(r(q)) },
  { paths: ['lease/leases', 'kv/lease/leases'], request: 'LeaseLeasesRequest', response: 'LeaseLeasesResponse', call: (e) => e.lease.leaseLeases() },

  { paths: ['cluster/member/add'], request: 'MemberAddRequest', response: 'MemberAddResponse', call: (e, q) => e.cluster.memberAdd(r(q)) },
  { paths: ['cluster/member/remove'], request: 'MemberRemoveRequest', response: 'MembersResponse', call: (e, q) => e.cluster.memberRemove(r(q)) },
  { paths: ['cluster/member/update'], request: 'MemberUpdateRequest', response: 'MembersResponse', call: (e, q) => e.cluster.memberUpdate(r(q)) },
  { paths: ['cluster/member/list'], request: 'MemberListRequest', response: 'MembersResponse', call: (e, q) => e.cluster.memberList(r(q)) },
  { paths: ['cluster/member/promote'], request: 'MemberPromoteRequest', response: 'MembersResponse', call: (e, q) => e.cluster.memberPromote(r(q)) },

  { paths: ['maintenance/alarm'], request: 'AlarmRequest', response: 'AlarmResponse', call: (e, q) => e.maintenance.alarm(r(q)) },
  { paths: ['maintenance/status'], request: 'Empty', response: 'StatusResponse', call: (e) => e.maintenance.status() },
  { paths: ['maintenance/defragment'], request: 'Empty', response: 'HeaderOnly', call: (e) => e.maintenance.defragment() },
  { paths: ['maintenance/hash'], request: 'HashRequest', response: 'HashResponse', call: (e) => e.maintenance.hash() },
  { paths: ['maintenance/hashkv'], request: 'HashKVRequest', response: 'HashKVResponse', call: (e, q) => e.exec('Maintenance', 'hashKv', q) },
  // (grpc-js names the method hashKv; etcd3's hashKV() asks for one that does not exist.)
  {
    paths: ['maintenance/transfer-leadership'],
    request: 'MoveLeaderRequest',
    response: 'HeaderOnly',
    call: (e, q) => e.maintenance.moveLeader(r(q)),
  },
  { paths: ['maintenance/downgrade'], request: 'DowngradeRequest', response: 'DowngradeResponse', call: (e, q) => e.maintenance.downgrade(r(q)) },

  { paths: ['auth/enable'], request: 'Empty', response: 'HeaderOnly', call: (e) => e.auth.authEnable() },
  { paths: ['auth/disable'], request: 'Empty', response: 'HeaderOnly', call: (e) => e.auth.authDisable() },
  { paths: ['auth/status'], request: 'Empty', response: 'AuthStatusResponse', call: (e) => e.auth.authStatus() },
  { paths: ['auth/user/add'], request: 'AuthUserAddRequest', response: 'HeaderOnly', call: (e, q) => e.auth.userAdd(r(q)) },
  { paths: ['auth/user/get'], request: 'AuthUserNameRequest', response: 'AuthUserGetResponse', call: (e, q) => e.auth.userGet(r(q)) },
  { paths: ['auth/user/list'], request: 'Empty', response: 'AuthUserListResponse', call: (e) => e.auth.userList() },
  { paths: ['auth/user/delete'], request: 'AuthUserNameRequest', response: 'HeaderOnly', call: (e, q) => e.auth.userDelete(r(q)) },
  {
    paths: ['auth/user/changepw'],
    request: 'AuthUserChangePasswordRequest',
    response: 'HeaderOnly',
    call: (e, q) => e.auth.userChangePassword(r(q)),
  },
  { paths: ['auth/user/grant'], request: 'AuthUserGrantRoleRequest', response: 'HeaderOnly', call: (e, q) => e.auth.userGrantRole(r(q)) },
  { paths: ['auth/user/revoke'], request: 'AuthUserRevokeRoleRequest', response: 'HeaderOnly', call: (e, q) => e.auth.userRevokeRole(r(q)) },
  { paths: ['auth/role/add'], request: 'AuthRoleAddRequest', response: 'HeaderOnly', call: (e, q) => e.auth.roleAdd(r(q)) },
  { paths: ['auth/role/get'], request: 'AuthRoleRequest', response: 'AuthRoleGetResponse', call: (e, q) => e.auth.roleGet(r(q)) },
  { paths: ['auth/role/list'], request: 'Empty', response: 'AuthRoleListResponse', call: (e) => e.auth.roleList() },
  { paths: ['auth/role/delete'], request: 'AuthRoleRequest', response: 'HeaderOnly', call: (e, q) => e.auth.roleDelete(r(q)) },
  {
    paths: ['auth/role/grant'],
    request: 'AuthRoleGrantPermissionRequest',
    response: 'HeaderOnly',
    call: (e, q) => e.auth.roleGrantPermission(r(q)),
  },
  {
    paths: ['auth/role/revoke'],
    request: 'AuthRoleRevokePermissionRequest',
    response: 'HeaderOnly',
    call: (e, q) => e.auth.roleRevokePermission(r(q)),
  },
];

/**
 * A range reads at most LIST_MAX_KEYS keys (no limit, or a larger one, is
 * the cap); etcd's own `more: true` tells the client there is more.
 */
export function capRange(route: UnaryRoute, request: Record<string, unknown>, listMaxKeys: number): Record<string, unknown> {
  if (route.request === 'RangeRequest') {
    const limit = BigInt((request.limit as string | undefined) ?? 0);
    if (limit === 0n || limit > BigInt(listMaxKeys)) request.limit = String(listMaxKeys);
  }
  return request;
}

/** A lock or election call: it answers the encoded message; `client` is who waits for it (the HTTP reply or a websocket). */
export interface ConcurrencyRoute {
  path: string;
  request: string;
  call: (req: FastifyRequest, request: Record<string, unknown>, client: FastifyReply | WaitClient) => Promise<unknown>;
}

// The shared session code words an unknown lease its own way; etcd's text here.
const etcdLeaseError = (err: unknown): unknown =>
  err instanceof Problem && err.code === 'lease_not_found' ? new V3Error(GrpcStatus.NOT_FOUND, 'etcdserver: requested lease not found') : etcdRefused(err);
// etcd's election errors are plain Go errors (gRPC Unknown, HTTP 500) with these texts.
const electionError = (err: unknown): unknown => {
  const code = err instanceof Problem ? err.code : undefined;
  if (code === 'election_no_leader') return new V3Error(GrpcStatus.UNKNOWN, 'election: no leader');
  if (code === 'election_not_leader' || code === 'not_a_candidate' || code === 'invalid_key') return new V3Error(GrpcStatus.UNKNOWN, 'election: not leader');
  return err;
};
/** The lease of a lock or candidacy: the caller's, or one the gateway grants. */
const leaseChoice = (request: Record<string, unknown>) => {
  const lease = request.lease as string | undefined;
  return lease && lease !== '0' ? { lease: leaseHex(lease)! } : { ttl: DEFAULT_TTL };
};
const leaderKey = (request: Record<string, unknown>) => {
  const l = (request.leader as Record<string, unknown> | undefined) ?? {};
  const what = 'election names and keys';
  return { name: utf8Name(l.name, what), key: utf8Name(l.key, what), rev: l.rev === undefined ? undefined : num(l.rev as string) };
};

/**
 * etcd's v3lock and v3election services, on the same keys (`<name>/<lease %x>`)
 * and lines as etcdctl lock / elect and the gateway's /v1/locks and
 * /v1/elections, through the same session dependencies. Lock and campaign
 * wait until held or won; a request without a lease gets one the gateway
 * grants and keeps alive while waiting, as etcd's server-side session does.
 * A wait ends, leaving nothing behind, when its client goes away (`app`'s
 * shutdown ends it too); `timeoutMs` is the deadline of one etcd call.
 */
export function concurrencyRoutes(app: FastifyInstance, timeoutMs: number): ConcurrencyRoute[] {
  const lockDeps = (req: FastifyRequest) => sessionDeps(app.etcd, req, timeoutMs);
  const granted = new GrantedLeases();
  const waits = new Waits(app);
  return [
    {
      path: 'lock/lock',
      request: 'LockRequest',
      call: async (req, request, client) => {
        const name = utf8Name(request.name, 'lock names');
        const held = await waits
          .run(
            client,
            // etcd's Lock has no timeout of its own: it waits until held or the client leaves.
            { onTimeout: () => new Problem(504, 'lock_timeout', 'the lock was not acquired in time') },
            (scope) => acquire(lockDeps(req), granted, name, leaseChoice(request), scope),
          )
          .catch((err: unknown) => {
            throw etcdLeaseError(err);
          });
        return encodeMessage('LockResponse', { header: held.header, key: Buffer.from(held.key) });
      },
    },
    {
      path: 'lock/unlock',
      request: 'UnlockRequest',
      call: async (req, request) => {
        const key = (request.key as Buffer | undefined) ?? Buffer.alloc(0);
        // etcd's Unlock is a plain delete of the key, with no error when it is gone.
        const res = await req.etcd.kv.deleteRange({ key });
        const ownLease = granted.take(key.toString('utf8'));
        if (ownLease) await revokeQuietly(lockDeps(req), ownLease);
        return encodeMessage('HeaderOnly', res);
      },
    },
    {
      path: 'election/campaign',
      request: 'CampaignRequest',
      call: async (req, request, client) => {
        const name = utf8Name(request.name);
        const won = await waits
          .run(
            client,
            { onTimeout: () => new Problem(504, 'campaign_timeout', 'the campaign did not win in time') },
            (scope) => campaign(lockDeps(req), granted, name, (request.value as Buffer | undefined) ?? Buffer.alloc(0), leaseChoice(request), scope),
          )
          .catch((err: unknown) => {
            throw etcdLeaseError(err);
          });
        const leader = { name: Buffer.from(name), key: Buffer.from(won.key), rev: String(won.revision), lease: won.lease ? leaseIdToEtcd(won.lease) : '0' };
        return encodeMessage('CampaignResponse', { header: won.header, leader });
      },
    },
    {
      path: 'election/leader',
      request: 'LeaderRequest',
      call: async (req, request) => {
        const pfx = Buffer.from(`${utf8Name(request.name)}/`);
        // The leader is the candidate created first, as etcd's Leader reads it.
        const res = await req.etcd.kv.range({ key: pfx, range_end: prefixEnd(pfx), sort_order: SortOrder.Ascend, sort_target: SortTarget.Create, limit: 1 });
        if (res.kvs.length === 0) throw new V3Error(GrpcStatus.UNKNOWN, 'election: no leader');
        return encodeMessage('LeaderResponse', { header: res.header, kv: res.kvs[0] });
      },
    },
    {
      path: 'election/proclaim',
      request: 'ProclaimRequest',
      call: async (req, request) => {
        const l = leaderKey(request);
        const res = await proclaim(req.etcd, l.name, l.key, l.rev, (request.value as Buffer | undefined) ?? Buffer.alloc(0)).catch((err: unknown) => {
          throw electionError(err);
        });
        return encodeMessage('HeaderOnly', res);
      },
    },
    {
      path: 'election/resign',
      request: 'ResignRequest',
      call: async (req, request) => {
        const l = leaderKey(request);
        const res = await resign(lockDeps(req), granted, l.name, l.key, l.rev).catch((err: unknown) => {
          throw electionError(err);
        });
        return encodeMessage('HeaderOnly', res);
      },
    },
  ];
}

/** The caller's guards (lease ownership, the txn guard) as /v1 applies them. */
export function guardOf(req: FastifyRequest) {
  return txnGuard(req.server.etcd, req);
}

