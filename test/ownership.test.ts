// The txn guard and lease ownership (src/auth/txn-guard.ts,
// src/auth/lease-owners.ts) against a real cluster with etcd and gateway
// authentication on. Hostile callers are ordinary etcd users: `mallory`
// holds readwrite on /app/ (the same prefix as the victim, so etcd itself
// lets her write the victim's keys), `wo` holds write only on /app/. Every
// refusal is checked in etcd afterwards with etcdctl as root.
import { status as GrpcStatus } from '@grpc/grpc-js';
import t from 'tap';
import { WebSocket } from 'ws';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { GATEWAY_USER, gatewayAuthConfig } from './helpers/etcd-auth.js';

const SECRET = 'test-secret-that-is-at-least-32-characters-long';
const cluster = await startCluster(t);
const root = (...args: string[]) => cluster.etcdctl('--user=root:rootpw', ...args);

await cluster.etcdctl('user', 'add', 'root:rootpw');
await cluster.etcdctl('user', 'add', `${GATEWAY_USER.name}:${GATEWAY_USER.password}`);
await cluster.etcdctl('user', 'grant-role', GATEWAY_USER.name, 'root');
for (const [user, role, perm] of [
  ['victim', 'app-rw', 'readwrite'],
  ['mallory', 'app-rw', 'readwrite'],
  ['wo', 'app-w', 'write'],
] as const) {
  if (!(await cluster.etcdctl('role', 'list')).split('\n').includes(role)) {
    await cluster.etcdctl('role', 'add', role);
    await cluster.etcdctl('role', 'grant-permission', role, perm, '/app/', '--prefix=true');
  }
  await cluster.etcdctl('user', 'add', `${user}:pw-${user}`);
  await cluster.etcdctl('user', 'grant-role', user, role);
}
await cluster.etcdctl('put', '/app/secret', 'old-secret');
await cluster.etcdctl('auth', 'enable');

const app = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET }));
const base = await listen(app);

const tokens = new Map<string, string>();
for (const user of ['victim', 'mallory', 'wo']) {
  const res = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: user, password: `pw-${user}` } });
  tokens.set(user, res.json().token as string);
}
const as = (user: string) => ({ authorization: `Bearer ${tokens.get(user)}` });

const b64 = (s: string) => Buffer.from(s).toString('base64');
const hexOf = (id: string) => BigInt(id).toString(16);
const decOf = (hex: string) => BigInt.asIntN(64, BigInt(`0x${hex}`)).toString();

/** A /v3 call as `user`: status, parsed body and the raw text (to look for leaked values). */
async function v3(user: string, path: string, body: unknown) {
  const res = await fetch(base + path, { method: 'POST', headers: as(user), body: JSON.stringify(body) });
  const text = await res.text();
  let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, body: json, text };
}
const v1 = (user: string, method: string, url: string, payload?: unknown) =>
  app.inject({ method: method as 'POST', url, headers: as(user), ...(payload === undefined ? {} : { payload: payload as string }) });

/** Value and version of a key, read by root in etcd. */
async function inEtcd(key: string): Promise<{ value: string; version: string } | undefined> {
  const out = JSON.parse(await root('get', key, '-w', 'json')) as { kvs?: { value: string; version: number }[] };
  const kv = out.kvs?.[0];
  return kv ? { value: Buffer.from(kv.value, 'base64').toString(), version: String(kv.version) } : undefined;
}

/** etcdctl lease timetolive --keys as root: remaining and granted TTL and the keys. */
async function leaseInEtcd(hex: string): Promise<{ ttl: number; granted: number; keys: string[] }> {
  const out = JSON.parse(await root('lease', 'timetolive', hex, '--keys', '-w', 'json')) as { ttl: number; 'granted-ttl': number; keys?: string[] };
  return { ttl: out.ttl, granted: out['granted-ttl'], keys: (out.keys ?? []).map((k) => Buffer.from(k, 'base64').toString()) };
}

const PERMISSION_DENIED = { error: 'etcdserver: permission denied', message: 'etcdserver: permission denied', code: GrpcStatus.PERMISSION_DENIED };

t.test('a write-only caller cannot read old values through prev_kv in a txn (nested too); nothing is half-applied', async (t) => {
  const before = await inEtcd('/app/secret');
  const put = (extra: object = {}) => ({ put: { key: '/app/secret', value: 'overwritten', prev_kv: true, ...extra } });
  const bodies = {
    top: { success: [{ put: { key: '/app/other', value: 'first' } }, put()] },
    nested: { success: [{ put: { key: '/app/other', value: 'first' } }, { txn: { failure: [put()] } }] },
  };
  for (const [name, body] of Object.entries(bodies)) {
    const res = await v1('wo', 'POST', '/v1/txn', body);
    t.equal(res.statusCode, 403, `/v1/txn ${name}`);
    t.equal(res.json().code, 'permission_denied');
    t.equal(res.json().operation, name === 'top' ? 'success[1]' : 'success[1].txn.failure[0]', 'names the operation');
    t.notMatch(res.body, 'old-secret', 'the old value is in no body');
  }
  const v3put = (extra: object = {}) => ({ request_put: { key: b64('/app/secret'), value: b64('overwritten'), prev_kv: true, ...extra } });
  for (const [name, body] of Object.entries({
    top: { success: [{ request_put: { key: b64('/app/other'), value: b64('first') } }, v3put()] },
    nested: { success: [{ request_put: { key: b64('/app/other'), value: b64('first') } }, { request_txn: { failure: [v3put()] } }] },
  })) {
    const res = await v3('wo', '/v3/kv/txn', body);
    t.equal(res.status, 403, `/v3/kv/txn ${name}`);
    t.same(res.body, PERMISSION_DENIED, "etcd's own refusal");
    t.notMatch(res.text, b64('old-secret'));
  }
  // A plain /v3/kv/put with prev_kv: etcd checks that one itself.
  const plain = await v3('wo', '/v3/kv/put', { key: b64('/app/secret'), value: b64('overwritten'), prev_kv: true });
  t.equal(plain.status, 403, 'etcd refuses a plain put with prev_kv to a write-only caller');
  t.same(plain.body, PERMISSION_DENIED);
  t.same(await inEtcd('/app/secret'), before, 'the key is untouched in etcd (value and version)');
  t.equal(await inEtcd('/app/other'), undefined, 'and no other put of those txns was applied');

  // Without prev_kv the write-only caller writes, through a txn too.
  const ok = await v1('wo', 'POST', '/v1/txn', { success: [{ put: { key: '/app/wo', value: 'mine' } }] });
  t.equal(ok.statusCode, 200, ok.body);
  t.equal((await inEtcd('/app/wo'))?.value, 'mine');
  // A reader gets its prev_kv, nested too.
  const reader = await v1('victim', 'POST', '/v1/txn', { success: [{ txn: { success: [{ put: { key: '/app/wo', value: 'again', prev_kv: true } }] } }] });
  t.equal(reader.statusCode, 200, reader.body);
  t.equal(reader.json().responses[0].responses[0].prev_kv.value, 'mine');
});

t.test("another subject's lease: no key attached, no keys listed, no keep-alive, no revoke, no lock, no campaign", async (t) => {
  // The victim's leases: one granted over /v1, one over /v3, each with a key.
  const v1Lease = (await v1('victim', 'POST', '/v1/leases', { ttl: 60 })).json().id as string;
  const v3Grant = await v3('victim', '/v3/lease/grant', { TTL: 60 });
  t.equal(v3Grant.status, 200, v3Grant.text);
  const v3Lease = hexOf(v3Grant.body.ID as string).padStart(16, '0');
  for (const hex of [v1Lease, v3Lease]) {
    const res = await v1('victim', 'PUT', `/v1/kv//app/victim-${hex}?lease=${hex}`, 'v');
    t.equal(res.statusCode, 201, res.body);
  }

  for (const hex of [v1Lease, v3Lease]) {
    const id = decOf(hex);
    const attempts = {
      'PUT /v1/kv?lease': (await v1('mallory', 'PUT', `/v1/kv//app/stolen-1?lease=${hex}`, 'x')),
      '/v1/txn': await v1('mallory', 'POST', '/v1/txn', { success: [{ put: { key: '/app/stolen-2', value: 'x', lease: hex } }] }),
      '/v1/txn nested': await v1('mallory', 'POST', '/v1/txn', { success: [{ txn: { success: [{ put: { key: '/app/stolen-3', value: 'x', lease: hex } }] } }] }),
      '/v1/locks': await v1('mallory', 'POST', `/v1/locks/%2Fapp%2Flk?lease=${hex}&timeout=1`),
      '/v1/elections': await v1('mallory', 'POST', '/v1/elections/%2Fapp%2Fel', { value: 'x', lease: hex, timeout: 1 }),
      'keep-alive': await v1('mallory', 'POST', `/v1/leases/${hex}/keepalive`),
    };
    for (const [what, res] of Object.entries(attempts)) {
      t.equal(res.statusCode, 403, `${what} with the victim's lease ${hex}: ${res.body}`);
      t.equal(res.json().code, 'lease_not_owned');
    }
    const v3Attempts = {
      '/v3/kv/put': await v3('mallory', '/v3/kv/put', { key: b64('/app/stolen-4'), value: b64('x'), lease: id }),
      '/v3/kv/txn': await v3('mallory', '/v3/kv/txn', { success: [{ request_put: { key: b64('/app/stolen-5'), value: b64('x'), lease: id } }] }),
      '/v3/kv/txn nested': await v3('mallory', '/v3/kv/txn', {
        success: [{ request_txn: { success: [{ request_put: { key: b64('/app/stolen-6'), value: b64('x'), lease: id } }] } }],
      }),
      '/v3/lease/timetolive keys': await v3('mallory', '/v3/lease/timetolive', { ID: id, keys: true }),
      '/v3/kv/lease/timetolive keys': await v3('mallory', '/v3/kv/lease/timetolive', { ID: id, keys: true }),
      '/v3/lease/revoke': await v3('mallory', '/v3/lease/revoke', { ID: id }),
      '/v3/kv/lease/revoke': await v3('mallory', '/v3/kv/lease/revoke', { ID: id }),
      '/v3/lock/lock': await v3('mallory', '/v3/lock/lock', { name: b64('/app/v3lk'), lease: id }),
      '/v3/election/campaign': await v3('mallory', '/v3/election/campaign', { name: b64('/app/v3el'), lease: id, value: b64('x') }),
    };
    for (const [what, res] of Object.entries(v3Attempts)) {
      t.equal(res.status, 403, `${what} with the victim's lease ${hex}: ${res.text}`);
      t.same(res.body, PERMISSION_DENIED);
      t.notMatch(res.text, b64(`/app/victim-${hex}`), 'no key name in the answer');
    }
    // Without keys the time to live is no one's secret (as in /v1).
    t.equal((await v3('mallory', '/v3/lease/timetolive', { ID: id })).status, 200);

    const lease = await leaseInEtcd(hex);
    t.ok(lease.ttl > 0, 'the lease is alive');
    t.same(
      lease.keys.filter((k) => k.startsWith('/')),
      [`/app/victim-${hex}`],
      'with exactly its own key: nothing attached, nothing revoked',
    );
  }
  t.equal(await root('get', '/app/stolen', '--prefix', '--keys-only'), '', 'no stolen key exists');
  for (const prefix of ['/app/lk/', '/app/el/', '/app/v3lk/', '/app/v3el/']) {
    t.equal(await root('get', prefix, '--prefix', '--keys-only'), '', `no key under ${prefix}`);
  }
});

/** One /v3/lease/keepalive stream with the given request lines; the answer's chunks. */
async function keepAlive(user: string, ids: string[]): Promise<any[]> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await fetch(`${base}/v3/lease/keepalive`, { method: 'POST', headers: as(user), body: ids.map((ID) => JSON.stringify({ ID }) + '\n').join('') });
  return (await res.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** Waits (on etcd's clock) until the lease has lost at least two seconds, so a renewal would show. */
async function aged(hex: string): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { ttl, granted } = await leaseInEtcd(hex);
    if (ttl <= granted - 2) return ttl;
    if (Date.now() > deadline) throw new Error(`lease ${hex} does not age`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

t.test('/v3 keep-alive stream: each request is checked; the owner renews, another subject does not', async (t) => {
  const id = (await v3('victim', '/v3/lease/grant', { TTL: 30 })).body.ID as string;
  const hex = hexOf(id).padStart(16, '0');
  const before = await aged(hex);
  // Mallory's request comes after an unowned one (the zero ID) in the same stream.
  const chunks = await keepAlive('mallory', ['0', id]);
  const last = chunks[chunks.length - 1];
  t.equal(last.error?.grpc_code, GrpcStatus.PERMISSION_DENIED, JSON.stringify(chunks));
  t.equal(last.error?.message, 'etcdserver: permission denied');
  t.notOk(chunks.some((c) => c.result?.ID === id), 'no answer for the victim lease');
  t.ok((await leaseInEtcd(hex)).ttl <= before, 'the TTL was not renewed');

  const own = await keepAlive('victim', [id]);
  t.equal(own[0]?.result?.ID, id, JSON.stringify(own));
  t.equal(own[0]?.result?.TTL, '30', 'the owner renews');
  t.ok((await leaseInEtcd(hex)).ttl > before, 'renewed in etcd');
});

/** The first message a /v3/lease/keepalive websocket answers to one request, opened with the token as etcd's proxy takes it. */
function keepAliveOverWebsocket(user: string, id: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${base.replace('http', 'ws')}/v3/lease/keepalive`, ['Bearer', tokens.get(user)!]);
    socket.once('open', () => socket.send(JSON.stringify({ ID: id })));
    socket.once('message', (data) => {
      resolve(JSON.parse(data.toString()));
      socket.close();
    });
    socket.once('error', reject);
  });
}

t.test('/v3 keep-alive over a websocket: the same check', async (t) => {
  const id = (await v3('victim', '/v3/lease/grant', { TTL: 30 })).body.ID as string;
  const theirs = await keepAliveOverWebsocket('mallory', id);
  t.equal(theirs.error?.grpc_code, GrpcStatus.PERMISSION_DENIED, JSON.stringify(theirs));
  const own = await keepAliveOverWebsocket('victim', id);
  t.equal(own.result?.TTL, '30', JSON.stringify(own));
});

t.test('the owner does all of it: attach, txn with prev_kv, list keys, keep alive, lock, campaign, revoke', async (t) => {
  const grant = await v3('victim', '/v3/lease/grant', { TTL: 60 });
  const id = grant.body.ID as string;
  const hex = hexOf(id).padStart(16, '0');
  // A plain /v3 put with one's own lease and prev_kv (the gateway sends it as a txn: see guardedPut).
  const put = await v3('victim', '/v3/kv/put', { key: b64('/app/own-1'), value: b64('one'), lease: id, prev_kv: true });
  t.equal(put.status, 200, put.text);
  t.ok(put.body.header.revision, 'a PutResponse');
  const again = await v3('victim', '/v3/kv/put', { key: b64('/app/own-1'), value: b64('two'), lease: id, prev_kv: true });
  t.equal(again.body.prev_kv.value, b64('one'), 'prev_kv of the own key');
  const txn = await v3('victim', '/v3/kv/txn', {
    success: [{ request_txn: { success: [{ request_put: { key: b64('/app/own-2'), value: b64('x'), lease: id, prev_kv: true } }] } }],
  });
  t.equal(txn.status, 200, txn.text);
  const v1txn = await v1('victim', 'POST', '/v1/txn', { success: [{ put: { key: '/app/own-3', value: 'x', lease: hex } }] });
  t.equal(v1txn.statusCode, 200, v1txn.body);
  const ttl = await v3('victim', '/v3/lease/timetolive', { ID: id, keys: true });
  t.equal(ttl.status, 200, ttl.text);
  t.same([...ttl.body.keys].sort(), [b64('/app/own-1'), b64('/app/own-2'), b64('/app/own-3')], "the caller's keys, without the gateway's owner record");
  const v1ttl = await v1('victim', 'GET', `/v1/leases/${hex}?keys`);
  t.same(v1ttl.json().keys.map((k: { key: string }) => k.key).sort(), ['/app/own-1', '/app/own-2', '/app/own-3'], 'in /v1 too');

  const lock = await v3('victim', '/v3/lock/lock', { name: b64('/app/lk'), lease: id });
  t.equal(lock.status, 200, lock.text);
  t.equal(Buffer.from(lock.body.key, 'base64').toString(), `/app/lk/${hexOf(id)}`);
  t.equal((await v3('victim', '/v3/lock/unlock', { key: lock.body.key })).status, 200);
  const won = await v3('victim', '/v3/election/campaign', { name: b64('/app/el'), lease: id, value: b64('me') });
  t.equal(won.status, 200, won.text);
  t.equal((await v3('victim', '/v3/election/resign', { leader: won.body.leader })).status, 200);
  // Without a lease, /v3 lock grants one the caller owns, and unlock revokes it.
  const granted = await v3('victim', '/v3/lock/lock', { name: b64('/app/lk2') });
  t.equal(granted.status, 200, granted.text);
  const grantedHex = Buffer.from(granted.body.key, 'base64').toString().split('/').pop()!;
  t.equal((await keepAlive('mallory', [decOf(grantedHex)]))[0]?.error?.grpc_code, GrpcStatus.PERMISSION_DENIED, "the lock's lease is the caller's");
  t.equal((await v3('victim', '/v3/lock/unlock', { key: granted.body.key })).status, 200);
  t.equal((await leaseInEtcd(grantedHex)).ttl, -1, 'and unlock revoked it');

  const revoked = await v3('victim', '/v3/kv/lease/revoke', { ID: id });
  t.equal(revoked.status, 200, revoked.text);
  t.equal((await leaseInEtcd(hex)).ttl, -1, 'the lease is gone in etcd');
  t.equal(await root('get', '/app/own-', '--prefix', '--keys-only'), '', 'with its keys');
});

t.test('a write-only caller attaches keys to its own leases (their owner record is no key it may write)', async (t) => {
  const ttl = await v1('wo', 'PUT', '/v1/kv//app/wo-ttl?ttl=60', 'x');
  t.equal(ttl.statusCode, 200, ttl.body);
  const hex = ttl.json().lease as string;
  t.equal((await v1('wo', 'PUT', `/v1/kv//app/wo-again?lease=${hex}`, 'y')).statusCode, 200, '?lease= with its own lease');
  const id = (await v3('wo', '/v3/lease/grant', { TTL: 60 })).body.ID as string;
  t.equal((await v3('wo', '/v3/kv/put', { key: b64('/app/wo-v3'), value: b64('z'), lease: id })).status, 200, '/v3/kv/put with its own lease');
  t.same((await leaseInEtcd(hex)).keys.filter((k) => k.startsWith('/')).sort(), ['/app/wo-again', '/app/wo-ttl']);
  t.same((await leaseInEtcd(hexOf(id))).keys.filter((k) => k.startsWith('/')), ['/app/wo-v3']);
  t.equal((await v1('mallory', 'PUT', `/v1/kv//app/stolen-wo?lease=${hex}`, 'x')).statusCode, 403, 'and no one else does');
});

t.test('leases granted outside the gateway have no owner, as in etcd', async (t) => {
  const hex = /lease ([0-9a-f]+) granted/.exec(await root('lease', 'grant', '60'))![1]!;
  const res = await v3('mallory', '/v3/kv/txn', { success: [{ request_put: { key: b64('/app/outside'), value: b64('x'), lease: decOf(hex) } }] });
  t.equal(res.status, 200, res.text);
  t.same((await leaseInEtcd(hex)).keys, ['/app/outside']);
  t.equal((await v3('mallory', '/v3/lease/revoke', { ID: decOf(hex) })).status, 200);
});

t.test("the gateway's owner records: no caller writes or deletes them, even one whose etcd permission covers them", async (t) => {
  // `wide` holds readwrite on the whole keyspace, so etcd itself would let her rewrite or delete the records.
  const setup = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: SECRET, AUTH_ALLOW_ROOT: true }));
  const rootToken = (await setup.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'root', password: 'rootpw' } })).json().token as string;
  const asRoot = { authorization: `Bearer ${rootToken}` };
  t.equal((await setup.inject({ method: 'POST', url: '/v1/auth/roles', headers: asRoot, payload: { name: 'wide-rw' } })).statusCode, 201);
  t.equal((await setup.inject({ method: 'POST', url: '/v1/auth/roles/wide-rw/permissions', headers: asRoot, payload: { type: 'readwrite', key: '\0', from_key: true } })).statusCode, 200);
  t.equal((await setup.inject({ method: 'POST', url: '/v1/auth/users', headers: asRoot, payload: { name: 'wide', password: 'pw-wide' } })).statusCode, 201);
  t.equal((await setup.inject({ method: 'PUT', url: '/v1/auth/users/wide/roles/wide-rw', headers: asRoot })).statusCode, 200);
  const wide = { authorization: `Bearer ${(await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'wide', password: 'pw-wide' } })).json().token}` };

  const granted = await app.inject({ method: 'POST', url: '/v1/leases', headers: as('victim'), payload: { ttl: 120 } });
  const hex = granted.json().id as string;
  const record = `\0etcd-gateway/lease-owner/${hex.padStart(16, '0')}`;
  const ownerInEtcd = async () => (await app.etcd.kv.range({ key: Buffer.from(record) })).kvs[0]?.value.toString();
  t.equal(await ownerInEtcd(), 'victim');

  const enc = encodeURIComponent;
  const refusals: [string, () => Promise<{ statusCode: number; body: string }>][] = [
    ['PUT over the record', () => app.inject({ method: 'PUT', url: `/v1/kv/${enc(record)}`, headers: wide, payload: 'wide' })],
    ['DELETE of the record', () => app.inject({ method: 'DELETE', url: `/v1/kv/${enc(record)}`, headers: wide })],
    ['DELETE of the whole keyspace', () => app.inject({ method: 'DELETE', url: '/v1/kv/?prefix', headers: wide })],
    ['a txn deleting the records (nested)', () => app.inject({ method: 'POST', url: '/v1/txn', headers: wide, payload: { success: [{ txn: { success: [{ delete: { key: '\0etcd-gateway/', prefix: true } }] } }] } })],
    ['/v3 put over the record', () => app.inject({ method: 'POST', url: '/v3/kv/put', headers: wide, payload: { key: b64(record), value: b64('wide') } })],
    ['/v3 deleterange of everything', () => app.inject({ method: 'POST', url: '/v3/kv/deleterange', headers: wide, payload: { key: 'AA==', range_end: 'AA==' } })],
    ['/v3 txn deleting the record', () => app.inject({ method: 'POST', url: '/v3/kv/txn', headers: wide, payload: { success: [{ request_delete_range: { key: b64(record) } }] } })],
  ];
  for (const [name, call] of refusals) {
    const res = await call();
    t.equal(res.statusCode, 403, `${name}: 403`);
    t.ok(/reserved_key|"code":7/.test(res.body), `${name}: reserved_key (/v3: PermissionDenied, code 7)`);
  }
  t.equal(await ownerInEtcd(), 'victim', 'the record is intact in etcd');
  t.match(await root('get', '/app/secret'), /old-secret|\/app\/secret/, 'the whole-keyspace delete deleted nothing');
  t.equal((await app.inject({ method: 'POST', url: `/v1/leases/${hex}/keepalive`, headers: wide })).json().code, 'lease_not_owned', 'so the lease is still not hers');
  // Everything else stays hers to write: a range can start after the records.
  t.equal((await app.inject({ method: 'PUT', url: '/v1/kv//wide/key', headers: wide, payload: 'w' })).statusCode, 201);
  t.equal((await app.inject({ method: 'DELETE', url: `/v1/kv/${enc('/wide/')}?prefix`, headers: wide })).json().deleted, 1);
});
