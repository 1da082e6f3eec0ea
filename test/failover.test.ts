// What clients see when etcd members fail underneath the gateway.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { freeze } from './helpers/etcd-waits.js';
import { buildTestApp } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';

const exec = promisify(execFile);
const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints, { REQUEST_TIMEOUT_MS: 3000 });

async function leaderIndex(): Promise<number> {
  const status = JSON.parse(await cluster.etcdctl('endpoint', 'status', '--write-out=json')) as {
    Endpoint: string;
    Status: { header: { member_id: number }; leader: number };
  }[];
  const leader = status.find((s) => s.Status.header.member_id === s.Status.leader)!;
  return cluster.endpoints.indexOf(leader.Endpoint);
}

/** Waits for /readyz to answer 200: bounded polling of the gateway's own readiness. */
async function waitReady(deadlineMs = 20_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const res = await app.inject({ url: '/readyz' });
    if (res.statusCode === 200) return;
    if (Date.now() > until) throw new Error(`not ready: ${res.body}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Index of the member the previous test restarted; its client connections may
// still be in reconnect backoff, so the next test targets another member.
let restarted = 0;

t.test('losing the leader: honest answers during the election, then service as usual', async (t) => {
  const leader = await leaderIndex();
  t.ok(leader >= 0);
  await cluster.stopMember(leader);
  // During the election a write already handed to etcd may have an unknown
  // fate (etcd's own clients see the same); the gateway must say so and never
  // claim success or failure it cannot know.
  for (let i = 0; i < 10; i++) {
    const res = await app.inject({ method: 'PUT', url: `/v1/kv//election/k${i}`, payload: String(i) });
    t.ok([200, 201, 503, 504].includes(res.statusCode), `write during election: ${res.statusCode}`);
    const inEtcd = (await cluster.etcdctl('get', `/election/k${i}`, '--print-value-only')).trim();
    if (res.statusCode < 300) t.equal(inEtcd, String(i), 'a success is in etcd');
    if (res.statusCode === 503) t.equal(inEtcd, '', 'a 503 was not applied');
    if (res.statusCode === 504) t.equal(res.json().outcome, 'unknown');
  }
  await waitReady();
  // With a new leader and one endpoint dead, every request succeeds.
  const statuses: number[] = [];
  for (let i = 0; i < 20; i++) {
    const res = await app.inject({ method: 'PUT', url: `/v1/kv//failover/k${i}`, payload: String(i) });
    statuses.push(res.statusCode);
    const read = await app.inject({ url: `/v1/kv//failover/k${i}` });
    statuses.push(read.statusCode);
  }
  t.same([...new Set(statuses)].sort(), [200, 201], 'every write and read succeeded');
  const listing = (await app.inject({ url: '/v1/kv//failover/?prefix&count_only' })).json();
  t.equal(listing.count, 20);
  await cluster.startMember(leader);
  restarted = leader;
});

t.test('a write in flight when its member dies is reported as unknown, never resent', async (t) => {
  // A fresh app's first call goes to the first endpoint, and later calls
  // prefer members with an established connection: warm that connection,
  // freeze the member so the write is sent but not answered, then kill it.
  const target = (restarted + 1) % cluster.endpoints.length;
  const endpoints = [cluster.endpoints[target]!, ...cluster.endpoints.filter((_, i) => i !== target)];
  const fresh = await buildTestApp(t, endpoints, { REQUEST_TIMEOUT_MS: 4000 });
  t.equal((await fresh.inject({ url: '/v1/kv//inflight/warm-up' })).statusCode, 404);
  await freeze(cluster.members[target]!.pid);
  // Bytes the frozen member has received but not read: the write is on the wire.
  const port = new URL(cluster.endpoints[target]!).port;
  const unread = async () => {
    const { stdout } = await exec('ss', ['-Htn', 'state', 'established', 'sport', '=', `:${port}`]);
    return stdout.split('\n').some((line) => Number(line.trim().split(/\s+/)[0]) > 0);
  };
  const before = await unread();
  t.notOk(before, 'nothing pending before the write');
  const started = Date.now();
  const pending = fresh.inject({ method: 'PUT', url: '/v1/kv//inflight/k', payload: 'once' });
  for (let i = 0; !(await unread()); i++) {
    if (i > 200) throw new Error('the write never reached the frozen member');
    await new Promise((r) => setTimeout(r, 10));
  }
  await cluster.stopMember(target);
  const res = await pending;
  t.equal(res.statusCode, 504, `outcome unknown: ${res.body}`);
  t.equal(res.json().outcome, 'unknown');
  t.equal(res.json().code, 'write_outcome_unknown');
  t.ok(Date.now() - started < 4000, 'answered when the connection broke, before the deadline');
  // Had the gateway resent the write to another member, the key would exist.
  t.equal(await cluster.etcdctl('get', '/inflight/k'), '', 'the write was not resent elsewhere');
  await cluster.startMember(target);
});

t.test('with every member down: 503 with Retry-After at once, then recovery', async (t) => {
  await app.inject({ method: 'PUT', url: '/v1/kv//down/k', payload: 'before' });
  await Promise.all(cluster.members.map((_, i) => cluster.stopMember(i)));

  let started = Date.now();
  let res = await app.inject({ url: '/v1/kv//down/k' });
  t.equal(res.statusCode, 503);
  t.equal(res.headers['retry-after'], '1');
  t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
  t.equal(res.json().code, 'etcd_unavailable');
  t.ok(Date.now() - started < 3000, `read answered within the deadline (${Date.now() - started} ms)`);

  started = Date.now();
  res = await app.inject({ method: 'PUT', url: '/v1/kv//down/k', payload: 'during' });
  t.equal(res.statusCode, 503, 'a write that could not be sent is 503, not unknown');
  t.notOk(res.json().outcome);
  t.ok(Date.now() - started < 3000, 'write answered within the deadline');

  res = await app.inject({ url: '/readyz' });
  t.equal(res.statusCode, 503);
  t.equal((await app.inject({ url: '/healthz' })).statusCode, 200, 'the process itself is alive');

  await Promise.all(cluster.members.map((_, i) => cluster.startMember(i)));
  await waitReady();
  res = await app.inject({ url: '/v1/kv//down/k' });
  t.equal(res.statusCode, 200);
  t.equal(res.body, 'before', 'the refused write was never applied');
  res = await app.inject({ method: 'PUT', url: '/v1/kv//down/k', payload: 'after' });
  t.equal(res.statusCode, 200);
});
