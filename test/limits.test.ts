// Limits against abuse (issue 11, finding 8), against a real 3-member
// cluster with etcd authentication on, as hostile but authenticated callers:
// password guessing, request floods, streams held open, websocket message
// floods, unbounded /v3 ranges and watches, and clients that trickle bytes.
import { connect, type Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import t from 'tap';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { WsClient, SseClient } from './helpers/clients.js';
import { enableEtcdAuth, gatewayAuthConfig } from './helpers/etcd-auth.js';
import { nextEvent } from './helpers/etcd-waits.js';
import type { Config } from '../src/config.js';

const SECRET = 'limits-test-secret-that-is-at-least-32-chars';
const cluster = await startCluster(t);
const callers = ['alice', 'bob', 'carol'].map((user) => ({ user, password: `pw-${user}`, role: `${user}-rw`, prefix: user[0]! }));
await enableEtcdAuth(cluster.etcdctl, callers);
const root = (...args: string[]) => cluster.etcdctl('--user=root:rootpw', ...args);

const gateway = (extra: Partial<Config>) => buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET, ...extra }));
const bearer = (app: FastifyInstance, user: string) => ({ authorization: `Bearer ${app.jwt.sign({ sub: user })}` });
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** Waits for a condition the gateway reaches on its own (a stream registered), polling briefly. */
async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('password guessing: 429 with Retry-After after AUTH_RATE_LIMIT_MAX checks, per address and per user name', async (t) => {
  const app = await gateway({ AUTH_RATE_LIMIT_MAX: 3, AUTH_RATE_LIMIT_WINDOW_MS: 60_000 });
  const guess = (username: string, password: string, remoteAddress: string) =>
    app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username, password }, remoteAddress });
  for (let i = 1; i <= 3; i++) t.equal((await guess('alice', `guess-${i}`, '10.0.0.1')).statusCode, 401, `guess ${i} reaches etcd and fails`);
  const started = Date.now();
  const refused = await guess('alice', 'pw-alice', '10.0.0.1');
  t.equal(refused.statusCode, 429, 'the fourth check is refused, even with the right password');
  t.equal(refused.json().code, 'rate_limited');
  t.equal(refused.headers['content-type'], 'application/problem+json; charset=utf-8');
  t.ok(Number(refused.headers['retry-after']) >= 1 && Number(refused.headers['retry-after']) <= 60, `Retry-After ${refused.headers['retry-after']}`);
  t.ok(Date.now() - started < 250, 'refused before etcd is asked (no minimum exchange time, no bcrypt)');
  t.equal((await guess('alice', 'pw-alice', '10.0.0.2')).statusCode, 429, 'the user name is limited from another address too');
  t.equal((await guess('bob', 'pw-bob', '10.0.0.1')).statusCode, 429, 'the address is limited for another user name too');
  const other = await guess('bob', 'pw-bob', '10.0.0.3');
  t.equal(other.statusCode, 200, 'another user from another address is unaffected');
  t.ok(other.json().token);

  // /v3/auth/authenticate counts in the same buckets and answers in etcd's words.
  const v3 = (name: string, password: string, remoteAddress: string) =>
    app.inject({ method: 'POST', url: '/v3/auth/authenticate', payload: JSON.stringify({ name, password }), remoteAddress });
  // (etcd answers a wrong password with InvalidArgument: 400 on its gateway.)
  for (let i = 1; i <= 2; i++) t.equal((await v3('carol', `guess-${i}`, '10.0.0.4')).statusCode, 400);
  t.equal((await guess('carol', 'guess-3', '10.0.0.5')).statusCode, 401, 'the third check of carol, over /v1');
  const v3Refused = await v3('carol', 'pw-carol', '10.0.0.6');
  t.equal(v3Refused.statusCode, 429);
  t.match(v3Refused.json(), { code: 8, message: /AUTH_RATE_LIMIT_MAX/ }, "etcd's ResourceExhausted body");
  t.ok(v3Refused.headers['retry-after']);
});

t.test('per-subject rate limit: 429 for that user only; /healthz, /readyz and /metrics are never limited', async (t) => {
  const app = await gateway({ RATE_LIMIT_MAX: 10, RATE_LIMIT_WINDOW_MS: 60_000 });
  const alice = bearer(app, 'alice');
  // From different addresses: the key is the user, not the address.
  for (let i = 0; i < 10; i++) {
    const res = await app.inject({ url: '/v1/kv/a/x', headers: alice, remoteAddress: `10.1.0.${i}` });
    t.equal(res.statusCode, 404, `request ${i + 1} is served`);
  }
  const refused = await app.inject({ method: 'PUT', url: '/v1/kv/a/limited', headers: alice, payload: 'v', remoteAddress: '10.1.0.99' });
  t.equal(refused.statusCode, 429);
  t.equal(refused.json().code, 'rate_limited', 'the gateway\'s own limit, not etcd\'s too_many_requests');
  t.ok(Number(refused.headers['retry-after']) >= 1);
  t.equal(await root('get', 'a/limited'), '', 'the refused write never reached etcd');
  const v3Refused = await app.inject({ method: 'POST', url: '/v3/kv/range', headers: alice, payload: JSON.stringify({ key: b64('a/x') }) });
  t.equal(v3Refused.statusCode, 429, '/v3 counts in the same bucket');
  t.equal(v3Refused.json().code, 8);
  t.equal((await app.inject({ url: '/v1/kv/b/x', headers: bearer(app, 'bob'), remoteAddress: '10.1.0.99' })).statusCode, 404, 'bob is unaffected, even from the same address');
  for (let i = 0; i < 30; i++) {
    for (const url of ['/healthz', '/readyz', '/metrics']) {
      if ((await app.inject({ url, remoteAddress: '10.1.0.99' })).statusCode !== 200) t.fail(`${url} was refused`);
    }
  }
  // Without a token the key is the address.
  for (let i = 0; i < 10; i++) await app.inject({ url: '/v1/kv/a/x', remoteAddress: '10.2.0.1' });
  t.equal((await app.inject({ url: '/v1/kv/a/x', remoteAddress: '10.2.0.1' })).statusCode, 401, 'unauthenticated callers are refused by authentication first');
  for (let i = 0; i < 10; i++) await app.inject({ url: '/version', remoteAddress: '10.2.0.2' });
  t.equal((await app.inject({ url: '/version', remoteAddress: '10.2.0.2' })).statusCode, 429, 'public routes are limited per address');
  t.equal((await app.inject({ url: '/version', remoteAddress: '10.2.0.3' })).statusCode, 200, 'another address is not');
});

t.test('caps and timeouts', async (t) => {
  const app = await gateway({
    STREAMS_PER_SUBJECT: 2,
    WS_MAX_MESSAGES_PER_SECOND: 5,
    LIST_MAX_KEYS: 5,
    WATCH_MAX_SUBSCRIPTIONS: 2,
    HEADERS_TIMEOUT_MS: 1000,
    BODY_TIMEOUT_MS: 1000,
  });
  const base = await listen(app);
  const ws = base.replace('http', 'ws');
  const alice = bearer(app, 'alice');
  const held = () => app.streamCaps.count('alice');

  t.test('websockets and SSE streams: the stream over the cap is refused; after one closes a new one works', async (t) => {
    const a = await WsClient.connect(`${ws}/v1/watch`, alice);
    const b = await WsClient.connect(`${ws}/v1/watch`, alice);
    await until('two streams', () => held() === 2);
    const c = await WsClient.connect(`${ws}/v1/watch`, alice);
    const closed = await c.closed;
    t.equal(closed.code, 1008, 'the third websocket is closed with 1008');
    t.match(closed.reason, /STREAMS_PER_SUBJECT/);
    const v3 = await WsClient.connect(`${ws}/v3/watch`, alice);
    t.equal((await v3.closed).code, 1008, 'a /v3 stream websocket counts in the same cap');
    const v3http = await fetch(`${base}/v3/watch`, { method: 'POST', headers: alice, body: JSON.stringify({ create_request: { key: b64('a/x') } }) });
    t.equal(v3http.status, 429, 'a /v3 stream over HTTP is refused before it starts');
    t.equal((await v3http.json()).code, 8, "etcd's ResourceExhausted");
    const sse = await SseClient.open(`${base}/v1/watch/a/x`, alice);
    t.equal(sse.response.statusCode, 429, 'an SSE stream too, before it opens');
    await sse.ended;
    t.equal(JSON.parse(sse.body!).code, 'too_many_streams');
    const bob = await WsClient.connect(`${ws}/v1/watch`, bearer(app, 'bob'));
    bob.send({ type: 'subscribe', id: 's', key: 'b/', prefix: true });
    await bob.next((m) => m.type === 'created', 'bob\'s created');
    t.pass('another user is unaffected');
    bob.close();

    a.close();
    await until('one stream', () => held() === 1);
    const sse2 = await SseClient.open(`${base}/v1/watch/a/x`, alice);
    t.equal(sse2.response.statusCode, 200, 'after one closed, a new stream opens');
    const sse3 = await SseClient.open(`${base}/v1/watch/a/x`, alice);
    t.equal(sse3.response.statusCode, 429);
    sse2.close();
    b.close();
    await until('no streams', () => held() === 0);
  });

  t.test('long-polls count too', async (t) => {
    const aborts = [new AbortController(), new AbortController()];
    t.teardown(() => aborts.forEach((a) => a.abort()));
    const polls = aborts.map((a) => fetch(`${base}/v1/kv/a/lp?wait&timeout=60`, { headers: alice, signal: a.signal }).catch(() => undefined));
    await until('two long-polls', () => held() === 2);
    const third = await fetch(`${base}/v1/kv/a/lp?wait&timeout=60`, { headers: alice });
    t.equal(third.status, 429);
    t.equal((await third.json()).code, 'too_many_streams');
    aborts[0]!.abort();
    await polls[0];
    await until('one long-poll', () => held() === 1);
    aborts[1]!.abort();
    await until('none', () => held() === 0);
  });

  t.test('lock waiters: the waiter over the cap is refused before it writes anything', async (t) => {
    const holder = await app.inject({ method: 'POST', url: '/v1/locks/alock?ttl=30', headers: alice });
    t.equal(holder.statusCode, 200);
    t.equal(held(), 0, 'a lock taken at once holds no place once answered');
    const aborts: AbortController[] = [];
    t.teardown(() => aborts.forEach((a) => a.abort()));
    const wait = async () => {
      const queued = await nextEvent(app.etcd, 'alock/', 'put');
      const a = new AbortController();
      aborts.push(a);
      const answer = fetch(`${base}/v1/locks/alock?ttl=30`, { method: 'POST', headers: alice, signal: a.signal }).catch(() => undefined);
      await queued.event;
      return { answer };
    };
    await wait();
    await wait();
    t.equal(held(), 2);
    const keysBefore = await root('get', '--prefix', '--keys-only', 'alock/');
    const third = await app.inject({ method: 'POST', url: '/v1/locks/alock?ttl=30', headers: alice });
    t.equal(third.statusCode, 429);
    t.equal(third.json().code, 'too_many_streams');
    t.equal(await root('get', '--prefix', '--keys-only', 'alock/'), keysBefore, 'etcd holds no key of the refused waiter');
    const v3 = await app.inject({ method: 'POST', url: '/v3/lock/lock', headers: alice, payload: JSON.stringify({ name: b64('alock') }) });
    t.equal(v3.statusCode, 429, "/v3's lock waits in the same cap");
    t.equal(v3.json().code, 8);
    const gone = await nextEvent(app.etcd, 'alock/', 'delete');
    aborts[0]!.abort();
    await gone.event;
    await until('one waiter', () => held() === 1);
    await wait();
    t.equal(held(), 2, 'after one waiter left, a new one waits');
    for (const a of aborts) a.abort();
    await until('no waiters', () => held() === 0);
    await app.inject({ method: 'DELETE', url: `/v1/locks/alock?key=${encodeURIComponent(holder.json().key)}`, headers: alice });
  });

  t.test('a websocket flooding messages is closed with 1008', async (t) => {
    const c = await WsClient.connect(`${ws}/v1/watch`, alice);
    for (let i = 0; i < 50; i++) c.send({ type: 'unsubscribe', id: `n${i}` });
    const closed = await c.closed;
    t.equal(closed.code, 1008);
    t.match(closed.reason, /WS_MAX_MESSAGES_PER_SECOND/);
    t.ok(c.inbox.items.length <= 10, `at most a burst was handled (${c.inbox.items.length} answers)`);
    await until('released', () => held() === 0);
    const calm = await WsClient.connect(`${ws}/v1/watch`, alice);
    for (let i = 0; i < 3; i++) calm.send({ type: 'unsubscribe', id: `n${i}` });
    await calm.next((m) => m.id === 'n2', 'the third answer');
    t.equal(calm.socket.readyState, calm.socket.OPEN, 'a client within the rate is served');
    calm.close();
  });

  t.test('/v3/kv/range reads at most LIST_MAX_KEYS keys and says there are more', async (t) => {
    for (let i = 0; i < 8; i++) await root('put', `a/list/${i}`, 'v');
    const range = async (extra: Record<string, unknown>) => {
      const res = await app.inject({ method: 'POST', url: '/v3/kv/range', headers: alice, payload: JSON.stringify({ key: b64('a/list/'), range_end: b64('a/list0'), ...extra }) });
      t.equal(res.statusCode, 200);
      return res.json();
    };
    const all = await range({});
    t.equal(all.kvs.length, 5, 'no limit: the cap');
    t.equal(all.more, true);
    t.equal(all.count, '8', 'the count is etcd\'s, of every key');
    t.equal((await range({ limit: 100 })).kvs.length, 5, 'a limit over the cap: the cap');
    const three = await range({ limit: '3' });
    t.equal(three.kvs.length, 3, 'a limit under the cap stands');
    t.equal(three.more, true);
    const counted = await range({ count_only: true });
    t.equal(counted.count, '8');
  });

  t.test('/v3/watch holds at most WATCH_MAX_SUBSCRIPTIONS watches per stream', async (t) => {
    const c = await WsClient.connect(`${ws}/v3/watch`, alice);
    for (const k of ['a/w1', 'a/w2', 'a/w3']) c.send({ create_request: { key: b64(k) } });
    const answers: Record<string, any>[] = [];
    for (let i = 0; i < 3; i++) answers.push(await c.next((m) => m.result?.created && !answers.includes(m), `answer ${i + 1}`));
    t.notOk(answers[0].result.canceled);
    t.notOk(answers[1].result.canceled);
    t.match(answers[2].result, { created: true, canceled: true, watch_id: '-1', cancel_reason: /WATCH_MAX_SUBSCRIPTIONS/ }, 'the third is refused as etcd refuses a watch');
    c.send({ cancel_request: { watch_id: '1' } });
    await c.next((m) => m.result?.canceled && m.result.watch_id === '1', 'the cancel');
    c.send({ create_request: { key: b64('a/w4') } });
    const fourth = await c.next((m) => m.result?.created && !answers.includes(m) && m.result.watch_id !== '-1', 'a new watch');
    t.notOk(fourth.result.canceled, 'after a cancel, a new watch is accepted');
    c.close();
  });

  t.test('slowloris: a client trickling header bytes is cut off within the header timeout; others are served', async (t) => {
    const port = Number(new URL(base).port);
    const socket: Socket = connect(port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    const started = Date.now();
    let answer = '';
    socket.on('data', (d) => (answer += d.toString()));
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`);
    const trickle = setInterval(() => socket.writable && socket.write('X-Slow: 1\r\n'), 100);
    t.teardown(() => clearInterval(trickle));
    let served = 0;
    const others = (async () => {
      while (!socket.destroyed) {
        if ((await fetch(`${base}/healthz`)).status === 200) served++;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await closed;
    clearInterval(trickle);
    await others;
    const took = Date.now() - started;
    t.ok(took >= 900 && took < 4000, `closed after ${took} ms (HEADERS_TIMEOUT_MS 1000, checked every second)`);
    t.match(answer, /^HTTP\/1.1 408/, 'answered 408');
    t.ok(served > 5, `normal requests kept being answered meanwhile (${served})`);
  });

  t.test('a slow body times out and nothing is written', async (t) => {
    const port = Number(new URL(base).port);
    const socket = connect(port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    const started = Date.now();
    let answer = '';
    socket.on('data', (d) => (answer += d.toString()));
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.write(
      `PUT /v1/kv/a/slow HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: ${alice.authorization}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nabc`,
    );
    const trickle = setInterval(() => socket.writable && socket.write('x'), 100);
    t.teardown(() => clearInterval(trickle));
    await closed;
    clearInterval(trickle);
    const took = Date.now() - started;
    t.ok(took >= 900 && took < 3000, `closed after ${took} ms (BODY_TIMEOUT_MS 1000)`);
    t.match(answer, /^HTTP\/1.1 408/);
    t.equal(await root('get', 'a/slow'), '', 'etcd holds no such key');
    const fast = await fetch(`${base}/v1/kv/a/fast`, { method: 'PUT', headers: { ...alice, 'content-type': 'text/plain' }, body: 'quick' });
    t.equal(fast.status, 201, 'a body sent at once is not affected');
  });
});
