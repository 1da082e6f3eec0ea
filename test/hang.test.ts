// A member that hangs instead of dying (a GC pause, a stalled disk: SIGSTOP
// here), and a cluster that lost quorum. The drills (npm run drills) run the
// long versions and print timings; this file asserts the outcomes.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import type { FastifyInstance } from 'fastify';
import { buildTestApp } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { freeze } from './helpers/etcd-waits.js';

const exec = promisify(execFile);
const cluster = await startCluster(t);
let app: FastifyInstance;

/** etcdctl against the given members only. */
async function etcdctlOn(endpoints: string[], ...args: string[]): Promise<string> {
  const { stdout } = await exec('etcdctl', [`--endpoints=${endpoints.join(',')}`, ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
  return stdout;
}

interface Status {
  Endpoint: string;
  Status: { header: { member_id: number; revision: number }; leader: number };
}

async function status(endpoints = cluster.endpoints): Promise<Status[]> {
  return JSON.parse(await etcdctlOn(endpoints, 'endpoint', 'status', '--write-out=json')) as Status[];
}

async function leaderIndex(): Promise<number> {
  const leader = (await status()).find((s) => s.Status.header.member_id === s.Status.leader)!;
  return cluster.endpoints.indexOf(leader.Endpoint);
}

/** Polls `check` every 50 ms until it holds; fails after `ms`. */
async function until(what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Every key under `prefix` as etcd stores it (as `member` has it, if given): value and version. */
async function stored(prefix: string, member?: string): Promise<Map<string, { value: string; version: number }>> {
  const args = ['get', '--prefix', prefix, '--write-out=json', ...(member ? ['--consistency=s'] : [])];
  const out = JSON.parse(await etcdctlOn(member ? [member] : cluster.endpoints, ...args)) as {
    kvs?: { key: string; value: string; version: number }[];
  };
  const b = (s: string) => Buffer.from(s, 'base64').toString();
  return new Map((out.kvs ?? []).map((kv) => [b(kv.key), { value: b(kv.value), version: kv.version }]));
}

const put = (key: string, value: string) => app.inject({ method: 'PUT', url: `/v1/kv/${key}`, payload: value, headers: { 'content-type': 'text/plain' } });
const get = (key: string, query = '') => app.inject({ url: `/v1/kv/${key}${query}` });

t.test('a frozen follower: later requests go to the other members; no write is applied twice', async (t) => {
  const leader = await leaderIndex();
  const frozen = (leader + 1) % 3;
  // The gateway keeps to the first member it connects to, its first
  // endpoint: make that a follower.
  app = await buildTestApp(t, [cluster.endpoints[frozen]!, ...cluster.endpoints.filter((_, i) => i !== frozen)]);
  for (let i = 0; i < 6; i++) t.equal((await put(`hang/warm${i}`, 'w')).statusCode, 201);
  await freeze(cluster.members[frozen]!.pid, t);

  // In flight at the freeze: round-robin hands some to the frozen member.
  const inflightDone = Promise.all([
    ...Array.from({ length: 6 }, (_, i) => put(`hang/inflight${i}`, `v${i}`)),
    ...Array.from({ length: 6 }, (_, i) => get(`hang/warm${i}`)),
  ]);

  // The target: requests sent 3 s after the freeze succeed, so the
  // gateway must stop choosing the member well before (the drill times it).
  await until('the frozen member marked suspect', () => app.etcdConnection.isSuspect(cluster.endpoints[frozen]!), 5000);
  const after = await Promise.all([
    ...Array.from({ length: 12 }, (_, i) => put(`hang/after${i}`, `a${i}`)),
    ...Array.from({ length: 12 }, (_, i) => get(`hang/warm${i % 6}`)),
    ...Array.from({ length: 6 }, () => app.inject({ url: '/v1/kv/hang/?prefix&count_only' })),
  ]);
  t.same(
    after.map((r) => r.statusCode).filter((s) => s >= 300),
    [],
    'every request sent after the member was found hung succeeded',
  );
  const inflight = await inflightDone;
  const writes = inflight.slice(0, 6);
  for (const res of inflight) {
    t.ok(res.statusCode < 300 || (res.statusCode === 504 && res.json().outcome === 'unknown'), `in flight: ${res.statusCode} ${res.body}`);
  }
  t.ok(inflight.slice(6).every((r) => r.statusCode === 200), 'reads in flight were answered by another member');

  process.kill(cluster.members[frozen]!.pid, 'SIGCONT');
  // Once thawed, the member answers probes and takes calls again.
  await until('the thawed member trusted again', () => !app.etcdConnection.isSuspect(cluster.endpoints[frozen]!));

  const keys = await stored('hang/');
  t.ok([...keys.values()].every((kv) => kv.version === 1), 'no key was written twice');
  writes.forEach((res, i) => {
    const kv = keys.get(`hang/inflight${i}`);
    if (res.statusCode < 300) t.equal(kv?.value, `v${i}`, 'an acknowledged write is in etcd');
  });
  for (let i = 0; i < 12; i++) t.equal(keys.get(`hang/after${i}`)?.value, `a${i}`);
});

t.test('quorum lost: serializable reads from the live member, no_leader for the rest', async (t) => {
  app = await buildTestApp(t, cluster.endpoints);
  t.equal((await put('quorum/k', 'before')).statusCode, 201);
  // The connection's first endpoint (the member it prefers) is among the dead.
  const live = 2;
  const liveEndpoint = cluster.endpoints[live]!;
  // The live member must have the write before the others go.
  await until('the live member caught up', async () => (await stored('quorum/k', liveEndpoint)).get('quorum/k')?.value === 'before');
  await Promise.all([0, 1, 2].filter((i) => i !== live).map((i) => cluster.stopMember(i)));

  let res = await get('quorum/k', '?serializable');
  t.equal(res.statusCode, 200, 'serializable read from the live member');
  t.equal(res.body, 'before');
  t.match(res.headers['x-etcd-revision'], /^\d+$/);
  res = await app.inject({ url: '/v1/kv/quorum/?prefix&serializable', headers: { accept: 'application/json' } });
  t.equal(res.statusCode, 200, 'serializable listing');
  t.equal(res.json().count, 1);
  res = await app.inject({
    method: 'POST',
    url: '/v3/kv/range',
    payload: { key: Buffer.from('quorum/k').toString('base64'), serializable: true },
  });
  t.equal(res.statusCode, 200, '/v3 serializable range');
  t.equal(Buffer.from(res.json().kvs[0].value, 'base64').toString(), 'before');

  // The leader steps down once it misses its quorum; from then on the member
  // refuses leader-bound requests, and the gateway says so instead of waiting.
  await until('the live member knows it has no leader', async () => !(await status([liveEndpoint]))[0]!.Status.leader);
  res = await put('quorum/k', 'during');
  t.equal(res.statusCode, 503, `write: ${res.body}`);
  t.equal(res.json().code, 'no_leader');
  t.equal(res.headers['retry-after'], '1');
  res = await get('quorum/k');
  t.equal(res.statusCode, 503, `linearizable read: ${res.body}`);
  t.equal(res.json().code, 'no_leader');
  res = await get('quorum/k', '?serializable');
  t.equal(res.statusCode, 200, 'serializable reads still answer');

  await Promise.all([0, 1, 2].filter((i) => i !== live).map((i) => cluster.startMember(i)));
  await until('a write succeeds again', async () => (await put('quorum/k', 'after')).statusCode === 200, 30_000);
  t.equal((await stored('quorum/k')).get('quorum/k')?.value, 'after', 'the refused write was never applied');
});

t.test('quorum lost to two frozen members, one never connected: the same answers', async (t) => {
  // Members 0 and 1 are back from the previous test; wait until they serve.
  await until('a healthy cluster', async () => (await status()).every((s) => Boolean(s.Status.leader)), 30_000);
  app = await buildTestApp(t, cluster.endpoints);
  t.equal((await put('frozen-quorum/k', 'before')).statusCode, 201);
  const live = 2;
  const liveEndpoint = cluster.endpoints[live]!;
  await until('the live member caught up', async () => (await stored('frozen-quorum/k', liveEndpoint)).get('frozen-quorum/k')?.value === 'before');
  // Member 0 holds the gateway's connection; member 1 was never connected to
  // (a frozen member accepts TCP connections but never answers on them).
  await freeze(cluster.members[0]!.pid, t);
  await freeze(cluster.members[1]!.pid, t);

  let res = await get('frozen-quorum/k', '?serializable');
  t.equal(res.statusCode, 200, 'serializable read from the live member');
  t.equal(res.body, 'before');
  await until('the live member knows it has no leader', async () => !(await status([liveEndpoint]))[0]!.Status.leader);
  for (let i = 0; i < 3; i++) {
    res = await put('frozen-quorum/k', `during${i}`);
    t.equal(res.statusCode, 503, `write: ${res.body}`);
    t.equal(res.json().code, 'no_leader');
    res = await get('frozen-quorum/k');
    t.equal(res.statusCode, 503, `linearizable read: ${res.body}`);
    t.equal(res.json().code, 'no_leader');
  }
  t.equal((await stored('frozen-quorum/k', liveEndpoint)).get('frozen-quorum/k')?.value, 'before', 'no refused write was applied');
});
