// What a web page can make a browser do to a gateway with authentication off
// (the default): DNS rebinding (the page's own name pointed at the gateway,
// so the browser calls it "same origin") and cross-site writes a page may send
// without a CORS preflight (text/plain POSTs). And what failure answers say:
// no etcd member address, no endpoint list, no grpc-js internals.
import { request } from 'node:http';
import { chromium } from 'playwright-core';
import t from 'tap';
import { DOCS_CSP } from '../src/plugins/openapi.js';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { SseClient } from './helpers/clients.js';
import { freeze } from './helpers/etcd-waits.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints);
const base = await listen(app);
const port = new URL(base).port;
const etcdGet = async (key: string) => (await cluster.etcdctl('get', key, '--print-value-only')).trim();

interface Answer {
  status: number;
  text: string;
  json: () => Record<string, unknown>;
}

/** A raw HTTP request to the gateway, naming any Host (fetch would not let a page, nor us, choose it). */
function call(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, text, json: () => JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

t.test('DNS rebinding: a request naming a foreign Host is refused before anything happens', async (t) => {
  const evil = { host: `evil.example:${port}` };
  const put = await call('PUT', '/v1/kv/rebind/k', evil, 'x');
  t.equal(put.status, 421);
  t.equal(put.json().code, 'host_not_allowed');
  t.equal(await etcdGet('rebind/k'), '', 'nothing written in etcd');
  await cluster.etcdctl('put', 'rebind/secret', 's3cret');
  const read = await call('GET', '/v1/kv/rebind/secret', evil);
  t.equal(read.status, 421, 'reads too: reading is what rebinding is for');
  t.notMatch(read.text, /s3cret/);
  const v3 = await call('POST', '/v3/kv/range', { ...evil, 'content-type': 'application/json' }, JSON.stringify({ key: Buffer.from('rebind/secret').toString('base64') }));
  t.equal(v3.status, 421, '/v3 as well');
  t.notMatch(v3.text, /czNjcmV0|s3cret/);
  t.equal((await call('GET', '/metrics', evil)).status, 421);
  t.equal((await call('GET', '/docs/', evil)).status, 421);
  t.equal((await call('GET', '/v1/watch', { ...evil, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' })).status, 421, 'websocket upgrades too');

  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'localhost', `LOCALHOST.:${port}`]) {
    const ok = await call('PUT', '/v1/kv/rebind/k', { host }, host);
    t.ok(ok.status < 300, `Host ${host} is the gateway (${ok.status})`);
    t.equal(await etcdGet('rebind/k'), host);
  }
  const byAddress = await call('GET', '/v1/kv/rebind/k', { host: `10.1.2.3:${port}` });
  t.equal(byAddress.status, 200, 'any IP address: a rebinding page always names a host name');
  for (const path of ['/healthz', '/readyz']) {
    t.equal((await call('GET', path, { host: 'pod-name.example' })).status, 200, `${path} answers probes whatever Host they name`);
  }
});

t.test('ALLOWED_HOSTS replaces the defaults; * allows any', async (t) => {
  const named = await buildTestApp(t, cluster.endpoints, { ALLOWED_HOSTS: 'gw.example:8443, other.example' });
  const status = async (host: string) => (await named.inject({ url: '/v1/kv/rebind/k', headers: { host } })).statusCode;
  t.equal(await status('gw.example:8443'), 200);
  t.equal(await status('GW.example:8443'), 200, 'names are case-insensitive');
  t.equal(await status('gw.example:8080'), 421, 'a listed port is the only one');
  t.equal(await status('other.example:1234'), 200, 'a name without a port allows any');
  t.equal(await status('localhost:8080'), 421, 'the defaults are replaced');
  t.equal(await status('127.0.0.1:8080'), 421, 'addresses too');
  t.equal(await status('evil.example'), 421);
  t.equal(await status('gw.example:8443.evil.example'), 421);
  const any = await buildTestApp(t, cluster.endpoints, { ALLOWED_HOSTS: '*' });
  t.equal((await any.inject({ url: '/v1/kv/rebind/k', headers: { host: 'evil.example' } })).statusCode, 200);
  const listening = await buildTestApp(t, cluster.endpoints, { HOST: 'gateway.internal' });
  t.equal((await listening.inject({ url: '/v1/kv/rebind/k', headers: { host: 'gateway.internal:8080' } })).statusCode, 200, 'the listen address is allowed by default');
});

t.test('cross-site writes: unsafe methods from another origin are refused, whatever the route and Content-Type', async (t) => {
  const evil = { origin: 'https://evil.example', 'content-type': 'text/plain' };
  let res = await call('PUT', '/v1/kv/csrf/k', evil, 'x');
  t.equal(res.status, 403);
  t.equal(res.json().code, 'origin_not_allowed');
  t.equal(await etcdGet('csrf/k'), '', 'no PUT reached etcd');
  await cluster.etcdctl('put', 'csrf/seed', 'kept');
  res = await call('DELETE', '/v1/kv/csrf/seed', evil);
  t.equal(res.status, 403);
  t.equal(await etcdGet('csrf/seed'), 'kept', 'no DELETE reached etcd');
  res = await call('POST', '/v1/txn', evil, JSON.stringify({ success: [{ put: { key: 'csrf/txn', value: 'x' } }] }));
  t.equal(res.status, 403);
  t.equal(await etcdGet('csrf/txn'), '');
  res = await call('POST', '/v3/kv/put', evil, JSON.stringify({ key: Buffer.from('csrf/v3').toString('base64'), value: 'eA==' }));
  t.equal(res.status, 403);
  t.equal(await etcdGet('csrf/v3'), '');

  // Routes without a body schema take any body: a keep-alive from a page must not renew a lease.
  const granted = /lease ([0-9a-f]+) granted/.exec(await cluster.etcdctl('lease', 'grant', '6'))![1]!;
  const remaining = async () => JSON.parse(await cluster.etcdctl('lease', 'timetolive', granted, '-w', 'json')).ttl as number;
  let before = await remaining();
  while (before > 4) {
    await new Promise((r) => setTimeout(r, 100)); // etcd counts the TTL in whole seconds
    before = await remaining();
  }
  res = await call('POST', `/v1/leases/${granted}/keepalive`, evil, 'x');
  t.equal(res.status, 403);
  t.ok((await remaining()) <= before, 'the lease was not renewed');
  for (const path of ['/v1/maintenance/defragment', '/v1/auth/enable', '/v1/cluster/members/1/promote']) {
    res = await call('POST', path, evil, 'x');
    t.equal(res.status, 403, `POST ${path}`);
    t.equal(res.json().code, 'origin_not_allowed');
  }
  res = await call('PUT', '/v1/kv/csrf/k', { origin: 'null' }, 'x');
  t.equal(res.status, 403, 'an opaque origin (sandboxed frame, file:) is not ours');

  res = await call('POST', `/v1/leases/${granted}/keepalive`, { origin: base });
  t.equal(res.status, 200, 'the gateway\'s own origin may');
  t.ok((await remaining()) > before, 'and renews the lease');
  res = await call('PUT', '/v1/kv/csrf/k', { 'content-type': 'text/plain' }, 'from curl');
  t.ok(res.status < 300, 'no Origin: not a browser');
  t.equal(await etcdGet('csrf/k'), 'from curl');
  res = await call('GET', '/v1/kv/csrf/k', { origin: 'https://evil.example' });
  t.equal(res.status, 200, 'safe methods pass: CORS keeps the answer from the page');

  const withCors = await buildTestApp(t, cluster.endpoints, { CORS_ORIGINS: 'https://console.example' });
  const listed = await withCors.inject({ method: 'PUT', url: '/v1/kv/csrf/k', headers: { origin: 'https://console.example', 'content-type': 'text/plain' }, payload: 'console' });
  t.equal(listed.statusCode, 200, 'an origin in CORS_ORIGINS may');
  t.equal(await etcdGet('csrf/k'), 'console');
  const unlisted = await withCors.inject({ method: 'PUT', url: '/v1/kv/csrf/k', headers: { origin: 'https://evil.example' }, payload: 'evil' });
  t.equal(unlisted.statusCode, 403);
  t.equal(await etcdGet('csrf/k'), 'console');
});

t.test('/docs has a Content-Security-Policy, and Swagger UI still renders under it in Chromium', async (t) => {
  const res = await app.inject({ url: '/docs/' });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-security-policy'], DOCS_CSP);
  t.notMatch(DOCS_CSP, /unsafe-inline|unsafe-eval/);
  t.match(DOCS_CSP, /script-src 'self';/);
  t.match(DOCS_CSP, /frame-ancestors 'none'/);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  const violations: string[] = [];
  page.on('console', (m) => {
    if (/Content Security Policy/.test(m.text())) violations.push(m.text());
  });
  page.on('pageerror', (e) => violations.push(e.message));
  await page.goto(`${base}/docs/`);
  await page.waitForSelector('.swagger-ui .info .title');
  t.match(await page.textContent('.swagger-ui .info .title'), /etcd-gateway/);
  t.ok((await page.locator('.opblock').count()) > 20, 'the operations are listed');
  t.same(violations, [], 'nothing the page needs is blocked');
});

t.test('failure answers name no etcd address: per-member probes, timeouts, /readyz, unknown endpoints', async (t) => {
  const FIXED_TEXTS = ['etcd did not answer before the deadline', 'etcd is unavailable'];
  const addresses = new RegExp(['remote_addr', ...cluster.endpoints.map((e) => new URL(e).port)].join('|'));
  const sse = await SseClient.open(`${base}/v1/watch/hygiene/?prefix`);
  t.teardown(() => sse.close());
  await sse.next((e) => e.event === 'created');
  const ready = await call('GET', '/readyz');
  t.equal(ready.status, 200);
  t.equal((ready.json().watch as Record<string, unknown>).stream_connected, true);
  t.notOk('stream_peer' in (ready.json().watch as Record<string, unknown>), 'no stream_peer in the public /readyz');
  t.notMatch(ready.text, addresses);

  const bogus = await call('GET', '/v1/maintenance/snapshot?endpoint=http://bogus.example:1');
  t.equal(bogus.status, 400);
  t.equal(bogus.json().code, 'unknown_endpoint');
  t.notMatch(bogus.text, addresses, 'the configured endpoints are not listed');

  const logs: string[] = [];
  const { Writable } = await import('node:stream');
  const stream = new Writable({ write: (c, _e, done) => (logs.push(c.toString()), done()) });
  const quick = await buildTestApp(t, cluster.endpoints, { REQUEST_TIMEOUT_MS: 1000, LOG_LEVEL: 'warn' }, { stream });
  const i = cluster.members.length - 1;
  await freeze(cluster.members[i]!.pid, t);
  const status = await quick.inject({ url: '/v1/cluster/status' });
  const dead = status.json().endpoints.find((e: { endpoint: string }) => e.endpoint === cluster.endpoints[i]);
  t.equal(dead.reachable, false);
  // A deadline, or the connection dropped by its keepalive: either way a fixed text.
  t.ok(FIXED_TEXTS.includes(dead.error), `a probe error is a fixed text: ${dead.error}`);
  const health = await quick.inject({ url: '/v1/cluster/health' });
  const sick = health.json().endpoints.find((e: { endpoint: string }) => e.endpoint === cluster.endpoints[i]);
  t.equal(sick.healthy, false);
  t.ok(FIXED_TEXTS.includes(sick.error), `so is a health error: ${sick.error}`);

  for (const m of cluster.members.slice(0, i)) await freeze(m.pid, t);
  const write = await quick.inject({ method: 'PUT', url: '/v1/kv/hygiene/k', payload: 'x' });
  t.equal(write.statusCode, 504);
  t.equal(write.json().outcome, 'unknown');
  t.notMatch(write.body, addresses, 'a write timeout names no member');
  const readyz = await quick.inject({ url: '/readyz' });
  t.ok(readyz.statusCode >= 500, `/readyz answers ${readyz.statusCode} during the outage`);
  t.notMatch(readyz.body, addresses, '/readyz\'s own failure names no member');
  t.match(logs.join(''), addresses, 'the log keeps the details');
  for (const m of cluster.members) process.kill(m.pid, 'SIGCONT');
});
