// etcd's own /v3 JSON protocol (its grpc-gateway), so etcd JSON-gateway
// clients move behind the gateway by changing only a URL. Unary calls go to
// etcd as the caller (req.etcd) and come back in etcd's JSON; /v3/watch joins
// the shared watch hub; /v3/lease/keepalive and /v3/maintenance/snapshot are
// streams framed as grpc-gateway frames them: one `{"result":...}` + "\n" per
// write. Errors are etcd's error body, not problem+json.
import { status as GrpcStatus, type ClientReadableStream } from '@grpc/grpc-js';
import type { ISnapshotResponse } from 'etcd3';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import { isUtf8 } from 'node:buffer';
import { campaign, proclaim, resign } from '../concurrency/election.js';
import { acquire } from '../concurrency/mutex.js';
import { DEFAULT_TTL, GrantedLeases, revokeQuietly, type SessionDeps } from '../concurrency/session.js';
import { Waits } from '../concurrency/wait.js';
import type { EtcdScope } from '../etcd/connection.js';
import { isGrpcError, Problem, toProblem } from '../errors.js';
import { leaseHex, num, prefixEnd } from '../kv/codec.js';
import { SortOrder, SortTarget } from 'etcd3';
import type { WatchError } from '../watch/hub.js';
import { checkReadable } from '../watch/session.js';
import { V3Error, decodeMessage, encodeMessage, parseBody, parseJson, watchEventToEtcd } from '../v3/protojson.js';

export interface V3RoutesOptions {
  /** Longest request line a stream accepts (the body limit of unary calls). */
  bodyLimit: number;
  /** How far a stream client may fall behind before it is cut off. */
  maxBufferedBytes: number;
  /** Deadline of one etcd call while a lock waits. */
  timeoutMs: number;
}

type Call = (etcd: EtcdScope, req: Record<string, unknown>) => Promise<unknown>;

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
  { paths: ['kv/put'], request: 'PutRequest', response: 'PutResponse', call: (e, q) => e.kv.put(r(q)) },
  { paths: ['kv/deleterange'], request: 'DeleteRangeRequest', response: 'DeleteRangeResponse', call: (e, q) => e.kv.deleteRange(r(q)) },
  { paths: ['kv/txn'], request: 'TxnRequest', response: 'TxnResponse', call: (e, q) => e.kv.txn(r(q)) },
  { paths: ['kv/compaction'], request: 'CompactionRequest', response: 'CompactionResponse', call: (e, q) => e.kv.compact(r(q)) },

  { paths: ['lease/grant'], request: 'LeaseGrantRequest', response: 'LeaseGrantResponse', call: (e, q) => e.lease.leaseGrant(r(q)) },
  { paths: ['lease/revoke', 'kv/lease/revoke'], request: 'LeaseRevokeRequest', response: 'LeaseRevokeResponse', call: (e, q) => e.lease.leaseRevoke(r(q)) },
  {
    paths: ['lease/timetolive', 'kv/lease/timetolive'],
    request: 'LeaseTimeToLiveRequest',
    response: 'LeaseTimeToLiveResponse',
    call: (e, q) => e.lease.leaseTimeToLive(r(q)),
  },
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
  { paths: ['auth/authenticate'], request: 'AuthenticateRequest', response: 'AuthenticateResponse', call: (e, q) => e.auth.authenticate(r(q)) },
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

/** Both prefixes etcd serves: `/v3/`, and `/v3beta/` which etcd rewrites to it. */
const PREFIXES = ['/v3/', '/v3beta/'];

// grpc-gateway v1's HTTPStatusFromCode, which etcd 3.4 answers with (FailedPrecondition
// is 412 there, as "auth not enabled" shows on etcd itself). etcd's
// own errors keep etcd's statuses here (a compacted revision is 400, not our
// 410) because clients of this protocol branch on them.
const HTTP_FROM_GRPC: Record<number, number> = {
  [GrpcStatus.OK]: 200,
  [GrpcStatus.CANCELLED]: 408,
  [GrpcStatus.UNKNOWN]: 500,
  [GrpcStatus.INVALID_ARGUMENT]: 400,
  [GrpcStatus.DEADLINE_EXCEEDED]: 504,
  [GrpcStatus.NOT_FOUND]: 404,
  [GrpcStatus.ALREADY_EXISTS]: 409,
  [GrpcStatus.PERMISSION_DENIED]: 403,
  [GrpcStatus.UNAUTHENTICATED]: 401,
  [GrpcStatus.RESOURCE_EXHAUSTED]: 429,
  [GrpcStatus.FAILED_PRECONDITION]: 412,
  [GrpcStatus.ABORTED]: 409,
  [GrpcStatus.OUT_OF_RANGE]: 400,
  [GrpcStatus.UNIMPLEMENTED]: 501,
  [GrpcStatus.INTERNAL]: 500,
  [GrpcStatus.UNAVAILABLE]: 503,
  [GrpcStatus.DATA_LOSS]: 500,
};

// The gateway's own refusals (its auth, its body limit) carry an HTTP status;
// the protocol's body needs a gRPC code beside it.
const GRPC_FROM_HTTP: Record<number, number> = {
  400: GrpcStatus.INVALID_ARGUMENT,
  401: GrpcStatus.UNAUTHENTICATED,
  403: GrpcStatus.PERMISSION_DENIED,
  404: GrpcStatus.NOT_FOUND,
  409: GrpcStatus.ALREADY_EXISTS,
  410: GrpcStatus.OUT_OF_RANGE,
  412: GrpcStatus.FAILED_PRECONDITION,
  499: GrpcStatus.CANCELLED,
  413: GrpcStatus.RESOURCE_EXHAUSTED,
  415: GrpcStatus.INVALID_ARGUMENT,
  429: GrpcStatus.RESOURCE_EXHAUSTED,
  501: GrpcStatus.UNIMPLEMENTED,
  503: GrpcStatus.UNAVAILABLE,
  504: GrpcStatus.DEADLINE_EXCEEDED,
};

/** gRPC's Go names of status codes, as etcd's error texts spell them. */
const GRPC_NAMES: Record<number, string> = {
  [GrpcStatus.INVALID_ARGUMENT]: 'InvalidArgument',
  [GrpcStatus.NOT_FOUND]: 'NotFound',
  [GrpcStatus.PERMISSION_DENIED]: 'PermissionDenied',
  [GrpcStatus.UNAUTHENTICATED]: 'Unauthenticated',
  [GrpcStatus.FAILED_PRECONDITION]: 'FailedPrecondition',
  [GrpcStatus.OUT_OF_RANGE]: 'OutOfRange',
};

const SERVER_FAILURES: Record<number, string> = {
  503: 'etcd is unavailable',
  504: 'etcd did not answer in time',
};

export interface V3ErrorBody {
  status: number;
  code: number;
  message: string;
  headers: Record<string, string>;
}

/** Any failure → etcd's status, gRPC code and message. */
export function v3ErrorOf(err: unknown): V3ErrorBody {
  if (err instanceof V3Error) return { status: HTTP_FROM_GRPC[err.grpcCode] ?? 500, code: err.grpcCode, message: err.message, headers: {} };
  const problem = toProblem(err);
  if (isGrpcError(err)) {
    const status = HTTP_FROM_GRPC[err.code] ?? 500;
    // etcd's own text ("etcdserver: ..."), as etcd's gateway passes it on;
    // other failures (the connection's, grpc-js's) are described without
    // naming our network or internals.
    const text = err.details ?? err.message;
    const message = status < 500 || text.startsWith('etcdserver:') ? text : (SERVER_FAILURES[status] ?? problem.message);
    return { status, code: err.code, message, headers: problem.headers };
  }
  return { status: problem.status, code: GRPC_FROM_HTTP[problem.status] ?? GrpcStatus.UNKNOWN, message: problem.message, headers: problem.headers };
}

/** One stream chunk: the object and its newline in a single write, as grpc-gateway sends it. */
function writeChunk(res: ServerResponse, chunk: unknown): void {
  if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(chunk)}\n`);
}

/** grpc-gateway v1's mid-stream error chunk (etcd 3.4). */
function streamError(err: unknown): unknown {
  const e = v3ErrorOf(err);
  return { error: { grpc_code: e.code, http_code: e.status, message: e.message, http_status: httpStatusText(e.status) } };
}

function httpStatusText(status: number): string {
  return (
    {
      400: 'Bad Request',
      401: 'Unauthorized',
      403: 'Forbidden',
      404: 'Not Found',
      408: 'Request Timeout',
      409: 'Conflict',
      429: 'Too Many Requests',
      500: 'Internal Server Error',
      501: 'Not Implemented',
      503: 'Service Unavailable',
      504: 'Gateway Timeout',
    } as Record<number, string>
  )[status] ?? 'Error';
}

/** Starts a streamed answer: 200, etcd's content type, headers on the wire at once. */
function openStream(reply: FastifyReply): ServerResponse {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': String(reply.request.id) });
  res.flushHeaders();
  return res;
}

/**
 * Calls `onLine` for each newline-delimited JSON request in the body as it
 * arrives, and `onEnd` when the client has sent everything. A line over
 * `maxLine` bytes is an error.
 */
function readLines(req: FastifyRequest, maxLine: number, onLine: (line: string) => void, onEnd: () => void, onError: (err: unknown) => void): void {
  let pending = '';
  // Requests are split at the end of each top-level JSON value, not at
  // newlines: a body may hold several objects with or without newlines
  // between them ({"a":1}{"b":2}), as grpc-gateway's JSON decoder reads it.
  const flush = () => {
    let depth = 0;
    let inString = false;
    let start = 0;
    for (let i = 0; i < pending.length; i++) {
      const c = pending[i]!;
      if (inString) {
        if (c === '\\') i++;
        else if (c === '"') inString = false;
        continue;
      }
      if (c === '"') inString = true;
      else if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        depth--;
        if (depth === 0) {
          onLine(pending.slice(start, i + 1));
          start = i + 1;
        }
      }
    }
    pending = pending.slice(start);
    if (pending.trim() === '') pending = '';
    if (pending.length > maxLine) throw new V3Error(GrpcStatus.RESOURCE_EXHAUSTED, `a request in the stream is larger than ${maxLine} bytes`);
  };
  req.raw.setEncoding('utf8');
  req.raw.on('data', (chunk: string) => {
    pending += chunk;
    try {
      flush();
    } catch (err) {
      req.raw.removeAllListeners('data');
      req.raw.resume();
      onError(err);
    }
  });
  req.raw.on('end', () => {
    if (pending.trim() !== '') {
      try {
        onLine(pending);
      } catch (err) {
        onError(err);
        return;
      }
    }
    onEnd();
  });
}

export default async function v3Routes(app: FastifyInstance, opts: V3RoutesOptions): Promise<void> {
  app.setErrorHandler((err, req, reply) => {
    const e = v3ErrorOf(err);
    if (e.status >= 500) req.log.error({ err }, 'v3 request failed');
    return reply.code(e.status).headers(e.headers).type('application/json').send({ error: e.message, message: e.message, code: e.code });
  });
  // The spec lists each call once: the /v3beta/ aliases are left out of it.
  const schema = (summary: string, prefix = '/v3/') => ({
    tags: ['v3'],
    summary,
    description: "etcd's own request and response JSON (protojson: base64 bytes, 64-bit integers as strings); errors are etcd's {error, code, message}.",
    hide: prefix !== '/v3/',
  });

  // Unary calls: the body is the request message, whatever Content-Type
  // the client sent (some send none, some form-encoded).
  await app.register(async (unary) => {
    unary.removeAllContentTypeParsers();
    unary.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: opts.bodyLimit }, (_req, body, done) => done(null, body));
    for (const route of UNARY) {
      for (const prefix of PREFIXES) {
        for (const path of route.paths) {
          unary.post(`${prefix}${path}`, { schema: schema(`etcd ${path} (etcd's /v3 JSON protocol)`, prefix) }, async (req, reply) => {
            const request = parseBody(route.request, req.body as Buffer | undefined);
            const res = (await route.call(req.etcd, request)) as Record<string, unknown>;
            return reply.type('application/json').send(encodeMessage(route.response, res));
          });
        }
      }
    }

    // etcd's v3lock service: the same keys (`<name>/<lease %x>`) and line as
    // etcdctl lock and the gateway's /v1/locks. Lock waits until held; a
    // request without a lease gets one the gateway grants and keeps alive
    // while waiting, as etcd's server-side session does.
    // The shared session code words an unknown lease its own way; etcd's text here.
    const etcdLeaseError = (err: unknown): unknown =>
      err instanceof Problem && err.code === 'lease_not_found' ? new V3Error(GrpcStatus.NOT_FOUND, 'etcdserver: requested lease not found') : err;
    const lockDeps = (req: FastifyRequest): SessionDeps => ({ etcd: req.etcd, timeoutMs: opts.timeoutMs, log: req.log });
    const granted = new GrantedLeases();
    const waits = new Waits(unary);
    for (const prefix of PREFIXES) {
      unary.post(`${prefix}lock/lock`, { schema: schema("etcd lock/lock (etcd's /v3 JSON protocol)", prefix) }, async (req, reply) => {
        const request = parseBody('LockRequest', req.body as Buffer | undefined);
        const name = (request.name as Buffer | undefined) ?? Buffer.alloc(0);
        if (!isUtf8(name)) throw new V3Error(GrpcStatus.INVALID_ARGUMENT, 'lock names must be valid UTF-8 here');
        const lease = request.lease as string | undefined;
        const choice = lease && lease !== '0' ? { lease: leaseHex(lease)! } : { ttl: DEFAULT_TTL };
        const held = await waits.run(
          reply,
          // etcd's Lock has no timeout of its own: it waits until held or the client leaves.
          { onTimeout: () => new Problem(504, 'lock_timeout', 'the lock was not acquired in time') },
          (scope) => acquire(lockDeps(req), granted, name.toString('utf8'), choice, scope),
        ).catch((err: unknown) => {
          throw etcdLeaseError(err);
        });
        return reply.type('application/json').send(encodeMessage('LockResponse', { header: held.header, key: Buffer.from(held.key) }));
      });
      unary.post(`${prefix}lock/unlock`, { schema: schema("etcd lock/unlock (etcd's /v3 JSON protocol)", prefix) }, async (req, reply) => {
        const request = parseBody('UnlockRequest', req.body as Buffer | undefined);
        const key = (request.key as Buffer | undefined) ?? Buffer.alloc(0);
        // etcd's Unlock is a plain delete of the key, with no error when it is gone.
        const res = await req.etcd.kv.deleteRange({ key });
        const ownLease = granted.take(key.toString('utf8'));
        if (ownLease) await revokeQuietly(lockDeps(req), ownLease);
        return reply.type('application/json').send(encodeMessage('HeaderOnly', res));
      });
    }

    // etcd's v3election service on the same keys (`<name>/<lease %x>`) as
    // etcdctl elect and /v1/elections. etcd's election errors are plain Go
    // errors (gRPC Unknown, HTTP 500) with these texts.
    const electionError = (err: unknown, notLeader: string): unknown => {
      const code = err instanceof Problem ? err.code : undefined;
      if (code === 'election_no_leader') return new V3Error(GrpcStatus.UNKNOWN, 'election: no leader');
      if (code === 'election_not_leader' || code === 'not_a_candidate' || code === 'invalid_key') return new V3Error(GrpcStatus.UNKNOWN, notLeader);
      return err;
    };
    const leaderKey = (request: Record<string, unknown>) => {
      const l = (request.leader as Record<string, unknown> | undefined) ?? {};
      const name = (l.name as Buffer | undefined) ?? Buffer.alloc(0);
      const key = (l.key as Buffer | undefined) ?? Buffer.alloc(0);
      if (!isUtf8(name) || !isUtf8(key)) throw new V3Error(GrpcStatus.INVALID_ARGUMENT, 'election names and keys must be valid UTF-8 here');
      return { name: name.toString('utf8'), key: key.toString('utf8'), rev: l.rev === undefined ? undefined : num(l.rev as string) };
    };
    const utf8Name = (b: unknown) => {
      const name = (b as Buffer | undefined) ?? Buffer.alloc(0);
      if (!isUtf8(name)) throw new V3Error(GrpcStatus.INVALID_ARGUMENT, 'election names must be valid UTF-8 here');
      return name.toString('utf8');
    };
    for (const prefix of PREFIXES) {
      unary.post(`${prefix}election/campaign`, { schema: schema("etcd election/campaign (etcd's /v3 JSON protocol)", prefix) }, async (req, reply) => {
        const request = parseBody('CampaignRequest', req.body as Buffer | undefined);
        const name = utf8Name(request.name);
        const lease = request.lease as string | undefined;
        const choice = lease && lease !== '0' ? { lease: leaseHex(lease)! } : { ttl: DEFAULT_TTL };
        const won = await waits.run(
          reply,
          { onTimeout: () => new Problem(504, 'campaign_timeout', 'the campaign did not win in time') },
          (scope) => campaign(lockDeps(req), granted, name, (request.value as Buffer | undefined) ?? Buffer.alloc(0), choice, scope),
        ).catch((err: unknown) => {
          throw etcdLeaseError(err);
        });
        const leader = { name: Buffer.from(name), key: Buffer.from(won.key), rev: String(won.revision), lease: won.lease ? BigInt.asIntN(64, BigInt(`0x${won.lease}`)).toString() : '0' };
        return reply.type('application/json').send(encodeMessage('CampaignResponse', { header: won.header, leader }));
      });
      unary.post(`${prefix}election/leader`, { schema: schema("etcd election/leader (etcd's /v3 JSON protocol)", prefix) }, async (req, reply) => {
        const request = parseBody('LeaderRequest', req.body as Buffer | undefined);
        const pfx = Buffer.from(`${utf8Name(request.name)}/`);
        // The leader is the candidate created first, as etcd's Leader reads it.
        const res = await req.etcd.kv.range({ key: pfx, range_end: prefixEnd(pfx), sort_order: SortOrder.Ascend, sort_target: SortTarget.Create, limit: 1 });
        if (res.kvs.length === 0) throw new V3Error(GrpcStatus.UNKNOWN, 'election: no leader');
        return reply.type('application/json').send(encodeMessage('LeaderResponse', { header: res.header, kv: res.kvs[0] }));
      });
      unary.post(`${prefix}election/proclaim`, { schema: schema("etcd election/proclaim (etcd's /v3 JSON protocol)", prefix) }, async (req, reply) => {
        const request = parseBody('ProclaimRequest', req.body as Buffer | undefined);
        const l = leaderKey(request);
        const res = await proclaim(req.etcd, l.name, l.key, l.rev, (request.value as Buffer | undefined) ?? Buffer.alloc(0)).catch((err: unknown) => {
          throw electionError(err, 'election: not leader');
        });
        return reply.type('application/json').send(encodeMessage('HeaderOnly', res));
      });
      unary.post(`${prefix}election/resign`, { schema: schema("etcd election/resign (etcd's /v3 JSON protocol)", prefix) }, async (req, reply) => {
        const request = parseBody('ResignRequest', req.body as Buffer | undefined);
        const l = leaderKey(request);
        const res = await resign(lockDeps(req), granted, l.name, l.key, l.rev).catch((err: unknown) => {
          throw electionError(err, 'election: not leader');
        });
        return reply.type('application/json').send(encodeMessage('HeaderOnly', res));
      });
    }

    // etcd answers its own version and the cluster's (the lowest member
    // version, major.minor) here; clients read it to choose the /v3 prefix.
    unary.get('/version', { schema: schema('etcd server and cluster versions (GET /version on etcd)') }, async (req, reply) => {
      const results = await req.etcd.execOnEach<{ version: string }>('Maintenance', 'status', {});
      const versions = results.filter((m) => m.result).map((m) => m.result!.version);
      if (versions.length === 0) throw results[0]?.error ?? new V3Error(GrpcStatus.UNAVAILABLE, 'no etcd member answered');
      const minor = (v: string) => v.split('.').slice(0, 2).map(Number);
      const lowest = versions.map(minor).sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!)[0]!;
      return reply.type('application/json').send({ etcdserver: versions[0], etcdcluster: `${lowest[0]}.${lowest[1]}.0` });
    });
  });

  // Streams: the body is read as it arrives, so the content type parser
  // hands over the untouched request stream.
  await app.register(async (streams) => {
    streams.removeAllContentTypeParsers();
    streams.addContentTypeParser('*', (_req, _payload, done) => done(null));

    for (const prefix of PREFIXES) {
      streams.post(`${prefix}lease/keepalive`, { schema: schema('Lease keep-alive stream (etcd\'s /v3 JSON protocol)', prefix) }, async (req, reply) => {
        const upstream = await req.etcd.lease.leaseKeepAlive();
        const res = openStream(reply);
        let done = false;
        const finish = (err?: unknown) => {
          if (done) return;
          done = true;
          if (err !== undefined) writeChunk(res, streamError(err));
          res.end();
          upstream.cancel();
        };
        upstream.on('data', (r) => writeChunk(res, { result: encodeMessage('LeaseKeepAliveResponse', r) }));
        upstream.on('error', (err) => finish(err));
        upstream.on('end', () => finish());
        res.on('close', () => finish());
        readLines(
          req,
          opts.bodyLimit,
          (line) => upstream.write(decodeMessage('LeaseKeepAliveRequest', parseJson(line)) as never),
          () => upstream.end(),
          (err) => finish(err),
        );
      });

      streams.post(`${prefix}maintenance/snapshot`, { schema: schema('Snapshot stream (etcd\'s /v3 JSON protocol)', prefix) }, async (req, reply) => {
        // etcd3 types the call narrowly; it is grpc-js's readable stream.
        const upstream = (await req.etcd.maintenance.snapshot()) as unknown as ClientReadableStream<ISnapshotResponse>;
        const res = openStream(reply);
        upstream.on('data', (r) => {
          writeChunk(res, { result: encodeMessage('SnapshotResponse', r) });
          // Backpressure: pause etcd's stream while the client drains.
          if (res.writableLength > opts.maxBufferedBytes) {
            upstream.pause();
            res.once('drain', () => upstream.resume());
          }
        });
        upstream.on('error', (err) => {
          writeChunk(res, streamError(err));
          res.end();
        });
        upstream.on('end', () => res.end());
        res.on('close', () => upstream.cancel());
        req.raw.resume();
      });

      streams.post(`${prefix}watch`, { schema: schema('Watch stream on the shared watch hub (etcd\'s /v3 JSON protocol)', prefix) }, async (req, reply) => {
        watchStream(app, req, reply, opts);
      });
    }
  });
}

/**
 * /v3/watch: each create_request becomes a subscriber of the shared watch
 * hub, numbered per stream from 0 as etcd numbers watch IDs; hub messages go
 * back as etcd WatchResponses. Watches live until the client disconnects
 * (etcd keeps them after the request body ends too).
 */
function watchStream(app: FastifyInstance, req: FastifyRequest, reply: FastifyReply, opts: V3RoutesOptions): void {
  const res = openStream(reply);
  const watches = new Map<string, () => void>();
  let nextId = 0n;
  let closed = false;
  // Header fields besides the revision, learned from the first read.
  let base: Record<string, unknown> = {};
  const header = (revision: number | string) => encodeMessage('ResponseHeader', { ...base, revision: String(revision) });

  const send = (chunk: unknown) => {
    if (closed) return;
    writeChunk(res, chunk);
    if (res.writableLength > opts.maxBufferedBytes) {
      // A client that stopped reading is cut off rather than buffered without bound.
      req.log.warn('v3 watch client fell too far behind; closing the stream');
      res.destroy();
    }
  };
  const cleanup = () => {
    if (closed) return;
    closed = true;
    for (const unsubscribe of watches.values()) unsubscribe();
    watches.clear();
  };
  res.on('close', cleanup);
  const closedP = new Promise<void>((resolve) => res.once('close', () => resolve()));

  // Requests are handled one after another, in the order they were sent, as
  // etcd's watch stream handles them.
  let queue = Promise.resolve();
  const handle = async (line: string) => {
    const request = decodeMessage('WatchRequest', parseJson(line));
    const create = request.create_request as Record<string, unknown> | undefined;
    const cancel = request.cancel_request as Record<string, unknown> | undefined;
    if (create) await createWatch(create);
    else if (cancel) {
      const id = String(cancel.watch_id ?? '0');
      const unsubscribe = watches.get(id);
      if (unsubscribe) {
        unsubscribe();
        watches.delete(id);
        send({ result: { header: header(await currentRevision()), watch_id: id === '0' ? undefined : id, canceled: true } });
      }
    } else if (request.progress_request) {
      throw new V3Error(GrpcStatus.UNIMPLEMENTED, 'progress_request is not supported by the gateway; use progress_notify on the watch');
    }
  };

  // The header of answers that carry no data (cancel, refusal) is read as
  // the gateway: a caller refused everything still gets etcd's header, as
  // etcd gives it.
  const currentRevision = async (): Promise<string> => {
    const r = await app.etcd.kv.range({ key: Buffer.from([0]), count_only: true, limit: 1, serializable: true });
    base = { cluster_id: r.header.cluster_id, member_id: r.header.member_id, raft_term: r.header.raft_term };
    return r.header.revision;
  };

  const createWatch = async (create: Record<string, unknown>) => {
    const range = { key: (create.key as Buffer | undefined) ?? Buffer.alloc(0), rangeEnd: (create.range_end as Buffer | undefined) ?? Buffer.alloc(0) };
    let id: string;
    if (create.watch_id !== undefined && create.watch_id !== '0') id = String(create.watch_id);
    else {
      while (watches.has(String(nextId))) nextId++;
      id = String(nextId++);
    }
    const idField = id === '0' ? undefined : id;
    if (watches.has(id)) {
      // etcd's mvcc refusal, with watch ID -1 as etcd answers it.
      send({
        result: { header: header(await currentRevision()), watch_id: '-1', created: true, canceled: true, cancel_reason: 'mvcc: duplicate watch ID provided on the WatchStream' },
      });
      return;
    }
    let at: string;
    try {
      if (app.authEnabled) await checkReadable(req.etcd.kv, range);
      // The current revision (linearizable) and the rest of the header.
      const r = await req.etcd.kv.range({ key: range.key.length ? range.key : Buffer.from([0]), count_only: true, limit: 1 });
      base = { cluster_id: r.header.cluster_id, member_id: r.header.member_id, raft_term: r.header.raft_term };
      at = r.header.revision;
    } catch (err) {
      // etcd answers a refused watch as created and canceled at once, with
      // watch ID -1 and the gRPC error's text as the reason.
      const e = v3ErrorOf(err);
      if (e.status >= 500) throw err;
      const reason = isGrpcError(err) ? `rpc error: code = ${GRPC_NAMES[e.code] ?? e.code} desc = ${e.message}` : e.message;
      send({ result: { header: header(await currentRevision()), watch_id: '-1', created: true, canceled: true, cancel_reason: reason } });
      return;
    }
    const filters = (create.filters as number[] | undefined) ?? [];
    let ended = false;
    // The next request waits for this one's `created`, so answers come in
    // the order of the requests, as etcd sends them.
    let answered!: () => void;
    const createdOrEnded = new Promise<void>((resolve) => (answered = resolve));
    const sink = {
      created: () => {
        send({ result: { header: header(at), watch_id: idField, created: true } });
        answered();
      },
      events: (batch: { revision: number; events: Parameters<typeof watchEventToEtcd>[0][] }) =>
        send({ result: { header: header(batch.revision), watch_id: idField, events: batch.events.map(watchEventToEtcd) } }),
      progress: (revision: number) => send({ result: { header: header(revision), watch_id: idField } }),
      error: (err: WatchError) => {
        ended = true;
        watches.delete(id);
        const result: Record<string, unknown> = { header: header(at), watch_id: idField, canceled: true };
        if (err.compact_revision) result.compact_revision = String(err.compact_revision);
        else result.cancel_reason = err.message;
        send({ result });
        answered();
      },
    };
    const unsubscribe = app.watchHub.subscribe(
      {
        range,
        startRevision: create.start_revision !== undefined && create.start_revision !== '0' ? num(create.start_revision as string) : undefined,
        prevKv: create.prev_kv === true,
        progressNotify: create.progress_notify === true,
        filters: { noPut: filters.includes(0), noDelete: filters.includes(1) },
      },
      sink,
    );
    if (closed) unsubscribe();
    else if (!ended) watches.set(id, unsubscribe);
    await Promise.race([createdOrEnded, closedP]);
  };

  readLines(
    req,
    opts.bodyLimit,
    (line) => {
      queue = queue
        .then(() => (closed ? undefined : handle(line)))
        .catch((err) => {
          send(streamError(err));
          res.end();
          cleanup();
        });
    },
    () => undefined,
    (err) => {
      send(streamError(err));
      res.end();
      cleanup();
    },
  );
}
