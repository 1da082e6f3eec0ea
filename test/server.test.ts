// The process entry as users run it: configuration errors, the loopback
// guard, the embedded etcd default, and graceful shutdown.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request as httpsRequestRaw } from 'node:https';
import { promisify } from 'node:util';
import { WebSocket } from 'ws';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { buildApp, FailClosedError } from '../src/app.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { testConfig } from './helpers/app.js';
import { freePort, startCluster } from './helpers/cluster.js';
import { GATEWAY_USER } from './helpers/etcd-auth.js';

const execFileP = promisify(execFile);
const SERVER = new URL('../src/server.ts', import.meta.url).pathname;

interface Started {
  child: ReturnType<typeof spawn>;
  stderr: string[];
  url: string;
}

/** Starts the gateway process; resolves once it logs that it listens. */
async function startGateway(env: Record<string, string>): Promise<Started> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER], {
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => stderr.push(l));
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = /Server listening at (https?:\/\/[^"\s]+)/.exec(line);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`gateway exited ${code}: ${stderr.join('\n')}`)));
  });
  return { child, stderr, url };
}

async function runToExit(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVER], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const [code] = await once(child, 'exit');
  return { code, stderr };
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

t.test('configuration: defaults, and one line naming a bad variable', async (t) => {
  const config = loadConfig({});
  t.equal(config.HOST, '127.0.0.1');
  t.equal(config.PORT, 8080);
  t.equal(config.BODY_LIMIT, 1_572_864);
  t.equal(config.REQUEST_TIMEOUT_MS, 5000);
  t.equal(config.ETCD_ENDPOINTS, undefined);
  t.equal(loadConfig({ PORT: '9090', ETCD_ENDPOINTS: 'http://a:2379, http://b:2379' }).PORT, 9090);
  t.equal(loadConfig({ ALLOW_INSECURE_PUBLIC: '1' }).ALLOW_INSECURE_PUBLIC, true);
  const bad: [Record<string, string>, RegExp][] = [
    [{ PORT: '70000' }, /^PORT: must be <= 65535 \(got "70000"\)$/],
    [{ PORT: 'eighty' }, /^PORT: must be integer/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL: must be one of/],
    [{ ETCD_ENDPOINTS: 'h1:2379' }, /^ETCD_ENDPOINTS: must match/],
    [{ BODY_LIMIT: '10' }, /^BODY_LIMIT: must be >= 1024/],
    [{ REQUEST_TIMEOUT_MS: '-1' }, /^REQUEST_TIMEOUT_MS: /],
    [{ ALLOW_INSECURE_PUBLIC: 'perhaps' }, /^ALLOW_INSECURE_PUBLIC: must be boolean/],
  ];
  for (const [env, message] of bad) {
    t.throws(() => loadConfig(env), message, JSON.stringify(env));
    t.throws(() => loadConfig(env), ConfigError);
  }
});

t.test('a bad variable stops start-up with a one-line message', async (t) => {
  const { code, stderr } = await runToExit({ PORT: '70000' });
  t.equal(code, 2);
  t.equal(stderr.trim().split('\n').length, 1, 'one line');
  t.match(stderr, /invalid configuration: PORT: must be <= 65535/);
});

t.test('without authentication the gateway refuses a non-loopback address', async (t) => {
  const { code, stderr } = await runToExit({ HOST: '0.0.0.0', ETCD_ENDPOINTS: 'http://127.0.0.1:1', PORT: '0' });
  t.equal(code, 1);
  t.match(stderr, /HOST=0\.0\.0\.0 is not a loopback address and authentication is off/);
});

t.test('embedded default: ETCD_ENDPOINTS unset starts a local etcd, stopped on shutdown', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'etcd-gw-embedded-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const clientPort = await freePort();
  const env = {
    PORT: '0',
    EMBEDDED_ETCD_DATA_DIR: join(dir, 'etcd'),
    EMBEDDED_ETCD_CLIENT_PORT: String(clientPort),
    EMBEDDED_ETCD_PEER_PORT: String(await freePort()),
  };
  const gw = await startGateway(env);
  t.teardown(() => gw.child.kill('SIGKILL'));
  t.match(gw.stderr.join('\n'), new RegExp(`starting an embedded etcd on 127\\.0\\.0\\.1:${clientPort}`));
  let res = await fetch(`${gw.url}/v1/kv//embedded/key`, { method: 'PUT', body: 'it works' });
  t.equal(res.status, 201);
  res = await fetch(`${gw.url}/v1/kv//embedded/key`);
  t.equal(await res.text(), 'it works');
  t.equal((await fetch(`${gw.url}/readyz`)).status, 200);

  gw.child.kill('SIGTERM');
  const [code] = await once(gw.child, 'exit');
  t.equal(code, 0, 'graceful exit');
  t.equal(await portOpen(clientPort), false, 'the embedded etcd stopped with the gateway');

  // The data survives a restart under the same data dir.
  const again = await startGateway(env);
  t.teardown(() => again.child.kill('SIGKILL'));
  res = await fetch(`${again.url}/v1/kv//embedded/key`);
  t.equal(await res.text(), 'it works');
  again.child.kill('SIGTERM');
  await once(again.child, 'exit');
});

t.test('with ETCD_ENDPOINTS the gateway uses that cluster and starts nothing', async (t) => {
  const cluster = await startCluster(t);
  const unusedPort = await freePort();
  const gw = await startGateway({ PORT: '0', ETCD_ENDPOINTS: cluster.endpoints.join(','), EMBEDDED_ETCD_CLIENT_PORT: String(unusedPort) });
  t.teardown(() => gw.child.kill('SIGKILL'));
  const res = await fetch(`${gw.url}/v1/kv//external/key`, { method: 'PUT', body: 'external' });
  t.equal(res.status, 201);
  t.equal(await cluster.etcdctl('get', '/external/key', '--print-value-only'), 'external\n');
  t.notMatch(gw.stderr.join('\n'), /embedded/);
  t.equal(await portOpen(unusedPort), false, 'no embedded etcd');
  gw.child.kill('SIGTERM');
  await once(gw.child, 'exit');

  // HTTPS and wss:// with TLS_CERT_FILE and TLS_KEY_FILE (a self-signed certificate for 127.0.0.1).
  const dir = await mkdtemp(join(tmpdir(), 'gw-tls-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  await execFileP('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1']);
  const ca = await readFile(cert);
  const tls = await startGateway({ PORT: '0', ETCD_ENDPOINTS: cluster.endpoints.join(','), TLS_CERT_FILE: cert, TLS_KEY_FILE: key });
  t.teardown(() => tls.child.kill('SIGKILL'));
  t.match(tls.url, /^https:\/\//, 'it says it listens on https');
  const put = await httpsRequest(`${tls.url}/v1/kv//tls/key`, { method: 'PUT', ca }, 'over tls');
  t.equal(put.status, 201);
  t.equal(await cluster.etcdctl('get', '/tls/key', '--print-value-only'), 'over tls\n');
  const socket = new WebSocket(`${tls.url.replace('https', 'wss')}/v1/watch`, ['etcd-gateway.v1'], { ca });
  await once(socket, 'open');
  socket.send(JSON.stringify({ type: 'subscribe', id: 'w', key: '/tls/key' }));
  const created = JSON.parse(String((await once(socket, 'message'))[0]));
  t.equal(created.type, 'created', 'a websocket over wss://');
  socket.close();
  const plain = await new Promise<string>((resolve) => {
    const s = connect(Number(new URL(tls.url).port), '127.0.0.1', () => s.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n'));
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('close', () => resolve(got));
    s.on('error', () => resolve(got));
  });
  t.notMatch(plain, /^HTTP\/1\.1 200/, 'plain HTTP is not served on the TLS port');
  tls.child.kill('SIGTERM');
  await once(tls.child, 'exit');
  const half = await runToExit({ PORT: '0', ETCD_ENDPOINTS: cluster.endpoints.join(','), TLS_CERT_FILE: cert });
  t.equal(half.code, 2);
  t.match(half.stderr, 'TLS_KEY_FILE: required with TLS_CERT_FILE');
});

t.test('fails closed: with gateway authentication on, it refuses to start unless etcd enforces authentication', async (t) => {
  const cluster = await startCluster(t);
  // Everything configured, the service user even exists: only `etcdctl auth enable` is missing.
  await cluster.etcdctl('user', 'add', `${GATEWAY_USER.name}:${GATEWAY_USER.password}`);
  const auth = {
    AUTH_JWT_SECRET: 'fail-closed-secret-that-is-at-least-32-chars',
    ETCD_USERNAME: GATEWAY_USER.name,
    ETCD_PASSWORD: GATEWAY_USER.password,
    ETCD_TOKEN_SIGNING_KEY_FILE: cluster.signingKeyFile,
  };
  const env = { PORT: '0', ETCD_ENDPOINTS: cluster.endpoints.join(','), ...auth };
  const refused = await runToExit(env);
  t.equal(refused.code, 2);
  t.equal(refused.stderr.trim().split('\n').length, 1, 'one line');
  t.match(refused.stderr, /refusing to start: gateway authentication is on, but etcd's authentication is off/);
  t.notMatch(refused.stderr, GATEWAY_USER.password, 'no secret in the message');
  // The tests' way in (buildApp) fails the same way, with a typed error.
  await t.rejects(buildApp({ config: testConfig(auth), endpoints: cluster.endpoints, logging: false }), FailClosedError);

  // etcd with simple tokens cannot be minted for: refused too (a token without a revision claim).
  const simple = await startCluster(t, { size: 1, extraArgs: ['--auth-token=simple'] });
  for (const args of [['user', 'add', 'root:rootpw'], ['user', 'add', `${GATEWAY_USER.name}:${GATEWAY_USER.password}`], ['user', 'grant-role', GATEWAY_USER.name, 'root'], ['auth', 'enable']]) {
    await simple.etcdctl(...args);
  }
  const withSimple = await runToExit({ ...env, ETCD_ENDPOINTS: simple.endpoints.join(',') });
  t.equal(withSimple.code, 2);
  t.match(withSimple.stderr, /did not return a JWT with a revision claim/);

  // With etcd's authentication on, the same configuration starts.
  await cluster.etcdctl('user', 'add', 'root:rootpw');
  await cluster.etcdctl('user', 'grant-role', GATEWAY_USER.name, 'root');
  await cluster.etcdctl('auth', 'enable');
  const gw = await startGateway(env);
  t.teardown(() => gw.child.kill('SIGKILL'));
  t.equal((await fetch(`${gw.url}/v1/kv//app/x`)).status, 401, 'started, with authentication');
  gw.child.kill('SIGTERM');
  await once(gw.child, 'exit');
});

function httpsRequest(url: string, opts: { method: string; ca: Buffer }, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequestRaw(url, { method: opts.method, ca: opts.ca }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
