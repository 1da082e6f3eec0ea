// Who may be a caller (issue 11, findings 5-7): claims that must be present,
// identities that are never handed out (root, the gateway's own user), a
// token exchange that is no oracle for their passwords, and streams that a
// token past its `exp` cannot open (nor leak anything by trying).
import { createHmac, generateKeyPairSync, sign as rsaSign, type KeyObject } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { WebSocket } from 'ws';
import { MIN_EXCHANGE_MS } from '../src/routes/auth.js';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { SseClient, WsClient } from './helpers/clients.js';
import { enableEtcdAuth, gatewayAuthConfig, GATEWAY_USER } from './helpers/etcd-auth.js';

const SECRET = 'identity-test-secret-that-is-at-least-32-chars';
const cluster = await startCluster(t);
await enableEtcdAuth(cluster.etcdctl, [{ user: 'alice', password: 'alicepw', role: 'app-rw', prefix: '/app/' }]);
const asRoot = (...args: string[]) => cluster.etcdctl('--user=root:rootpw', ...args);
// No limit on password checks here: the exchange test makes more than the
// default allows a minute. (Spread untyped: the limits are another part's settings.)
const app = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET, ...({ AUTH_RATE_LIMIT_MAX: 0 } as object) }));
const base = await listen(app);

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
function hs256(claims: Record<string, unknown>, header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT' }): string {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}
const claimsFor = (sub: string, extra: Record<string, unknown> = {}) => ({ sub, iss: 'etcd-gateway', aud: 'etcd-gateway', iat: now(), exp: now() + 600, ...extra });
const without = (claims: Record<string, unknown>, name: string) => Object.fromEntries(Object.entries(claims).filter(([k]) => k !== name));
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Whether `key` exists, asked of etcd as root. */
const exists = async (key: string) => (await asRoot('get', key, '--keys-only')).trim() !== '';

t.test('iss and aud must be present (not only right when present); typ when AUTH_JWT_TYP is set', async (t) => {
  const put = (token: string, key: string) => app.inject({ method: 'PUT', url: `/v1/kv/${key}`, payload: 'x', headers: { ...bearer(token), 'content-type': 'text/plain' } });
  const cases: [string, Record<string, unknown>][] = [
    ['no iss', without(claimsFor('alice'), 'iss')],
    ['no aud', without(claimsFor('alice'), 'aud')],
    ['an empty aud list', claimsFor('alice', { aud: [] })],
  ];
  for (const [name, claims] of cases) {
    const res = await put(hs256(claims), `/app/claims/${name.replace(/ /g, '-')}`);
    t.equal(res.statusCode, 401, name);
    t.equal(res.json().code, 'invalid_token', name);
    t.equal(await exists(`/app/claims/${name.replace(/ /g, '-')}`), false, `${name}: nothing written`);
  }
  t.equal((await put(hs256(claimsFor('alice', { aud: ['other', 'etcd-gateway'] })), '/app/claims/ok')).statusCode, 201, 'aud as a list that includes ours');

  const typed = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET, AUTH_JWT_TYP: 'at+jwt' }));
  const get = async (token: string) => (await typed.inject({ url: '/v1/kv//app/claims/ok', headers: bearer(token) })).statusCode;
  t.equal(await get(hs256(claimsFor('alice'))), 401, 'typ JWT where at+jwt is required');
  t.equal(await get(hs256(claimsFor('alice'), { alg: 'HS256' })), 401, 'no typ');
  t.equal(await get(hs256(claimsFor('alice'), { alg: 'HS256', typ: 'at+jwt' })), 200, 'typ at+jwt');
  t.equal(await get(hs256(claimsFor('alice'), { alg: 'HS256', typ: 'application/AT+JWT' })), 200, 'compared as RFC 8725 says');
  // The gateway's own tokens and tickets carry the required typ.
  const issued = (await typed.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'alice', password: 'alicepw' } })).json();
  t.equal(JSON.parse(Buffer.from(issued.token.split('.')[0], 'base64url').toString()).typ, 'at+jwt');
  t.equal(await get(issued.token), 200, 'a token from POST /v1/auth/token');
  const ticket = (await typed.inject({ method: 'POST', url: '/v1/auth/ticket', headers: bearer(issued.token) })).json().ticket;
  const typedBase = await listen(typed);
  const sse = await SseClient.open(`${typedBase}/v1/watch//app/claims/?prefix&ticket=${ticket}`);
  t.teardown(() => sse.close());
  t.equal(sse.response.statusCode, 200, 'and its SSE ticket');
});

t.test("the same rules for an identity provider's tokens (AUTH_JWKS_URL)", async (t) => {
  const key = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const provider = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [{ ...key.publicKey.export({ format: 'jwk' }), kid: 'k', alg: 'RS256', use: 'sig' }] }));
  });
  await new Promise<void>((r) => provider.listen(0, '127.0.0.1', r));
  t.teardown(() => provider.close());
  const jwksUrl = `http://127.0.0.1:${(provider.address() as AddressInfo).port}/keys`;
  const signed = (claims: Record<string, unknown>, header: Record<string, unknown> = { alg: 'RS256', kid: 'k', typ: 'JWT' }, k: KeyObject = key.privateKey) => {
    const input = `${b64(header)}.${b64(claims)}`;
    return `${input}.${rsaSign('sha256', Buffer.from(input), k).toString('base64url')}`;
  };
  const idp = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWKS_URL: jwksUrl }));
  const answer = async (token: string) => {
    const res = await idp.inject({ method: 'PUT', url: '/v1/kv//app/idp', payload: 'x', headers: { ...bearer(token), 'content-type': 'text/plain' } });
    return `${res.statusCode} ${res.json().code ?? ''}`.trim();
  };
  t.equal(await answer(signed(without(claimsFor('alice'), 'iss'))), '401 invalid_token', 'no iss');
  t.equal(await answer(signed(without(claimsFor('alice'), 'aud'))), '401 invalid_token', 'no aud');
  t.equal(await answer(signed(claimsFor('root'))), '403 root_not_allowed', 'sub root');
  t.equal(await answer(signed(claimsFor(GATEWAY_USER.name))), '403 root_not_allowed', "sub = the gateway's own etcd user");
  t.equal(await exists('/app/idp'), false, 'nothing written');
  t.match(await answer(signed(claimsFor('alice'))), /^20[01]/, 'a good token');

  const typed = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWKS_URL: jwksUrl, AUTH_JWT_TYP: 'at+jwt' }));
  const status = async (token: string) => (await typed.inject({ url: '/v1/kv//app/idp', headers: bearer(token) })).statusCode;
  t.equal(await status(signed(claimsFor('alice'))), 401, 'typ JWT where at+jwt is required');
  t.equal(await status(signed(claimsFor('alice'), { alg: 'RS256', kid: 'k', typ: 'at+jwt' })), 200, 'typ at+jwt');
});

t.test("tokens for root and for the gateway's own user are refused, also through a roles claim", async (t) => {
  for (const [sub, key] of [
    ['root', '/outside/by-root'],
    [GATEWAY_USER.name, '/outside/by-gateway'],
  ] as const) {
    const res = await app.inject({ method: 'PUT', url: `/v1/kv/${key}`, payload: 'x', headers: { ...bearer(hs256(claimsFor(sub))), 'content-type': 'text/plain' } });
    t.equal(res.statusCode, 403, sub);
    t.equal(res.json().code, 'root_not_allowed', sub);
    t.equal(await exists(key), false, `${sub}: nothing written`);
    const ws = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`, {}, ['etcd-gateway.v1', `bearer.${hs256(claimsFor(sub))}`]).catch((err: { statusCode?: number }) => err);
    t.equal((ws as { statusCode?: number }).statusCode, 403, `${sub}: no websocket either`);
  }

  const roles = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET, AUTH_ROLES_CLAIM: 'roles' }));
  const put = async (claims: Record<string, unknown>) => {
    const res = await roles.inject({ method: 'PUT', url: '/v1/kv//app/by-roles', payload: 'x', headers: { ...bearer(hs256(claims)), 'content-type': 'text/plain' } });
    return `${res.statusCode} ${res.statusCode >= 400 ? res.json().code : ''}`.trim();
  };
  t.equal(await put(claimsFor(GATEWAY_USER.name, { roles: ['app-rw'] })), '403 root_not_allowed', "sub names the gateway's user, beside roles");
  t.equal(await put(claimsFor('root', { roles: ['app-rw'] })), '403 root_not_allowed', 'sub names root, beside roles');
  t.equal(await put(claimsFor('someone', { roles: ['root'] })), '403 root_not_allowed', 'roles naming root');
  t.equal(await exists('/app/by-roles'), false, 'nothing written');
  t.equal(await put(claimsFor('someone', { roles: ['app-rw'] })), '201', 'the same roles for another subject');

  // AUTH_ALLOW_ROOT lets an operator have them, explicitly.
  const allowed = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET, AUTH_ALLOW_ROOT: true }));
  t.equal((await allowed.inject({ url: '/v1/kv//outside/by-gateway', headers: bearer(hs256(claimsFor(GATEWAY_USER.name))) })).statusCode, 404, 'allowed with AUTH_ALLOW_ROOT');
});

t.test('the token exchange is no oracle for the passwords of root and the gateway: the answer of a wrong password', async (t) => {
  const attempts: [string, string][] = [
    ['root', 'rootpw'],
    ['root', 'not-the-password'],
    [GATEWAY_USER.name, GATEWAY_USER.password],
    [GATEWAY_USER.name, 'not-the-password'],
    ['alice', 'not-the-password'],
    ['nobody', 'whatever'],
  ];
  const timed = async (url: string, body: unknown) => {
    const started = performance.now();
    const res = await fetch(`${base}${url}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: text, www: res.headers.get('www-authenticate'), ms: performance.now() - started };
  };
  for (const [url, body] of [
    ['/v1/auth/token', (username: string, password: string) => ({ username, password })],
    ['/v3/auth/authenticate', (name: string, password: string) => ({ name, password })],
  ] as const) {
    const answers = [];
    for (const [user, password] of attempts) answers.push({ user, password, ...(await timed(url, body(user, password))) });
    const first = answers[1]!; // root with a wrong password
    t.ok(first.status === 401 || first.status === 400, `${url}: a wrong password is refused (${first.status})`);
    for (const a of answers) {
      const what = `${url} ${a.user}/${a.password === 'not-the-password' ? 'wrong' : 'right'}`;
      t.same({ status: a.status, body: a.body, www: a.www }, { status: first.status, body: first.body, www: first.www }, `${what}: the same answer`);
      t.ok(a.ms >= MIN_EXCHANGE_MS - 5, `${what}: took ${Math.round(a.ms)} ms (floor ${MIN_EXCHANGE_MS})`);
    }
    const ok = await timed(url, body('alice', 'alicepw'));
    t.equal(ok.status, 200, `${url}: alice with her password`);
  }
});

/** etcd's watchers, all members together, from their own /metrics. */
async function etcdWatchers(): Promise<number> {
  let total = 0;
  for (const endpoint of cluster.endpoints) {
    const text = await (await fetch(`${endpoint}/metrics`)).text();
    const m = /^etcd_debugging_mvcc_watcher_total (\d+)/m.exec(text);
    total += Number(m?.[1] ?? 0);
  }
  return total;
}

/** What streams hold: etcd's watchers, the gateway's subscribers, its etcd watches and its registered streams. */
async function holdings(): Promise<Record<string, number>> {
  const stats = app.watchHub.stats();
  return { etcd_watchers: await etcdWatchers(), subscribers: stats.subscribers, etcd_watches: stats.etcd_watches, streams: app.watchClients.size };
}

/** Waits until what streams hold is back at `baseline` (the counts move asynchronously: the end of a stream reaches etcd a moment later). */
async function backTo(t: { same(found: unknown, wanted: unknown, message: string): unknown }, baseline: Record<string, number>, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  let now = await holdings();
  while (JSON.stringify(now) !== JSON.stringify(baseline) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    now = await holdings();
  }
  t.same(now, baseline, what);
}

t.test('a token past its exp (inside the 30 s leeway) opens no stream on any transport, and leaves nothing behind', async (t) => {
  const baseline = await holdings();
  const stale = hs256(claimsFor('alice', { exp: now() - 10 }));
  t.not((await app.inject({ url: '/v1/kv//app/x', headers: bearer(stale) })).statusCode, 401, 'a single call still gets the leeway');
  const ws = base.replace('http', 'ws');

  const refusals: [string, () => Promise<{ status: number; code?: unknown }>][] = [
    ['SSE watch', async () => answerOf(await fetch(`${base}/v1/watch//app/stale-sse?prefix`, { headers: bearer(stale) }))],
    ['SSE election observe', async () => answerOf(await fetch(`${base}/v1/elections/${encodeURIComponent('/app/stale-election')}/observe`, { headers: bearer(stale) }))],
    ['an SSE ticket (good for opening a stream only)', async () => answerOf(await fetch(`${base}/v1/auth/ticket`, { method: 'POST', headers: bearer(stale) }))],
    ['SSE with a ticket got in time, used once its token is past exp', async () => {
      const exp = now() + 1;
      const ticket = (await app.inject({ method: 'POST', url: '/v1/auth/ticket', headers: bearer(hs256(claimsFor('alice', { exp }))) })).json().ticket;
      // (A clock, not an event: the token's exp passing.)
      await new Promise((r) => setTimeout(r, exp * 1000 + 50 - Date.now()));
      return answerOf(await fetch(`${base}/v1/watch//app/stale-ticket?ticket=${ticket}`));
    }],
    ['websocket /v1/watch (Authorization)', () => upgrade(`${ws}/v1/watch`, { headers: bearer(stale) })],
    ['websocket /v1/watch (subprotocol)', () => upgrade(`${ws}/v1/watch`, { protocols: ['etcd-gateway.v1', `bearer.${stale}`] })],
    ['/v3/watch', async () => answerOf(await fetch(`${base}/v3/watch`, { method: 'POST', headers: bearer(stale), body: JSON.stringify({ create_request: { key: b64s('/app/stale-v3') } }) }))],
    ['/v3/watch websocket', () => upgrade(`${ws}/v3/watch`, { protocols: ['Bearer', stale] })],
    ['/v3/election/observe', async () => answerOf(await fetch(`${base}/v3/election/observe`, { method: 'POST', headers: bearer(stale), body: JSON.stringify({ name: b64s('/app/stale-election') }) }))],
    ['/v3/lease/keepalive', async () => answerOf(await fetch(`${base}/v3/lease/keepalive`, { method: 'POST', headers: bearer(stale), body: JSON.stringify({ ID: '1' }) }))],
    ['long-poll ?wait', async () => answerOf(await fetch(`${base}/v1/kv//app/stale-wait?prefix&wait&timeout=30`, { headers: bearer(stale) }))],
  ];
  for (const [name, open] of refusals) t.equal((await open()).status, 401, `${name}: 401`);
  await backTo(t, baseline, 'etcd watchers, subscribers, etcd watches and registered streams at their baseline');
});

t.test('streams that end when their token expires release everything they held', async (t) => {
  const baseline = await holdings();
  const short = hs256(claimsFor('alice', { exp: now() + 2 }));
  const sse = await SseClient.open(`${base}/v1/watch//app/expiring-sse?prefix`, bearer(short));
  t.teardown(() => sse.close());
  t.equal(sse.response.statusCode, 200);
  const socket = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`, bearer(short));
  t.teardown(() => socket.close());
  socket.send({ type: 'subscribe', id: 'e', key: '/app/expiring-ws', prefix: true });
  await socket.next((m) => m.type === 'created');
  const v3 = await fetch(`${base}/v3/watch`, { method: 'POST', headers: bearer(short), body: JSON.stringify({ create_request: { key: b64s('/app/expiring-v3') } }) });
  t.equal(v3.status, 200);
  // The stream's lines as they arrive: its watch counts once etcd created it.
  let v3Text = '';
  const v3Reader = v3.body!.pipeThrough(new TextDecoderStream()).getReader();
  const v3Until = async (pattern: RegExp) => {
    while (!pattern.test(v3Text)) {
      const { value, done } = await v3Reader.read();
      if (done) break;
      v3Text += value;
    }
    return v3Text;
  };
  t.match(await v3Until(/"created":true/), /"created":true/, 'the /v3 watch is created');
  const during = await holdings();
  t.ok(during.etcd_watchers >= baseline.etcd_watchers + 3, `etcd watches for the three streams (${baseline.etcd_watchers} -> ${during.etcd_watchers})`);

  t.equal(JSON.parse((await sse.next((e) => e.event === 'error', 'the SSE stream to end', 10_000)).data).code, 'token_expired');
  t.equal((await socket.closed).code, 4001, 'the websocket closes with 4001');
  t.match(await v3Until(/token expired/), /token expired/, 'the /v3 stream ends with an error');
  await backTo(t, baseline, 'everything released');
});

t.test('a long-poll answers, with nothing new, when its token expires (not at its timeout)', async (t) => {
  const exp = now() + 2;
  const started = Date.now();
  const res = await fetch(`${base}/v1/kv//app/expiring-wait?prefix&wait&timeout=60`, { headers: bearer(hs256(claimsFor('alice', { exp }))) });
  t.equal(res.status, 200);
  const body = (await res.json()) as { events: unknown[]; next_start_revision: number };
  t.same(body.events, [], 'no events');
  t.ok(body.next_start_revision > 0, 'where to continue');
  t.ok(Date.now() - started < 30_000, 'it ended with the token, long before its 60 s timeout');
  t.equal((await fetch(`${base}/v1/kv//app/expiring-wait?prefix&wait&timeout=60`, { headers: bearer(hs256(claimsFor('alice', { exp }))) })).status, 401, 'the next one, with the expired token, is refused');
});

const b64s = (s: string) => Buffer.from(s).toString('base64');

async function answerOf(res: Response): Promise<{ status: number; code?: unknown }> {
  const text = await res.text();
  let code: unknown;
  try {
    code = (JSON.parse(text) as { code?: unknown }).code;
  } catch {
    code = undefined;
  }
  return { status: res.status, code };
}

/** A websocket upgrade's answer: 101 when it opened (then closed at once), else the refusal's status. */
function upgrade(url: string, opts: { headers?: Record<string, string>; protocols?: string[] }): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, opts.protocols ?? [], { headers: opts.headers });
    socket.once('open', () => {
      socket.terminate();
      resolve({ status: 101 });
    });
    socket.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
    });
    socket.once('error', reject);
  });
}
