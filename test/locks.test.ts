// Locks through the gateway against a real 3-member cluster: callers wait in
// line, interoperate with `etcdctl lock` in both directions, and leave nothing
// behind when they give up. Every wait is on an event (an etcd watch event, a
// line from etcdctl, an HTTP answer), never on a timer.
import type { FastifyInstance } from 'fastify';
import t from 'tap';
import { etcdctlChild as spawnEtcdctl, nextEvent as waitNextEvent, pending } from './helpers/etcd-waits.js';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints);
const { etcdctl } = cluster;

const lock = (name: string, query = '', body?: Record<string, unknown>, target: FastifyInstance = app) =>
  target.inject({ method: 'POST', url: `/v1/locks/${name}${query}`, ...(body ? { payload: body } : {}) });
const unlock = (name: string, key: string) => app.inject({ method: 'DELETE', url: `/v1/locks/${name}?key=${encodeURIComponent(key)}` });
const keysUnder = async (prefix: string) =>
  (await etcdctl('get', '--prefix', '--keys-only', prefix)).split('\n').filter(Boolean);
const leaseAlive = async (hex: string) => (await app.inject({ url: `/v1/leases/${hex}` })).statusCode === 200;
const hexOf = (decimal: string) => BigInt(decimal).toString(16);

const nextEvent = (prefix: string, kind: 'put' | 'delete') => waitNextEvent(app.etcd, prefix, kind);
const etcdctlChild = (t: { teardown(fn: () => unknown): void }, ...args: string[]) => spawnEtcdctl(t, cluster.endpoints, ...args);

t.test('two HTTP callers contend: the second waits and gets the lock only after the first releases it', async (t) => {
  const first = await lock('contend', '?ttl=30');
  t.equal(first.statusCode, 200);
  const a = first.json();
  t.match(a, { key: /^contend\/[0-9a-f]+$/, lease: /^[0-9a-f]{16}$/, revision: Number });
  t.equal(a.key, `contend/${BigInt(`0x${a.lease}`).toString(16)}`, "the key is <name>/<lease %x>, as etcd's Mutex writes it");
  t.ok(first.headers['x-etcd-revision'], 'answers carry the store revision');
  t.same(await keysUnder('contend/'), [a.key], 'etcd holds exactly the lock key');
  t.equal(await etcdctl('get', a.key, '--print-value-only'), '\n', 'the lock key has an empty value, as etcdctl lock writes it');

  const queued = await nextEvent('contend/', 'put');
  const second = pending(lock('contend', '?ttl=30'));
  const b = await queued.event;
  t.ok(Number(b.create_revision) > a.revision, 'the second caller is in line behind the first');
  t.same((await keysUnder('contend/')).sort(), [a.key, b.key.toString()].sort());
  t.notOk(second.settled, 'the second caller is still waiting');

  const released = await unlock('contend', a.key);
  t.equal(released.statusCode, 200);
  t.same(released.json(), { released: true, lease_revoked: true });
  t.notOk(await leaseAlive(a.lease), 'the lease the gateway granted for the lock is revoked');

  const res = await second.promise;
  t.equal(res.statusCode, 200, 'the second caller holds the lock once the first released it');
  t.equal(res.json().key, b.key.toString());
  t.equal(res.json().revision, Number(b.create_revision), 'revision is the create revision of its key (a fencing token)');
  t.ok(await leaseAlive(res.json().lease), "the holder's lease lives on");
  t.equal((await unlock('contend', res.json().key)).statusCode, 200);
  t.same(await keysUnder('contend/'), []);
});

t.test('etcdctl lock waits while an HTTP caller holds the lock, and the other way round', async (t) => {
  const held = (await lock('mutex1', '?ttl=30')).json();
  const etcdctlQueued = await nextEvent('mutex1/', 'put');
  const cli = etcdctlChild(t, 'lock', 'mutex1');
  const cliKey = (await etcdctlQueued.event).key.toString();
  t.match(cliKey, /^mutex1\/[0-9a-f]+$/, 'etcdctl queues on the same prefix');
  t.same(cli.printed(), [], 'etcdctl lock is blocked while the HTTP caller holds mutex1');

  t.equal((await unlock('mutex1', held.key)).statusCode, 200);
  t.equal(await cli.nextLine(), cliKey, 'etcdctl lock acquires once released and prints its key');

  const httpQueued = await nextEvent('mutex1/', 'put');
  const waiting = pending(lock('mutex1', '?ttl=30&timeout=60'));
  const mine = await httpQueued.event;
  t.notOk(waiting.settled, 'the HTTP caller waits while etcdctl holds mutex1');
  // etcdctl lock releases on SIGINT.
  cli.child.kill('SIGINT');
  const res = await waiting.promise;
  t.equal(res.statusCode, 200, 'the HTTP caller acquires once etcdctl lets go');
  t.equal(res.json().key, mine.key.toString());
  t.equal(await cli.exited, 0);

  // etcdctl lock <name> -- <command>: runs the command under the lock.
  const cmdQueued = await nextEvent('mutex1/', 'put');
  const cmd = etcdctlChild(t, 'lock', 'mutex1', '--', 'sh', '-c', 'echo "ran under $ETCD_LOCK_KEY"');
  const cmdKey = (await cmdQueued.event).key.toString();
  t.same(cmd.printed(), [], 'the command waits for the lock');
  t.equal((await unlock('mutex1', res.json().key)).statusCode, 200);
  t.equal(await cmd.nextLine(), `ran under ${cmdKey}`);
  t.equal(await cmd.exited, 0);
  t.same(await keysUnder('mutex1/'), [], 'etcdctl released after the command');
});

t.test('a holder whose lease runs out loses the lock, and the next in line gets it', async (t) => {
  const short = (await lock('expiry', '?ttl=4')).json();
  const queued = await nextEvent('expiry/', 'put');
  const started = Date.now();
  // A waiter whose own TTL is shorter than its wait: the gateway renews its
  // lease while it waits, or it would lose its place after 2 s.
  const next = pending(lock('expiry', '?ttl=2'));
  await queued.event;
  const res = await next.promise;
  const waited = Date.now() - started;
  t.equal(res.statusCode, 200, `acquired after ${waited} ms`);
  t.ok(waited > 3000 && waited < 8000, 'once the first holder\'s 4 s lease ran out, longer than the waiter\'s own TTL');
  t.same(await keysUnder('expiry/'), [res.json().key], "the expired holder's key is gone");
  const lost = await unlock('expiry', short.key);
  t.equal(lost.statusCode, 404, 'releasing a lost lock says so');
  t.equal(lost.json().code, 'lock_not_held');
  t.equal((await unlock('expiry', res.json().key)).statusCode, 200);
});

t.test('a waiter that times out leaves nothing behind', async (t) => {
  const holder = (await lock('timeout', '?ttl=30')).json();
  const queued = await nextEvent('timeout/', 'put');
  const started = Date.now();
  const res = await lock('timeout', '', { ttl: 30, timeout: 1 });
  const waited = Date.now() - started;
  t.equal(res.statusCode, 409);
  t.equal(res.json().code, 'lock_timeout');
  t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
  t.ok(waited >= 1000 && waited < 3000, `gave up after ${waited} ms`);
  const waiter = await queued.event;
  t.same(await keysUnder('timeout/'), [holder.key], "the waiter's key is gone");
  t.notOk(await leaseAlive(hexOf(waiter.lease)), 'the lease the gateway granted for the wait is revoked');

  // With a lease of the caller's: the key goes, the lease stays.
  const own = (await app.inject({ method: 'POST', url: '/v1/leases', payload: { ttl: 30 } })).json().id;
  const tryOnce = await lock('timeout', `?lease=${own}&timeout=0`);
  t.equal(tryOnce.statusCode, 409, 'timeout=0 tries once');
  t.equal(tryOnce.json().code, 'lock_timeout');
  t.same(await keysUnder('timeout/'), [holder.key]);
  t.ok(await leaseAlive(own), "the caller's own lease is not revoked");

  // The lock is free: timeout=0 takes it at once.
  t.equal((await unlock('timeout', holder.key)).statusCode, 200);
  const free = await lock('timeout', `?lease=${own}&timeout=0`);
  t.equal(free.statusCode, 200);
  const gone = await unlock('timeout', free.json().key);
  t.same(gone.json(), { released: true, lease_revoked: false }, "a caller's lease is never revoked on release");
  t.ok(await leaseAlive(own));
});

t.test('a waiter whose client disconnects leaves nothing behind', async (t) => {
  const holder = (await lock('disconnect', '?ttl=30')).json();
  const base = await listen(app);
  const queued = await nextEvent('disconnect/', 'put');
  const ac = new AbortController();
  const request = fetch(`${base}/v1/locks/disconnect?ttl=30`, { method: 'POST', signal: ac.signal }).catch((e: Error) => e);
  const waiter = await queued.event;
  const removed = await nextEvent('disconnect/', 'delete');
  ac.abort();
  t.equal(((await request) as Error).name, 'AbortError');
  t.equal((await removed.event).key.toString(), waiter.key.toString(), "the waiter's key is deleted when its client goes away");
  t.same(await keysUnder('disconnect/'), [holder.key]);
  t.notOk(await leaseAlive(hexOf(waiter.lease)), 'and its lease is revoked');
  t.equal((await unlock('disconnect', holder.key)).statusCode, 200);
});

t.test('a waiter whose lease runs out while waiting is told, not given the lock', async (t) => {
  const holder = (await lock('lost', '?ttl=30')).json();
  const own = (await app.inject({ method: 'POST', url: '/v1/leases', payload: { ttl: 30 } })).json().id;
  const queued = await nextEvent('lost/', 'put');
  const waiting = pending(lock('lost', `?lease=${own}`));
  await queued.event;
  t.equal((await app.inject({ method: 'DELETE', url: `/v1/leases/${own}` })).statusCode, 200);
  const res = await waiting.promise;
  t.equal(res.statusCode, 409);
  t.equal(res.json().code, 'lock_lost');
  t.same(await keysUnder('lost/'), [holder.key]);
  t.equal((await unlock('lost', holder.key)).statusCode, 200);
});

t.test('locking again with the lease that holds the lock answers at once with the same key', async (t) => {
  const own = (await app.inject({ method: 'POST', url: '/v1/leases', payload: { ttl: 30 } })).json().id;
  const first = (await lock('reentrant', `?lease=${own}`)).json();
  const again = await lock('reentrant', `?lease=${own}&timeout=0`);
  t.equal(again.statusCode, 200);
  t.same(again.json(), first);
  t.equal((await unlock('reentrant', first.key)).statusCode, 200);
});

t.test('a shutdown ends a wait with 503 and removes the waiter', async (t) => {
  const other = await buildTestApp(t, cluster.endpoints);
  const holder = (await lock('shutdown', '?ttl=30')).json();
  const queued = await nextEvent('shutdown/', 'put');
  const waiting = pending(lock('shutdown', '?ttl=30', undefined, other));
  const waiter = await queued.event;
  const removed = await nextEvent('shutdown/', 'delete');
  const closed = other.close();
  const res = await waiting.promise;
  t.equal(res.statusCode, 503);
  t.equal(res.json().code, 'shutting_down');
  t.equal(res.headers['retry-after'], '1');
  await closed;
  t.same(await keysUnder('shutdown/'), [holder.key], 'the waiter was removed before the gateway finished closing');
  t.equal((await removed.event).key.toString(), waiter.key.toString());
  t.equal((await unlock('shutdown', holder.key)).statusCode, 200);
});

t.test('refusals', async (t) => {
  const cases: [string, string, Record<string, unknown> | undefined, number, string][] = [
    ['both ttl and lease', '?ttl=5&lease=1234', undefined, 400, 'conflicting_lease'],
    ['an option in the query and the body', '?ttl=5', { ttl: 5 }, 400, 'conflicting_option'],
    ['a negative timeout', '?timeout=-1', undefined, 400, 'validation_failed'],
    ['an unknown option', '?tll=5', undefined, 400, 'validation_failed'],
    ['a lease that does not exist', '?lease=123456789abc', undefined, 404, 'lease_not_found'],
  ];
  for (const [what, query, body, status, code] of cases) {
    const res = await lock('refused', query, body);
    t.equal(res.statusCode, status, what);
    t.equal(res.json().code, code, what);
  }
  t.same(await keysUnder('refused/'), [], 'no refusal left a key');

  let res = await unlock('refused', 'elsewhere/694d7f');
  t.equal(res.statusCode, 400, 'release only deletes keys of the named lock');
  t.equal(res.json().code, 'invalid_key');
  res = await unlock('refused', 'refused/694d7f');
  t.equal(res.statusCode, 404);
  t.equal(res.json().code, 'lock_not_held');
  res = await app.inject({ method: 'DELETE', url: '/v1/locks/refused' });
  t.equal(res.statusCode, 400, 'release needs the key');
});

t.test('lock names with slashes are percent-encoded', async (t) => {
  const res = await lock('%2Fapp%2Fjobs', '?ttl=30');
  t.equal(res.statusCode, 200);
  t.match(res.json().key, /^\/app\/jobs\/[0-9a-f]+$/);
  t.same(await keysUnder('/app/jobs/'), [res.json().key]);
  t.equal((await unlock('%2Fapp%2Fjobs', res.json().key)).statusCode, 200);
});
