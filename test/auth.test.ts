// Authentication and authorization against a real cluster with etcd auth on.
// The expected answer of every cell of the permission matrix is what etcd
// itself answers the same user (etcdctl --user), not a table of our own.
import { execFile } from 'node:child_process';
import { createHmac, generateKeyPairSync, sign as rsaSign, type KeyObject } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { gatewayAuthConfig } from './helpers/etcd-auth.js';
import { SseClient, WsClient } from './helpers/clients.js';

const SECRET = 'test-secret-that-is-at-least-32-characters-long';
const cluster = await startCluster(t);
const root = (...args: string[]) => cluster.etcdctl('--user=root:rootpw', ...args);

function etcdctlAs(user: string, args: string[], input?: string): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('etcdctl', [`--endpoints=${cluster.endpoints.join(',')}`, `--user=${user}:pw-${user}`, ...args], { env: { ...process.env, ETCDCTL_API: '3' } }, (err, stdout, stderr) =>
      resolve({ ok: !err && !/Error/.test(stderr), out: stdout + stderr }),
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

// Users, roles and data, then `auth enable`, all with etcdctl.
await cluster.etcdctl('user', 'add', 'root:rootpw');
await cluster.etcdctl('user', 'add', 'gateway:gwpw');
await cluster.etcdctl('user', 'grant-role', 'gateway', 'root');
const roles: [string, string[]][] = [
  ['app-read', ['read', '/app/', '--prefix=true']],
  ['app-rw', ['readwrite', '/app/', '--prefix=true']],
  ['single-w', ['write', '/single']],
  ['range-rw', ['readwrite', '/r/a', '/r/m']],
];
for (const [role, perm] of roles) {
  await cluster.etcdctl('role', 'add', role);
  await cluster.etcdctl('role', 'grant-permission', role, ...perm);
}
const users: [string, string | undefined][] = [
  ['alice', 'app-read'],
  ['bob', 'app-rw'],
  ['carol', 'single-w'],
  ['dave', 'range-rw'],
  ['eve', undefined],
];
for (const [user, role] of users) {
  await cluster.etcdctl('user', 'add', `${user}:pw-${user}`);
  if (role) await cluster.etcdctl('user', 'grant-role', user, role);
}
for (const k of ['/app/x', '/app2/x', '/app', '/single', '/r/b', '/other']) await cluster.etcdctl('put', k, 'seed');
await cluster.etcdctl('auth', 'enable');

const logLines: string[] = [];
const app = await buildTestApp(
  t,
  cluster.endpoints,
  gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET, LOG_LEVEL: 'debug' }),
  { stream: new Writable({ write: (c, _e, done) => (logLines.push(c.toString()), done()) }) },
);
const base = await listen(app);

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
function hs256(claims: Record<string, unknown>, secret = SECRET, header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT' }): string {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}
const now = () => Math.floor(Date.now() / 1000);
const claimsFor = (sub: string, extra: Record<string, unknown> = {}) => ({ sub, iss: 'etcd-gateway', aud: 'etcd-gateway', iat: now(), exp: now() + 600, ...extra });
const tokenFor = (sub: string, extra: Record<string, unknown> = {}) => hs256(claimsFor(sub, extra));
const as = (user: string) => ({ authorization: `Bearer ${tokenFor(user)}` });

interface Op {
  name: string;
  http: (user: string) => Promise<number>;
  etcdctl: string[];
  input?: string;
}
const req = async (user: string, method: string, path: string, body?: string, headers: Record<string, string> = {}) =>
  (await app.inject({ method: method as 'GET', url: path, payload: body, headers: { ...as(user), ...headers } })).statusCode;
const txnBody = JSON.stringify({
  compare: [{ key: '/app/x', target: 'version', result: '>', version: 0 }],
  success: [{ put: { key: '/other', value: 'txn' } }],
  failure: [],
});
const ops: Op[] = [
  { name: 'get /app/x', http: (u) => req(u, 'GET', '/v1/kv//app/x'), etcdctl: ['get', '/app/x'] },
  { name: 'list /app/', http: (u) => req(u, 'GET', '/v1/kv//app/?prefix'), etcdctl: ['get', '--prefix', '/app/'] },
  { name: 'list /app (wider than /app/)', http: (u) => req(u, 'GET', '/v1/kv//app?prefix'), etcdctl: ['get', '--prefix', '/app'] },
  { name: 'get /app (boundary)', http: (u) => req(u, 'GET', '/v1/kv//app'), etcdctl: ['get', '/app'] },
  { name: 'get /app2/x (outside)', http: (u) => req(u, 'GET', '/v1/kv//app2/x'), etcdctl: ['get', '/app2/x'] },
  { name: 'put /app/y', http: (u) => req(u, 'PUT', '/v1/kv//app/y', 'v'), etcdctl: ['put', '/app/y', 'v'] },
  { name: 'put /app/y with prev_kv', http: (u) => req(u, 'PUT', '/v1/kv//app/y?prev_kv', 'v'), etcdctl: ['put', '--prev-kv', '/app/y', 'v'] },
  { name: 'delete /app/y', http: (u) => req(u, 'DELETE', '/v1/kv//app/y'), etcdctl: ['del', '/app/y'] },
  { name: 'put /single', http: (u) => req(u, 'PUT', '/v1/kv//single', 'v'), etcdctl: ['put', '/single', 'v'] },
  { name: 'get /single', http: (u) => req(u, 'GET', '/v1/kv//single'), etcdctl: ['get', '/single'] },
  { name: 'put /r/c (in range)', http: (u) => req(u, 'PUT', '/v1/kv//r/c', 'v'), etcdctl: ['put', '/r/c', 'v'] },
  { name: 'put /r/m (range end, excluded)', http: (u) => req(u, 'PUT', '/v1/kv//r/m', 'v'), etcdctl: ['put', '/r/m', 'v'] },
  { name: 'get [/r/a, /r/m)', http: (u) => req(u, 'GET', '/v1/kv//r/a?range_end=%2Fr%2Fm'), etcdctl: ['get', '/r/a', '/r/m'] },
  {
    name: 'txn: compare /app/x, put /other',
    http: (u) => req(u, 'POST', '/v1/txn', txnBody, { 'content-type': 'application/json' }),
    etcdctl: ['txn'],
    input: 'ver("/app/x") > "0"\n\nput /other txn\n\n\n',
  },
  { name: 'watch /app/ (SSE)', http: (u) => req(u, 'GET', '/v1/kv//app/?wait&prefix&timeout=1'), etcdctl: ['get', '--prefix', '/app/'] },
  { name: 'lease grant', http: (u) => req(u, 'POST', '/v1/leases', JSON.stringify({ ttl: 60 }), { 'content-type': 'application/json' }), etcdctl: ['lease', 'grant', '60'] },
];

t.test('permission matrix: every cell answers as etcd answers that user', async (t) => {
  for (const [user] of users) {
    for (const op of ops) {
      const status = await op.http(user);
      const etcd = await etcdctlAs(user, op.etcdctl, op.input);
      const allowed = status < 400 || status === 404;
      if (etcd.ok) t.ok(allowed, `${user} ${op.name}: etcd allows, gateway ${status}`);
      else {
        t.match(etcd.out, /permission denied/, `${user} ${op.name}: etcd refuses with permission denied`);
        t.equal(status, 403, `${user} ${op.name}: etcd refuses, gateway 403`);
      }
    }
  }
});

t.test('a watch over a range the caller may not read is refused before it joins a shared watch', async (t) => {
  const sse = await SseClient.open(`${base}/v1/watch//app2/?prefix`, as('alice'));
  await sse.ended;
  t.equal(sse.response.statusCode, 403);
  const ws = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`, as('alice'));
  t.teardown(() => ws.close());
  ws.send({ type: 'subscribe', id: 'no', key: '/other' });
  ws.send({ type: 'subscribe', id: 'yes', key: '/app/', prefix: true });
  t.equal((await ws.next((m) => m.id === 'no')).code, 'permission_denied');
  t.equal((await ws.next((m) => m.id === 'yes')).type, 'created');
});

t.test('bad tokens are 401 with WWW-Authenticate', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsInput = `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64(claimsFor('alice'))}`;
  const rs256 = `${rsInput}.${rsaSign('sha256', Buffer.from(rsInput), privateKey).toString('base64url')}`;
  const cases: [string, string | undefined][] = [
    ['missing', undefined],
    ['forged (other secret)', hs256(claimsFor('alice'), 'another-secret-another-secret-another-secret')],
    ['expired', tokenFor('alice', { exp: now() - 120 })],
    ['not yet valid', tokenFor('alice', { nbf: now() + 300 })],
    ['wrong issuer', tokenFor('alice', { iss: 'someone-else' })],
    ['wrong audience', tokenFor('alice', { aud: 'another-service' })],
    ['no exp', hs256({ sub: 'alice', iss: 'etcd-gateway', aud: 'etcd-gateway' })],
    ['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claimsFor('alice'))}.`],
    ['RS256 where HS256 is configured', rs256],
    ['no subject', hs256({ iss: 'etcd-gateway', aud: 'etcd-gateway', exp: now() + 60 })],
    ['garbage', 'not.a.jwt'],
  ];
  for (const [name, token] of cases) {
    const res = await app.inject({ url: '/v1/kv//app/x', headers: token ? { authorization: `Bearer ${token}` } : {} });
    t.equal(res.statusCode, 401, name);
    t.match(res.headers['www-authenticate'], /^Bearer/, `${name}: WWW-Authenticate`);
    t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
  }
  t.equal((await app.inject({ url: '/v1/kv//app/x', headers: { authorization: tokenFor('alice') } })).statusCode, 200, 'a bare token, as etcd clients send it');
  t.equal((await app.inject({ url: '/v1/kv//app/x', headers: { authorization: `Basic ${b64('alice:pw')}` } })).statusCode, 401, 'Basic is not a token');
  const rootRes = await app.inject({ url: '/v1/kv//app/x', headers: as('root') });
  t.equal(rootRes.statusCode, 403, 'a token naming root is refused');
  t.equal(rootRes.json().code, 'root_not_allowed');
  t.equal((await app.inject({ url: '/healthz' })).statusCode, 200, 'health is public');
  t.equal((await app.inject({ url: '/openapi.json' })).statusCode, 200, 'the spec is public');

  // With a public key configured, the HS256-with-the-public-key trick fails too.
  const pubFile = join(tmpdir(), `gw-auth-${process.pid}.pub`);
  await writeFile(pubFile, publicKey.export({ type: 'spki', format: 'pem' }));
  const rsApp = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_PUBLIC_KEY_FILE: pubFile }));
  t.equal((await rsApp.inject({ url: '/v1/kv//app/x', headers: { authorization: `Bearer ${rs256}` } })).statusCode, 200, 'a good RS256 token');
  const confused = hs256(claimsFor('alice'), publicKey.export({ type: 'spki', format: 'pem' }).toString(), { alg: 'HS256', typ: 'JWT' });
  t.equal((await rsApp.inject({ url: '/v1/kv//app/x', headers: { authorization: `Bearer ${confused}` } })).statusCode, 401, 'HS256 signed with the public key');
});

t.test('an identity provider\'s JWKS (AUTH_JWKS_URL): keys by kid, rotation, and every bad token still 401', async (t) => {
  // The provider: a JWKS endpoint on loopback whose key set the test rotates.
  const keyA = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyB = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = (k: KeyObject, kid: string, alg: string) => ({ ...k.export({ format: 'jwk' }), kid, alg, use: 'sig' });
  let published = [jwk(keyA.publicKey, 'a', 'RS256')];
  let fetches = 0;
  const provider = createServer((req, res) => {
    fetches++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: published }));
  });
  await new Promise<void>((r) => provider.listen(0, '127.0.0.1', r));
  t.teardown(() => provider.close());
  const jwksUrl = `http://127.0.0.1:${(provider.address() as AddressInfo).port}/keys`;
  const signed = (claims: Record<string, unknown>, key: KeyObject, header: Record<string, unknown>) => {
    const input = `${b64(header)}.${b64(claims)}`;
    const sig = header.alg === 'ES256' ? rsaSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }) : rsaSign('sha256', Buffer.from(input), key);
    return `${input}.${sig.toString('base64url')}`;
  };
  const idp = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWKS_URL: jwksUrl, AUTH_JWT_SECRET: SECRET }));
  const status = async (token: string) => (await idp.inject({ url: '/v1/kv//app/x', headers: { authorization: `Bearer ${token}` } })).statusCode;

  t.equal(await status(signed(claimsFor('alice'), keyA.privateKey, { alg: 'RS256', kid: 'a' })), 200, 'a token signed with the provider\'s key a');
  t.equal(await status(signed(claimsFor('eve'), keyA.privateKey, { alg: 'RS256', kid: 'a' })), 403, 'its subject is the etcd user: etcd refuses eve');
  t.equal(await status(tokenFor('alice')), 200, "the gateway's own HS256 tokens (AUTH_JWT_SECRET) still work beside the provider's");
  const ticket = (await idp.inject({ method: 'POST', url: '/v1/auth/ticket', headers: { authorization: `Bearer ${signed(claimsFor('alice'), keyA.privateKey, { alg: 'RS256', kid: 'a' })}` } })).json();
  t.ok(ticket.ticket, 'a provider-token holder gets an SSE ticket');

  const bad: [string, string][] = [
    ['signed by a key the provider does not publish, claiming kid a', signed(claimsFor('alice'), stranger.privateKey, { alg: 'RS256', kid: 'a' })],
    ['an unknown kid', signed(claimsFor('alice'), stranger.privateKey, { alg: 'RS256', kid: 'zzz' })],
    ['expired', signed(claimsFor('alice', { exp: now() - 120 }), keyA.privateKey, { alg: 'RS256', kid: 'a' })],
    ['wrong issuer', signed(claimsFor('alice', { iss: 'elsewhere' }), keyA.privateKey, { alg: 'RS256', kid: 'a' })],
    ['wrong audience', signed(claimsFor('alice', { aud: 'elsewhere' }), keyA.privateKey, { alg: 'RS256', kid: 'a' })],
    ['alg none', `${b64({ alg: 'none', kid: 'a' })}.${b64(claimsFor('alice'))}.`],
    ['HS256 signed with another secret', hs256(claimsFor('alice'), 'another-secret-another-secret-another-secret')],
    ['HS256 signed with the provider\'s public key', hs256(claimsFor('alice'), keyA.publicKey.export({ type: 'spki', format: 'pem' }).toString())],
  ];
  for (const [name, token] of bad) t.equal(await status(token), 401, name);

  // Rotation: the provider publishes key b (EC). Within 30 s of its last
  // fetch the gateway does not fetch again, even for a kid it does not know:
  // made-up key ids cannot make it hammer the provider.
  published = [jwk(keyA.publicKey, 'a', 'RS256'), jwk(keyB.publicKey, 'b', 'ES256')];
  const before = fetches;
  const rotated = signed(claimsFor('alice'), keyB.privateKey, { alg: 'ES256', kid: 'b' });
  t.equal(await status(rotated), 401, 'a new kid within the cooldown waits');
  for (let i = 0; i < 20; i++) await status(signed(claimsFor('alice'), stranger.privateKey, { alg: 'RS256', kid: `made-up-${i}` }));
  t.equal(fetches, before, 'no fetch for made-up key ids within the cooldown');
  // A gateway that has not fetched lately takes the new key at once.
  const fresh = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWKS_URL: jwksUrl }));
  const freshStatus = async (token: string) => (await fresh.inject({ url: '/v1/kv//app/x', headers: { authorization: `Bearer ${token}` } })).statusCode;
  t.equal(await freshStatus(rotated), 200, 'the rotated-in ES256 key b');
  t.equal(await freshStatus(signed(claimsFor('alice'), keyA.privateKey, { alg: 'RS256', kid: 'a' })), 200, 'and key a beside it');
  t.equal(fetches, before + 1, 'one fetch');
  t.equal((await fresh.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'alice', password: 'pw-alice' } })).statusCode, 404, 'with the JWKS alone the gateway issues no tokens');

  // A provider that cannot be reached: 503, not 401.
  const unreachable = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWKS_URL: 'http://127.0.0.1:1/keys' }));
  const down = await unreachable.inject({ url: '/v1/kv//app/x', headers: { authorization: `Bearer ${signed(claimsFor('alice'), keyA.privateKey, { alg: 'RS256', kid: 'a' })}` } });
  t.equal(down.statusCode, 503, down.body);
  t.equal(down.json().code, 'jwks_unavailable');
});

t.test('auth changes take effect at once', async (t) => {
  t.equal(await req('alice', 'GET', '/v1/kv//app/x'), 200);
  await root('user', 'revoke-role', 'alice', 'app-read');
  t.equal(await req('alice', 'GET', '/v1/kv//app/x'), 403, 'revoked');
  await root('user', 'grant-role', 'alice', 'app-read');
  t.equal(await req('alice', 'GET', '/v1/kv//app/x'), 200, 'granted again');
  await root('role', 'add', 'temp');
  await root('role', 'grant-permission', 'temp', 'read', '/temp/', '--prefix=true');
  await root('user', 'grant-role', 'eve', 'temp');
  t.equal(await req('eve', 'GET', '/v1/kv//temp/?prefix'), 200);
  await root('role', 'delete', 'temp');
  t.equal(await req('eve', 'GET', '/v1/kv//temp/?prefix'), 403, 'role deleted');
});

t.test('open streams end when the caller loses the permission or the token expires', async (t) => {
  const ticketAnswer = (await app.inject({ method: 'POST', url: '/v1/auth/ticket', headers: as('bob') })).json();
  const ticket = ticketAnswer.ticket;
  const ticketClaims = app.jwt.decode<{ exp: number; iat: number }>(ticket)!;
  t.ok(ticketClaims.exp - ticketClaims.iat <= 30 && ticketAnswer.expires_in <= 30, 'a ticket lives 30 s at most');
  const sse = await SseClient.open(`${base}/v1/watch//app/?prefix&ticket=${ticket}`);
  t.equal(sse.response.statusCode, 200, 'SSE with a ticket');
  await sse.next((e) => e.event === 'created');
  const reuse = await fetch(`${base}/v1/watch//app/?prefix&ticket=${ticket}`);
  t.equal(reuse.status, 401, 'a ticket works once');
  t.equal((await reuse.json()).code, 'ticket_used');
  t.equal((await fetch(`${base}/v1/watch//app/?prefix&ticket=${tokenFor('bob')}`)).status, 401, 'a token is not a ticket');

  const ws = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`, as('bob'));
  t.teardown(() => ws.close());
  ws.send({ type: 'subscribe', id: 'b', key: '/app/', prefix: true });
  await ws.next((m) => m.type === 'created');

  await root('user', 'revoke-role', 'bob', 'app-rw');
  const ended = await sse.next((e) => e.event === 'error', 'the SSE stream to end', 10_000);
  t.equal(JSON.parse(ended.data).code, 'permission_denied');
  t.equal((await ws.next((m) => m.type === 'error' && m.id === 'b', 'the subscription to end', 10_000)).code, 'permission_denied');
  await root('user', 'grant-role', 'bob', 'app-rw');

  // A websocket opened with a token that expires in 2 s, through the subprotocol a browser would use.
  const short = hs256(claimsFor('bob', { exp: now() + 2 }));
  const browserLike = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`, {}, ['etcd-gateway.v1', `bearer.${short}`]);
  t.equal(browserLike.socket.protocol, 'etcd-gateway.v1', 'the token is not echoed back');
  const closed = await browserLike.closed;
  t.equal(closed.code, 4001, 'closed when the token expired (within the 30 s clock tolerance at most)');

  // A token valid for longer than a timer can wait (24.8 days) keeps its socket open.
  const long = hs256(claimsFor('bob', { exp: now() + 40 * 86400 }));
  const longLived = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`, {}, ['etcd-gateway.v1', `bearer.${long}`]);
  t.teardown(() => longLived.close());
  longLived.send({ type: 'subscribe', id: 'l', key: '/app/long', prefix: true });
  await longLived.next((m) => m.type === 'created');
  await root('put', '/app/long', '1');
  t.equal((await longLived.next((m) => m.type === 'events')).events[0].kv.value, '1', 'still open, still delivering');
});

t.test('token exchange: etcd checks the password; failures take as long as successes', async (t) => {
  let started = Date.now();
  let res = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'alice', password: 'pw-alice' } });
  const okMs = Date.now() - started;
  t.equal(res.statusCode, 200);
  const { token, token_type, expires_in } = res.json();
  t.equal(token_type, 'Bearer');
  t.equal(expires_in, 3600);
  const claims = app.jwt.decode<{ exp: number; iat: number }>(token)!;
  t.equal(claims.exp - claims.iat, 3600, 'the token itself expires when expires_in says (not 1000 times later)');
  t.equal((await app.inject({ url: '/v1/kv//app/x', headers: { authorization: `Bearer ${token}` } })).statusCode, 200, 'the token works');
  for (const [username, password] of [['alice', 'wrong'], ['nobody', 'whatever']]) {
    started = Date.now();
    res = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username, password } });
    t.equal(res.statusCode, 401, `${username}/${password}`);
    t.ok(Date.now() - started >= 250, 'not faster than the minimum');
  }
  t.ok(okMs >= 250);
  res = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'root', password: 'rootpw' } });
  t.equal(res.statusCode, 401, "no tokens for root: a wrong password's answer (test/identity.test.ts)");
  res = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'alice' } });
  t.equal(res.statusCode, 400);
});

t.test('check perf needs the root role: a writer of the prefix is not enough', async (t) => {
  const bob = await app.inject({ method: 'POST', url: '/v1/maintenance/check-perf', payload: { prefix: '/app/perf/', duration: 1 }, headers: as('bob') });
  t.equal(bob.statusCode, 403, bob.body);
  t.equal(await root('get', '--prefix', '/app/perf/', '--keys-only'), '', 'nothing written');
  // (Not the gateway's own user: no caller may be that one.)
  await root('user', 'add', 'perf-admin:pw-perf-admin');
  await root('user', 'grant-role', 'perf-admin', 'root');
  const admin = await app.inject({ method: 'POST', url: '/v1/maintenance/check-perf', payload: { prefix: '/app/perf/', duration: 1 }, headers: as('perf-admin') });
  t.equal(admin.statusCode, 200, 'a user with the root role may');
  t.ok(admin.json().writes > 0);
});

t.test('admin operations as a non-root caller are refused by etcd', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/v1/maintenance/defragment', headers: as('bob') });
  t.equal(res.statusCode, 403);
  const members = await app.inject({ method: 'POST', url: '/v1/cluster/members', headers: { ...as('bob'), 'content-type': 'application/json' }, payload: { peer_urls: ['http://127.0.0.1:1'] } });
  t.equal(members.statusCode, 403);
});

t.test('logs never contain a token or a password', async (t) => {
  const all = logLines.join('');
  t.ok(all.length > 1000, 'debug logs were written');
  t.notMatch(all, /eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/, 'no JWT');
  t.notMatch(all, /pw-alice|rootpw|gwpw/, 'no password');
});

t.test('users, roles and permissions over HTTP, as etcdctl does them', async (t) => {
  const rootApp = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET, AUTH_ALLOW_ROOT: true }));
  const call = (method: string, url: string, payload?: unknown, user = 'root') =>
    rootApp.inject({ method: method as 'GET', url, payload: payload as never, headers: as(user) });

  let res = await call('POST', '/v1/auth/roles', { name: 'web' });
  t.equal(res.statusCode, 201);
  t.equal((await call('POST', '/v1/auth/roles', { name: 'web' })).json().code, 'role_exists');
  res = await call('POST', '/v1/auth/roles/web/permissions', { type: 'readwrite', key: '/web/', prefix: true });
  t.equal(res.statusCode, 200);
  await call('POST', '/v1/auth/roles/web/permissions', { type: 'read', key: '/cfg/a', range_end: '/cfg/m' });
  await call('POST', '/v1/auth/roles/web/permissions', { type: 'write', key: '/single' });
  t.match(await root('role', 'get', 'web'), /KV Read:\s*\n\s*\[\/cfg\/a, \/cfg\/m\)[\s\S]*\[\/web\/, \/web0\) \(prefix \/web\/\)/);
  res = await call('GET', '/v1/auth/roles/web');
  t.same(res.json().permissions, [
    { type: 'read', key: '/cfg/a', range_end: '/cfg/m' },
    { type: 'write', key: '/single' },
    { type: 'readwrite', key: '/web/', prefix: true },
  ]);
  t.equal((await call('POST', '/v1/auth/roles/web/permissions', { type: 'all', key: '/x' })).statusCode, 400);
  t.equal((await call('POST', '/v1/auth/roles/web/permissions', { type: 'read' })).json().code, 'invalid_permission');
  // Bad base64 is refused rather than decoded into another key (Node skips characters it does not know).
  t.equal((await call('POST', '/v1/auth/roles/web/permissions', { type: 'read', key_base64: 'L3dlYi8!!' })).json().code, 'invalid_base64');
  t.equal((await call('POST', '/v1/auth/roles/web/permissions', { type: 'read', key: '/w', range_end_base64: '%%' })).json().code, 'invalid_base64');
  t.equal((await call('GET', '/v1/auth/roles/web')).json().permissions.length, 3, 'no permission was added');

  t.equal((await call('POST', '/v1/auth/users', { name: 'frank', password: 'pw-frank' })).statusCode, 201);
  t.equal((await call('POST', '/v1/auth/users', { name: 'frank', password: 'x' })).json().code, 'user_exists');
  t.equal((await call('POST', '/v1/auth/users', { name: 'nopw' })).json().code, 'invalid_user');
  t.equal((await call('PUT', '/v1/auth/users/frank/roles/web')).statusCode, 200);
  t.same((await call('GET', '/v1/auth/users/frank')).json(), { name: 'frank', roles: ['web'] });
  t.match(await root('user', 'get', 'frank'), /Roles: web/);
  t.ok((await call('GET', '/v1/auth/users')).json().names.includes('frank'));
  t.ok((await call('GET', '/v1/auth/roles')).json().names.includes('web'));
  t.ok((await etcdctlAs('frank', ['put', '/web/page', 'x'])).ok, 'etcd now lets frank write under /web/');
  t.equal(await req('frank', 'PUT', '/v1/kv//web/page', 'y'), 200, 'and so does the gateway');

  t.equal((await call('PUT', '/v1/auth/users/frank/password', { password: 'new-pw' })).statusCode, 200);
  t.equal((await rootApp.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'frank', password: 'new-pw' } })).statusCode, 200);
  t.equal((await call('DELETE', '/v1/auth/roles/web/permissions?key=%2Fweb%2F&prefix')).statusCode, 200);
  t.equal(await req('frank', 'PUT', '/v1/kv//web/page', 'z'), 403, 'permission revoked');
  t.equal((await call('DELETE', '/v1/auth/users/frank/roles/web')).statusCode, 200);
  t.equal((await call('DELETE', '/v1/auth/users/frank')).statusCode, 200);
  t.equal((await call('GET', '/v1/auth/users/frank')).json().code, 'user_not_found');
  t.equal((await call('DELETE', '/v1/auth/roles/web')).statusCode, 200);
  t.equal((await call('GET', '/v1/auth/roles/web')).statusCode, 404);

  // Not root: etcd refuses.
  t.equal((await call('GET', '/v1/auth/users', undefined, 'alice')).statusCode, 403);
  t.equal((await call('POST', '/v1/auth/roles', { name: 'sneaky' }, 'bob')).statusCode, 403);
  t.equal((await call('POST', '/v1/auth/disable', undefined, 'alice')).statusCode, 403);
});

t.test('leases belong to the subject that granted them through the gateway', async (t) => {
  const grant = await app.inject({ method: 'POST', url: '/v1/leases', headers: as('alice'), payload: { ttl: 60 } });
  t.equal(grant.statusCode, 201);
  const id = grant.json().id as string;
  t.equal((await app.inject({ method: 'POST', url: `/v1/leases/${id}/keepalive`, headers: as('alice') })).statusCode, 200, 'the owner keeps it alive');
  t.equal((await app.inject({ url: `/v1/leases/${id}?keys`, headers: as('alice') })).statusCode, 200, 'the owner lists its keys');
  for (const [what, res] of [
    ['keep-alive', await app.inject({ method: 'POST', url: `/v1/leases/${id}/keepalive`, headers: as('bob') })],
    ['keys', await app.inject({ url: `/v1/leases/${id}?keys`, headers: as('bob') })],
    ['revoke', await app.inject({ method: 'DELETE', url: `/v1/leases/${id}`, headers: as('bob') })],
    ['attach', await app.inject({ method: 'PUT', url: `/v1/kv//app/stolen?lease=${id}`, payload: 'x', headers: as('bob') })],
    ['lock', await app.inject({ method: 'POST', url: `/v1/locks/app%2Flock?lease=${id}&timeout=1`, headers: as('bob') })],
  ] as const) {
    t.equal(res.statusCode, 403, `another subject: ${what}`);
    t.equal(res.json().code, 'lease_not_owned');
  }
  t.equal(await cluster.etcdctl('--user=root:rootpw', 'get', '/app/stolen'), '', 'nothing was attached');
  const ws = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`, as('bob'));
  t.teardown(() => ws.close());
  ws.send({ type: 'keepalive', lease: id });
  t.equal((await ws.next((m) => m.type === 'error')).code, 'lease_not_owned', 'over the websocket too');
  t.equal((await app.inject({ method: 'DELETE', url: `/v1/leases/${id}`, headers: as('alice') })).statusCode, 200, 'the owner revokes it');

  // A lease granted outside the gateway has no owner, as in etcd.
  const outside = /lease ([0-9a-f]+) granted/.exec(await root('lease', 'grant', '60'))![1]!;
  t.equal((await app.inject({ method: 'POST', url: `/v1/leases/${outside}/keepalive`, headers: as('bob') })).statusCode, 200);
  // A TTL key's lease is its writer's.
  const ttlPut = await app.inject({ method: 'PUT', url: '/v1/kv//app/ttl-key?ttl=60', payload: 'x', headers: as('bob') });
  t.equal(ttlPut.statusCode, 201, ttlPut.body);
  t.equal((await app.inject({ method: 'POST', url: `/v1/leases/${ttlPut.json().lease}/keepalive`, headers: as('alice') })).statusCode, 403);
});

t.test('a roles claim maps onto a gateway-managed etcd user holding exactly those roles', async (t) => {
  const rolesApp = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET, AUTH_ROLES_CLAIM: 'roles' }));
  const withRoles = (roles: unknown) => ({ authorization: `Bearer ${hs256(claimsFor('someone-from-the-idp', { roles }))}` });
  let res = await rolesApp.inject({ url: '/v1/kv//app/x', headers: withRoles(['app-read']) });
  t.equal(res.statusCode, 200, 'app-read reads');
  res = await rolesApp.inject({ method: 'PUT', url: '/v1/kv//app/x', payload: 'v', headers: withRoles(['app-read']) });
  t.equal(res.statusCode, 403, 'app-read does not write');
  res = await rolesApp.inject({ method: 'PUT', url: '/v1/kv//app/x', payload: 'v', headers: withRoles(['app-rw', 'app-read']) });
  t.equal(res.statusCode, 200, 'app-rw writes');
  const users = await root('user', 'list');
  const managed = users.split('\n').filter((u) => u.startsWith('gw-roles-'));
  t.equal(managed.length, 2, 'one etcd user per distinct role set');
  const roleSets = await Promise.all(managed.map(async (u) => (await root('user', 'get', u)).match(/Roles: (.*)/)![1]!.trim()));
  t.same(roleSets.sort(), ['app-read', 'app-read app-rw'], 'each holding exactly its roles');
  t.equal((await rolesApp.inject({ url: '/v1/kv//app/x', headers: withRoles(['no-such-role']) })).json().code, 'unknown_role');
  t.equal((await rolesApp.inject({ url: '/v1/kv//app/x', headers: withRoles(['root']) })).statusCode, 403, 'never root');
  t.equal((await rolesApp.inject({ url: '/v1/kv//app/x', headers: withRoles('app-read') })).statusCode, 401, 'the claim must be a list');
  t.equal((await rolesApp.inject({ url: '/v1/kv//app/x', headers: as('alice') })).statusCode, 200, 'tokens without the claim name their user');
});
