// The etcd/gRPC → HTTP table, row by row. The inputs are gRPC status objects
// shaped as @grpc/grpc-js reports them, with etcd's own error texts; the
// end-to-end behaviour of representative rows is tested against the real
// cluster in kv.test.ts and failover.test.ts.
import { Metadata, status } from '@grpc/grpc-js';
import t from 'tap';
import { ETCD_ERROR_TABLE, NOT_SENT, Problem, fromEtcdError, toProblem } from '../src/errors.js';

function grpcError(code: number, details: string, extra: Record<symbol, unknown> = {}) {
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata: new Metadata() }, extra);
}

t.test('every etcd error row maps to its status and code', async (t) => {
  for (const row of ETCD_ERROR_TABLE) {
    const read = fromEtcdError(grpcError(status.UNKNOWN, `${row.match} (with detail)`), 'read');
    t.equal(read.status, row.status, `${row.match} (read) → ${row.status}`);
    t.equal(read.code, row.code, `${row.match} (read) → ${row.code}`);
    t.notOk(read.extra.outcome, `${row.match}: reads have no outcome`);
    const write = fromEtcdError(grpcError(status.UNAVAILABLE, row.match), 'write');
    if (row.unknownOutcome) {
      t.equal(write.status, 504, `${row.match} (write) → 504`);
      t.equal(write.extra.outcome, 'unknown', `${row.match} (write) → outcome unknown`);
    } else {
      t.equal(write.status, row.status, `${row.match} (write) → ${row.status}`);
      t.notOk(write.extra.outcome);
    }
    t.equal(write.headers['retry-after'], row.retryAfter ? String(row.retryAfter) : undefined, `${row.match}: Retry-After`);
  }
});

t.test('gRPC codes are the fallback', async (t) => {
  const expected: [number, number, string][] = [
    [status.INVALID_ARGUMENT, 400, 'invalid_argument'],
    [status.NOT_FOUND, 404, 'not_found'],
    [status.ALREADY_EXISTS, 409, 'already_exists'],
    [status.PERMISSION_DENIED, 403, 'permission_denied'],
    [status.UNAUTHENTICATED, 401, 'unauthenticated'],
    [status.RESOURCE_EXHAUSTED, 429, 'resource_exhausted'],
    [status.FAILED_PRECONDITION, 400, 'failed_precondition'],
    [status.ABORTED, 409, 'aborted'],
    [status.OUT_OF_RANGE, 400, 'out_of_range'],
    [status.UNIMPLEMENTED, 501, 'not_implemented'],
    [status.UNAVAILABLE, 503, 'etcd_unavailable'],
    [status.DEADLINE_EXCEEDED, 504, 'etcd_timeout'],
    [status.CANCELLED, 503, 'etcd_cancelled'],
    [status.INTERNAL, 500, 'etcd_internal'],
    [status.UNKNOWN, 500, 'etcd_error'],
    [status.DATA_LOSS, 500, 'etcd_data_loss'],
  ];
  for (const [code, httpStatus, name] of expected) {
    const p = fromEtcdError(grpcError(code, 'some text etcd did not define'), 'read');
    t.equal(p.status, httpStatus, `${status[code]} → ${httpStatus}`);
    t.equal(p.code, name);
    t.equal(p.body().grpc_status, status[code]);
  }
});

t.test('writes whose outcome is unknown answer 504 with outcome "unknown"', async (t) => {
  for (const code of [status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.CANCELLED]) {
    const p = fromEtcdError(grpcError(code, 'Connection dropped'), 'write');
    t.equal(p.status, 504, `${status[code]} write`);
    t.equal(p.body().outcome, 'unknown');
    t.match(p.message, /may or may not have been applied/);
  }
  // Refused before it left the gateway: certainly not applied, so 503, no outcome.
  const notSent = fromEtcdError(
    grpcError(status.UNAVAILABLE, 'No connection established. Last error: connect ECONNREFUSED 10.1.2.3:2379', { [NOT_SENT]: true }),
    'write',
  );
  t.equal(notSent.status, 503);
  t.equal(notSent.message, 'could not connect to any etcd member', 'member addresses stay in the log');
  t.equal(notSent.code, 'etcd_unavailable');
  t.notOk(notSent.body().outcome);
  t.equal(notSent.headers['retry-after'], '1');
  // etcd refused up front ("no leader" with the hasleader check): not applied.
  const noLeader = fromEtcdError(grpcError(status.UNAVAILABLE, 'etcdserver: no leader'), 'write');
  t.equal(noLeader.status, 503);
  t.notOk(noLeader.body().outcome);
});

t.test('5xx answers hide etcd internals', async (t) => {
  const p = fromEtcdError(grpcError(status.INTERNAL, 'panic in /home/build/etcd/server.go:123'), 'read');
  t.equal(p.status, 500);
  t.notMatch(p.message, /server\.go/);
  const unknown = toProblem(new TypeError('cannot read x of undefined'));
  t.equal(unknown.status, 500);
  t.equal(unknown.code, 'internal_error');
  t.equal(unknown.message, 'internal error');
});

t.test('Fastify client errors and Problems pass through', async (t) => {
  const p = new Problem(412, 'precondition_failed', 'nope', { extra: { current: null } });
  t.equal(toProblem(p), p);
  t.same(p.body(), {
    type: 'urn:etcd-gateway:problem:precondition_failed',
    title: 'Precondition Failed',
    status: 412,
    detail: 'nope',
    code: 'precondition_failed',
    current: null,
  });
  const tooLarge = toProblem(Object.assign(new Error('Request body is too large'), { statusCode: 413, code: 'FST_ERR_CTP_BODY_TOO_LARGE' }));
  t.equal(tooLarge.status, 413);
  t.equal(tooLarge.code, 'body_too_large');
  const validation = toProblem(Object.assign(new Error('querystring/limit must be integer'), { statusCode: 400, validation: [{}] }));
  t.equal(validation.code, 'validation_failed');
  const badJson = toProblem(Object.assign(new Error('Body is not valid JSON'), { statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY' }));
  t.equal(badJson.code, 'invalid_json');
});

t.test('transport failures are said in fixed texts: grpc-js names member addresses', async (t) => {
  const raw: [number, string][] = [
    [status.DEADLINE_EXCEEDED, 'Deadline exceeded after 1.002s,remote_addr=127.0.0.1:23791'],
    [status.UNAVAILABLE, 'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:23791 (resolution note: )'],
    [status.CANCELLED, 'Call cancelled,remote_addr=127.0.0.1:23791'],
  ];
  for (const [code, details] of raw) {
    for (const kind of ['read', 'write'] as const) {
      const p = fromEtcdError(grpcError(code, details), kind);
      t.notMatch(JSON.stringify(p.body()), /remote_addr|23791|127\.0\.0\.1|resolution/, `${status[code]} (${kind})`);
    }
  }
  t.equal(fromEtcdError(grpcError(status.DEADLINE_EXCEEDED, raw[0]![1]), 'read').message, 'etcd did not answer before the deadline');
  t.equal(fromEtcdError(grpcError(status.UNAVAILABLE, raw[1]![1]), 'read').message, 'etcd is unavailable');
  // etcd's own texts are fixed already, and say more: they are kept.
  t.equal(fromEtcdError(grpcError(status.UNAVAILABLE, 'etcdserver: request timed out'), 'read').message, 'etcdserver: request timed out');
});
