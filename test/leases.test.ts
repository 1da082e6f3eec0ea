// Leases and TTL keys through the gateway against a real 3-member etcd
// cluster, checked with etcdctl, including lease IDs passed between the two.
import { setTimeout as sleep } from 'node:timers/promises';
import { FilterType, type IWatchResponse } from 'etcd3';
import t from 'tap';
import { buildTestApp } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints);
const { etcdctl } = cluster;

const grant = (body: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/leases', payload: body });
const info = (id: string, query = '') => app.inject({ method: 'GET', url: `/v1/leases/${id}${query}` });
const keepalive = (id: string) => app.inject({ method: 'POST', url: `/v1/leases/${id}/keepalive` });
const revoke = (id: string) => app.inject({ method: 'DELETE', url: `/v1/leases/${id}` });
const put = (key: string, value: string, query = '', headers: Record<string, string> = {}) =>
  app.inject({ method: 'PUT', url: `/v1/kv/${key}${query}`, payload: value, headers: { 'content-type': 'text/plain', ...headers } });
const getJson = (key: string) => app.inject({ method: 'GET', url: `/v1/kv/${key}`, headers: { accept: 'application/json' } });
// One lease, whatever the zero padding: etcdctl prints IDs with %016x, so an
// ID below 2^60 differs in text from its shortest form while naming the same lease.
const norm = (hex: string) => BigInt(`0x${hex}`).toString(16);
// etcdctl prints lease IDs as JSON numbers beyond 2^53: read the digits, not a double.
const etcdLease = async (key: string) => {
  const m = /"lease":(\d+)/.exec(await etcdctl('get', key, '--write-out=json'));
  return m ? BigInt(m[1]!).toString(16) : null;
};
const leaseList = async () => (await etcdctl('lease', 'list')).split('\n').slice(1).filter(Boolean).map(norm).sort();
const expired = (id: string) => new RegExp(`^lease 0*${norm(id)} already expired\n$`);

/**
 * Resolves with the milliseconds until `key` is deleted at or after
 * `startRevision`, from an etcd watch: the test waits for the event itself,
 * bounded by `timeoutMs`, instead of polling.
 */
async function deletedWithin(key: string, startRevision: number, timeoutMs: number): Promise<number> {
  const started = Date.now();
  const stream = await app.etcd.watch.watch();
  try {
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${key} was not deleted within ${timeoutMs} ms`)), timeoutMs);
      stream.on('data', (res: IWatchResponse) => {
        if (res.events.length > 0) {
          clearTimeout(timer);
          resolve(Date.now() - started);
        }
      });
      stream.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      stream.write({ create_request: { key: Buffer.from(key), start_revision: startRevision, filters: [FilterType.Noput] } });
    });
  } finally {
    stream.on('error', () => undefined);
    stream.cancel();
  }
}

t.test("the seed's lease walkthrough: list, grant 200, keep-alive, timetolive, put --lease, revoke", async (t) => {
  // etcdctl lease list → found 0 leases
  let res = await app.inject({ method: 'GET', url: '/v1/leases' });
  t.equal(res.statusCode, 200);
  t.same(res.json(), { leases: [] });
  t.ok(res.headers['x-etcd-revision']);

  // etcdctl lease grant 200 → lease 6fa06eb09efa986e granted with TTL(200s)
  res = await grant({ ttl: 200 });
  t.equal(res.statusCode, 201);
  const { id, ttl } = res.json();
  t.match(id, /^[0-9a-f]{1,16}$/);
  t.equal(ttl, 200);
  t.equal(res.headers.location, `/v1/leases/${id}`);
  t.match(res.headers['x-etcd-cluster-id'], /^[0-9a-f]+$/);
  t.same(await leaseList(), [norm(id)], 'etcdctl lease list shows it');
  res = await app.inject({ method: 'GET', url: '/v1/leases' });
  t.same(res.json(), { leases: [{ id }] });

  // etcdctl lease keep-alive 6fa06eb09efa986e
  res = await keepalive(id);
  t.equal(res.statusCode, 200);
  t.same(res.json(), { id, ttl: 200 });
  t.ok(res.headers['x-etcd-revision']);

  // etcdctl lease timetolive 6fa06eb09efa986e
  res = await info(id);
  t.equal(res.statusCode, 200);
  const live = res.json();
  t.equal(live.id, id);
  t.equal(live.granted_ttl, 200);
  t.ok(live.ttl > 190 && live.ttl <= 200, `ttl ${live.ttl}`);
  t.notOk('keys' in live);
  t.match(await etcdctl('lease', 'timetolive', id), new RegExp(`^lease 0*${norm(id)} granted with TTL\\(200s\\), remaining\\(\\d+s\\)`));

  // etcdctl put /test/key3 "linghui" --lease=6fa06eb09efa986e
  res = await put('/test/key3', 'linghui', `?lease=${id}`);
  t.equal(res.statusCode, 201);
  t.equal(res.json().lease, id);
  // etcdctl get /test/key3
  t.equal(await etcdctl('get', '/test/key3', '--print-value-only'), 'linghui\n');
  t.equal(await etcdLease('/test/key3'), norm(id));
  res = await info(id, '?keys');
  t.same(res.json().keys, [{ key: '/test/key3' }]);
  t.match(await etcdctl('lease', 'timetolive', '--keys', id), /attached keys\(\[\/test\/key3\]\)/);
  res = await getJson('/test/key3');
  t.equal(res.json().lease, id);
  t.ok(res.json().ttl > 190 && res.json().ttl <= 200, 'GET shows the remaining TTL');

  // etcdctl lease revoke 6fa06eb09efa986e
  res = await revoke(id);
  t.equal(res.statusCode, 200);
  t.equal(res.json().id, id);
  t.equal(res.headers['x-etcd-revision'], String(res.json().revision));
  // The key went with it.
  t.equal(await etcdctl('get', '/test/key3'), '');
  t.equal((await app.inject({ url: '/v1/kv//test/key3' })).statusCode, 404);
  // etcdctl lease timetolive → lease ... already expired
  t.match(await etcdctl('lease', 'timetolive', id), expired(id));
  for (const r of [await info(id), await keepalive(id), await revoke(id)]) {
    t.equal(r.statusCode, 404);
    t.equal(r.json().code, 'lease_not_found');
    t.equal(r.headers['content-type'], 'application/problem+json; charset=utf-8');
  }
  t.same(await leaseList(), []);
});

t.test('a TTL key disappears once its TTL has passed', async (t) => {
  const ttl = 2;
  const res = await put('/ttl/short', 'brief', `?ttl=${ttl}`);
  t.equal(res.statusCode, 201);
  const { lease, revision } = res.json();
  t.match(lease, /^[0-9a-f]+$/, 'the answer names the granted lease');
  t.equal(await etcdLease('/ttl/short'), norm(lease));
  const json = (await getJson('/ttl/short')).json();
  t.equal(json.lease, lease);
  t.ok(json.ttl >= 0 && json.ttl <= ttl, `remaining ttl ${json.ttl}`);
  t.equal((await info(lease)).json().granted_ttl, ttl);

  const elapsed = await deletedWithin('/ttl/short', revision + 1, (ttl + 2) * 1000);
  t.ok(elapsed <= (ttl + 2) * 1000, `deleted after ${elapsed} ms`);
  t.equal(await etcdctl('get', '/ttl/short'), '');
  t.equal((await getJson('/ttl/short')).statusCode, 404);
  const gone = await info(lease);
  t.equal(gone.statusCode, 404);
  t.equal(gone.json().code, 'lease_not_found');
  t.match(await etcdctl('lease', 'timetolive', lease), expired(lease));
  const late = await keepalive(lease);
  t.equal(late.statusCode, 404, 'keep-alive of an expired lease');
  t.equal(late.json().code, 'lease_not_found');
});

t.test('a TTL key stays while kept alive, and goes when keep-alive stops', async (t) => {
  const ttl = 2;
  const res = await put('/ttl/kept', 'alive', `?ttl=${ttl}`);
  const { lease, revision } = res.json();
  // Renew well inside the TTL for longer than TTL + 2 s.
  const until = Date.now() + (ttl + 2) * 1000 + 500;
  let renewals = 0;
  while (Date.now() < until) {
    const r = await keepalive(lease);
    t.equal(r.statusCode, 200);
    t.equal(r.json().ttl, ttl);
    renewals++;
    await sleep(600);
  }
  t.ok(renewals >= 6);
  t.equal(await etcdctl('get', '/ttl/kept', '--print-value-only'), 'alive\n', 'still there past its TTL');
  t.equal((await getJson('/ttl/kept')).statusCode, 200);
  await deletedWithin('/ttl/kept', revision + 1, (ttl + 2) * 1000);
  t.equal(await etcdctl('get', '/ttl/kept'), '');
});

t.test('cross-tool: a lease from etcdctl over HTTP', async (t) => {
  const out = await etcdctl('lease', 'grant', '120');
  const m = /^lease ([0-9a-f]+) granted with TTL\(120s\)/.exec(out);
  t.ok(m, out);
  const id = m![1]!;
  let res = await info(id);
  t.equal(res.statusCode, 200);
  t.equal(norm(res.json().id), norm(id));
  t.equal(res.json().granted_ttl, 120);
  t.same((await app.inject({ url: '/v1/leases' })).json().leases.map((l: { id: string }) => norm(l.id)), [norm(id)]);

  res = await put('/cross/from-etcdctl', 'v', `?lease=${id}`);
  t.equal(res.statusCode, 201);
  t.equal(await etcdLease('/cross/from-etcdctl'), norm(id));
  t.match(await etcdctl('lease', 'timetolive', '--keys', id), /attached keys\(\[\/cross\/from-etcdctl\]\)/);
  res = await keepalive(id);
  t.equal(norm(res.json().id), norm(id));
  t.equal(res.json().ttl, 120);

  // A txn put takes the same ID.
  res = await app.inject({ method: 'POST', url: '/v1/txn', payload: { success: [{ put: { key: '/cross/txn', value: 't', lease: id } }] } });
  t.equal(res.statusCode, 200);
  t.equal(await etcdLease('/cross/txn'), norm(id));

  await etcdctl('lease', 'revoke', id);
  res = await info(id);
  t.equal(res.statusCode, 404);
  t.equal(res.json().code, 'lease_not_found');
  t.equal(await etcdctl('get', '/cross/', '--prefix'), '');
});

t.test('cross-tool: a lease from HTTP in etcdctl', async (t) => {
  const { id } = (await grant({ ttl: 90 })).json();
  t.match(await etcdctl('lease', 'timetolive', id), new RegExp(`^lease 0*${norm(id)} granted with TTL\\(90s\\)`));
  t.ok((await leaseList()).includes(norm(id)));
  await etcdctl('put', '/cross/from-http', 'v', `--lease=${id}`);
  t.same((await info(id, '?keys')).json().keys, [{ key: '/cross/from-http' }]);
  t.equal((await getJson('/cross/from-http')).json().lease, id);
  t.match(await etcdctl('lease', 'keep-alive', '--once', id), new RegExp(`lease 0*${norm(id)} keepalived with TTL\\(90\\)`));
  t.equal((await revoke(id)).statusCode, 200);
  t.match(await etcdctl('lease', 'timetolive', id), expired(id));
  t.equal(await etcdctl('get', '/cross/from-http'), '');
});

t.test('grant with an ID; IDs are normalised; refused grants and bad IDs', async (t) => {
  let res = await grant({ ttl: 60, id: '1234abcd' });
  t.equal(res.statusCode, 201);
  t.equal(norm(res.json().id), '1234abcd');
  t.equal(res.json().ttl, 60);
  // etcdctl prints IDs with %016x; its zero-padded form addresses the same lease here.
  t.match(await etcdctl('lease', 'timetolive', '1234abcd'), /^lease 000000001234abcd granted with TTL\(60s\)/);

  res = await grant({ ttl: 60, id: '1234abcd' });
  t.equal(res.statusCode, 409);
  t.equal(res.json().code, 'lease_exists');

  res = await info('000000001234abcd');
  t.equal(res.statusCode, 200);
  t.equal(norm(res.json().id), '1234abcd', 'leading zeros are the same lease');
  t.equal(norm((await keepalive('000000001234abcd')).json().id), '1234abcd');
  res = await revoke('000000001234abcd');
  t.equal(res.statusCode, 200);
  t.equal(norm(res.json().id), '1234abcd');

  res = await grant({ ttl: 9_000_000_001 });
  t.equal(res.statusCode, 400);
  t.equal(res.json().code, 'lease_ttl_too_large');

  for (const body of [{ ttl: 0 }, { ttl: -5 }, {}, { ttl: 5, id: 'XYZ' }, { ttl: 5, id: '12345678901234567' }, { ttl: 5, extra: 1 }]) {
    res = await grant(body);
    t.equal(res.statusCode, 400, JSON.stringify(body));
    t.equal(res.json().code, 'validation_failed');
  }
  for (const bad of ['ABCDEF', 'xyz', '12345678901234567', '-1']) {
    for (const r of [await info(bad), await keepalive(bad), await revoke(bad)]) {
      t.equal(r.statusCode, 400, bad);
      t.equal(r.json().code, 'validation_failed');
    }
  }
  res = await info('abc', '?keys=maybe');
  t.equal(res.statusCode, 400);
  res = await info('abc', '?key');
  t.equal(res.statusCode, 400, 'unknown query parameters are refused');
  for (const r of [await info('abc'), await keepalive('abc'), await revoke('abc')]) {
    t.equal(r.statusCode, 404, 'never granted');
    t.equal(r.json().code, 'lease_not_found');
  }
  t.same(await leaseList(), []);
});

t.test('keys with leases: prev_kv, conditional writes, DELETE leaves the lease', async (t) => {
  const { id } = (await grant({ ttl: 300 })).json();
  const { id: other } = (await grant({ ttl: 300 })).json();

  let res = await put('/lk/a', 'one', `?lease=${id}`, { 'if-none-match': '*' });
  t.equal(res.statusCode, 201);
  const rev = res.json().revision;
  res = await put('/lk/a', 'two', `?lease=${other}&prev_kv`, { 'if-match': `"${rev}"` });
  t.equal(res.statusCode, 200);
  t.equal(res.json().prev_kv.lease, id, 'prev_kv shows the lease it had');
  t.equal(res.json().lease, other);
  t.equal(await etcdLease('/lk/a'), norm(other));

  res = await put('/lk/a', 'three', `?lease=${id}`, { 'if-match': `"${rev}"` });
  t.equal(res.statusCode, 412);
  t.equal(res.json().current.lease, other, '412 shows the current pair with its lease');
  t.equal(await etcdLease('/lk/a'), norm(other), 'the refused write left the lease alone');

  // A refused create with ?ttl does not leave a lease behind.
  const before = await leaseList();
  res = await put('/lk/a', 'x', '?ttl=30', { 'if-none-match': '*' });
  t.equal(res.statusCode, 412);
  t.same(await leaseList(), before);

  // Raw reads name the lease in a header and do not carry the TTL.
  res = await app.inject({ url: '/v1/kv//lk/a' });
  t.equal(res.headers['x-etcd-lease'], other);
  t.equal(res.body, 'two');
  await put('/lk/plain', 'p');
  res = await getJson('/lk/plain');
  t.equal(res.json().lease, null);
  t.notOk('ttl' in res.json(), 'no lease, no ttl');

  // A put without ?lease detaches the lease, as in etcd.
  res = await put('/lk/a', 'four');
  t.notOk(res.json().lease);
  t.equal(await etcdLease('/lk/a'), null);

  res = await put('/lk/b', 'b', `?lease=${id}`);
  res = await app.inject({ method: 'DELETE', url: '/v1/kv//lk/b?prev_kv' });
  t.equal(res.json().deleted, 1);
  t.equal(res.json().prev_kvs[0].lease, id);
  res = await info(id, '?keys');
  t.equal(res.statusCode, 200, 'deleting a leased key leaves the lease');
  t.same(res.json().keys, []);
  t.ok((await leaseList()).includes(norm(id)));

  res = await put('/lk/c', 'c', '?lease=abcdef12');
  t.equal(res.statusCode, 404);
  t.equal(res.json().code, 'lease_not_found');
  t.equal(await etcdctl('get', '/lk/c'), '', 'nothing written with an unknown lease');

  await revoke(id);
  await revoke(other);
});

// Last: it takes the cluster's quorum away.
t.test('keep-alive without a quorum answers a problem instead of hanging', async (t) => {
  const quick = await buildTestApp(t, cluster.endpoints, { REQUEST_TIMEOUT_MS: 1500 });
  const { id } = (await grant({ ttl: 60 })).json();
  await cluster.stopMember(1);
  await cluster.stopMember(2);
  // A leader that lost its quorum still renews leases until it steps down
  // (an election timeout later); the keep-alive itself is the probe.
  const until = Date.now() + 15_000;
  let res = await quick.inject({ method: 'POST', url: `/v1/leases/${id}/keepalive` });
  while (res.statusCode === 200 && Date.now() < until) {
    await sleep(200);
    const started = Date.now();
    res = await quick.inject({ method: 'POST', url: `/v1/leases/${id}/keepalive` });
    t.ok(Date.now() - started < 5000, 'each call is bounded by the request deadline');
  }
  t.ok(res.statusCode === 503 || res.statusCode === 504, `status ${res.statusCode}`);
  t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
  t.match(res.json().code, /^(no_leader|etcd_timeout|etcd_unavailable|leader_changed)$/);
});
