// The admin scope (src/auth/admin.ts) against a real 3-member cluster with
// etcd authentication on and gateway authentication on. The route walk reads
// openapi/openapi.json and classifies every operation by a rule of its own,
// so an admin route registered outside the scope (or a scope route the rule
// does not expect) fails here. Every refusal is checked in etcd, with etcdctl
// as root: no alarm raised, history not compacted, leader not moved, users
// and roles untouched.
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { ADMIN_NOTE } from '../src/auth/admin.js';
import { buildTestApp, listen } from './helpers/app.js';
import { WsClient } from './helpers/clients.js';
import { startCluster } from './helpers/cluster.js';
import { enableEtcdAuth, gatewayAuthConfig } from './helpers/etcd-auth.js';

const SECRET = 'admin-scope-test-secret-at-least-32-characters';
const cluster = await startCluster(t);
const root = (...args: string[]) => cluster.etcdctl('--user=root:rootpw', ...args);

// mallory: readwrite on /app/ only, the hostile caller. ops: holds the root role (not the user root).
await enableEtcdAuth(cluster.etcdctl, [{ user: 'mallory', password: 'pw-mallory', role: 'app-rw', prefix: '/app/' }]);
await root('user', 'add', 'ops:pw-ops');
await root('user', 'grant-role', 'ops', 'root');
await root('user', 'add', 'trent:pw-trent');

const app = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET }));
const base = await listen(app);
const as = (user: string) => ({ authorization: `Bearer ${app.issueToken!(user).token}` });

const b64 = (s: string) => Buffer.from(s).toString('base64');
/** Members as etcdctl lists them: hex ID and name. */
const members = (await root('member', 'list'))
  .trim()
  .split('\n')
  .map((line) => line.split(', '))
  .map(([id, , name]) => ({ id: id!, name: name! }));
const dec = (hex: string) => BigInt(`0x${hex}`).toString();

/** The leader's member ID, as etcd reports it (decimal, read as text: uint64 does not fit a JS number). */
async function leader(): Promise<string> {
  const m = /"leader":(\d+)/.exec(await root('endpoint', 'status', '-w', 'json'));
  if (!m) throw new Error('no leader in etcdctl endpoint status');
  return m[1]!;
}
const leaderBefore = await leader();
const follower = members.find((m) => dec(m.id) !== leaderBefore)!;

// A revision that must stay readable: compaction refused means history kept.
await root('put', '/app/history', 'v1');
const early = Number(/"revision":(\d+)/.exec(await root('get', '/app/history', '-w', 'json'))![1]);
await root('put', '/app/history', 'v2');
const current = Number(/"revision":(\d+)/.exec(await root('get', '/app/history', '-w', 'json'))![1]);

/** The rule, independent of the code: which operations are admin. */
function isAdminByRule(method: string, path: string): boolean {
  if (method === 'get' && path === '/v1/leases') return true;
  return [
    /^\/v1\/cluster\//,
    /^\/v1\/maintenance\//,
    /^\/v1\/auth\/(users|roles)(\/|$)/,
    /^\/v1\/auth\/(enable|disable)$/,
    /^\/v3\/cluster\//,
    /^\/v3\/maintenance\//,
    /^\/v3\/kv\/compaction$/,
    /^\/v3\/(kv\/)?lease\/leases$/,
    /^\/v3\/auth\/(?!authenticate$)/,
  ].some((re) => re.test(path));
}

/** A body each admin operation would act on, aimed where it would hurt. */
const BODIES: Record<string, unknown> = {
  'post /v1/cluster/members': { peer_urls: ['http://127.0.0.1:1'] },
  'put /v1/cluster/members/{id}': { peer_urls: ['http://127.0.0.1:2'] },
  'post /v1/maintenance/check-perf': { prefix: '/app/perf/', duration: 1 },
  'post /v1/maintenance/compaction': { revision: current },
  'post /v1/maintenance/move-leader': { to: follower.id },
  'post /v1/auth/users': { name: 'sneaky', password: 'pw' },
  'put /v1/auth/users/{name}/password': { password: 'taken-over' },
  'post /v1/auth/roles': { name: 'sneaky' },
  'post /v1/auth/roles/{name}/permissions': { type: 'readwrite', key: '\0', from_key: true },
  'post /v3/kv/compaction': { revision: String(current) },
  'post /v3/maintenance/alarm': { action: 'ACTIVATE', alarm: 'NOSPACE', memberID: dec(follower.id) },
  'post /v3/maintenance/transfer-leadership': { targetID: dec(follower.id) },
  'post /v3/cluster/member/add': { peerURLs: ['http://127.0.0.1:1'] },
  'post /v3/cluster/member/remove': { ID: dec(follower.id) },
  'post /v3/auth/user/add': { name: 'sneaky', password: 'pw' },
  'post /v3/auth/user/changepw': { name: 'trent', password: 'taken-over' },
  'post /v3/auth/user/grant': { user: 'mallory', role: 'root' },
  'post /v3/auth/role/grant': { name: 'app-rw', perm: { permType: 'READWRITE', key: b64('\0'), range_end: b64('\0') } },
  'post /v3/auth/user/delete': { name: 'trent' },
  'post /v3/auth/role/delete': { role: 'app-rw' },
};
const QUERIES: Record<string, Record<string, string>> = {
  'delete /v1/auth/roles/{name}/permissions': { key: '/app/', prefix: '' },
};
/** Path parameters: a real member, trent (to take over), app-rw (to widen), root (to grant). */
const param = (path: string, name: string) => (name === 'id' ? follower.id : name === 'role' ? 'root' : path.startsWith('/v1/auth/roles') ? 'app-rw' : 'trent');

interface Operation {
  method: string;
  path: string;
  admin: boolean;
}
const spec = JSON.parse(await readFile(new URL('../openapi/openapi.json', import.meta.url), 'utf8')) as {
  paths: Record<string, Record<string, { 'x-admin'?: boolean; 'x-websocket'?: boolean; description?: string; responses: Record<string, unknown> }>>;
};
const operations: Operation[] = [];
for (const [path, ops] of Object.entries(spec.paths)) {
  for (const [method, op] of Object.entries(ops)) {
    if (op['x-websocket']) continue;
    operations.push({ method, path, admin: op['x-admin'] === true });
  }
}

function call(user: string, method: string, path: string, body?: unknown, query?: Record<string, string>) {
  const url = path.replace(/\{(\w+)\}/g, (_m, p: string) => encodeURIComponent(param(path, p)));
  const json = body === undefined ? {} : { 'content-type': 'application/json' };
  return app.inject({ method: method.toUpperCase() as 'GET', url, query, payload: body === undefined ? undefined : JSON.stringify(body), headers: { ...as(user), ...json } });
}

const ETCD_DENIED = { error: 'etcdserver: permission denied', message: 'etcdserver: permission denied', code: 7 };

t.test('the spec marks exactly the operations the rule calls admin', async (t) => {
  t.ok(operations.length > 80, `${operations.length} operations in the spec`);
  const admin = operations.filter((o) => o.admin);
  t.ok(admin.length >= 60, `${admin.length} admin operations`);
  for (const o of operations) t.equal(o.admin, isAdminByRule(o.method, o.path), `${o.method.toUpperCase()} ${o.path} ${isAdminByRule(o.method, o.path) ? 'is' : 'is not'} admin`);
  for (const o of admin) {
    const op = spec.paths[o.path]![o.method]!;
    t.ok(op.responses['403'], `${o.method.toUpperCase()} ${o.path} lists 403`);
    t.match(op.description, ADMIN_NOTE, `${o.method.toUpperCase()} ${o.path} says it needs root`);
  }
  for (const path of ['/v3/auth/authenticate', '/version', '/v1/auth/token', '/v1/auth/ticket', '/v1/leases/{id}']) {
    t.ok(Object.values(spec.paths[path] ?? {}).every((op) => !op['x-admin']), `${path} is not admin`);
  }
});

t.test('every admin operation refuses a non-root user: problem+json admin_required on /v1, etcd PermissionDenied on /v3 and /v3beta', async (t) => {
  for (const o of operations.filter((op) => op.admin)) {
    const key = `${o.method} ${o.path}`;
    const body = BODIES[key] ?? (o.path.startsWith('/v3/') ? {} : undefined);
    const res = await call('mallory', o.method, o.path, body, QUERIES[key]);
    t.equal(res.statusCode, 403, `${o.method.toUpperCase()} ${o.path}: ${res.body}`);
    if (o.path.startsWith('/v1/')) {
      t.match(res.headers['content-type'], /application\/problem\+json/);
      t.equal(res.json().code, 'admin_required', `${o.method.toUpperCase()} ${o.path} answers admin_required`);
    } else {
      t.same(res.json(), ETCD_DENIED, `${o.path} answers etcd's PermissionDenied`);
      const beta = await call('mallory', o.method, o.path.replace('/v3/', '/v3beta/'), body);
      t.equal(beta.statusCode, 403, `${o.path.replace('/v3/', '/v3beta/')} too`);
      t.same(beta.json(), ETCD_DENIED);
    }
  }
  // Nothing of it reached etcd.
  t.equal((await root('alarm', 'list')).trim(), '', 'no alarm raised');
  t.equal(await leader(), leaderBefore, 'leader unchanged');
  t.match(await root('get', '/app/history', `--rev=${early}`), /v1/, 'history not compacted');
  t.match(await root('user', 'get', 'mallory'), /Roles: app-rw\s*$/, 'mallory holds app-rw only');
  t.match(await root('role', 'get', 'app-rw'), /KV Read:\s*\n\s*\[\/app\/, \/app0\) \(prefix \/app\/\)\s*\nKV Write:\s*\n\s*\[\/app\/, \/app0\) \(prefix \/app\/\)\s*$/, 'app-rw unchanged');
  t.notMatch(await root('user', 'list'), /sneaky/, 'no user added');
  t.match(await root('user', 'get', 'trent'), /User: trent/, 'trent not deleted');
  t.equal((await root('member', 'list')).trim().split('\n').length, 3, 'members unchanged');
  t.equal(await root('get', '--prefix', '/app/perf/', '--keys-only'), '', 'check perf wrote nothing');
  await t.rejects(cluster.etcdctl('get', '/app/history'), 'etcd auth still on');
});

t.test('finding 1: a non-root user cannot raise or disarm an alarm', async (t) => {
  const raise = { action: 'ACTIVATE', alarm: 'NOSPACE', memberID: dec(members[0]!.id) };
  for (const path of ['/v3/maintenance/alarm', '/v3beta/maintenance/alarm']) {
    const res = await call('mallory', 'post', path, raise);
    t.equal(res.statusCode, 403);
    t.same(res.json(), ETCD_DENIED);
  }
  // A member ID that belongs to no member, which etcd would take too.
  t.equal((await call('mallory', 'post', '/v3/maintenance/alarm', { ...raise, memberID: '12345' })).statusCode, 403);
  // The websocket variant is refused at the upgrade.
  const ws = await WsClient.connect(`${base.replace('http', 'ws')}/v3/maintenance/alarm`, as('mallory')).catch((err: { statusCode?: number }) => err);
  t.equal((ws as { statusCode?: number }).statusCode, 403, 'websocket upgrade refused');
  t.equal((await root('alarm', 'list')).trim(), '', 'etcdctl alarm list shows nothing');
  t.equal((await call('mallory', 'get', '/v1/maintenance/alarms')).statusCode, 403, 'alarm list refused');

  // A real alarm (raised by a root holder) cannot be disarmed by mallory.
  t.teardown(() => root('alarm', 'disarm'));
  t.equal((await call('ops', 'post', '/v3/maintenance/alarm', raise)).statusCode, 200, 'a root holder may raise it');
  t.match(await root('alarm', 'list'), /alarm:NOSPACE/);
  const disarm = await call('mallory', 'delete', '/v1/maintenance/alarms');
  t.equal(disarm.statusCode, 403);
  t.equal(disarm.json().code, 'admin_required');
  t.match(await root('alarm', 'list'), /alarm:NOSPACE/, 'still raised');
  const v3disarm = await call('mallory', 'post', '/v3/maintenance/alarm', { ...raise, action: 'DEACTIVATE' });
  t.equal(v3disarm.statusCode, 403);
  t.match(await root('alarm', 'list'), /alarm:NOSPACE/, 'still raised');
  const byOps = await call('ops', 'delete', '/v1/maintenance/alarms');
  t.equal(byOps.statusCode, 200, 'a root holder may disarm');
  t.same(byOps.json().alarms, [{ member_id: members[0]!.id, alarm: 'NOSPACE' }]);
  t.equal((await root('alarm', 'list')).trim(), '', 'disarmed');
});

t.test('finding 2: compaction, leader transfer and topology reads are refused to a non-root user', async (t) => {
  const v1 = await call('mallory', 'post', '/v1/maintenance/compaction', { revision: current });
  t.equal(v1.statusCode, 403);
  t.equal(v1.json().code, 'admin_required');
  const v3 = await call('mallory', 'post', '/v3/kv/compaction', { revision: String(current), physical: true });
  t.same([v3.statusCode, v3.json()], [403, ETCD_DENIED]);
  t.match(await root('get', '/app/history', `--rev=${early}`), /v1/, 'compact revision unchanged: the early revision still reads');

  t.equal((await call('mallory', 'post', '/v1/maintenance/move-leader', { to: follower.id })).statusCode, 403);
  t.equal((await call('mallory', 'post', '/v3/maintenance/transfer-leadership', { targetID: dec(follower.id) })).statusCode, 403);
  t.equal(await leader(), leaderBefore, 'leader unchanged');

  for (const path of ['/v1/cluster/members', '/v1/cluster/status', '/v1/cluster/health', '/v1/leases', '/v1/maintenance/hashkv']) {
    const res = await call('mallory', 'get', path);
    t.equal(res.statusCode, 403, path);
    t.notMatch(res.body, /127\.0\.0\.1|m[012]\b/, `${path} names no member`);
  }
  for (const path of ['/v3/cluster/member/list', '/v3/maintenance/status', '/v3/lease/leases', '/v3/kv/lease/leases']) {
    const res = await call('mallory', 'post', path, {});
    t.same([res.statusCode, res.json()], [403, ETCD_DENIED], path);
  }
  // The snapshot stream, as a chunked POST and as a websocket.
  const snap = await call('mallory', 'post', '/v3/maintenance/snapshot', {});
  t.same([snap.statusCode, snap.json()], [403, ETCD_DENIED], 'snapshot stream refused');
  const ws = await WsClient.connect(`${base.replace('http', 'ws')}/v3/maintenance/snapshot`, as('mallory')).catch((err: { statusCode?: number }) => err);
  t.equal((ws as { statusCode?: number }).statusCode, 403, 'snapshot websocket refused');
  const dl = await call('mallory', 'get', '/v1/maintenance/snapshot');
  t.equal(dl.statusCode, 403, 'snapshot download refused');
});

t.test('a user holding the root role gets through', async (t) => {
  const list = await call('ops', 'get', '/v1/cluster/members');
  t.equal(list.statusCode, 200);
  t.same(list.json().members.map((m: { id: string }) => m.id).sort(), members.map((m) => m.id).sort());
  const status = await call('ops', 'get', '/v1/cluster/status');
  t.equal(status.statusCode, 200);
  t.equal(status.json().endpoints.length, 3);
  t.same((await call('ops', 'get', '/v1/maintenance/alarms')).json(), { alarms: [] });
  const v3list = await call('ops', 'post', '/v3/cluster/member/list', {});
  t.equal(v3list.statusCode, 200);
  t.equal(v3list.json().members.length, 3);
  t.equal((await call('ops', 'post', '/v3/maintenance/status', {})).statusCode, 200);
  t.equal((await call('ops', 'post', '/v3beta/maintenance/alarm', { action: 'GET' })).statusCode, 200);
  // Routes outside the scope are untouched: mallory still reads and writes /app/.
  t.equal((await app.inject({ method: 'PUT', url: '/v1/kv//app/mine', payload: 'x', headers: as('mallory') })).statusCode, 201);
  t.equal((await call('mallory', 'post', '/v3/kv/range', { key: b64('/app/mine') })).statusCode, 200);
});

t.test('the verdict follows the auth store: granting and revoking root take effect without a restart', async (t) => {
  t.teardown(() => root('user', 'revoke-role', 'trent', 'root').catch(() => undefined));
  const status = async () => (await call('trent', 'get', '/v1/cluster/members')).statusCode;
  t.equal(await status(), 403, 'trent is no admin');
  await root('user', 'grant-role', 'trent', 'root');
  // The gateway learns the new auth revision within its 2 s poll.
  const until = async (want: number) => {
    const deadline = Date.now() + 10_000;
    let got = await status();
    while (got !== want && Date.now() < deadline) {
      // The next revision the minter learns, or another look a moment later.
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          app.minter!.off('revision', done);
          resolve();
        };
        const timer = setTimeout(done, 250);
        app.minter!.once('revision', done);
      });
      got = await status();
    }
    return got;
  };
  t.equal(await until(200), 200, 'granted root: let through');
  await root('user', 'revoke-role', 'trent', 'root');
  t.equal(await until(403), 403, 'revoked: refused again');
});

t.test('with gateway authentication off the admin scope lets everything through, as before', async (t) => {
  const open = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, {}));
  t.notOk(open.authEnabled);
  const res = await open.inject({ url: '/v1/cluster/members' });
  t.equal(res.statusCode, 200);
  t.equal(res.json().members.length, 3);
  t.equal((await open.inject({ method: 'POST', url: '/v3/maintenance/alarm', payload: { action: 'GET' } })).statusCode, 200);
});
