// Failures in etcd's /v3 protocol: etcd's error body ({error, code, message})
// with the HTTP status etcd's grpc-gateway gives the gRPC code, and the
// gateway's own refusals (problem+json elsewhere) said the same way.
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { FastifyInstance } from 'fastify';
import { isGrpcError, Problem, reasonPhrase, toProblem } from '../errors.js';
import { V3Error } from './protojson.js';

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

// The gateway's refusals that stand in for etcd's own are said in etcd's
// words, which this protocol's clients recognise.
const ETCD_WORDS: Record<string, string> = {
  admin_required: 'etcdserver: permission denied',
};

/** Any failure → etcd's status, gRPC code and message. */
export function v3ErrorOf(err: unknown): V3ErrorBody {
  if (err instanceof V3Error) return { status: err.httpStatus ?? HTTP_FROM_GRPC[err.grpcCode] ?? 500, code: err.grpcCode, message: err.message, headers: {} };
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
  return {
    status: problem.status,
    code: GRPC_FROM_HTTP[problem.status] ?? GrpcStatus.UNKNOWN,
    message: ETCD_WORDS[problem.code] ?? problem.message,
    headers: problem.headers,
  };
}

/** grpc-gateway v1's mid-stream error chunk (etcd 3.4). */
export function streamError(err: unknown): unknown {
  const e = v3ErrorOf(err);
  return { error: { grpc_code: e.code, http_code: e.status, message: e.message, http_status: reasonPhrase(e.status) } };
}

/** etcd's error body of a call that failed before answering. */
export function errorBody(err: unknown): { error: string; message: string; code: number } {
  const e = v3ErrorOf(err);
  return { error: e.message, message: e.message, code: e.code };
}

/** A gRPC error as Go prints it, which etcd puts in a refused watch's cancel_reason. */
export function rpcErrorText(err: unknown): string {
  const e = v3ErrorOf(err);
  return `rpc error: code = ${GRPC_NAMES[e.code] ?? e.code} desc = ${e.message}`;
}

/** The protocol's error body for every failure of the plugin's routes (hooks included). */
export function useV3Errors(app: FastifyInstance): void {
  app.setErrorHandler((err, req, reply) => {
    const e = v3ErrorOf(err);
    if (e.status >= 500) req.log.error({ err }, 'v3 request failed');
    return reply.code(e.status).headers(e.headers).type('application/json').send(errorBody(err));
  });
}

/** Whether a failure is etcd (or the gateway) refusing the caller, rather than a passing fault. */
export function isRefusal(err: unknown): boolean {
  const code = v3ErrorOf(err).code;
  return code === GrpcStatus.PERMISSION_DENIED || code === GrpcStatus.UNAUTHENTICATED;
}

/** The gateway's own refusals (lease ownership, the txn guard) in etcd's words, which etcd clients match on. */
export function etcdRefused(err: unknown): unknown {
  return err instanceof Problem && err.status === 403 ? new V3Error(GrpcStatus.PERMISSION_DENIED, 'etcdserver: permission denied') : err;
}

export async function etcdRefusal<T>(p: Promise<T> | undefined): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    throw etcdRefused(err);
  }
}
