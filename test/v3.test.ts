// etcd's own /v3 JSON protocol through the gateway, against a real 3-member
// cluster: the examples of etcd's grpc-gateway guide, the protocol's traps
// (lease IDs above 2^53, no Content-Type, chunk framing, omitted zero
// values), streams, errors, and the same requests sent to etcd's own built-in
// gateway on a member's client URL where the shapes must match.
import { status as GrpcStatus, Metadata } from '@grpc/grpc-js';
import { connect } from 'node:net';
import { WebSocket } from 'ws';
import t from 'tap';
const tap = t;
import { v3ErrorOf } from '../src/v3/errors.js';
import { parseJson } from '../src/v3/protojson.js';
import { JsonSplitter } from '../src/v3/streams.js';
import { buildApp } from '../src/app.js';
import { buildTestApp, listen, testConfig } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { enableEtcdAuth, gatewayAuthConfig } from './helpers/etcd-auth.js';
import { nextEvent } from './helpers/etcd-waits.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints, { BODY_LIMIT: 64 * 1024 });
const gw = await listen(app);
const etcd = cluster.endpoints[0]!;
const { etcdctl } = cluster;

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString();

interface Answer {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  text: string;
  headers: Headers;
}

async function post(base: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(base + path, {
    method: 'POST',
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = parseJson(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, body: parsed, text, headers: res.headers };
}
const v3 = (path: string, body?: unknown, headers?: Record<string, string>) => post(gw, path, body, headers);
const builtin = (path: string, body?: unknown, headers?: Record<string, string>) => post(etcd, path, body, headers);

/** The JSON shape with values that differ between members or moments replaced by their type. */
function shape(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(shape);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, k === 'header' ? Object.keys(x as object).sort() : shape(x)]));
  }
  return typeof v;
}

/** Sends the same request to the gateway and to etcd's built-in gateway; both answers must have the same shape and status. */
async function same(t: { equal: typeof tap.equal; same: typeof tap.same }, path: string, body: unknown): Promise<[Answer, Answer]> {
  const ours = await v3(path, body);
  const theirs = await builtin(path, body);
  t.equal(ours.status, theirs.status, `${path}: same status`);
  t.same(shape(ours.body), shape(theirs.body), `${path}: same shape as etcd's gateway (${theirs.text.trim()})`);
  return [ours, theirs];
}

t.test("etcd's grpc-gateway guide, replayed", async (t) => {
  // curl -L http://localhost:2379/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}'
  const put = await v3('/v3/kv/put', '{"key": "Zm9v", "value": "YmFy"}');
  t.equal(put.status, 200);
  t.same(Object.keys(put.body), ['header']);
  t.same(Object.keys(put.body.header).sort(), ['cluster_id', 'member_id', 'raft_term', 'revision']);
  t.type(put.body.header.revision, 'string', 'int64 as a JSON string');
  t.equal(await etcdctl('get', 'foo', '--print-value-only'), 'bar\n');

  // curl -L http://localhost:2379/v3/kv/range -X POST -d '{"key": "Zm9v"}'
  const range = await v3('/v3/kv/range', '{"key": "Zm9v"}');
  t.equal(range.body.count, '1');
  t.equal(range.body.kvs[0].key, 'Zm9v');
  t.equal(range.body.kvs[0].value, 'YmFy');
  t.equal(range.body.kvs[0].version, '1');
  t.notOk('lease' in range.body.kvs[0], 'no lease: zero omitted');
  t.notOk('more' in range.body, 'more:false omitted');

  // get all keys prefixed with "foo": range_end "fop"
  await etcdctl('put', 'foo/a', '1');
  const prefix = await v3('/v3/kv/range', { key: b64('foo'), range_end: b64('fop') });
  t.same(prefix.body.kvs.map((kv: { key: string }) => unb64(kv.key)), ['foo', 'foo/a']);

  // The guide's txn: compare on createRevision (lowerCamel in), response_put (proto name out).
  const createRevision = range.body.kvs[0].create_revision;
  const txn = await v3('/v3/kv/txn', {
    compare: [{ target: 'CREATE', key: 'Zm9v', createRevision }],
    success: [{ requestPut: { key: 'Zm9v', value: 'YmFy' } }],
  });
  t.equal(txn.body.succeeded, true);
  t.same(Object.keys(txn.body.responses[0]), ['response_put']);
  t.equal(await etcdctl('get', 'foo', '--print-value-only'), 'bar\n');

  // curl -L http://localhost:2379/v3/kv/deleterange -X POST -d '{"key": "Zm9v"}'
  const del = await v3('/v3/kv/deleterange', { key: 'Zm9v', prev_kv: true });
  t.equal(del.body.deleted, '1');
  t.equal(del.body.prev_kvs[0].value, 'YmFy');
  t.equal(await etcdctl('get', 'foo'), '');
});

t.test('unary KV answers have the shapes of etcd 3.4 built-in gateway', async (t) => {
  await etcdctl('put', 'shape/a', 'x');
  const miss = await same(t, '/v3/kv/range', { key: b64('shape/missing') });
  t.same(Object.keys(miss[0].body), ['header'], 'a miss is only a header: no kvs, no count');
  await same(t, '/v3/kv/range', { key: b64('shape/'), range_end: b64('shape0'), sort_order: 'DESCEND', sort_target: 'KEY', limit: 1 });
  await same(t, '/v3/kv/range', { key: b64('shape/'), range_end: b64('shape0'), count_only: true });
  await same(t, '/v3/kv/range', { key: b64('shape/'), range_end: b64('shape0'), keys_only: true });
  await same(t, '/v3/kv/put', { key: b64('shape/a'), value: b64('y'), prev_kv: true });
  const failed = await same(t, '/v3/kv/txn', {
    compare: [{ result: 'NOT_EQUAL', target: 'VALUE', key: b64('shape/a'), value: b64('y') }],
    success: [{ request_put: { key: b64('shape/b'), value: b64('1') } }],
    failure: [{ request_range: { key: b64('shape/a') } }],
  });
  t.notOk('succeeded' in failed[0].body, 'a failed txn has no succeeded');
  t.equal(unb64(failed[0].body.responses[0].response_range.kvs[0].value), 'y');
  await same(t, '/v3/kv/txn', {
    compare: [{ result: 'GREATER', target: 'MOD', key: b64('shape/a'), mod_revision: 1 }],
    success: [{ request_delete_range: { key: b64('shape/none') } }],
  });
  await same(t, '/v3/kv/deleterange', { key: b64('shape/none') });
  // Enums as numbers: 2 = DESCEND.
  const desc = await v3('/v3/kv/range', { key: b64('shape/'), range_end: b64('shape0'), sort_order: 2 });
  t.equal(unb64(desc.body.kvs[0].key), 'shape/a');
});

t.test('compaction, and the error a compacted revision gives', async (t) => {
  const rev = (await v3('/v3/kv/put', { key: b64('compact/k'), value: b64('1') })).body.header.revision;
  await v3('/v3/kv/put', { key: b64('compact/k'), value: b64('2') });
  const ours = await v3('/v3/kv/compaction', { revision: rev });
  const theirs0 = await builtin('/v3/kv/compaction', { revision: String(BigInt(rev) + 1n) });
  t.same(shape(ours.body), shape(theirs0.body));
  t.same(Object.keys(ours.body), ['header']);
  const old = String(BigInt(rev) - 1n);
  const [err, theirs] = await same(t, '/v3/kv/range', { key: b64('compact/k'), revision: old });
  t.equal(err.status, 400);
  t.same(err.body, theirs.body, 'the same error body as etcd');
  t.same(err.body, { error: 'etcdserver: mvcc: required revision has been compacted', code: GrpcStatus.OUT_OF_RANGE, message: 'etcdserver: mvcc: required revision has been compacted' });
});

t.test('leases: grant, timetolive, leases, revoke and the /v3/kv/lease aliases', async (t) => {
  const grant = await v3('/v3/lease/grant', { TTL: 60 });
  t.equal(grant.body.TTL, '60');
  const id = grant.body.ID as string;
  t.match(id, /^\d+$/);
  await v3('/v3/kv/put', { key: b64('lease/k'), value: b64('v'), lease: id });
  for (const path of ['/v3/lease/timetolive', '/v3/kv/lease/timetolive']) {
    const ttl = await v3(path, { ID: id, keys: true });
    t.equal(ttl.body.ID, id);
    t.equal(ttl.body.grantedTTL, '60');
    t.same(ttl.body.keys, [b64('lease/k')]);
  }
  for (const path of ['/v3/lease/leases', '/v3/kv/lease/leases']) {
    const list = await v3(path);
    t.ok(list.body.leases.some((l: { ID: string }) => l.ID === id), `${path} lists it`);
  }
  await same(t, '/v3/lease/timetolive', { ID: id });
  t.match(await etcdctl('lease', 'list'), BigInt(id).toString(16));
  const revoked = await v3('/v3/kv/lease/revoke', { ID: id });
  t.same(Object.keys(revoked.body), ['header']);
  t.equal(await etcdctl('get', 'lease/k'), '', 'the leased key went with the lease');
  const [again, theirs] = await same(t, '/v3/lease/revoke', { ID: id });
  t.equal(again.status, 404);
  t.same(again.body, theirs.body);
  t.same(again.body, { error: 'etcdserver: requested lease not found', code: GrpcStatus.NOT_FOUND, message: 'etcdserver: requested lease not found' });
  // An unknown lease's time to live is TTL -1, not an error, as etcd answers it.
  const gone = await same(t, '/v3/lease/timetolive', { ID: id });
  t.equal(gone[0].body.TTL, '-1');
});

t.test('trap: lease IDs above 2^53 survive as numbers and as strings', async (t) => {
  const big = '9007199254740993'; // 2^53 + 1: a double would make it ...992
  const grant = await v3('/v3/lease/grant', `{"TTL": 30, "ID": ${big}}`);
  t.equal(grant.status, 200, grant.text);
  t.equal(grant.body.ID, big);
  t.match(grant.text, `"ID":"${big}"`, 'the wire text carries the exact digits');
  t.match(await etcdctl('lease', 'list'), BigInt(big).toString(16));
  const huge = '7587823380406781187';
  await v3('/v3/lease/grant', { TTL: 30, ID: huge });
  await v3('/v3/kv/put', `{"key":"${b64('big/k')}","value":"${b64('v')}","lease":${huge}}`);
  const got = await v3('/v3/kv/range', { key: b64('big/k') });
  t.equal(got.body.kvs[0].lease, huge);
  t.match(got.text, `"lease":"${huge}"`);
  const json = await etcdctl('get', 'big/k', '--write-out=json');
  t.match(json, `"lease":${huge}`, 'etcd holds the exact lease');
  await v3('/v3/lease/revoke', { ID: big });
  await v3('/v3/lease/revoke', { ID: huge });
});

t.test('trap: bodies with any or no Content-Type', async (t) => {
  // fetch with a string body sends text/plain; curl -d sends form-urlencoded; some clients send nothing.
  const form = await v3('/v3/kv/put', { key: b64('ct/form'), value: b64('1') }, { 'content-type': 'application/x-www-form-urlencoded' });
  t.equal(form.status, 200, form.text);
  const none = await rawRequest('POST /v3/kv/put', JSON.stringify({ key: b64('ct/none'), value: b64('2') }), { 'content-length': 'auto' });
  t.match(none.head, /^HTTP\/1\.1 200/);
  t.notMatch(none.head, /content-type: application\/problem/i);
  t.equal(await etcdctl('get', 'ct/none', '--print-value-only'), '2\n');
  const empty = await rawRequest('POST /v3/maintenance/status', '', { 'content-length': 'auto' });
  t.match(empty.head, /^HTTP\/1\.1 200/, 'an empty body is an empty request');
  t.match(JSON.parse(empty.body), { version: /^3\./ });
  // An empty range request is etcd's own refusal, the same with or without a body.
  const emptyRange = await same(t, '/v3/kv/range', undefined);
  t.same(emptyRange[0].body, emptyRange[1].body);
  t.equal(emptyRange[0].body.error, 'etcdserver: key is not provided');
  const json = await v3('/v3/kv/range', { key: b64('ct/form') }, { 'content-type': 'application/json' });
  t.equal(unb64(json.body.kvs[0].value), '1');
});

t.test('request errors are etcd error bodies with the gRPC code', async (t) => {
  const cases: [unknown, RegExp][] = [
    ['{not json', /invalid JSON/],
    [{ key: 'not base64!' }, /bytes field/],
    [{ key: b64('k'), sort_order: 'SIDEWAYS' }, /enum type SortOrder/],
    [{ key: b64('k'), limit: '12x' }, /int64 field/],
    [{ key: b64('k'), limit: '9223372036854775808' }, /out of range/],
    [{ key: b64('k'), serializable: 'yes' }, /bool field/],
    [[1, 2], /expected a JSON object/],
  ];
  for (const [body, message] of cases) {
    const res = await v3('/v3/kv/range', body);
    t.equal(res.status, 400, JSON.stringify(body));
    t.equal(res.body.code, GrpcStatus.INVALID_ARGUMENT);
    t.match(res.body.error, message);
    t.equal(res.body.message, res.body.error);
    t.match(res.headers.get('content-type'), /^application\/json/);
  }
  const stringField = await v3('/v3/auth/user/get', { name: 5 });
  t.equal(stringField.status, 400);
  t.match(stringField.body.error, /string field/);
  const array = await v3('/v3/cluster/member/add', { peerURLs: 'http://x' });
  t.match(array.body.error, /expected a JSON array/);
  // etcd's own refusal, mapped as etcd maps it.
  const noKey = await same(t, '/v3/kv/put', { value: b64('v') });
  t.same(noKey[0].body, noKey[1].body);
  t.equal(noKey[0].body.code, GrpcStatus.INVALID_ARGUMENT);
  // The gateway's own body limit: 413 with RESOURCE_EXHAUSTED.
  const big = await v3('/v3/kv/put', { key: b64('big'), value: Buffer.alloc(70 * 1024).toString('base64') });
  t.equal(big.status, 413);
  t.equal(big.body.code, GrpcStatus.RESOURCE_EXHAUSTED);
});

t.test('stream requests are split at each JSON value, whatever the chunking', async (t) => {
  const values: string[] = [];
  const splitter = new JsonSplitter(1000, (v) => values.push(v));
  // An escaped quote and backslash split across chunks, values with and without newlines between them.
  for (const chunk of ['{"a":"x\\', '""}{"b":"\\\\', '"}\n', '  {"c":[1,{"d":"}"}', ']}\n']) splitter.push(chunk);
  splitter.finish();
  t.same(values.map((v) => JSON.parse(v)), [{ a: 'x"' }, { b: '\\' }, { c: [1, { d: '}' }] }]);
  const big = new JsonSplitter(10, () => undefined);
  t.throws(() => big.push('{"key": "0123456789'), /larger than 10 bytes/, 'a value over the limit is refused before it ends');
  const stray: string[] = [];
  const s = new JsonSplitter(1000, (v) => stray.push(v));
  s.push('}{"a":1}');
  t.same(stray, ['}', '{"a":1}'], 'a stray bracket is handed out (and fails to parse) rather than stalling the stream');
});

t.test('v3ErrorOf: server-side failures never leak internals', async (t) => {
  const unavailable = Object.assign(new Error('14 UNAVAILABLE: connect ECONNREFUSED 10.0.0.1:2379'), {
    code: GrpcStatus.UNAVAILABLE,
    details: 'connect ECONNREFUSED 10.0.0.1:2379',
    metadata: new Metadata(),
  });
  const e = v3ErrorOf(unavailable);
  t.equal(e.status, 503);
  t.equal(e.code, GrpcStatus.UNAVAILABLE);
  t.notMatch(e.message, /10\.0\.0\.1/);
  const bug = v3ErrorOf(new TypeError('x is undefined'));
  t.same([bug.status, bug.code, bug.message], [500, GrpcStatus.UNKNOWN, 'internal error']);
});

t.test('/v3beta is /v3, and GET /version answers like etcd', async (t) => {
  await etcdctl('put', 'beta/k', 'v');
  const beta = await v3('/v3beta/kv/range', { key: b64('beta/k') });
  t.equal(unb64(beta.body.kvs[0].value), 'v');
  const ours = await (await fetch(`${gw}/version`)).json();
  const theirs = await (await fetch(`${etcd}/version`)).json();
  t.same(ours, theirs);
});

t.test('cluster, maintenance and auth calls', async (t) => {
  const [list] = await same(t, '/v3/cluster/member/list', {});
  t.equal(list.body.members.length, 3);
  const member = list.body.members[0];
  t.type(member.ID, 'string');
  t.ok(member.clientURLs && member.peerURLs, 'clientURLs and peerURLs as the proto spells them');
  const update = await v3('/v3/cluster/member/update', { ID: member.ID, peerURLs: member.peerURLs });
  t.equal(update.status, 200, update.text);
  const status = await v3('/v3/maintenance/status');
  t.match(status.body, { version: /^3\./, dbSize: /^\d+$/, leader: /^\d+$/ });
  await same(t, '/v3/maintenance/alarm', { action: 'GET' });
  const [hash] = await same(t, '/v3/maintenance/hash', {});
  t.type(hash.body.hash, 'number', 'uint32 is a JSON number');
  // etcd 3.4's gateway has no route for HashKV (404); the gateway serves it as etcd 3.5 does.
  const hashkv = await v3('/v3/maintenance/hashkv', { revision: 0 });
  t.type(hashkv.body.hash, 'number');
  t.match(hashkv.body.header, { revision: /^\d+$/ });
  t.equal((await v3('/v3/maintenance/defragment')).status, 200);

  t.equal((await v3('/v3/auth/user/add', { name: 'v3user', password: 'pw' })).status, 200);
  t.equal((await v3('/v3/auth/role/add', { name: 'v3role' })).status, 200);
  const grant = await v3('/v3/auth/role/grant', { name: 'v3role', perm: { permType: 'READWRITE', key: b64('app/'), range_end: b64('app0') } });
  t.equal(grant.status, 200, grant.text);
  t.equal((await v3('/v3/auth/user/grant', { user: 'v3user', role: 'v3role' })).status, 200);
  t.match(await etcdctl('user', 'get', 'v3user'), /Roles: v3role/);
  t.match(await etcdctl('role', 'get', 'v3role'), /\[app\/, app0\)/);
  const [role] = await same(t, '/v3/auth/role/get', { role: 'v3role' });
  t.same(role.body.perm, [{ permType: 'READWRITE', key: b64('app/'), range_end: b64('app0') }]);
  await same(t, '/v3/auth/user/get', { name: 'v3user' });
  await same(t, '/v3/auth/user/list', {});
  await same(t, '/v3/auth/role/list', {});
  t.equal((await v3('/v3/auth/role/revoke', { role: 'v3role', key: b64('app/'), range_end: b64('app0') })).status, 200);
  t.equal((await v3('/v3/auth/user/revoke', { name: 'v3user', role: 'v3role' })).status, 200);
  t.equal((await v3('/v3/auth/user/changepw', { name: 'v3user', password: 'pw2' })).status, 200);
  t.equal((await v3('/v3/auth/user/delete', { name: 'v3user' })).status, 200);
  t.equal((await v3('/v3/auth/role/delete', { role: 'v3role' })).status, 200);
  t.equal(await etcdctl('user', 'list'), '');
  const missing = await same(t, '/v3/auth/user/get', { name: 'nobody' });
  t.same(missing[0].body, missing[1].body);
  // etcd 3.4 has no AuthStatus (its gateway: 404): etcd's gRPC answer, unimplemented.
  const authStatus = await v3('/v3/auth/status', {});
  t.equal(authStatus.status, 501);
  t.equal(authStatus.body.code, GrpcStatus.UNIMPLEMENTED);
  // Authenticate without etcd auth: etcd's own refusal.
  const auth = await same(t, '/v3/auth/authenticate', { name: 'root', password: 'x' });
  t.same(auth[0].body, auth[1].body);
});

// ---------------------------------------------------------------------------
// Streams, read at the byte level to check grpc-gateway's framing.

interface RawStream {
  head: string;
  /** Decoded HTTP chunks, in order, as written by the server. */
  chunks: string[];
  /** Sends more of the request body (one HTTP chunk). */
  send(text: string): void;
  /** Ends the request body. */
  end(): void;
  close(): void;
  /** Resolves once `n` chunks have arrived. */
  waitChunks(n: number, timeoutMs?: number): Promise<string[]>;
  /** Resolves with the first chunk `pick` accepts. */
  waitFor(pick: (chunk: string) => boolean, what: string, timeoutMs?: number): Promise<string>;
  ended: Promise<void>;
}

/** A raw HTTP/1.1 request on a socket, parsing the chunked answer by hand. */
function openRaw(base: string, requestLine: string, headers: Record<string, string> = { 'transfer-encoding': 'chunked' }): RawStream {
  const url = new URL(base);
  const socket = connect(Number(url.port), url.hostname);
  const lines = [`${requestLine} HTTP/1.1`, `host: ${url.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  let endResponse: () => void = () => undefined;
  const out: RawStream = {
    head: '',
    chunks: [],
    send(text) {
      const b = Buffer.from(text);
      socket.write(`${b.length.toString(16)}\r\n`);
      socket.write(b);
      socket.write('\r\n');
    },
    end() {
      socket.write('0\r\n\r\n');
    },
    close() {
      socket.destroy();
    },
    async waitChunks(n, timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      while (out.chunks.length < n) {
        if (Date.now() > until) throw new Error(`only ${out.chunks.length} of ${n} chunks: ${JSON.stringify(out.chunks)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return out.chunks;
    },
    async waitFor(pick, what, timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const found = out.chunks.find(pick);
        if (found !== undefined) return found;
        if (Date.now() > until) throw new Error(`no ${what} in ${JSON.stringify(out.chunks)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    ended: new Promise((resolve) => {
      endResponse = resolve;
      socket.on('close', () => resolve());
    }),
  };
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (!out.head) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        out.head = buf.subarray(0, i).toString();
        buf = buf.subarray(i + 4);
        continue;
      }
      const i = buf.indexOf('\r\n');
      if (i < 0) return;
      const size = parseInt(buf.subarray(0, i).toString(), 16);
      if (buf.length < i + 2 + size + 2) return;
      if (size > 0) out.chunks.push(buf.subarray(i + 2, i + 2 + size).toString());
      else endResponse();
      buf = buf.subarray(i + 2 + size + 2);
    }
  });
  return out;
}

/** A whole (non-streamed) request, for bodies without Content-Type. */
async function rawRequest(requestLine: string, body: string, headers: Record<string, string>): Promise<{ head: string; body: string }> {
  const url = new URL(gw);
  const socket = connect(Number(url.port), url.hostname);
  const h = Object.entries(headers).map(([k, v]) => `${k}: ${v === 'auto' ? Buffer.byteLength(body) : v}`);
  socket.write(`${[`${requestLine} HTTP/1.1`, `host: ${url.host}`, 'connection: close', ...h].join('\r\n')}\r\n\r\n${body}`);
  const data: Buffer[] = [];
  socket.on('data', (d: Buffer) => data.push(d));
  await new Promise((r) => socket.on('close', r));
  const text = Buffer.concat(data).toString();
  const i = text.indexOf('\r\n\r\n');
  return { head: text.slice(0, i), body: text.slice(i + 4) };
}

const result = (chunk: string) => JSON.parse(chunk).result;

t.test('trap: watch chunk framing, headers and created flushed at once', async (t) => {
  const s = openRaw(gw, 'POST /v3/watch');
  t.teardown(() => s.close());
  // The body stays open: headers and `created` must arrive before it ends.
  s.send(`${JSON.stringify({ create_request: { key: b64('w/'), range_end: b64('w0') } })}\n`);
  const [created] = await s.waitChunks(1);
  t.match(s.head, /^HTTP\/1\.1 200/);
  t.match(s.head, /transfer-encoding: chunked/i);
  t.match(s.head, /content-type: application\/json/i);
  t.same(Object.keys(result(created!)).sort(), ['created', 'header'], 'watch_id 0 is omitted, as etcd omits it');
  await etcdctl('put', 'w/a', '1');
  await etcdctl('del', 'w/a');
  const chunks = await s.waitChunks(3);
  for (const chunk of chunks) {
    t.match(chunk, /^\{"result":\{.*\}\}\n$/s, 'each chunk is one {"result":...} object plus its newline');
    t.equal(chunk.indexOf('\n'), chunk.length - 1, 'exactly one newline, at the end');
  }
  const put = result(chunks[1]!);
  t.notOk('type' in put.events[0], 'PUT is the zero enum: omitted');
  t.same([unb64(put.events[0].kv.key), unb64(put.events[0].kv.value), put.events[0].kv.version], ['w/a', '1', '1']);
  t.equal(put.header.revision, put.events[0].kv.mod_revision);
  const del = result(chunks[2]!);
  t.equal(del.events[0].type, 'DELETE');
  t.notOk('value' in del.events[0].kv);
  t.notOk('version' in del.events[0].kv);
});

t.test('watch: same chunks as etcd, several creates in one body, filters, prev_kv, cancel', async (t) => {
  const body =
    JSON.stringify({ create_request: { key: b64('m/a') } }) +
    JSON.stringify({ createRequest: { key: b64('m/b'), prevKv: true, filters: ['NODELETE'] } }) +
    '\n';
  const ours = openRaw(gw, 'POST /v3/watch');
  const theirs = openRaw(etcd, 'POST /v3/watch');
  t.teardown(() => (ours.close(), theirs.close()));
  // The whole body, then its end: watches outlive the request body, as in etcd.
  for (const s of [ours, theirs]) (s.send(body), s.end());
  await ours.waitChunks(2);
  await theirs.waitChunks(2);
  await etcdctl('put', 'm/a', '1');
  await etcdctl('put', 'm/b', '1');
  await etcdctl('put', 'm/b', '2');
  await etcdctl('del', 'm/b');
  await etcdctl('put', 'm/a', '2');
  const a = await ours.waitChunks(6);
  const b = await theirs.waitChunks(6);
  t.same(a.map((c) => shape(result(c))), b.map((c) => shape(result(c))), 'chunk for chunk the shapes of etcd');
  t.same(
    a.map((c) => result(c).watch_id ?? '0'),
    b.map((c) => result(c).watch_id ?? '0'),
    'watch IDs numbered as etcd numbers them',
  );
  const prev = result(a[4]!).events[0];
  t.equal(unb64(prev.prev_kv.value), '1', 'prev_kv on the second watch');

  // cancel_request ends one watch with a canceled message.
  const c = openRaw(gw, 'POST /v3/watch');
  t.teardown(() => c.close());
  c.send(body);
  await c.waitChunks(2);
  c.send(JSON.stringify({ cancel_request: { watch_id: 1 } }));
  const canceled = result((await c.waitChunks(3))[2]!);
  t.same([canceled.watch_id, canceled.canceled], ['1', true]);
  await etcdctl('put', 'm/b', '3');
  await etcdctl('put', 'm/a', '3');
  const last = result((await c.waitChunks(4))[3]!);
  t.equal(unb64(last.events[0].kv.key), 'm/a', 'the canceled watch sends nothing more');
});

t.test('watch: a duplicate watch ID is refused as etcd refuses it', async (t) => {
  const body = JSON.stringify({ create_request: { key: b64('d/k'), watch_id: 7 } }) + '\n' + JSON.stringify({ create_request: { key: b64('d/j'), watch_id: 7 } }) + '\n';
  const ours = openRaw(gw, 'POST /v3/watch');
  const theirs = openRaw(etcd, 'POST /v3/watch');
  t.teardown(() => (ours.close(), theirs.close()));
  for (const s of [ours, theirs]) (s.send(body), s.end());
  const a = await ours.waitChunks(2);
  const b = await theirs.waitChunks(2);
  t.same(result(a[0]!).watch_id, '7');
  const refused = result(a[1]!);
  const expected = result(b[1]!);
  delete refused.header;
  delete expected.header;
  t.same(refused, expected, JSON.stringify(expected));
});

t.test('watch: a compacted start revision is canceled with compact_revision, as etcd does', async (t) => {
  const first = (await v3('/v3/kv/put', { key: b64('c/k'), value: b64('1') })).body.header.revision;
  const now = (await v3('/v3/kv/put', { key: b64('c/k'), value: b64('2') })).body.header.revision;
  await v3('/v3/kv/compaction', { revision: now });
  const s = openRaw(gw, 'POST /v3/watch');
  t.teardown(() => s.close());
  s.send(JSON.stringify({ create_request: { key: b64('c/k'), start_revision: first } }));
  const chunks = await s.waitChunks(2);
  t.equal(result(chunks[0]!).created, true);
  const canceled = result(chunks[1]!);
  t.equal(canceled.canceled, true);
  t.equal(canceled.compact_revision, now);
});

t.test('watch: history from a start revision, and stream errors as error chunks', async (t) => {
  const rev = (await v3('/v3/kv/put', { key: b64('h/k'), value: b64('old') })).body.header.revision;
  const s = openRaw(gw, 'POST /v3/watch');
  t.teardown(() => s.close());
  s.send(JSON.stringify({ create_request: { key: b64('h/k'), start_revision: rev } }));
  const chunks = await s.waitChunks(2);
  t.equal(unb64(result(chunks[1]!).events[0].kv.value), 'old');
  s.send('{"create_request": {"key": "%%%"}}\n');
  const [, , err] = await s.waitChunks(3);
  const e = JSON.parse(err!);
  t.same(Object.keys(e), ['error']);
  t.equal(e.error.grpc_code, GrpcStatus.INVALID_ARGUMENT);
  t.equal(e.error.http_code, 400);
  await s.ended;

});

t.test('watch: progress_request answers as etcd does, and only once every watch of the stream has sent up to it', async (t) => {
  // The shape of etcd's answer: the current revision, watch ID -1.
  const ours = openRaw(gw, 'POST /v3/watch');
  const theirs = openRaw(etcd, 'POST /v3/watch');
  t.teardown(() => (ours.close(), theirs.close()));
  const now = (await v3('/v3/kv/put', { key: b64('p/other'), value: b64('x') })).body.header.revision;
  const body = JSON.stringify({ create_request: { key: b64('p/quiet') } }) + '\n' + JSON.stringify({ progress_request: {} }) + '\n';
  // (etcd's gateway reads no more of an HTTP/1.1 body once it has answered: the whole body, then its end.)
  for (const s of [ours, theirs]) (s.send(body), s.end());
  const [, a] = await ours.waitChunks(2);
  const [, b] = await theirs.waitChunks(2);
  t.same(shape(result(a!)), shape(result(b!)), "the shape of etcd's answer");
  t.same(result(a!).watch_id, '-1');
  t.ok(Number(result(a!).header.revision) >= Number(now));

  // With a watch that has history to send: the answer comes after it.
  const first = (await v3('/v3/kv/put', { key: b64('p/k'), value: b64('1') })).body.header.revision;
  for (let i = 2; i <= 20; i++) await v3('/v3/kv/put', { key: b64('p/k'), value: b64(String(i)) });
  const last = (await v3('/v3/kv/put', { key: b64('p/other'), value: b64('y') })).body.header.revision;
  const w = openRaw(gw, 'POST /v3/watch');
  t.teardown(() => w.close());
  w.send(JSON.stringify({ create_request: { key: b64('p/k'), start_revision: first } }) + '\n' + JSON.stringify({ progress_request: {} }) + '\n');
  const progress = await w.waitFor((c) => result(c).watch_id === '-1', 'the progress answer');
  const chunks = w.chunks.slice(0, w.chunks.indexOf(progress));
  const values = chunks.flatMap((c) => (result(c).events ?? []).map((e: { kv: { value: string } }) => unb64(e.kv.value)));
  t.same(values, Array.from({ length: 20 }, (_, i) => String(i + 1)), 'every event before the answer');
  t.equal(result(progress).header.revision, last, 'the answer is the current revision');
  t.notOk(result(progress).events, 'a progress answer carries no events');
});

t.test('lease keepalive stream: one result per request line, as etcd answers', async (t) => {
  const id = (await v3('/v3/lease/grant', { TTL: 20 })).body.ID;
  // Interactive: each line is answered while the body is still open.
  const s = openRaw(gw, 'POST /v3/lease/keepalive');
  t.teardown(() => s.close());
  s.send(`{"ID":${id}}\n`);
  const [first] = await s.waitChunks(1);
  t.same(result(first!).ID, id, 'ID as a string');
  t.equal(result(first!).TTL, '20');
  s.send(`{"ID":"${id}"}\n{"ID":"1"}\n`);
  const chunks = await s.waitChunks(3);
  t.equal(result(chunks[1]!).TTL, '20');
  t.notOk('TTL' in result(chunks[2]!), 'an unknown lease answers without TTL');
  for (const c of chunks) t.equal(c.indexOf('\n'), c.length - 1, 'one object and its newline per chunk');
  s.end();
  await s.ended;
  // etcd's own gateway answers a keep-alive body only once it has ended
  // (etcd#8237); the answers must match chunk for chunk.
  const theirs = openRaw(etcd, 'POST /v3/lease/keepalive');
  t.teardown(() => theirs.close());
  theirs.send(`{"ID":${id}}\n{"ID":"${id}"}\n{"ID":"1"}\n`);
  theirs.end();
  const expected = await theirs.waitChunks(3);
  t.same(chunks.map((c) => shape(JSON.parse(c))), expected.map((c) => shape(JSON.parse(c))));

  const bad = openRaw(gw, 'POST /v3/lease/keepalive');
  t.teardown(() => bad.close());
  bad.send('{"ID":"x"}\n');
  const [err] = await bad.waitChunks(1);
  t.equal(JSON.parse(err!).error.grpc_code, GrpcStatus.INVALID_ARGUMENT);
  await bad.ended;
});

t.test('snapshot stream: blob chunks that restore as etcd would write them', async (t) => {
  const s = openRaw(gw, 'POST /v3/maintenance/snapshot', { 'content-length': '0' });
  t.teardown(() => s.close());
  await s.ended;
  t.ok(s.chunks.length > 0);
  const results = s.chunks.map(result);
  const blob = Buffer.concat(results.map((r) => Buffer.from(r.blob ?? '', 'base64')));
  t.ok(blob.length > 1024, 'a database file came through');
  t.notOk('remaining_bytes' in results[results.length - 1], 'the last chunk has 0 remaining: omitted');
});

t.test('locks: /v3/lock/lock waits in line, /v3/lock/unlock lets the next in, as etcd v3lock does', async (t) => {
  const l1 = (await v3('/v3/lease/grant', { TTL: 30 })).body.ID as string;
  const l2 = (await v3('/v3/lease/grant', { TTL: 30 })).body.ID as string;
  const hex = (id: string) => BigInt(id).toString(16);
  const [first, theirs] = await same(t, '/v3/lock/lock', { name: b64('lk'), lease: l1 });
  t.equal(unb64(first.body.key), `lk/${hex(l1)}`);
  t.equal(unb64(theirs.body.key), `lk/${hex(l1)}`, "etcd's own lock names the same key");
  // The second waits until the first is unlocked.
  let second: Answer | undefined;
  const waiting = v3('/v3/lock/lock', { name: b64('lk'), lease: l2 }).then((a) => (second = a));
  await new Promise((r) => setTimeout(r, 300));
  t.equal(second, undefined, 'still waiting');
  t.match(await etcdctl('get', '--prefix', 'lk/', '--keys-only'), `lk/${hex(l2)}`, 'in line in etcd');
  const [unlocked] = await same(t, '/v3/lock/unlock', { key: first.body.key });
  t.same(Object.keys(unlocked.body), ['header']);
  await waiting;
  t.equal(unb64(second!.body.key), `lk/${hex(l2)}`);
  await v3('/v3/lock/unlock', { key: second!.body.key });
  t.equal(await etcdctl('get', '--prefix', 'lk/'), '');
  // Unlocking what is gone is not an error, in etcd either.
  const [again, ref] = await same(t, '/v3/lock/unlock', { key: first.body.key });
  t.equal(again.status, 200);
  t.same(Object.keys(ref.body), ['header']);

  // Without a lease the gateway grants one, and unlock revokes it.
  const own = await v3('/v3/lock/lock', { name: b64('lk2') });
  const ownHex = unb64(own.body.key).split('/')[1]!;
  t.match(await etcdctl('lease', 'list'), ownHex);
  await v3('/v3/lock/unlock', { key: own.body.key });
  t.notMatch(await etcdctl('lease', 'list'), ownHex);

  // A waiter that disconnects leaves nothing behind.
  const holder = await v3('/v3/lock/lock', { name: b64('lk3'), lease: l1 });
  const ac = new AbortController();
  const gone = fetch(`${gw}/v3/lock/lock`, { method: 'POST', body: JSON.stringify({ name: b64('lk3'), lease: l2 }), signal: ac.signal }).catch(() => 'aborted');
  await new Promise((r) => setTimeout(r, 300));
  t.match(await etcdctl('get', '--prefix', 'lk3/', '--keys-only'), `lk3/${hex(l2)}`);
  ac.abort();
  t.equal(await gone, 'aborted');
  for (let i = 0; i < 50 && (await etcdctl('get', '--prefix', 'lk3/', '--keys-only')).includes(hex(l2)); i++) await new Promise((r) => setTimeout(r, 100));
  t.notMatch(await etcdctl('get', '--prefix', 'lk3/', '--keys-only'), `lk3/${hex(l2)}`, 'the abandoned place in line is gone');
  await v3('/v3/lock/unlock', { key: holder.body.key });

  const bad = await v3('/v3/lock/lock', { name: Buffer.from([0xff, 0xfe]).toString('base64'), lease: l1 });
  t.equal(bad.status, 400);
  t.equal(bad.body.code, GrpcStatus.INVALID_ARGUMENT);
  const badLease = await v3('/v3/lock/lock', { name: b64('lk4'), lease: '12345' });
  t.equal(badLease.status, 404);
  t.same(badLease.body, { error: 'etcdserver: requested lease not found', message: 'etcdserver: requested lease not found', code: GrpcStatus.NOT_FOUND });
  const badCampaign = await v3('/v3/election/campaign', { name: b64('el4'), lease: '12345' });
  t.same(badCampaign.body, badLease.body);
  await v3('/v3/lease/revoke', { ID: l1 });
  await v3('/v3/lease/revoke', { ID: l2 });
});

t.test('elections: campaign, leader, proclaim, resign, as etcd v3election answers them', async (t) => {
  const l1 = (await v3('/v3/lease/grant', { TTL: 30 })).body.ID as string;
  const l2 = (await v3('/v3/lease/grant', { TTL: 30 })).body.ID as string;
  const noLeader = await same(t, '/v3/election/leader', { name: b64('el-none') });
  t.same(noLeader[0].body, noLeader[1].body, noLeader[1].text);

  const [won, theirs] = await same(t, '/v3/election/campaign', { name: b64('el'), lease: l1, value: b64('one') });
  t.same(won.body.leader.name, b64('el'));
  t.equal(unb64(won.body.leader.key), `el/${BigInt(l1).toString(16)}`);
  t.equal(won.body.leader.lease, l1);
  t.same(theirs.body.leader.key, won.body.leader.key, "etcd's own campaign names the same key: it already leads");

  const [leader] = await same(t, '/v3/election/leader', { name: b64('el') });
  t.equal(unb64(leader.body.kv.value), 'one');
  t.equal(leader.body.kv.lease, l1);

  const proclaimed = await v3('/v3/election/proclaim', { leader: won.body.leader, value: b64('two') });
  t.equal(proclaimed.status, 200, proclaimed.text);
  t.equal(await etcdctl('get', unb64(won.body.leader.key), '--print-value-only'), 'two\n');

  // A second candidate waits; proclaiming as it is refused as etcd refuses it.
  let second: Answer | undefined;
  const waiting = v3('/v3/election/campaign', { name: b64('el'), lease: l2, value: b64('next') }).then((a) => (second = a));
  await new Promise((r) => setTimeout(r, 300));
  t.equal(second, undefined, 'still campaigning');
  const fake = { name: b64('el'), key: b64(`el/${BigInt(l2).toString(16)}`), rev: won.body.leader.rev, lease: l2 };
  const [notLeader, ref] = await same(t, '/v3/election/proclaim', { leader: fake, value: b64('x') });
  t.same(notLeader.body, ref.body, ref.text);

  const resigned = await v3('/v3/election/resign', { leader: won.body.leader });
  t.equal(resigned.status, 200, resigned.text);
  await waiting;
  t.equal(unb64(second!.body.leader.key), `el/${BigInt(l2).toString(16)}`);
  const now = await v3('/v3/election/leader', { name: b64('el') });
  t.equal(unb64(now.body.kv.value), 'next');
  await v3('/v3/election/resign', { leader: second!.body.leader });
  const bad = await v3('/v3/election/campaign', { name: Buffer.from([0xff]).toString('base64'), lease: l1 });
  t.equal(bad.body.code, GrpcStatus.INVALID_ARGUMENT);
  await v3('/v3/lease/revoke', { ID: l1 });
  await v3('/v3/lease/revoke', { ID: l2 });
});

// OpenStack's etcd3gw (Debian python3-etcd3gw), unchanged, against the gateway.
const PY = '/usr/bin/python3';
const ETCD3GW_SCRIPT = String.raw`
import json, sys, threading, time
import etcd3gw
from etcd3gw.client import Etcd3Client
import etcd3gw.utils
from etcd3gw.lock import Lock
port = int(sys.argv[1])
c = Etcd3Client(host='127.0.0.1', port=port, api_path='/v3/')
out = {}
out['put'] = c.put('py/a', 'one')
c.put('py/b', 'two')
out['get'] = c.get('py/a')
out['get_meta'] = [m['version'] for (_, m) in c.get('py/a', metadata=True)]
out['prefix'] = sorted(c.get_prefix('py/'), key=lambda x: x[1]['key'])[0][0]
out['replace_ok'] = c.replace('py/a', 'one', 'uno')
out['replace_bad'] = c.replace('py/a', 'one', 'nope')
out['txn'] = c.transaction({'compare': [], 'success': [{'request_put': {'key': etcd3gw.utils._encode('py/txn'), 'value': etcd3gw.utils._encode('t')}}], 'failure': []}).get('succeeded', False)
out['delete'] = c.delete('py/b')
out['delete_missing'] = c.delete('py/missing')
lease = c.lease(ttl=30)
out['lease_ttl'] = lease.ttl()
out['lease_refresh'] = lease.refresh()
c.put('py/leased', 'x', lease=lease)
out['lease_keys'] = lease.keys()
out['lease_id'] = str(lease.id)
events = []
it, cancel = c.watch('py/w')
pit, pcancel = c.watch_prefix('py/p/')
def writer():
    time.sleep(0.5)
    c.put('py/w', 'w1')
    c.put('py/p/x', 'p1')
threading.Thread(target=writer).start()
for ev in it:
    events.append(ev['kv']['value']); break
for ev in pit:
    events.append(ev['kv']['key']); break
cancel(); pcancel()
out['watch'] = events
def later():
    time.sleep(0.5)
    c.put('py/once', 'o')
threading.Thread(target=later).start()
out['watch_once'] = c.watch_once('py/once', timeout=5)['kv']['value']
lk = Lock('py-lock', ttl=30, client=c)
out['lock'] = lk.acquire()
out['lock_held'] = lk.is_acquired()
out['lock_refresh'] = lk.refresh()
out['lock_release'] = lk.release()
out['status'] = 'version' in c.status()
out['members'] = len(c.members())
out['lease_revoke'] = lease.revoke()
print(json.dumps(out, default=lambda b: b.decode() if isinstance(b, bytes) else str(b)))
`;

interface WsStream {
  socket: WebSocket;
  protocol: string;
  messages: string[];
  waitMessages(n: number, timeoutMs?: number): Promise<string[]>;
  send(text: string): void;
  closed: Promise<number>;
}

/** A websocket to a /v3 path, as etcd's websocket proxy is used. */
function openWs(base: string, path: string, protocols?: string[]): Promise<WsStream> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(base.replace('http', 'ws') + path, protocols);
    const messages: string[] = [];
    const waiters: (() => void)[] = [];
    socket.on('message', (data) => {
      messages.push(data.toString());
      for (const w of waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
    const closed = new Promise<number>((r) => socket.on('close', (code) => (r(code), waiters.splice(0).forEach((w) => w()))));
    socket.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { statusCode: res.statusCode })));
    socket.once('open', () =>
      resolve({
        socket,
        protocol: socket.protocol,
        messages,
        closed,
        send: (text) => socket.send(text),
        async waitMessages(n, timeoutMs = 10_000) {
          const until = Date.now() + timeoutMs;
          while (messages.length < n) {
            if (Date.now() > until || socket.readyState === socket.CLOSED) throw new Error(`only ${messages.length} of ${n} messages: ${JSON.stringify(messages)}`);
            await new Promise<void>((r) => {
              const timer = setTimeout(r, until - Date.now());
              waiters.push(() => (clearTimeout(timer), r()));
            });
          }
          return messages;
        },
      }),
    );
  });
}

t.test('websockets on /v3 paths: the same lines as etcd, one per message', async (t) => {
  // Watch: each message a request, each answer a message.
  const ours = await openWs(gw, '/v3/watch');
  const theirs = await openWs(etcd, '/v3/watch');
  t.teardown(() => (ours.socket.terminate(), theirs.socket.terminate()));
  for (const s of [ours, theirs]) s.send(JSON.stringify({ create_request: { key: b64('ws/k') } }));
  await ours.waitMessages(1);
  await theirs.waitMessages(1);
  await etcdctl('put', 'ws/k', 'v1');
  const a = await ours.waitMessages(2);
  const b = await theirs.waitMessages(2);
  t.same(a.map((m) => shape(parseJson(m))), b.map((m) => shape(parseJson(m))), 'message for message the shapes of etcd');
  t.equal(unb64(result(a[1]!).events[0].kv.value), 'v1');
  ours.send(JSON.stringify({ cancel_request: { watch_id: 0 } }));
  t.equal(result((await ours.waitMessages(3))[2]!).canceled, true);

  // Lease keep-alive: interactive, as on HTTP.
  const id = (await v3('/v3/lease/grant', { TTL: 25 })).body.ID;
  const ka = await openWs(gw, '/v3/lease/keepalive');
  t.teardown(() => ka.socket.terminate());
  ka.send(JSON.stringify({ ID: id }));
  t.same(result((await ka.waitMessages(1))[0]!), { header: result((await ka.waitMessages(1))[0]!).header, ID: id, TTL: '25' });
  ka.send(JSON.stringify({ ID: id }));
  t.equal((await ka.waitMessages(2)).length, 2, 'a second answer for the second message');

  // A unary call: one request message, one answer message, then the socket closes.
  await etcdctl('put', 'ws/unary', 'u');
  const u = await openWs(gw, '/v3/kv/range');
  u.send(JSON.stringify({ key: b64('ws/unary') }));
  const [answer] = await u.waitMessages(1);
  t.equal(unb64(JSON.parse(answer!).kvs[0].value), 'u');
  t.equal(await u.closed, 1000);
  const bad = await openWs(gw, '/v3/kv/range');
  bad.send('{"key": 5}');
  const [refusal] = await bad.waitMessages(1);
  t.same(Object.keys(JSON.parse(refusal!)).sort(), ['code', 'error', 'message'], refusal);
  t.equal(JSON.parse(refusal!).code, GrpcStatus.INVALID_ARGUMENT);

  // A stream error mid-stream is grpc-gateway's error chunk, then the end.
  const broken = await openWs(gw, '/v3/watch');
  broken.send('{"create_request": {"key": "%%%"}}');
  const [chunk] = await broken.waitMessages(1);
  t.equal(JSON.parse(chunk!).error.grpc_code, GrpcStatus.INVALID_ARGUMENT);
  t.equal(await broken.closed, 1000);

  // A GET without an upgrade is told what the path takes.
  const plain = await fetch(`${gw}/v3/watch`);
  t.equal(plain.status, 405);
  t.equal(plain.headers.get('allow'), 'POST');
  t.equal((await plain.json()).code, GrpcStatus.UNIMPLEMENTED);
});

t.test('locks over a websocket: one answer once held; a socket closed while waiting leaves nothing behind', async (t) => {
  const l1 = (await v3('/v3/lease/grant', { TTL: 30 })).body.ID as string;
  const holder = await v3('/v3/lock/lock', { name: b64('lkws'), lease: l1 });
  const queued = await nextEvent(app.etcd, 'lkws/', 'put');
  const waiter = await openWs(gw, '/v3/lock/lock');
  waiter.send(JSON.stringify({ name: b64('lkws') }));
  const place = await queued.event;
  const removed = await nextEvent(app.etcd, 'lkws/', 'delete');
  waiter.socket.close();
  t.equal((await removed.event).key.toString(), place.key.toString(), 'its place in line is deleted when the socket closes');
  t.equal(await etcdctl('get', '--prefix', 'lkws/', '--keys-only'), `${unb64(holder.body.key)}\n\n`, 'only the holder is left');

  await v3('/v3/lock/unlock', { key: holder.body.key });
  const ws = await openWs(gw, '/v3/lock/lock');
  ws.send(JSON.stringify({ name: b64('lkws'), lease: l1 }));
  const [answer] = await ws.waitMessages(1);
  t.equal(unb64(JSON.parse(answer!).key), `lkws/${BigInt(l1).toString(16)}`);
  t.equal(await ws.closed, 1000);
  const unlock = await openWs(gw, '/v3/lock/unlock');
  unlock.send(JSON.stringify({ key: JSON.parse(answer!).key }));
  await unlock.waitMessages(1);
  t.equal(await etcdctl('get', '--prefix', 'lkws/'), '', 'unlocked over a websocket too');
});

t.test('election observe: the leader now and at each change, as etcd v3election streams it', async (t) => {
  const l1 = (await v3('/v3/lease/grant', { TTL: 30 })).body.ID as string;
  const l2 = (await v3('/v3/lease/grant', { TTL: 30 })).body.ID as string;
  const won = (await v3('/v3/election/campaign', { name: b64('obs'), lease: l1, value: b64('one') })).body.leader;
  const ours = openRaw(gw, 'POST /v3/election/observe');
  const theirs = openRaw(etcd, 'POST /v3/election/observe');
  t.teardown(() => (ours.close(), theirs.close()));
  for (const s of [ours, theirs]) (s.send(JSON.stringify({ name: b64('obs') })), s.end());
  await ours.waitChunks(1);
  await theirs.waitChunks(1);
  await v3('/v3/election/proclaim', { leader: won, value: b64('two') });
  await ours.waitChunks(2);
  await theirs.waitChunks(2);
  // A second candidate waits; when the first resigns it leads.
  const second = v3('/v3/election/campaign', { name: b64('obs'), lease: l2, value: b64('next') });
  await v3('/v3/election/resign', { leader: won });
  await second;
  const a = await ours.waitChunks(3);
  const b = await theirs.waitChunks(3);
  t.same(a.map((c) => shape(result(c))), b.map((c) => shape(result(c))), 'chunk for chunk the shapes of etcd');
  const values = (chunks: string[]) => chunks.map((c) => [unb64(result(c).kv.key), unb64(result(c).kv.value), result(c).kv.lease]);
  t.same(values(a), values(b), 'the same leaders and values as etcd streams');
  t.same(values(a).map((v) => v[1]), ['one', 'two', 'next']);

  // Over a websocket too; and an observe on a name without leader waits.
  const w = await openWs(gw, '/v3/election/observe');
  t.teardown(() => w.socket.terminate());
  w.send(JSON.stringify({ name: b64('obs-empty') }));
  const l3 = (await v3('/v3/lease/grant', { TTL: 30 })).body.ID as string;
  await v3('/v3/election/campaign', { name: b64('obs-empty'), lease: l3, value: b64('first') });
  const [first] = await w.waitMessages(1);
  t.equal(unb64(result(first!).kv.value), 'first');
});

t.test('a browser page of another origin cannot call /v3 (any Content-Type is accepted, so CORS would not ask)', async (t) => {
  const evil = await v3('/v3/kv/put', { key: b64('csrf/k'), value: b64('x') }, { origin: 'https://evil.example', 'content-type': 'text/plain' });
  t.equal(evil.status, 403);
  t.equal(evil.body.code, GrpcStatus.PERMISSION_DENIED);
  t.equal(await etcdctl('get', 'csrf/k', '--print-value-only'), '', 'nothing written');
  const own = await v3('/v3/kv/put', { key: b64('csrf/k'), value: b64('y') }, { origin: gw });
  t.equal(own.status, 200, 'the gateway\'s own origin may');
  const upgrade = await openWsWithOrigin('https://evil.example').then(
    () => 101,
    (err: { statusCode: number }) => err.statusCode,
  );
  t.equal(upgrade, 403, 'nor open a /v3 websocket');
});

function openWsWithOrigin(origin: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(gw.replace('http', 'ws') + '/v3/watch', { headers: { origin } });
    socket.on('error', () => undefined);
    socket.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { statusCode: res.statusCode })));
    socket.once('open', () => (socket.terminate(), resolve()));
  });
}

t.test('a shutdown ends every /v3 stream with an Unavailable error, so the gateway closes at once', async (t) => {
  const doomed = await buildApp({ config: testConfig(), endpoints: cluster.endpoints, logging: false });
  const base = await listen(doomed);
  const http = openRaw(base, 'POST /v3/watch');
  t.teardown(() => http.close());
  http.send(`${JSON.stringify({ create_request: { key: b64('bye/k') } })}\n`);
  await http.waitChunks(1);
  const ws = await openWs(base, '/v3/watch');
  t.teardown(() => ws.socket.terminate());
  ws.send(JSON.stringify({ create_request: { key: b64('bye/k') } }));
  await ws.waitMessages(1);
  const started = Date.now();
  await doomed.close();
  t.ok(Date.now() - started < 3000, `closed in ${Date.now() - started} ms with a client still sending its body`);
  await http.ended;
  t.equal(JSON.parse(http.chunks[1]!).error.grpc_code, GrpcStatus.UNAVAILABLE);
  t.equal(await ws.closed, 1001, 'going away');
  t.equal(JSON.parse(ws.messages[1]!).error.grpc_code, GrpcStatus.UNAVAILABLE);
});

t.test('python3-etcd3gw, an existing etcd JSON-gateway client, works unchanged', async (t) => {
  const { execFile } = await import('node:child_process');
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(PY, args, { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr })),
    );
  // ./scripts/test.sh installs it; a missing client is a failure, not a skip.
  const installed = await run(['-c', 'import etcd3gw']);
  t.equal(installed.code, 0, 'python3-etcd3gw is installed (./scripts/setup.sh --test installs it)');
  if (installed.code !== 0) return;
  const port = new URL(gw).port;
  const res = await run(['-c', ETCD3GW_SCRIPT, port]);
  t.equal(res.code, 0, res.stderr);
  const out = JSON.parse(res.stdout);
  t.equal(out.put, true);
  t.same(out.get, ['one']);
  t.same(out.get_meta, ['1']);
  t.equal(out.prefix, 'one');
  t.equal(out.replace_ok, true);
  t.equal(out.replace_bad, false);
  t.equal(out.txn, true);
  t.equal(out.delete, true);
  t.equal(out.delete_missing, false);
  t.ok(out.lease_ttl > 25 && out.lease_ttl <= 30, String(out.lease_ttl));
  t.ok(out.lease_refresh > 0 && out.lease_refresh <= 30);
  t.same(out.lease_keys, ['py/leased']);
  t.same(out.watch, ['w1', 'py/p/x']);
  t.equal(out.watch_once, 'o');
  t.equal(out.lock, true);
  t.equal(out.lock_held, true);
  t.ok(Number(out.lock_refresh) > 0);
  t.equal(out.lock_release, true);
  t.equal(out.status, true);
  t.equal(out.members, 3);
  t.equal(out.lease_revoke, true);
  // Every result, checked in etcd.
  t.equal(await etcdctl('get', 'py/a', '--print-value-only'), 'uno\n');
  t.equal(await etcdctl('get', 'py/b'), '');
  t.equal(await etcdctl('get', 'py/txn', '--print-value-only'), 't\n');
  t.equal(await etcdctl('get', 'py/w', '--print-value-only'), 'w1\n');
  t.equal(await etcdctl('get', 'py/leased'), '', 'revoking the lease deleted its key');
  t.notMatch(await etcdctl('lease', 'list'), BigInt(out.lease_id).toString(16));
  t.equal(await etcdctl('get', '--prefix', 'py-lock'), '', 'the lock key is gone after release');
});

// Last: turns etcd authentication on for the rest of this cluster's life.
t.test('with authentication on: the caller is the etcd user, refusals are etcd error bodies', async (t) => {
  const SECRET = 'v3-test-secret-that-is-at-least-32-characters';
  await etcdctl('put', '/app/x', 'mine');
  await etcdctl('put', '/other', 'theirs');
  await enableEtcdAuth(etcdctl, [{ user: 'alice', password: 'alicepw', role: 'app-rw', prefix: '/app/' }]);
  const authed = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET }));
  const base = await listen(authed);
  const jwt = authed.jwt.sign({ sub: 'alice' });
  const bearer = { authorization: `Bearer ${jwt}` };
  // etcd's own token for alice, for etcd's built-in gateway.
  const etcdToken = (await builtin('/v3/auth/authenticate', { name: 'alice', password: 'alicepw' })).body.token as string;
  t.ok(etcdToken);

  const mine = await post(base, '/v3/kv/range', { key: b64('/app/x') }, bearer);
  t.equal(unb64(mine.body.kvs[0].value), 'mine');

  const none = await post(base, '/v3/kv/range', { key: b64('/app/x') });
  t.equal(none.status, 401);
  t.same(Object.keys(none.body).sort(), ['code', 'error', 'message']);
  t.equal(none.body.code, GrpcStatus.UNAUTHENTICATED);

  const denied = await post(base, '/v3/kv/range', { key: b64('/other') }, bearer);
  const theirs = await builtin('/v3/kv/range', { key: b64('/other') }, { authorization: etcdToken });
  t.equal(denied.status, theirs.status);
  t.same(denied.body, theirs.body, 'the same refusal as etcd gives alice');
  t.equal(denied.body.code, GrpcStatus.PERMISSION_DENIED);

  // A watch on a range alice may not read: created and canceled at once, as etcd does.
  const body = `${JSON.stringify({ create_request: { key: b64('/other') } })}\n`;
  const ours = openRaw(base, 'POST /v3/watch', { 'transfer-encoding': 'chunked', ...bearer });
  const ref = openRaw(etcd, 'POST /v3/watch', { 'transfer-encoding': 'chunked', authorization: etcdToken });
  t.teardown(() => (ours.close(), ref.close()));
  for (const s of [ours, ref]) (s.send(body), s.end());
  const [refused] = await ours.waitChunks(1);
  const [expected] = await ref.waitChunks(1);
  const a = result(refused!);
  const b = result(expected!);
  t.same(shape(a), shape(b));
  delete a.header;
  delete b.header;
  t.same(a, b, JSON.stringify(b));

  // An allowed watch joins the shared hub and sees alice's writes.
  const w = openRaw(base, 'POST /v3/watch', { 'transfer-encoding': 'chunked', ...bearer });
  t.teardown(() => w.close());
  w.send(`${JSON.stringify({ create_request: { key: b64('/app/'), range_end: b64('/app0') } })}\n`);
  await w.waitChunks(1);
  t.equal((await post(base, '/v3/kv/put', { key: b64('/app/y'), value: b64('1') }, bearer)).status, 200);
  const [, ev] = await w.waitChunks(2);
  t.equal(unb64(result(ev!).events[0].kv.key), '/app/y');
  t.equal(await etcdctl('--user=root:rootpw', 'get', '/app/y', '--print-value-only'), '1\n');

  // /v3/auth/authenticate needs no token and answers a gateway token for the
  // user etcd checked, which later calls send as etcd clients send etcd's.
  const login = await post(base, '/v3/auth/authenticate', { name: 'alice', password: 'alicepw' });
  t.equal(login.status, 200, login.text);
  t.same(shape(login.body), shape((await builtin('/v3/auth/authenticate', { name: 'alice', password: 'alicepw' })).body));
  t.equal(authed.jwt.verify<{ sub: string }>(login.body.token).sub, 'alice', 'a gateway JWT for alice');
  const withIt = await post(base, '/v3/kv/range', { key: b64('/app/x') }, { authorization: login.body.token });
  t.equal(unb64(withIt.body.kvs[0].value), 'mine');
  const wrong = await post(base, '/v3/auth/authenticate', { name: 'alice', password: 'nope' });
  const wrongThere = await builtin('/v3/auth/authenticate', { name: 'alice', password: 'nope' });
  t.equal(wrong.status, wrongThere.status);
  t.same(wrong.body, wrongThere.body, "etcd's refusal");
  const rootLogin = await post(base, '/v3/auth/authenticate', { name: 'root', password: 'rootpw' });
  t.equal(rootLogin.status, wrongThere.status, "no token for root unless AUTH_ALLOW_ROOT: a wrong password's answer, whatever the password");
  t.same(rootLogin.body, wrongThere.body);
  t.equal((await fetch(`${base}/version`)).status, 200, 'GET /version needs no token, as on etcd');

  // A websocket takes the token as etcd's proxy does: subprotocols "Bearer, <token>".
  const ws = await openWs(base, '/v3/watch', ['Bearer', jwt]);
  t.teardown(() => ws.socket.terminate());
  t.equal(ws.protocol, 'Bearer', 'answered "Bearer", never the token');
  ws.send(JSON.stringify({ create_request: { key: b64('/app/ws') } }));
  await ws.waitMessages(1);
  await post(base, '/v3/kv/put', { key: b64('/app/ws'), value: b64('1') }, bearer);
  t.equal(unb64(result((await ws.waitMessages(2))[1]!).events[0].kv.key), '/app/ws');
  const anonymous = await openWs(base, '/v3/watch').then(
    () => 101,
    (err: { statusCode: number }) => err.statusCode,
  );
  t.equal(anonymous, 401, 'no token, no upgrade');

  // A stream ends when the token that opened it expires.
  const short = authed.jwt.sign({ sub: 'alice' }, { expiresIn: 2 });
  const expiring = openRaw(base, 'POST /v3/watch', { 'transfer-encoding': 'chunked', authorization: short });
  t.teardown(() => expiring.close());
  expiring.send(`${JSON.stringify({ create_request: { key: b64('/app/exp') } })}\n`);
  await expiring.waitChunks(1);
  await expiring.waitChunks(2, 10_000);
  await expiring.ended;
  t.equal(JSON.parse(expiring.chunks[1]!).error.grpc_code, GrpcStatus.UNAUTHENTICATED, 'an error chunk, then the end');

  // A caller who loses the permission: the open watch is canceled as etcd cancels a refused one.
  const revoked = openRaw(base, 'POST /v3/watch', { 'transfer-encoding': 'chunked', ...bearer });
  t.teardown(() => revoked.close());
  revoked.send(`${JSON.stringify({ create_request: { key: b64('/app/'), range_end: b64('/app0') } })}\n`);
  await revoked.waitChunks(1);
  await etcdctl('--user=root:rootpw', 'user', 'revoke-role', 'alice', 'app-rw');
  const canceled = await revoked.waitFor((c) => Boolean(JSON.parse(c).result?.canceled), 'the watch canceled after the revocation', 15_000);
  t.match(result(canceled).cancel_reason, /PermissionDenied/);
  await etcdctl('--user=root:rootpw', 'user', 'grant-role', 'alice', 'app-rw');
});
