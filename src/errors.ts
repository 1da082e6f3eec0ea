// The one place that turns failures into HTTP answers: RFC 9457 problem
// details, and the table from etcd/gRPC errors to problem codes and statuses.
// Route handlers never render errors; they throw, and the error handler in
// src/plugins/errors.ts renders whatever reaches it through toProblem().
import { STATUS_CODES } from 'node:http';
import { status as GrpcStatus } from '@grpc/grpc-js';

export const PROBLEM_TYPE_PREFIX = 'urn:etcd-gateway:problem:';

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  /** The gRPC status name, where etcd produced the error. */
  grpc_status?: string;
  /** For writes that may or may not have been applied. */
  outcome?: 'unknown';
  [extra: string]: unknown;
}

export class Problem extends Error {
  readonly status: number;
  readonly code: string;
  readonly title: string;
  readonly extra: Record<string, unknown>;
  readonly headers: Record<string, string>;

  constructor(
    status: number,
    code: string,
    detail: string,
    opts: { title?: string; extra?: Record<string, unknown>; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(detail, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'Problem';
    this.status = status;
    this.code = code;
    this.title = opts.title ?? reasonPhrase(status);
    this.extra = opts.extra ?? {};
    this.headers = opts.headers ?? {};
  }

  body(): ProblemBody {
    return {
      type: PROBLEM_TYPE_PREFIX + this.code,
      title: this.title,
      status: this.status,
      detail: this.message,
      code: this.code,
      ...this.extra,
    };
  }
}

/** HTTP reason phrases from node:http; 413 by its RFC 9110 name, which Node still spells the RFC 7231 way. */
export function reasonPhrase(status: number): string {
  if (status === 413) return 'Content Too Large';
  return STATUS_CODES[status] ?? (status >= 500 ? 'Server Error' : 'Client Error');
}

export const badRequest = (detail: string, code = 'bad_request', extra?: Record<string, unknown>) =>
  new Problem(400, code, detail, { extra });

/**
 * The gateway's own rate limits (src/plugins/limits.ts): `rate_limited`, not
 * etcd's `too_many_requests` (etcd overloaded), so a client knows who to wait for.
 */
export const rateLimited = (detail: string, retryAfterSeconds: number) =>
  new Problem(429, 'rate_limited', detail, { headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) } });

/** A caller over its cap of open streams, long-polls and waits (src/auth/stream-caps.ts). */
export const tooManyStreams = (max: number) =>
  new Problem(429, 'too_many_streams', `at most ${max} open streams, long-polls and waits per user (STREAMS_PER_SUBJECT)`, { headers: { 'retry-after': '1' } });

/** A route of the admin scope (src/auth/admin.ts) called by a user without etcd's root role. */
export const adminRequired = (username: string) =>
  new Problem(403, 'admin_required', `this route needs etcd's root role, which the user ${username} does not hold`);

// ---------------------------------------------------------------------------
// etcd / gRPC errors

/** A gRPC error as @grpc/grpc-js reports it. */
export interface GrpcLikeError {
  code: number;
  details?: string;
  message: string;
}

export function isGrpcError(err: unknown): err is GrpcLikeError {
  return (
    typeof err === 'object' &&
    err !== null &&
    typeof (err as GrpcLikeError).code === 'number' &&
    typeof (err as GrpcLikeError).message === 'string' &&
    'metadata' in err
  );
}

/** Whether a call changed (or may have changed) etcd's state. */
export type CallKind = 'read' | 'write';

interface EtcdErrorRow {
  /** Substring of etcd's error text (etcd's rpctypes messages; etcd3 matches the same way). */
  match: string;
  status: number;
  code: string;
  /** For writes: etcd may have applied the request even though it failed. */
  unknownOutcome?: boolean;
  retryAfter?: number;
}

// Rows are checked in order; the first whose text occurs in the error wins.
// Deliberate choices, where grpc-gateway's code-only table would hide meaning:
// - compaction is 410 Gone (the history is gone; relist), not 400;
// - "request is too large" is 413, the same answer our own body limit gives;
// - etcd's timeouts arrive as UNAVAILABLE but mean "proposed, fate unknown",
//   so for writes they are 504 with outcome "unknown", never 503;
// - a full backend (NOSPACE alarm) is 507 so clients can tell it from overload.
export const ETCD_ERROR_TABLE: readonly EtcdErrorRow[] = [
  { match: 'required revision has been compacted', status: 410, code: 'revision_compacted' },
  { match: 'required revision is a future revision', status: 400, code: 'future_revision' },
  { match: 'etcdserver: key not found', status: 404, code: 'key_not_found' },
  { match: 'etcdserver: key is not provided', status: 400, code: 'empty_key' },
  { match: 'etcdserver: value is provided', status: 400, code: 'value_provided' },
  { match: 'etcdserver: lease is provided', status: 400, code: 'lease_provided' },
  { match: 'etcdserver: duplicate key given in txn request', status: 400, code: 'duplicate_key' },
  { match: 'etcdserver: too many operations in txn request', status: 400, code: 'too_many_operations' },
  { match: 'etcdserver: request is too large', status: 413, code: 'request_too_large' },
  // gRPC's own receive limit on etcd's side (max-request-bytes plus framing).
  { match: 'received message larger than max', status: 413, code: 'request_too_large' },
  { match: 'etcdserver: requested lease not found', status: 404, code: 'lease_not_found' },
  { match: 'etcdserver: lease already exists', status: 409, code: 'lease_exists' },
  { match: 'etcdserver: too large lease TTL', status: 400, code: 'lease_ttl_too_large' },
  { match: 'etcdserver: member ID already exist', status: 409, code: 'member_exists' },
  { match: 'etcdserver: Peer URLs already exists', status: 409, code: 'peer_url_exists' },
  { match: 'etcdserver: member not found', status: 404, code: 'member_not_found' },
  { match: 'etcdserver: member not learner', status: 400, code: 'member_not_learner' },
  { match: 'etcdserver: can only promote a learner member which is in sync with leader', status: 409, code: 'learner_not_ready' },
  // After the row above: etcd's refusal to promote a voting member is its prefix.
  { match: 'etcdserver: can only promote a learner member', status: 400, code: 'member_not_learner' },
  { match: 'etcdserver: given member URLs are invalid', status: 400, code: 'invalid_peer_urls' },
  { match: 'etcdserver: bad leader transferee', status: 400, code: 'bad_leader_transferee' },
  { match: 'etcdserver: too many learner members in cluster', status: 409, code: 'too_many_learners' },
  { match: 'etcdserver: re-configuration failed due to not enough started members', status: 409, code: 'unhealthy_cluster' },
  { match: 'etcdserver: user name already exists', status: 409, code: 'user_exists' },
  { match: 'etcdserver: user name not found', status: 404, code: 'user_not_found' },
  { match: 'etcdserver: role name already exists', status: 409, code: 'role_exists' },
  { match: 'etcdserver: role name not found', status: 404, code: 'role_not_found' },
  { match: 'etcdserver: role is not granted to the user', status: 404, code: 'role_not_granted' },
  { match: 'etcdserver: permission is not granted to the role', status: 404, code: 'permission_not_granted' },
  { match: 'etcdserver: root user does not exist', status: 409, code: 'root_user_missing' },
  { match: 'etcdserver: root user does not have root role', status: 409, code: 'root_role_missing' },
  { match: 'etcdserver: authentication failed, invalid user ID or password', status: 401, code: 'authentication_failed' },
  { match: 'etcdserver: user name is empty', status: 401, code: 'unauthenticated' },
  { match: 'etcdserver: invalid auth token', status: 401, code: 'invalid_token' },
  { match: 'etcdserver: revision of auth store is old', status: 503, code: 'auth_revision_stale', retryAfter: 1 },
  { match: 'etcdserver: authentication is not enabled', status: 400, code: 'auth_not_enabled' },
  { match: 'etcdserver: permission denied', status: 403, code: 'permission_denied' },
  { match: 'auth: permission denied', status: 403, code: 'permission_denied' },
  { match: 'etcdserver: mvcc: database space exceeded', status: 507, code: 'no_space' },
  { match: 'etcdserver: too many requests', status: 429, code: 'too_many_requests', retryAfter: 1 },
  { match: 'etcdserver: no leader', status: 503, code: 'no_leader', retryAfter: 1 },
  { match: 'etcdserver: not leader', status: 503, code: 'not_leader', retryAfter: 1 },
  { match: 'etcdserver: rpc not supported for learner', status: 503, code: 'learner_member', retryAfter: 1 },
  // Before the generic timeout, which its text starts with: the transfer may still complete.
  { match: 'etcdserver: request timed out, leader transfer took too long', status: 504, code: 'leader_transfer_timeout', unknownOutcome: true, retryAfter: 1 },
  { match: 'etcdserver: request timed out', status: 504, code: 'etcd_timeout', unknownOutcome: true, retryAfter: 1 },
  { match: 'etcdserver: leader changed', status: 503, code: 'leader_changed', unknownOutcome: true, retryAfter: 1 },
  { match: 'etcdserver: server stopped', status: 503, code: 'etcd_unavailable', retryAfter: 1 },
  { match: 'etcdserver: unhealthy cluster', status: 503, code: 'unhealthy_cluster', retryAfter: 1 },
  { match: 'etcdserver: corrupt cluster', status: 503, code: 'corrupt_cluster', retryAfter: 5 },
];

interface CodeRow {
  status: number;
  code: string;
  unknownOutcome?: boolean;
  retryAfter?: number;
  /** Hide etcd's text: it may describe internals. */
  hideDetail?: boolean;
  /** Said instead of grpc-js's text, which names member addresses (remote_addr=...) and resolver state. */
  text?: string;
}

// Fallback by gRPC status code (after grpc-gateway's runtime/errors.go, with
// FAILED_PRECONDITION kept at 400 as etcd uses it for "not capable"-style refusals).
const GRPC_CODE_TABLE: Record<number, CodeRow> = {
  [GrpcStatus.CANCELLED]: { status: 503, code: 'etcd_cancelled', unknownOutcome: true, retryAfter: 1, text: 'the call to etcd was cancelled' },
  [GrpcStatus.UNKNOWN]: { status: 500, code: 'etcd_error', hideDetail: true },
  [GrpcStatus.INVALID_ARGUMENT]: { status: 400, code: 'invalid_argument' },
  [GrpcStatus.DEADLINE_EXCEEDED]: { status: 504, code: 'etcd_timeout', unknownOutcome: true, retryAfter: 1, text: 'etcd did not answer before the deadline' },
  [GrpcStatus.NOT_FOUND]: { status: 404, code: 'not_found' },
  [GrpcStatus.ALREADY_EXISTS]: { status: 409, code: 'already_exists' },
  [GrpcStatus.PERMISSION_DENIED]: { status: 403, code: 'permission_denied' },
  [GrpcStatus.RESOURCE_EXHAUSTED]: { status: 429, code: 'resource_exhausted', retryAfter: 1 },
  [GrpcStatus.FAILED_PRECONDITION]: { status: 400, code: 'failed_precondition' },
  [GrpcStatus.ABORTED]: { status: 409, code: 'aborted' },
  [GrpcStatus.OUT_OF_RANGE]: { status: 400, code: 'out_of_range' },
  [GrpcStatus.UNIMPLEMENTED]: { status: 501, code: 'not_implemented' },
  [GrpcStatus.INTERNAL]: { status: 500, code: 'etcd_internal', hideDetail: true },
  [GrpcStatus.UNAVAILABLE]: { status: 503, code: 'etcd_unavailable', unknownOutcome: true, retryAfter: 1, text: 'etcd is unavailable' },
  [GrpcStatus.DATA_LOSS]: { status: 500, code: 'etcd_data_loss', hideDetail: true },
  [GrpcStatus.UNAUTHENTICATED]: { status: 401, code: 'unauthenticated' },
};

/** Marks an error as raised before the request left the gateway (so it was not applied). */
export const NOT_SENT = Symbol('etcd-gateway.notSent');
/** The kind of call that failed, set by the etcd connection on every error it throws. */
export const CALL_KIND = Symbol('etcd-gateway.callKind');

export function grpcStatusName(code: number): string | undefined {
  return (GrpcStatus as unknown as Record<number, string>)[code];
}

/**
 * Maps an etcd/gRPC error to a Problem. For a write whose outcome is unknown
 * (a deadline, a dropped connection, an etcd-side timeout) the answer is 504
 * with `outcome: "unknown"`: the caller must read before deciding to retry,
 * because the gateway never retries such a write itself.
 */
export function fromEtcdError(err: GrpcLikeError, kind?: CallKind): Problem {
  kind ??= ((err as unknown as Record<symbol, CallKind>)[CALL_KIND] ?? 'read');
  const text = err.details ?? err.message;
  const row: CodeRow | EtcdErrorRow = ETCD_ERROR_TABLE.find((r) => text.includes(r.match)) ??
    GRPC_CODE_TABLE[err.code] ?? { status: 500, code: 'etcd_error', hideDetail: true };
  const notSent = (err as unknown as Record<symbol, unknown>)[NOT_SENT] === true;
  const extra: Record<string, unknown> = {};
  const grpcName = grpcStatusName(err.code);
  if (grpcName) extra.grpc_status = grpcName;
  let status = row.status;
  let code = row.code;
  if (kind === 'write' && row.unknownOutcome && !notSent) {
    status = 504;
    if (code === 'etcd_unavailable' || code === 'etcd_cancelled') code = 'write_outcome_unknown';
    extra.outcome = 'unknown';
  }
  const headers: Record<string, string> = {};
  if (row.retryAfter) headers['retry-after'] = String(row.retryAfter);
  const hide = 'hideDetail' in row && row.hideDetail;
  // Connection failures describe our network (member addresses, resolver
  // notes): the caller learns that etcd is unreachable, the log keeps the rest.
  let detail = hide ? 'etcd failed to process the request' : notSent ? 'could not connect to any etcd member' : ('text' in row && row.text) || text;
  if (extra.outcome === 'unknown') {
    detail = `${detail}; the write may or may not have been applied: read the key before retrying`;
  }
  return new Problem(status, code, detail, { extra, headers, cause: err });
}

const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_content_length',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
};

/** Renders anything thrown in a request into a Problem. */
export function toProblem(err: unknown): Problem {
  if (err instanceof Problem) return err;
  if (isGrpcError(err)) return fromEtcdError(err);
  const e = err as { statusCode?: number; code?: string; message?: string; validation?: unknown };
  if (e && typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    // Fastify's own client errors (validation, body limit, bad JSON, media type).
    const code = e.validation ? 'validation_failed' : (FASTIFY_CODES[e.code ?? ''] ?? 'bad_request');
    return new Problem(e.statusCode, code, e.message ?? 'bad request');
  }
  return new Problem(500, 'internal_error', 'internal error', { cause: err });
}
