// etcd's own /v3 JSON protocol (its grpc-gateway), so etcd JSON-gateway
// clients move behind the gateway by changing only a URL. Unary calls go to
// etcd as the caller (req.etcd) and come back in etcd's JSON; /v3/watch and
// /v3/election/observe run on the shared watch hub; the streams are framed
// as grpc-gateway frames them (one `{"result":...}` + "\n" per write) and
// also answer a websocket on the same path, as etcd's websocket proxy does
// (src/v3/streams.ts). Errors are etcd's error body, not problem+json.
import { status as GrpcStatus, type ClientDuplexStream, type ClientReadableStream } from '@grpc/grpc-js';
import type { ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, ISnapshotResponse } from 'etcd3';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isUtf8 } from 'node:buffer';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WebSocket } from 'ws';
import { refuseExpiredStream } from '../auth/expiry.js';
import { isOwnerRecord, type LeaseOwnerGuard } from '../auth/lease-owners.js';
import { checkOrigin } from '../auth/origin.js';
import { guardedPut, txnGuard } from '../auth/txn-guard.js';
import { campaign, proclaim, resign } from '../concurrency/election.js';
import { acquire } from '../concurrency/mutex.js';
import { DEFAULT_TTL, GrantedLeases, revokeQuietly, sessionDeps } from '../concurrency/session.js';
import { Waits, type WaitClient } from '../concurrency/wait.js';
import type { EtcdScope } from '../etcd/connection.js';
import { Problem } from '../errors.js';
import { errorBody, etcdRefusal, etcdRefused, streamError, useV3Errors } from '../v3/errors.js';
import { leaseHex, num, prefixEnd } from '../kv/codec.js';
import { SortOrder, SortTarget } from 'etcd3';
import { V3Error, decodeMessage, encodeMessage, parseBody, parseJson } from '../v3/protojson.js';
import { observeStream, utf8Name } from '../v3/observe.js';
import { httpRequests, httpSink, wsRequests, wsSink, type ChunkSink, type RequestSource } from '../v3/streams.js';
import { watchStream } from '../v3/watch.js';
import { registerStream, type WatchClientHandle } from '../plugins/watch-hub.js';

export interface V3RoutesOptions {
  /** Longest request line a stream accepts (the body limit of unary calls). */
  bodyLimit: number;
  /** How far a stream client may fall behind before it is cut off. */
  maxBufferedBytes: number;
  /** Deadline of one etcd call while a lock waits. */
  timeoutMs: number;
  /** Page size of the initial read of an election observer; the most keys a range reads. */
  listMaxKeys: number;
  /** Most watches on one /v3/watch stream (WATCH_MAX_SUBSCRIPTIONS). */
  maxWatches: number;
  /** Browser origins allowed besides the gateway's own (CORS_ORIGINS). */
  corsOrigins: string[];
}

/** `from`: the HTTP request, for the caller's lease ownership and the txn guard (src/auth/txn-guard.ts). */
type Call = (etcd: EtcdScope, req: Record<string, unknown>, from: FastifyRequest) => Promise<unknown>;

interface UnaryRoute {
  paths: string[];
  request: string;
  response: string;
  call: Call;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
const r = (req: Record<string, unknown>) => req as any;

// etcd's path table (api/etcdserverpb/rpc.proto http rules).
const UNARY: UnaryRoute[] = [
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
const ADMIN_UNARY: UnaryRoute[] = [
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
function capRange(route: UnaryRoute, request: Record<string, unknown>, listMaxKeys: number): Record<string, unknown> {
  if (route.request === 'RangeRequest') {
    const limit = BigInt((request.limit as string | undefined) ?? 0);
    if (limit === 0n || limit > BigInt(listMaxKeys)) request.limit = String(listMaxKeys);
  }
  return request;
}

/** Both prefixes etcd serves: `/v3/`, and `/v3beta/` which etcd rewrites to it. */
const PREFIXES = ['/v3/', '/v3beta/'];

// The spec lists each call once: the /v3beta/ aliases are left out of it.
const schema = (summary: string, prefix = '/v3/', streamed = false) => ({
  tags: ['v3'],
  summary,
  description:
    "etcd's own request and response JSON (protojson: base64 bytes, 64-bit integers as strings); errors are etcd's {error, code, message}." +
    (streamed
      ? ' A stream: requests are read from the body as they arrive, each answer is one `{"result": ...}` line. A websocket upgrade (GET) on the same path carries the same lines, one per message.'
      : ''),
  hide: prefix !== '/v3/',
});

/** Unary calls that also answer a websocket (one request message in, one answer out), as etcd's proxy allows. */
function websocketRoute(app: FastifyInstance, url: string, ws: (socket: WebSocket, req: FastifyRequest) => void): void {
  app.route({
    method: 'GET',
    url,
    schema: { hide: true },
    handler: async (_req, reply) => {
      reply.header('allow', 'POST');
      throw new V3Error(GrpcStatus.UNIMPLEMENTED, `${url} takes POST, or GET with a websocket upgrade`, 405);
    },
    wsHandler: ws,
  });
}

export interface V3PublicOptions {
  bodyLimit: number;
  /** Least time a token exchange takes, whatever its outcome (see src/routes/auth.ts). */
  minExchangeMs: number;
}

/**
 * The calls that need no token: GET /version, and /v3/auth/authenticate,
 * which with gateway authentication on answers a gateway token for the
 * user etcd has checked the password of, so clients that authenticate and
 * then send the token keep working unchanged.
 */
export async function v3PublicRoutes(app: FastifyInstance, opts: V3PublicOptions): Promise<void> {
  useV3Errors(app);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: opts.bodyLimit }, (_req, body, done) => done(null, body));

  const authenticate = async (req: FastifyRequest, request: Record<string, unknown>) => {
    // Every password check, whoever issues the token: each is a bcrypt in etcd.
    await app.limitPasswordChecks(req, String(request.name ?? ''));
    if (!app.authEnabled) return encodeMessage('AuthenticateResponse', await app.etcd.auth.authenticate(r(request)));
    const name = String(request.name ?? '');
    if (!app.issueToken) throw new V3Error(GrpcStatus.UNIMPLEMENTED, 'token exchange needs AUTH_JWT_SECRET or AUTH_JWT_PRIVATE_KEY_FILE');
    const started = Date.now();
    try {
      // Root and the gateway's own user get a wrong password's answer
      // without etcd seeing the password: no oracle for theirs.
      if (app.isReservedUser(name)) throw new V3Error(GrpcStatus.INVALID_ARGUMENT, 'etcdserver: authentication failed, invalid user ID or password');
      // etcd checks the password; its answer (or refusal) is etcd's own.
      const res = await app.etcdConnection.exec<{ header: unknown }>('Auth', 'authenticate', { name, password: String(request.password ?? '') });
      return encodeMessage('AuthenticateResponse', { header: res.header, token: app.issueToken(name).token });
    } finally {
      await sleep(Math.max(0, opts.minExchangeMs - (Date.now() - started)));
    }
  };
  for (const prefix of PREFIXES) {
    const url = `${prefix}auth/authenticate`;
    app.post(url, { schema: { ...schema("etcd auth/authenticate (etcd's /v3 JSON protocol)", prefix), description: 'With gateway authentication on, the token is a gateway JWT for that user (etcd checks the password).' } }, async (req, reply) =>
      reply.type('application/json').send(await authenticate(req, parseBody('AuthenticateRequest', req.body as Buffer | undefined))),
    );
    websocketRoute(app, url, (socket, req) => unaryOverWebsocket(socket, opts.bodyLimit, (line) => authenticate(req, decodeMessage('AuthenticateRequest', parseJson(line)))));
  }

  // etcd answers its own version and the cluster's (the lowest member
  // version, major.minor) here; clients read it to choose the /v3 prefix.
  app.get('/version', { schema: schema('etcd server and cluster versions (GET /version on etcd)') }, async (_req, reply) => {
    const results = await app.etcd.execOnEach<{ version: string }>('Maintenance', 'status', {});
    const versions = results.filter((m) => m.result).map((m) => m.result!.version);
    if (versions.length === 0) throw results[0]?.error ?? new V3Error(GrpcStatus.UNAVAILABLE, 'no etcd member answered');
    const minor = (v: string) => v.split('.').slice(0, 2).map(Number);
    const lowest = versions.map(minor).sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!)[0]!;
    return reply.type('application/json').send({ etcdserver: versions[0], etcdcluster: `${lowest[0]}.${lowest[1]}.0` });
  });
}

/** A unary call over a websocket: the first message is the request, the answer is one message, then the socket closes. */
function unaryOverWebsocket(socket: WebSocket, maxBytes: number, call: (line: string) => Promise<unknown>): void {
  const sink = wsSink(socket);
  let started = false;
  wsRequests(socket, maxBytes)({
    message: (line) => {
      if (started) return; // etcd's handler reads one request and answers it
      started = true;
      call(line).then(
        (answer) => sink.send(answer),
        (err) => sink.send(errorBody(err)),
      ).finally(() => sink.end());
    },
    end: () => undefined,
    error: (err) => {
      sink.send(errorBody(err));
      sink.end();
    },
  });
}

/** What every protected /v3 scope shares: etcd's error body, and browsers held to the allowed origins. */
function v3Protocol(app: FastifyInstance, opts: V3RoutesOptions): void {
  useV3Errors(app);
  // Any Content-Type is accepted, so a browser page could POST here without
  // CORS asking first: only the gateway's own and the listed origins may.
  app.addHook('onRequest', async (req) => checkOrigin(req, opts.corsOrigins, 'a /v3 call'));
}

/** Unary calls: the body is the request message, whatever Content-Type the client sent (some send none, some form-encoded). */
function acceptAnyBody(unary: FastifyInstance, bodyLimit: number): void {
  unary.removeAllContentTypeParsers();
  unary.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
}

/** Each call of the table under both prefixes, as a POST and as a websocket. */
function unaryRoutes(unary: FastifyInstance, routes: UnaryRoute[], bodyLimit: number, listMaxKeys: number): void {
  for (const route of routes) {
    for (const prefix of PREFIXES) {
      for (const path of route.paths) {
        unary.post(`${prefix}${path}`, { schema: schema(`etcd ${path} (etcd's /v3 JSON protocol)`, prefix) }, async (req, reply) => {
          const request = capRange(route, parseBody(route.request, req.body as Buffer | undefined), listMaxKeys);
          const res = (await route.call(req.etcd, request, req)) as Record<string, unknown>;
          return reply.type('application/json').send(encodeMessage(route.response, res));
        });
        websocketRoute(unary, `${prefix}${path}`, (socket, req) =>
          unaryOverWebsocket(socket, bodyLimit, async (line) =>
            encodeMessage(route.response, (await route.call(req.etcd, capRange(route, decodeMessage(route.request, parseJson(line)), listMaxKeys), req)) as Record<string, unknown>),
          ),
        );
      }
    }
  }
}

/**
 * The admin calls (members, maintenance, compaction, the lease list, users,
 * roles and auth) and the snapshot stream, for the admin scope
 * (src/auth/admin.ts), whose refusal is answered here in etcd's words.
 */
export async function v3AdminRoutes(app: FastifyInstance, opts: V3RoutesOptions): Promise<void> {
  v3Protocol(app, opts);
  await app.register(async (unary) => {
    acceptAnyBody(unary, opts.bodyLimit);
    unaryRoutes(unary, ADMIN_UNARY, opts.bodyLimit, opts.listMaxKeys);
  });
  await v3Streams(app, opts, (stream) => {
    stream('maintenance/snapshot', "Snapshot stream (etcd's /v3 JSON protocol)", (req, requests, sink) => snapshotStream(req, requests, sink, opts));
  });
}

export default async function v3Routes(app: FastifyInstance, opts: V3RoutesOptions): Promise<void> {
  v3Protocol(app, opts);
  await app.register(async (unary) => {
    acceptAnyBody(unary, opts.bodyLimit);
    unaryRoutes(unary, UNARY, opts.bodyLimit, opts.listMaxKeys);

    // etcd's v3lock and v3election services, on the same keys
    // (`<name>/<lease %x>`) and lines as etcdctl lock / elect and the
    // gateway's /v1/locks and /v1/elections. Lock and campaign wait until
    // held or won; a request without a lease gets one the gateway grants and
    // keeps alive while waiting, as etcd's server-side session does. A wait
    // ends, leaving nothing behind, when its client goes away.
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
    const lockDeps = (req: FastifyRequest) => sessionDeps(app.etcd, req, opts.timeoutMs);
    const granted = new GrantedLeases();
    const waits = new Waits(unary);
    const leaseChoice = (request: Record<string, unknown>) => {
      const lease = request.lease as string | undefined;
      return lease && lease !== '0' ? { lease: leaseHex(lease)! } : { ttl: DEFAULT_TTL };
    };
    const leaderKey = (request: Record<string, unknown>) => {
      const l = (request.leader as Record<string, unknown> | undefined) ?? {};
      const name = (l.name as Buffer | undefined) ?? Buffer.alloc(0);
      const key = (l.key as Buffer | undefined) ?? Buffer.alloc(0);
      if (!isUtf8(name) || !isUtf8(key)) throw new V3Error(GrpcStatus.INVALID_ARGUMENT, 'election names and keys must be valid UTF-8 here');
      return { name: name.toString('utf8'), key: key.toString('utf8'), rev: l.rev === undefined ? undefined : num(l.rev as string) };
    };
    type Client = FastifyReply | WaitClient;
    const CONCURRENCY: { path: string; request: string; call: (req: FastifyRequest, request: Record<string, unknown>, client: Client) => Promise<unknown> }[] = [
      {
        path: 'lock/lock',
        request: 'LockRequest',
        call: async (req, request, client) => {
          const name = (request.name as Buffer | undefined) ?? Buffer.alloc(0);
          if (!isUtf8(name)) throw new V3Error(GrpcStatus.INVALID_ARGUMENT, 'lock names must be valid UTF-8 here');
          const held = await waits
            .run(
              client,
              // etcd's Lock has no timeout of its own: it waits until held or the client leaves.
              { onTimeout: () => new Problem(504, 'lock_timeout', 'the lock was not acquired in time') },
              (scope) => acquire(lockDeps(req), granted, name.toString('utf8'), leaseChoice(request), scope),
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
          const leader = { name: Buffer.from(name), key: Buffer.from(won.key), rev: String(won.revision), lease: won.lease ? BigInt.asIntN(64, BigInt(`0x${won.lease}`)).toString() : '0' };
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
    for (const route of CONCURRENCY) {
      for (const prefix of PREFIXES) {
        const url = `${prefix}${route.path}`;
        unary.post(url, { schema: schema(`etcd ${route.path} (etcd's /v3 JSON protocol)`, prefix) }, async (req, reply) =>
          reply.type('application/json').send(await route.call(req, parseBody(route.request, req.body as Buffer | undefined), reply)),
        );
        websocketRoute(unary, url, (socket, req) =>
          unaryOverWebsocket(socket, opts.bodyLimit, (line) => route.call(req, decodeMessage(route.request, parseJson(line)), socketClient(socket, req))),
        );
      }
    }
  });

  await v3Streams(app, opts, (stream) => {
    stream('lease/keepalive', "Lease keep-alive stream (etcd's /v3 JSON protocol)", (req, requests, sink) => keepAliveStream(req, requests, sink, guardOf(req)?.owners));
    stream('watch', "Watch stream on the shared watch hub (etcd's /v3 JSON protocol)", (req, requests, sink) => watchStream(app, req, requests, sink, opts));
    stream('election/observe', "Election observe stream on the shared watch hub (etcd's /v3 JSON protocol)", (req, requests, sink) =>
      observeStream(app, req, requests, sink, opts),
    );
  });
}

type DefineStream = (path: string, summary: string, handler: StreamHandler) => void;

async function v3Streams(app: FastifyInstance, opts: V3RoutesOptions, define: (stream: DefineStream) => void): Promise<void> {
  // Streams: the body is read as it arrives, so the content type parser
  // hands over the untouched request stream. Each stream is written once
  // against a request source and a chunk sink, and served both as a chunked
  // POST and as a websocket on the same path.
  await app.register(async (streams) => {
    streams.removeAllContentTypeParsers();
    streams.addContentTypeParser('*', (_req, _payload, done) => done(null));
    const serve = (handler: StreamHandler, req: FastifyRequest, requests: RequestSource, sink: ChunkSink) => {
      // A shutdown ends the stream as etcd's gateway ends one whose server
      // went away (an Unavailable error chunk), so the server can close.
      const handle: WatchClientHandle & { expire(): void } = {
        shutdown: () => {
          sink.send(streamError(new V3Error(GrpcStatus.UNAVAILABLE, 'the gateway is shutting down')));
          sink.end(true);
        },
        // A stream lives no longer than the gateway token that opened it.
        expire: () => {
          sink.send(streamError(new V3Error(GrpcStatus.UNAUTHENTICATED, 'the token expired: open the stream again with a new one')));
          sink.end();
        },
      };
      const life = registerStream(app.watchClients, req.caller, handle);
      sink.onClose(() => life.end());
      // After a change to users or roles: what the caller may no longer read ends.
      handle.recheck = handler(req, requests, sink)?.recheck;
    };
    const stream = (path: string, summary: string, handler: StreamHandler) => {
      for (const prefix of PREFIXES) {
        streams.post(`${prefix}${path}`, { schema: schema(summary, prefix, true) }, async (req, reply) => {
          // (Websockets are refused before the upgrade, by the authentication hook.)
          refuseExpiredStream(req.caller);
          const release = app.streamCaps.acquire(req);
          const sink = httpSink(reply);
          sink.onClose(release);
          serve(handler, req, httpRequests(req, opts.bodyLimit), sink);
        });
        websocketRoute(streams, `${prefix}${path}`, (socket, req) => {
          if (app.streamCaps.acquireSocket(socket, req)) serve(handler, req, wsRequests(socket, opts.bodyLimit), wsSink(socket));
        });
      }
    };
    define(stream);
  });
}

/** A websocket waiting for its one answer (a lock, a campaign): gone when it closes first. */
function socketClient(socket: WebSocket, request: FastifyRequest): WaitClient {
  return {
    request,
    onGone(fn) {
      socket.once('close', fn);
      return () => socket.off('close', fn);
    },
  };
}

type StreamHandler = (req: FastifyRequest, requests: RequestSource, sink: ChunkSink) => void | { recheck(): void };

function guardOf(req: FastifyRequest) {
  return txnGuard(req.server.etcd, req);
}

/**
 * /v3/lease/keepalive: each request line is sent to etcd's keep-alive stream,
 * each answer comes back. With authentication on, each request first passes
 * the owner check, in order; another subject's lease ends the stream with
 * PermissionDenied, as an etcd stream ends on its first error.
 */
function keepAliveStream(req: FastifyRequest, requests: RequestSource, sink: ChunkSink, owners?: LeaseOwnerGuard): void {
  let upstream: ClientDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> | undefined;
  // Requests that came before etcd's stream was open.
  const early: Record<string, unknown>[] = [];
  let ended = false;
  let done = false;
  const finish = (err?: unknown) => {
    if (done) return;
    done = true;
    if (err !== undefined) sink.send(streamError(err));
    sink.end();
    upstream?.cancel();
  };
  sink.onClose(() => finish());
  // With owners to check, each request (and the end) waits for the checks of those before it: etcd sees them in order.
  let checked = Promise.resolve();
  const inOrder = (check: (() => Promise<unknown>) | undefined, then: () => void) => {
    if (!owners) return then();
    checked = checked
      .then(async () => {
        if (!done) await check?.();
        if (!done) then();
      })
      .catch((err: unknown) => finish(etcdRefused(err)));
  };
  // Listening starts at once: a websocket's first messages may come before etcd answers.
  requests({
    message: (line) => {
      let request: Record<string, unknown>;
      try {
        request = decodeMessage('LeaseKeepAliveRequest', parseJson(line));
      } catch (err) {
        return finish(err);
      }
      inOrder(
        () => owners!.check(String(request.ID ?? '0')),
        () => {
          if (upstream) upstream.write(request as never);
          else early.push(request);
        },
      );
    },
    end: () =>
      inOrder(undefined, () => {
        ended = true;
        upstream?.end();
      }),
    error: (err) => finish(err),
  });
  req.etcd.lease.leaseKeepAlive().then(
    (stream) => {
      const s = stream as unknown as ClientDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;
      if (done) return void s.cancel();
      upstream = s;
      s.on('data', (r) => sink.send({ result: encodeMessage('LeaseKeepAliveResponse', r) }));
      s.on('error', (err) => finish(err));
      s.on('end', () => finish());
      for (const request of early.splice(0)) s.write(request as never);
      if (ended) s.end();
    },
    (err: unknown) => finish(err),
  );
}

/** /v3/maintenance/snapshot: etcd's snapshot chunks, paced by the client's reading. */
function snapshotStream(req: FastifyRequest, requests: RequestSource, sink: ChunkSink, opts: V3RoutesOptions): void {
  // The request is empty; its body is read and ignored.
  requests({ message: () => undefined, end: () => undefined, error: () => undefined });
  // As etcd's gateway: from whichever member, with or without a leader.
  let s: ClientReadableStream<ISnapshotResponse>;
  try {
    s = req.etcd.serverStream<ISnapshotResponse>('Maintenance', 'snapshot', {}).stream;
  } catch (err) {
    sink.send(streamError(err));
    sink.end();
    return;
  }
  sink.onClose(() => s.cancel());
  s.on('data', (r) => {
    sink.send({ result: encodeMessage('SnapshotResponse', r) });
    // Backpressure: pause etcd's stream while the client drains.
    if (sink.buffered > opts.maxBufferedBytes) {
      s.pause();
      sink.onDrain(() => s.resume());
    }
  });
  s.on('error', (err) => {
    sink.send(streamError(err));
    sink.end();
  });
  s.on('end', () => sink.end());
}
