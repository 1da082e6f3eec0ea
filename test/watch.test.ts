// Watches over a real port with real websocket and SSE clients, against a
// real 3-member etcd cluster; etcd's own history is the reference.
import t from 'tap';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { SseClient, WsClient, type Message } from './helpers/clients.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints, { WATCH_HEARTBEAT_MS: 300 });
const base = await listen(app);
const wsUrl = `${base.replace('http', 'ws')}/v1/watch`;

const put = async (key: string, value: string) => {
  const res = await fetch(`${base}/v1/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: value });
  if (res.status >= 300) throw new Error(`PUT ${key}: ${res.status} ${await res.text()}`);
  return (await res.json()).revision as number;
};
const del = async (key: string, query = '') => (await (await fetch(`${base}/v1/kv/${encodeURIComponent(key)}${query}`, { method: 'DELETE' })).json()).revision as number;
const ws = async () => {
  const c = await WsClient.connect(wsUrl);
  t.teardown(() => c.close());
  return c;
};
const summary = (events: Message[]) => events.map((e) => `${e.type} ${e.kv.key}${e.kv.value !== undefined ? `=${e.kv.value}` : ''}`);

t.test('the seed walkthrough: watch /test, and /test --prefix', async (t) => {
  const c = await ws();
  c.send({ type: 'subscribe', id: 'plain', key: '/test' });
  c.send({ type: 'subscribe', id: 'prefix', key: '/test', prefix: true });
  const created = await c.next((m) => m.type === 'created' && m.id === 'plain');
  await c.next((m) => m.type === 'created' && m.id === 'prefix');
  t.type(created.start_revision, 'number');

  const r1 = await put('/test', 'base');
  const r2 = await put('/test/key1', 'Hello world');
  const r3 = await del('/test');
  await c.next((m) => m.id === 'prefix' && m.revision === r3, 'the delete on the prefix watch');
  await c.next((m) => m.id === 'plain' && m.revision === r3, 'the delete on the plain watch');

  t.same(c.of('plain', 'events').map((m) => [m.revision, summary(m.events)]), [
    [r1, ['put /test=base']],
    [r3, ['delete /test']],
  ]);
  t.same(c.of('prefix', 'events').map((m) => [m.revision, summary(m.events)]), [
    [r1, ['put /test=base']],
    [r2, ['put /test/key1=Hello world']],
    [r3, ['delete /test']],
  ]);
  const del1 = c.of('plain', 'events')[1].events[0];
  t.equal(del1.kv.mod_revision, r3, 'a delete event carries its revision');

  c.send({ type: 'unsubscribe', id: 'plain' });
  await c.next((m) => m.type === 'canceled' && m.id === 'plain');
  const r4 = await put('/test', 'again');
  await c.next((m) => m.id === 'prefix' && m.revision === r4);
  t.equal(c.of('plain', 'events').length, 2, 'nothing after unsubscribe');
});

t.test('a multi-key txn arrives as one message; prev_kv and filters', async (t) => {
  await put('/txnw/a', 'old-a');
  const c = await ws();
  c.send({ type: 'subscribe', id: 'all', key: '/txnw/', prefix: true, prev_kv: true });
  c.send({ type: 'subscribe', id: 'noput', key: '/txnw/', prefix: true, filters: ['noput'] });
  c.send({ type: 'subscribe', id: 'nodelete', key: '/txnw/', prefix: true, filters: ['nodelete'] });
  for (const id of ['all', 'noput', 'nodelete']) await c.next((m) => m.type === 'created' && m.id === id);
  const txn = await fetch(`${base}/v1/txn`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ success: [{ put: { key: '/txnw/a', value: 'new-a' } }, { put: { key: '/txnw/b', value: 'b' } }, { delete: { key: '/txnw/c' } }] }),
  });
  const rev = (await txn.json()).revision;
  const rDel = await del('/txnw/a');
  await c.next((m) => m.id === 'all' && m.revision === rDel);
  await c.next((m) => m.id === 'noput' && m.revision === rDel);
  const all = c.of('all', 'events');
  t.equal(all[0].revision, rev);
  t.same(summary(all[0].events), ['put /txnw/a=new-a', 'put /txnw/b=b'], 'both puts of the txn in one message');
  t.equal(all[0].events[0].prev_kv.value, 'old-a');
  t.equal(all[1].events[0].prev_kv.value, 'new-a', 'a delete carries the deleted pair with prev_kv');
  t.same(c.of('noput', 'events').map((m) => summary(m.events)), [['delete /txnw/a']]);
  await put('/txnw/z', 'marker');
  await c.next((m) => m.id === 'nodelete' && m.type === 'events' && m.events.some((e: Message) => e.kv.key === '/txnw/z'));
  t.same(c.of('nodelete', 'events').map((m) => summary(m.events)), [['put /txnw/a=new-a', 'put /txnw/b=b'], ['put /txnw/z=marker']]);
});

t.test('resume by start_revision: nothing missed, nothing repeated', async (t) => {
  const revs: number[] = [];
  for (let i = 0; i < 5; i++) revs.push(await put(`/resume/k${i}`, `v${i}`));
  const c = await ws();
  c.send({ type: 'subscribe', id: 'r', key: '/resume/', prefix: true, start_revision: revs[2] });
  const created = await c.next((m) => m.type === 'created');
  t.equal(created.start_revision, revs[2]);
  await c.next((m) => m.type === 'events' && m.revision === revs[4]);
  t.same(c.of('r', 'events').map((m) => m.revision), revs.slice(2));
  // A second client joins the now-shared watch further back: replayed from the buffer.
  const d = await ws();
  d.send({ type: 'subscribe', id: 'r', key: '/resume/', prefix: true, start_revision: revs[0] });
  await d.next((m) => m.type === 'events' && m.revision === revs[4]);
  t.same(d.of('r', 'events').map((m) => m.revision), revs);
  const r6 = await put('/resume/k5', 'v5');
  await c.next((m) => m.revision === r6);
  await d.next((m) => m.revision === r6);
  t.same(c.of('r', 'events').map((m) => m.revision), [...revs.slice(2), r6], 'the first client saw each revision once');
});

t.test('a future start revision waits; a compacted one is an error with compact_revision', async (t) => {
  const now = await put('/future/x', '0');
  const c = await ws();
  c.send({ type: 'subscribe', id: 'f', key: '/future/', prefix: true, start_revision: now + 3 });
  t.equal((await c.next((m) => m.type === 'created')).start_revision, now + 3);
  await put('/future/x', '1');
  await put('/future/x', '2');
  const r3 = await put('/future/x', '3');
  await c.next((m) => m.revision === r3);
  t.same(c.of('f', 'events').map((m) => m.revision), [r3], 'events before the start revision are not sent');

  const old = await put('/compacted/x', 'a');
  const latest = await put('/compacted/x', 'b');
  await cluster.etcdctl('compaction', String(latest));
  c.send({ type: 'subscribe', id: 'old', key: '/compacted/', prefix: true, start_revision: old });
  const err = await c.next((m) => m.type === 'error' && m.id === 'old');
  t.equal(err.status, 410);
  t.equal(err.code, 'revision_compacted');
  t.equal(err.compact_revision, latest);

  const sse = await SseClient.open(`${base}/v1/watch//compacted/?prefix&start_revision=${old}`);
  await sse.ended;
  t.equal(sse.response.statusCode, 410, 'SSE answers a plain 410 so EventSource does not retry');
  t.equal(JSON.parse(sse.body!).compact_revision, latest);
  const lp = await fetch(`${base}/v1/kv//compacted/?wait&prefix&start_revision=${old}`);
  t.equal(lp.status, 410);
  t.equal((await lp.json()).compact_revision, latest);
});

t.test('SSE: events with revision ids, Last-Event-ID resumes exactly, heartbeats', async (t) => {
  const sse = await SseClient.open(`${base}/v1/watch//sse/?prefix`);
  t.equal(sse.response.statusCode, 200);
  t.match(sse.response.headers['content-type'], /^text\/event-stream/);
  await sse.next((e) => e.event === 'created');
  const r1 = await put('/sse/a', '1');
  const r2 = await put('/sse/b', '2');
  await sse.next((e) => e.id === String(r2));
  sse.close();
  const r3 = await put('/sse/c', '3');
  const r4 = await del('/sse/a');
  await sse.next((e) => 'comment' in e || true, 'nothing', 10).catch(() => undefined);
  t.equal(sse.lastEventId, String(r2));
  const again = await SseClient.open(`${base}/v1/watch//sse/?prefix`, { 'last-event-id': sse.lastEventId! });
  t.teardown(() => again.close());
  await again.next((e) => e.id === String(r4));
  const ids = [...sse.events(), ...again.events()].filter((e) => e.event === 'message').map((e) => Number(e.id));
  t.same(ids, [r1, r2, r3, r4], 'no loss and no duplicate across the reconnect');
  const data = JSON.parse(again.events().find((e) => e.id === String(r3))!.data);
  t.same(data, { revision: r3, events: [{ type: 'put', kv: { key: '/sse/c', value: '3', create_revision: r3, mod_revision: r3, version: 1, lease: null } }] });
  await again.inbox.wait((e) => 'comment' in e && e.comment === 'heartbeat', 5000, 'a heartbeat comment');
  const bad = await fetch(`${base}/v1/watch//sse/?prefix`, { headers: { 'last-event-id': 'yesterday' } });
  t.equal(bad.status, 400);
});

t.test('initial state, then synced, then live events', async (t) => {
  await put('/init/a', '1');
  await put('/init/b', '2');
  const c = await ws();
  c.send({ type: 'subscribe', id: 'i', key: '/init/', prefix: true, initial: true });
  const synced = await c.next((m) => m.type === 'synced');
  const initial = c.of('i', 'events');
  t.equal(initial.length, 1);
  t.equal(initial[0].initial, true);
  t.same(summary(initial[0].events), ['put /init/a=1', 'put /init/b=2']);
  t.equal((c.of('i', 'created')[0]).start_revision, synced.revision + 1);
  const r = await put('/init/c', '3');
  const live = await c.next((m) => m.type === 'events' && m.revision === r);
  t.notOk(live.initial);
  const order = c.inbox.items.filter((m) => m.id === 'i').map((m) => m.type);
  t.same(order, ['created', 'events', 'synced', 'events']);
  c.send({ type: 'subscribe', id: 'j', key: '/init/', prefix: true, initial: true, start_revision: 5 });
  t.equal((await c.next((m) => m.type === 'error' && m.id === 'j')).code, 'invalid_option');
  // Keys in base64 are validated as everywhere else (Node would skip bad characters and watch another key).
  c.send({ type: 'subscribe', id: 'b64', key_base64: 'L2luaXQv!!' });
  t.equal((await c.next((m) => m.type === 'error' && m.id === 'b64')).code, 'invalid_base64');
  c.send({ type: 'subscribe', id: 'both', key: '/init/', key_base64: 'L2luaXQv' });
  t.equal((await c.next((m) => m.type === 'error' && m.id === 'both')).code, 'invalid_option');

  const sse = await SseClient.open(`${base}/v1/watch//init/?prefix&initial`);
  t.teardown(() => sse.close());
  await sse.next((e) => e.event === 'synced');
  t.same(JSON.parse(sse.events().find((e) => e.event === 'initial')!.data).events.length, 3);
});

t.test('50 subscribers on one prefix share one etcd watch', async (t) => {
  const before = (await (await fetch(`${base}/readyz`)).json()).watch.etcd_watches;
  const clients: WsClient[] = [];
  for (let i = 0; i < 10; i++) clients.push(await ws());
  for (const [i, c] of clients.entries()) for (let j = 0; j < 5; j++) c.send({ type: 'subscribe', id: `s${i}-${j}`, key: '/fanout/', prefix: true });
  for (const c of clients) for (let j = 0; j < 5; j++) await c.next((m) => m.type === 'created' && m.id.endsWith(`-${j}`));
  const ready = (await (await fetch(`${base}/readyz`)).json()).watch;
  t.equal(ready.etcd_watches - before, 1, 'one etcd watch for 50 subscribers');
  t.ok(ready.subscribers >= 50);
  const r = await put('/fanout/x', 'y');
  for (const c of clients) for (let j = 0; j < 5; j++) await c.next((m) => m.revision === r && m.id.endsWith(`-${j}`));
  t.pass('every subscriber received the event');
  for (const c of clients) c.close();
  await Promise.all(clients.map((c) => c.closed));
  const after = (await (await fetch(`${base}/readyz`)).json()).watch.etcd_watches;
  t.equal(after, before, 'the etcd watch is canceled when its last subscriber leaves');
});

t.test('protocol errors and limits', async (t) => {
  const limited = await buildTestApp(t, cluster.endpoints, { WATCH_MAX_SUBSCRIPTIONS: 2, WATCH_MAX_MESSAGE_BYTES: 1024, CORS_ORIGINS: 'https://console.example' });
  const url = `${(await listen(limited)).replace('http', 'ws')}/v1/watch`;
  const c = await WsClient.connect(url);
  t.teardown(() => c.close());
  c.send('not json');
  t.equal((await c.next((m) => m.type === 'error')).code, 'invalid_message');
  c.send({ type: 'subscribe', id: 'x', key: '/p', start_revision: 0 });
  const bad = await c.next((m) => m.type === 'error' && m.id === 'x');
  t.equal(bad.code, 'invalid_message');
  t.match(bad.message, /start_revision/);
  c.send({ type: 'subscribe', id: 'a', key: '/p' });
  c.send({ type: 'subscribe', id: 'a', key: '/q' });
  t.equal((await c.next((m) => m.type === 'error' && m.id === 'a')).code, 'duplicate_id');
  c.send({ type: 'subscribe', id: 'b', key: '/p' });
  c.send({ type: 'subscribe', id: 'c', key: '/p' });
  t.equal((await c.next((m) => m.type === 'error' && m.id === 'c')).code, 'too_many_subscriptions');
  c.send({ type: 'unsubscribe', id: 'nope' });
  t.equal((await c.next((m) => m.type === 'error' && m.id === 'nope')).code, 'unknown_subscription');
  c.send({ type: 'unsubscribe', id: 'b' });
  await c.next((m) => m.type === 'canceled' && m.id === 'b');
  c.send({ type: 'subscribe', id: 'r1', key: '/p', prefix: true, range_end: '/q' });
  t.equal((await c.next((m) => m.type === 'error' && m.id === 'r1')).code, 'conflicting_range');
  c.send({ type: 'keepalive', lease: '0123456789abcdef' });
  t.equal((await c.next((m) => m.type === 'error' && m.lease === '0123456789abcdef')).code, 'lease_not_found');
  c.send(JSON.stringify({ type: 'subscribe', id: 'big', key: 'x'.repeat(2000) }));
  t.equal((await c.closed).code, 1009, 'a message over WATCH_MAX_MESSAGE_BYTES closes the socket');

  const plain = await fetch(url.replace('ws', 'http'));
  t.equal(plain.status, 426, 'a plain GET is told to upgrade');
  t.equal(plain.headers.get('upgrade'), 'websocket');
  t.equal((await plain.json()).code, 'upgrade_required');
  const refused = await WsClient.connect(url, { origin: 'https://evil.example' }).catch((err) => err);
  t.equal(refused.statusCode, 403, 'foreign origin refused');
  const ok = await WsClient.connect(url, { origin: 'https://console.example' });
  ok.close();
  const same = await WsClient.connect(url, { origin: url.replace('ws', 'http').replace('/v1/watch', '') });
  same.close();
  t.pass('configured and same origins accepted');
});

t.test('lease keep-alive over the websocket', async (t) => {
  const grant = await (await fetch(`${base}/v1/leases`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ttl: 30 }) })).json();
  const c = await ws();
  c.send({ type: 'keepalive', lease: grant.id });
  const ka = await c.next((m) => m.type === 'keepalive');
  t.equal(ka.lease, grant.id);
  t.equal(ka.ttl, 30);
});

t.test('long-poll: next change, timeout with a continuation, history, bad input', async (t) => {
  const start = await put('/lp/seed', 'x');
  const subscribers = async () => (await (await fetch(`${base}/readyz`)).json()).watch.subscribers as number;
  const before = await subscribers();
  const pending = fetch(`${base}/v1/kv//lp/?wait&prefix`);
  // The poll is registered once the hub counts one more subscriber (bounded polling of /readyz).
  for (let i = 0; (await subscribers()) <= before; i++) {
    if (i > 200) throw new Error('the long-poll never subscribed');
    await new Promise((r) => setTimeout(r, 20));
  }
  const r = await put('/lp/k', 'v');
  const res = await (await pending).json();
  t.equal(res.revision, r);
  t.same(summary(res.events), ['put /lp/k=v']);
  t.equal(res.next_start_revision, r + 1);

  const empty = await (await fetch(`${base}/v1/kv//lp/?wait&prefix&timeout=1&start_revision=${r + 1}`)).json();
  t.same(empty.events, []);
  t.equal(empty.next_start_revision, r + 1, 'a timeout says where to continue');

  const history = await (await fetch(`${base}/v1/kv//lp/?wait&prefix&start_revision=${start}`)).json();
  t.same(summary(history.events), ['put /lp/seed=x', 'put /lp/k=v'], 'past changes come at once');

  for (const q of ['wait&limit=2', 'wait&timeout=100000', 'start_revision=3', 'wait&cursor=x']) {
    const bad = await fetch(`${base}/v1/kv//lp/k?${q}`);
    t.equal(bad.status, 400, q);
  }
});

t.test('a subscriber that stops reading is cut off with its resume revision; others keep receiving', async (t) => {
  const small = await buildTestApp(t, cluster.endpoints, { WATCH_MAX_BUFFERED_BYTES: 64 * 1024 });
  const url = `${(await listen(small)).replace('http', 'ws')}/v1/watch`;
  const slow = await WsClient.connect(url);
  const fast = await WsClient.connect(url);
  t.teardown(() => (slow.close(), fast.close()));
  slow.send({ type: 'subscribe', id: 's', key: '/slow/', prefix: true });
  fast.send({ type: 'subscribe', id: 'f', key: '/slow/', prefix: true });
  await slow.next((m) => m.type === 'created');
  await fast.next((m) => m.type === 'created');
  // Stop reading on the slow client's TCP socket, then write until the
  // gateway has dropped it (loopback kernel buffers absorb a few MB first).
  (slow.socket as unknown as { _socket: { pause(): void } })._socket.pause();
  const big = 'v'.repeat(100 * 1024);
  const subscribers = async () => (await small.inject({ url: '/readyz' })).json().watch.subscribers as number;
  let last = 0;
  let writes = 0;
  while ((await subscribers()) > 1) {
    if (writes === 400) throw new Error('the slow client was never cut off');
    last = await put(`/slow/k${writes++ % 4}`, big);
  }
  t.ok(writes < 400, `cut off after ${writes} writes of 100 KiB`);
  await fast.next((m) => m.revision === last, 'the last write on the fast client', 20_000);
  t.equal(fast.of('f', 'events').length, writes, 'the fast client received everything');
  (slow.socket as unknown as { _socket: { resume(): void } })._socket.resume();
  const closed = await slow.closed;
  t.equal(closed.code, 4008, 'closed as a slow consumer');
  const err = slow.inbox.items.find((m) => m.code === 'slow_consumer');
  t.ok(err, 'told why');
  const received = slow.of('s', 'events');
  const expectResume = received.length ? received[received.length - 1].revision + 1 : slow.of('s', 'created')[0].start_revision;
  t.equal(err!.resume.s, expectResume, 'the resume revision follows the last event it received');
});

t.test('shutdown: every socket is told where to resume, then closed with 1001', async (t) => {
  const own = await buildTestApp(t, cluster.endpoints);
  const url = `${(await listen(own)).replace('http', 'ws')}/v1/watch`;
  const c = await WsClient.connect(url);
  c.send({ type: 'subscribe', id: 'z', key: '/shutdown/', prefix: true });
  const created = await c.next((m) => m.type === 'created');
  const r = await put('/shutdown/a', '1');
  await c.next((m) => m.revision === r);
  await own.close();
  const msg = await c.next((m) => m.type === 'shutdown');
  t.same(msg.resume, { z: r + 1 });
  t.ok(created);
  t.equal((await c.closed).code, 1001);
});

t.test('CORS: explicit origins only, etcd headers exposed, preflight without a token', async (t) => {
  const withCors = await buildTestApp(t, cluster.endpoints, { CORS_ORIGINS: 'https://console.example' });
  let res = await withCors.inject({
    method: 'OPTIONS',
    url: '/v1/kv//cors/k',
    headers: { origin: 'https://console.example', 'access-control-request-method': 'PUT', 'access-control-request-headers': 'authorization,if-match' },
  });
  t.equal(res.statusCode, 204);
  t.equal(res.headers['access-control-allow-origin'], 'https://console.example');
  t.match(String(res.headers['access-control-allow-headers']), /authorization/);
  t.match(String(res.headers['access-control-allow-methods']), /PUT/);
  res = await withCors.inject({ method: 'PUT', url: '/v1/kv//cors/k', payload: 'v', headers: { origin: 'https://console.example' } });
  t.equal(res.headers['access-control-allow-origin'], 'https://console.example');
  t.match(String(res.headers['access-control-expose-headers']), /x-etcd-revision/);
  res = await withCors.inject({ url: '/v1/kv//cors/k', headers: { origin: 'https://evil.example' } });
  t.notOk(res.headers['access-control-allow-origin'], 'an unlisted origin gets no CORS grant');
  res = await app.inject({ url: '/v1/kv//cors/k', headers: { origin: 'https://console.example' } });
  t.notOk(res.headers['access-control-allow-origin'], 'no origins by default');
});

t.test('GET /metrics: requests by route pattern (never by key), watch fan-out, process figures', async (t) => {
  await put('/metrics/secret-key-name', 'x');
  const c = await ws();
  c.send({ type: 'subscribe', id: 'm', key: '/metrics/', prefix: true });
  await c.next((m) => m.type === 'created');
  const res = await fetch(`${base}/metrics`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/plain/);
  const text = await res.text();
  t.match(text, /etcd_gateway_http_requests_total\{method="PUT",route="\/v1\/kv\/\*",status="201"\} \d+/);
  t.match(text, /etcd_gateway_http_request_duration_seconds_bucket/);
  t.match(text, /etcd_gateway_etcd_watches [1-9]/);
  t.match(text, /etcd_gateway_watch_subscribers [1-9]/);
  t.match(text, /etcd_gateway_process_resident_memory_bytes/);
  t.notMatch(text, /secret-key-name/, 'keys never become labels');
});

t.test('progress_notify: progress messages reach the store revision, and never overtake an event', async (t) => {
  // A second app on the same cluster with progress requests every 100 ms.
  const fast = await buildTestApp(t, cluster.endpoints, { WATCH_HEARTBEAT_MS: 100 });
  const fastWs = `${(await listen(fast)).replace('http', 'ws')}/v1/watch`;
  const p = await WsClient.connect(fastWs);
  t.teardown(() => p.close());
  p.send({ type: 'subscribe', id: 'p', key: '/quiet/', prefix: true, progress_notify: true });
  await p.next((m) => m.type === 'created');
  const elsewhere = await put('/noisy/x', '1');
  const progress = await p.next((m) => m.type === 'progress' && m.revision >= elsewhere, 'progress past a write elsewhere');
  t.ok(progress.revision >= elsewhere, 'a quiet range still learns the store revision');

  // etcd 3.4 answers progress requests at once with its current revision,
  // even while a watch created at an old revision is still being caught up:
  // taking that answer for the catching-up watch would skip its history.
  for (let round = 0; round < 6; round++) {
    const revs: number[] = [];
    for (let i = 0; i < 20; i++) revs.push(await put(`/catchup${round}/k${i}`, 'v'));
    const c = await WsClient.connect(fastWs);
    t.teardown(() => c.close());
    c.send({ type: 'subscribe', id: 'c', key: `/catchup${round}/`, prefix: true, start_revision: revs[0], progress_notify: true });
    await c.next((m) => m.type === 'created');
    const last = await put(`/catchup${round}/end`, 'v');
    await c.next((m) => m.type === 'events' && m.revision === last, `round ${round}: the last event`);
    t.same(c.of('c', 'events').map((m) => m.revision), [...revs, last], `round ${round}: the whole history, once`);
    // No progress message ever claimed a revision whose event came later.
    let seen = 0;
    for (const m of c.inbox.items) {
      if (m.type === 'events') t.ok(m.revision > seen, `round ${round}: event ${m.revision} after progress ${seen}`);
      if (m.type === 'progress' || m.type === 'events') seen = Math.max(seen, m.revision);
    }
    c.close();
  }
});

t.test('the buffers of all shared watches together stay within WATCH_BUFFER_TOTAL_BYTES; a joiner from before them still gets all history', async (t) => {
  const budget = 16 * 1024;
  const small = await buildTestApp(t, cluster.endpoints, { WATCH_BUFFER_TOTAL_BYTES: budget });
  const smallBase = await listen(small);
  const smallWs = `${smallBase.replace('http', 'ws')}/v1/watch`;
  const c = await WsClient.connect(smallWs);
  t.teardown(() => c.close());
  for (const id of ['a', 'b', 'c']) c.send({ type: 'subscribe', id, key: `/budget/${id}/`, prefix: true });
  for (const id of ['a', 'b', 'c']) await c.next((m) => m.type === 'created' && m.id === id);
  const value = 'v'.repeat(1000);
  const first: Record<string, number> = {};
  let last = 0;
  for (let i = 0; i < 30; i++) {
    for (const id of ['a', 'b', 'c']) {
      last = (await (await fetch(`${smallBase}/v1/kv/${encodeURIComponent(`/budget/${id}/k${i}`)}`, { method: 'PUT', body: value })).json()).revision;
      first[id] ??= last;
    }
  }
  await c.next((m) => m.type === 'events' && m.revision === last);
  const stats = (await (await fetch(`${smallBase}/readyz`)).json()).watch;
  t.ok(stats.buffered_bytes > 0 && stats.buffered_bytes <= budget, `${stats.buffered_bytes} bytes buffered, budget ${budget}`);
  t.match(await (await fetch(`${smallBase}/metrics`)).text(), /etcd_gateway_watch_buffered_bytes \d+/);
  // A joiner from the first write: older than any buffer now, so etcd replays it on a watch of its own.
  const late = await WsClient.connect(smallWs);
  t.teardown(() => late.close());
  late.send({ type: 'subscribe', id: 'late', key: '/budget/a/', prefix: true, start_revision: first.a });
  const lastA = c.of('a', 'events').at(-1)!.revision;
  await late.next((m) => m.type === 'events' && m.revision === lastA);
  t.same(late.of('late', 'events').map((m) => m.revision), c.of('a', 'events').map((m) => m.revision), 'the whole history, once');
});
