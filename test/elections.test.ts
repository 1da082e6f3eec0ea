// Elections through the gateway against a real 3-member cluster, with an
// `etcdctl elect` candidate and observer in the same election. Every wait is
// on an event (an etcd watch event, a line from etcdctl, an HTTP answer).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import t from 'tap';
import { etcdctlChild as spawnEtcdctl, nextEvent as waitNextEvent, pending } from './helpers/etcd-waits.js';
import { buildTestApp } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints);
const { etcdctl } = cluster;

const campaign = (name: string, body: Record<string, unknown>) => app.inject({ method: 'POST', url: `/v1/elections/${name}`, payload: body });
const leader = (name: string) => app.inject({ url: `/v1/elections/${name}` });
const proclaim = (name: string, body: Record<string, unknown>) => app.inject({ method: 'PUT', url: `/v1/elections/${name}`, payload: body });
const resign = (name: string, query: string) => app.inject({ method: 'DELETE', url: `/v1/elections/${name}?${query}` });
const keysUnder = async (prefix: string) =>
  (await etcdctl('get', '--prefix', '--keys-only', prefix)).split('\n').filter(Boolean);
const leaseAlive = async (hex: string) => (await app.inject({ url: `/v1/leases/${hex}` })).statusCode === 200;

const nextEvent = (prefix: string, kind: 'put' | 'delete') => waitNextEvent(app.etcd, prefix, kind);
const etcdctlChild = (t: { teardown(fn: () => unknown): void }, ...args: string[]) => spawnEtcdctl(t, cluster.endpoints, ...args);

t.test('campaign, proclaim and resign alongside an etcdctl elect candidate and observer', async (t) => {
  let res = await campaign('e1', { value: 'http-1', ttl: 30 });
  t.equal(res.statusCode, 200);
  const mine = res.json();
  t.match(mine, { name: 'e1', key: /^e1\/[0-9a-f]+$/, value: 'http-1', lease: /^[0-9a-f]{16}$/, revision: Number });
  t.equal(mine.key, `e1/${BigInt(`0x${mine.lease}`).toString(16)}`, "the key is <name>/<lease %x>, as etcd's Election writes it");
  t.ok(res.headers['x-etcd-revision']);
  t.equal(await etcdctl('get', mine.key, '--print-value-only'), 'http-1\n');

  res = await leader('e1');
  t.equal(res.statusCode, 200);
  t.same(res.json(), mine, 'the leader is the HTTP candidate');

  // etcdctl elect -l prints the leader's key and value as etcd sees them.
  const observer = etcdctlChild(t, 'elect', '-l', 'e1');
  t.equal(await observer.nextLine(), mine.key, 'etcdctl elect -l sees the HTTP leader');
  t.equal(await observer.nextLine(), 'http-1');

  const queued = await nextEvent('e1/', 'put');
  const cli = etcdctlChild(t, 'elect', 'e1', 'cli-1');
  const cliKey = (await queued.event).key.toString();
  t.match(cliKey, /^e1\/[0-9a-f]+$/);
  t.same(cli.printed(), [], 'the etcdctl candidate waits while the HTTP candidate leads');

  res = await proclaim('e1', { key: mine.key, value: 'http-2' });
  t.equal(res.statusCode, 200);
  t.same(res.json(), { ...mine, value: 'http-2' });
  t.same([await observer.nextLine(), await observer.nextLine()], [mine.key, 'http-2'], 'the observer sees the proclaimed value');
  t.equal((await leader('e1')).json().value, 'http-2');

  res = await proclaim('e1', { key: cliKey, value: 'usurper' });
  t.equal(res.statusCode, 409, 'a waiting candidate cannot proclaim');
  t.equal(res.json().code, 'election_not_leader');
  t.equal(await etcdctl('get', cliKey, '--print-value-only'), 'cli-1\n', "and its value is unchanged");

  res = await resign('e1', `key=${encodeURIComponent(mine.key)}&revision=${mine.revision}`);
  t.equal(res.statusCode, 200);
  t.same(res.json(), { resigned: true, lease_revoked: true });
  t.notOk(await leaseAlive(mine.lease), 'the lease the gateway granted for the campaign is revoked');
  t.same([await cli.nextLine(), await cli.nextLine()], [cliKey, 'cli-1'], 'etcdctl elect is elected once the HTTP leader resigned');
  t.same([await observer.nextLine(), await observer.nextLine()], [cliKey, 'cli-1']);
  res = await leader('e1');
  t.match(res.json(), { name: 'e1', key: cliKey, value: 'cli-1', revision: Number });

  res = await proclaim('e1', { key: mine.key, value: 'too late' });
  t.equal(res.statusCode, 404, 'a resigned candidate cannot proclaim');
  t.equal(res.json().code, 'not_a_candidate');

  // An HTTP candidate waits behind etcdctl and leads once etcdctl resigns (on SIGINT).
  const httpQueued = await nextEvent('e1/', 'put');
  const waiting = pending(campaign('e1', { value: 'http-3', ttl: 30, timeout: 60 }));
  const next = await httpQueued.event;
  t.notOk(waiting.settled, 'the HTTP candidate waits while etcdctl leads');
  cli.child.kill('SIGINT');
  res = await waiting.promise;
  t.equal(res.statusCode, 200);
  t.match(res.json(), { key: next.key.toString(), value: 'http-3', revision: Number(next.create_revision) });
  t.equal(await cli.exited, 0);
  t.same([await observer.nextLine(), await observer.nextLine()], [next.key.toString(), 'http-3'], 'etcdctl sees the new HTTP leader');

  res = await resign('e1', `lease=${res.json().lease}`);
  t.equal(res.statusCode, 200, 'resign by lease');
  t.same(await keysUnder('e1/'), []);
  observer.child.kill('SIGINT');
});

t.test('a term ends when its key is created again: proclaim and resign with the old revision are refused', async (t) => {
  const own = (await app.inject({ method: 'POST', url: '/v1/leases', payload: { ttl: 30 } })).json().id;
  const first = (await campaign('terms', { value: 'a', lease: own })).json();
  t.equal((await resign('terms', `lease=${own}`)).statusCode, 200);
  const second = (await campaign('terms', { value: 'b', lease: own })).json();
  t.equal(second.key, first.key, 'the same lease campaigns with the same key');
  t.ok(second.revision > first.revision, 'in a new term');

  let res = await proclaim('terms', { lease: own, revision: first.revision, value: 'stale' });
  t.equal(res.statusCode, 409);
  t.equal(res.json().code, 'election_not_leader');
  res = await resign('terms', `lease=${own}&revision=${first.revision}`);
  t.equal(res.statusCode, 409);
  t.equal(res.json().code, 'election_not_leader');
  t.equal((await leader('terms')).json().value, 'b', 'the current term is untouched');

  res = await proclaim('terms', { lease: own, revision: second.revision, value: 'c' });
  t.equal(res.statusCode, 200);
  t.equal(res.json().lease, own, 'the key keeps its lease');
  t.equal((await leader('terms')).json().value, 'c');
  res = await resign('terms', `lease=${own}&revision=${second.revision}`);
  t.same(res.json(), { resigned: true, lease_revoked: false }, "a caller's own lease is not revoked");
  t.ok(await leaseAlive(own));
});

t.test('campaigning again with a lease already in the election updates its value at once', async (t) => {
  const own = (await app.inject({ method: 'POST', url: '/v1/leases', payload: { ttl: 30 } })).json().id;
  const first = (await campaign('again', { value: 'one', lease: own })).json();
  const res = await campaign('again', { value: 'two', lease: own, timeout: 0 });
  t.equal(res.statusCode, 200);
  t.same(res.json(), { ...first, value: 'two' });
  t.equal(await etcdctl('get', first.key, '--print-value-only'), 'two\n');
  t.equal((await resign('again', `key=${encodeURIComponent(first.key)}`)).statusCode, 200);
});

t.test('a campaign that times out, or whose lease runs out while waiting, leaves nothing behind', async (t) => {
  const incumbent = (await campaign('timeout', { value: 'stays', ttl: 30 })).json();
  const queued = await nextEvent('timeout/', 'put');
  const started = Date.now();
  let res = await campaign('timeout', { value: 'gives up', ttl: 30, timeout: 0.5 });
  const waited = Date.now() - started;
  t.equal(res.statusCode, 409);
  t.equal(res.json().code, 'campaign_timeout');
  t.ok(waited >= 500 && waited < 2500, `gave up after ${waited} ms`);
  const candidate = await queued.event;
  t.same(await keysUnder('timeout/'), [incumbent.key], "the candidate's key is gone");
  t.notOk(await leaseAlive(BigInt(candidate.lease).toString(16)), 'and its lease is revoked');

  const own = (await app.inject({ method: 'POST', url: '/v1/leases', payload: { ttl: 30 } })).json().id;
  const ownQueued = await nextEvent('timeout/', 'put');
  const waiting = pending(campaign('timeout', { value: 'loses its lease', lease: own }));
  await ownQueued.event;
  t.equal((await app.inject({ method: 'DELETE', url: `/v1/leases/${own}` })).statusCode, 200);
  res = await waiting.promise;
  t.equal(res.statusCode, 409);
  t.equal(res.json().code, 'candidacy_lost');
  t.same(await keysUnder('timeout/'), [incumbent.key]);
  t.equal((await resign('timeout', `key=${encodeURIComponent(incumbent.key)}`)).statusCode, 200);
});

t.test('refusals', async (t) => {
  let res = await leader('nobody');
  t.equal(res.statusCode, 404);
  t.equal(res.json().code, 'election_no_leader');

  const cases: [string, () => Promise<{ statusCode: number; json(): { code: string } }>, number, string][] = [
    ['campaign without a value', () => campaign('refused', { ttl: 5 }), 400, 'validation_failed'],
    ['campaign with ttl and lease', () => campaign('refused', { value: 'v', ttl: 5, lease: '1234' }), 400, 'conflicting_lease'],
    ['campaign with a lease that does not exist', () => campaign('refused', { value: 'v', lease: '123456789abc' }), 404, 'lease_not_found'],
    ['proclaim with key and lease', () => proclaim('refused', { key: 'refused/1', lease: '1', value: 'v' }), 400, 'invalid_candidate'],
    ['proclaim with neither key nor lease', () => proclaim('refused', { value: 'v' }), 400, 'invalid_candidate'],
    ['proclaim with a key of another election', () => proclaim('refused', { key: 'other/1', value: 'v' }), 400, 'invalid_key'],
    ['proclaim for a key that does not exist', () => proclaim('refused', { key: 'refused/1', value: 'v' }), 404, 'not_a_candidate'],
    ['resign a key that does not exist', () => resign('refused', 'key=refused%2F1'), 404, 'not_a_candidate'],
    ['resign a key of another election', () => resign('refused', 'key=other%2F1'), 400, 'invalid_key'],
  ];
  for (const [what, call, status, code] of cases) {
    res = (await call()) as typeof res;
    t.equal(res.statusCode, status, what);
    t.equal(res.json().code, code, what);
  }
  t.same(await keysUnder('refused/'), [], 'no refusal left a key');
});

t.test('observe: the leader as Server-Sent Events, following etcdctl candidates too', async (t) => {
  const { listen } = await import('./helpers/app.js');
  const { SseClient } = await import('./helpers/clients.js');
  const base = await listen(await buildTestApp(t, cluster.endpoints));
  const obs = await SseClient.open(`${base}/v1/elections/observed/observe`);
  t.teardown(() => obs.close());
  t.equal(obs.response.statusCode, 200);
  await obs.next((e) => e.event === 'no_leader', 'no leader yet');

  const first = (await campaign('observed', { value: 'one', ttl: 30 })).json();
  let ev = await obs.next((e) => e.event === 'leader', 'the first leader');
  t.same(JSON.parse(ev.data), { name: 'observed', key: first.key, value: 'one', lease: first.lease, revision: first.revision });

  await proclaim('observed', { key: first.key, value: 'two' });
  ev = await obs.next((e) => e.event === 'leader' && JSON.parse(e.data).value === 'two', 'the proclaimed value');
  t.equal(JSON.parse(ev.data).key, first.key);

  // An etcdctl candidate waits in line; when the HTTP leader resigns, it leads.
  const child = spawn('etcdctl', [`--endpoints=${cluster.endpoints.join(',')}`, 'elect', 'observed', 'from-etcdctl'], { env: { ...process.env, ETCDCTL_API: '3' } });
  t.teardown(() => child.kill('SIGKILL'));
  for (let i = 0; (await keysUnder('observed/')).length < 2; i++) {
    if (i > 200) throw new Error('etcdctl never joined the election');
    await new Promise((r) => setTimeout(r, 25));
  }
  await resign('observed', `key=${encodeURIComponent(first.key)}`);
  ev = await obs.next((e) => e.event === 'leader' && JSON.parse(e.data).value === 'from-etcdctl', 'etcdctl leads');
  t.not(JSON.parse(ev.data).key, first.key);
  t.type(Number(ev.id), 'number');
  // etcdctl resigns on SIGINT; should it exit without (its key would stay
  // until its lease runs out), the test resigns that key itself: what is
  // checked here is the observer, not etcdctl.
  const exited = once(child, 'exit');
  child.kill('SIGINT');
  await exited;
  const etcdctlKey = JSON.parse(ev.data).key as string;
  if ((await keysUnder('observed/')).length > 0) {
    t.comment('etcdctl left its key behind; resigning it through the gateway');
    await resign('observed', `key=${encodeURIComponent(etcdctlKey)}`);
  }
  await obs.next((e) => e.event === 'no_leader' && Number(e.id) > Number(ev.id), 'no leader once etcdctl resigns');
  const late = await SseClient.open(`${base}/v1/elections/observed/observe`);
  t.teardown(() => late.close());
  await late.next((e) => e.event === 'no_leader', 'a late observer starts from the current state');
});

t.test('observe over the watch websocket: leader and no_leader messages beside ordinary subscriptions', async (t) => {
  const { listen } = await import('./helpers/app.js');
  const { WsClient } = await import('./helpers/clients.js');
  const base = await listen(await buildTestApp(t, cluster.endpoints));
  const ws = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`);
  t.teardown(() => ws.close());
  ws.send({ type: 'observe', id: 'o', election: 'ws-observed' });
  await ws.next((m) => m.type === 'no_leader' && m.id === 'o', 'no leader yet');

  const first = (await campaign('ws-observed', { value: 'one', ttl: 30 })).json();
  const msg = await ws.next((m) => m.type === 'leader', 'the first leader');
  t.same(msg, { type: 'leader', id: 'o', name: 'ws-observed', key: first.key, value: 'one', lease: first.lease, revision: first.revision });
  await proclaim('ws-observed', { key: first.key, value: 'two' });
  await ws.next((m) => m.type === 'leader' && m.value === 'two', 'the proclaimed value');
  await resign('ws-observed', `key=${encodeURIComponent(first.key)}`);
  await ws.next((m) => m.type === 'no_leader' && m.name === 'ws-observed', 'no leader once it resigns');

  // It is a subscription like the others: a duplicate id is refused, unsubscribe ends it.
  ws.send({ type: 'observe', id: 'o', election: 'other' });
  t.equal((await ws.next((m) => m.type === 'error' && m.code === 'duplicate_id')).id, 'o');
  ws.send({ type: 'unsubscribe', id: 'o' });
  await ws.next((m) => m.type === 'canceled' && m.id === 'o');
  ws.send({ type: 'observe', id: 'bad', election: '' });
  t.equal((await ws.next((m) => m.type === 'error' && m.id === 'bad')).code, 'invalid_message', 'an election needs a name');
});
