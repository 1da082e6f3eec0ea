// etcd's own /v3 JSON protocol through the gateway, against a real 3-member
// cluster: the unary calls (src/v3/unary.ts) and their errors
// (src/v3/errors.ts): the examples of etcd's grpc-gateway guide, the
// protocol's traps (lease IDs above 2^53, no Content-Type, omitted zero
// values), locks and elections, a browser of another origin, an existing
// client, and the same requests sent to etcd's own built-in gateway on a
// member's client URL where the shapes must match.
import { status as GrpcStatus, Metadata } from '@grpc/grpc-js';
import { WebSocket } from 'ws';
import t from 'tap';
import { v3ErrorOf } from '../src/v3/errors.js';
import { JsonSplitter } from '../src/v3/streams.js';
import { b64, rawRequest, shape, unb64, v3Setup, type Answer } from './helpers/v3.js';

const { cluster, app, gw, etcd, etcdctl, v3, builtin, same } = await v3Setup(t);

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
  const none = await rawRequest(gw, 'POST /v3/kv/put', JSON.stringify({ key: b64('ct/none'), value: b64('2') }), { 'content-length': 'auto' });
  t.match(none.head, /^HTTP\/1\.1 200/);
  t.notMatch(none.head, /content-type: application\/problem/i);
  t.equal(await etcdctl('get', 'ct/none', '--print-value-only'), '2\n');
  const empty = await rawRequest(gw, 'POST /v3/maintenance/status', '', { 'content-length': 'auto' });
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
