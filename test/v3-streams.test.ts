// etcd's own /v3 JSON protocol through the gateway, against a real 3-member
// cluster: the streams (src/v3/watch.ts, observe.ts, relay.ts over
// streams.ts): chunk framing, watches, keep-alive, snapshot, websockets,
// shutdown, and authentication, compared with etcd's own built-in gateway on
// a member's client URL where the shapes must match.
import { status as GrpcStatus } from '@grpc/grpc-js';
import t from 'tap';
import { buildApp } from '../src/app.js';
import { parseJson } from '../src/v3/protojson.js';
import { buildTestApp, listen, testConfig } from './helpers/app.js';
import { enableEtcdAuth, gatewayAuthConfig } from './helpers/etcd-auth.js';
import { nextEvent } from './helpers/etcd-waits.js';
import { b64, openRaw, openWs, post, result, shape, unb64, v3Setup } from './helpers/v3.js';

const { cluster, app, gw, etcd, etcdctl, v3, builtin, same } = await v3Setup(t);

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
