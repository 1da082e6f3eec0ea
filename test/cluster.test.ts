// Cluster membership, per-endpoint status and health, and leadership transfer
// against a real 3-member cluster, compared with what etcdctl reports. A
// fourth etcd process joins as a learner, is promoted and removed again.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LightMyRequestResponse } from 'fastify';
import t from 'tap';
import { freeze } from './helpers/etcd-waits.js';
import { spawnEtcd } from '../src/etcd/process.js';
import { buildTestApp } from './helpers/app.js';
import { freePort, startCluster } from './helpers/cluster.js';

const cluster = await startCluster(t);
// REQUEST_TIMEOUT_MS 5000 gives per-member probes a 2000 ms deadline.
const app = await buildTestApp(t, cluster.endpoints, { REQUEST_TIMEOUT_MS: 5000 });
const PROBE_MS = 2000;
const { etcdctl } = cluster;

interface Member {
  id: string;
  name: string;
  peer_urls: string[];
  client_urls: string[];
  is_learner: boolean;
  started: boolean;
}
interface EndpointStatus {
  endpoint: string;
  reachable: boolean;
  id?: string;
  is_leader?: boolean;
  leader?: string;
  error?: string;
  took_ms: number;
}

/** `etcdctl member list`: "id, started|unstarted, name, peer URLs, client URLs, is learner". */
async function etcdctlMembers(): Promise<Member[]> {
  return (await etcdctl('member', 'list'))
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, status, name, peers, clients, learner] = line.split(', ');
      const urls = (s: string | undefined) => (s ? s.split(',') : []);
      return { id: id!, name: name!, peer_urls: urls(peers), client_urls: urls(clients), is_learner: learner === 'true', started: status === 'started' };
    });
}

/** `etcdctl endpoint status` (simple): endpoint, id, version, db size, is leader, is learner, term, index, applied, errors. */
async function etcdctlStatus() {
  return (await etcdctl('endpoint', 'status'))
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split(', ');
      return { endpoint: f[0]!, id: f[1]!, version: f[2]!, is_leader: f[4] === 'true', is_learner: f[5] === 'true', raft_term: Number(f[6]) };
    });
}

/**
 * etcd refuses a membership change while its leader has been connected to
 * its peers for under five seconds (HealthInterval: "unhealthy cluster"), and
 * a promotion until the learner has caught up with the leader's log. Neither
 * is announced, so ask again until etcd accepts (bounded), as an operator
 * running etcdctl would.
 */
async function retryRefused(t: Tap, call: () => Promise<LightMyRequestResponse>, codes: string[]) {
  const until = Date.now() + 20_000;
  for (;;) {
    const res = await call();
    if (!codes.includes(res.json().code) || Date.now() > until) return res;
    t.comment(`etcd refused for now: ${res.json().code}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
type Tap = { comment(...args: unknown[]): void };

const members = async (): Promise<Member[]> => (await app.inject({ url: '/v1/cluster/members' })).json().members;
const status = async (): Promise<EndpointStatus[]> => (await app.inject({ url: '/v1/cluster/status' })).json().endpoints;
const leaderOf = (s: EndpointStatus[]) => s.filter((e) => e.is_leader);

t.test('member list equals etcdctl member list', async (t) => {
  const res = await app.inject({ url: '/v1/cluster/members' });
  t.equal(res.statusCode, 200);
  t.ok(res.headers['x-etcd-cluster-id']);
  const list = res.json().members as Member[];
  t.equal(list.length, 3);
  t.same(list, await etcdctlMembers());
  t.same(list.map((m) => m.client_urls[0]).sort(), [...cluster.endpoints].sort());
});

t.test('status shows every endpoint as etcdctl endpoint status does, with exactly one leader', async (t) => {
  const res = await app.inject({ url: '/v1/cluster/status' });
  t.equal(res.statusCode, 200);
  t.ok(res.headers['x-etcd-revision']);
  const endpoints = res.json().endpoints;
  t.same(endpoints.map((e: EndpointStatus) => e.endpoint), cluster.endpoints, 'one entry per configured endpoint, in order');
  t.equal(leaderOf(endpoints).length, 1, 'exactly one leader');
  const ids = (await members()).map((m) => m.id).sort();
  t.same(endpoints.map((e: EndpointStatus) => e.id).sort(), ids);
  for (const e of endpoints) {
    t.match(e, {
      reachable: true,
      version: '3.4.23',
      db_size: Number,
      db_size_in_use: Number,
      is_learner: false,
      raft_term: Number,
      raft_index: Number,
      raft_applied_index: Number,
      errors: [],
      took_ms: Number,
    });
    t.equal(e.leader, leaderOf(endpoints)[0]!.id, `${e.endpoint} agrees on the leader`);
    t.notOk('error' in e);
  }
  const cli = await etcdctlStatus();
  t.same(
    endpoints.map((e: EndpointStatus & { version: string; is_learner: boolean; raft_term: number }) => ({
      endpoint: e.endpoint,
      id: e.id,
      version: e.version,
      is_leader: e.is_leader,
      is_learner: e.is_learner,
      raft_term: e.raft_term,
    })),
    cli,
    'the same columns as etcdctl endpoint status',
  );
});

t.test('health: every endpoint healthy, as etcdctl endpoint health says', async (t) => {
  const res = await app.inject({ url: '/v1/cluster/health' });
  t.equal(res.statusCode, 200);
  const health = res.json();
  t.equal(health.healthy, true);
  t.same(health.endpoints.map((e: { endpoint: string }) => e.endpoint), cluster.endpoints);
  for (const e of health.endpoints) t.match(e, { healthy: true, took_ms: Number });
  const cli = JSON.parse(await etcdctl('endpoint', 'health', '--write-out=json')) as { endpoint: string; health: boolean }[];
  t.same(cli.map((e) => [e.endpoint, e.health]).sort(), cluster.endpoints.map((e) => [e, true]).sort(), 'etcdctl agrees');
});

t.test('a learner is added, started, promoted and removed; member update changes peer URLs', async (t) => {
  const [clientPort, peerPort, otherPort] = [await freePort(), await freePort(), await freePort()];
  const peer = `http://127.0.0.1:${peerPort}`;
  const other = `http://127.0.0.1:${otherPort}`;

  let res = await retryRefused(
    t,
    () => app.inject({ method: 'POST', url: '/v1/cluster/members', payload: { peer_urls: [peer], is_learner: true, name: 'm3' } }),
    ['unhealthy_cluster'],
  );
  t.equal(res.statusCode, 201, res.body);
  const added = res.json();
  t.match(added.member, { id: /^[0-9a-f]+$/, name: '', peer_urls: [peer], client_urls: [], is_learner: true, started: false });
  t.equal(res.headers.location, `/v1/cluster/members/${added.member.id}`);
  t.equal(added.members.length, 4);
  t.equal(added.initial_cluster_state, 'existing');
  const initial = added.initial_cluster.split(',').sort();
  const expected = [...(await etcdctlMembers()).filter((m) => m.started).map((m) => `${m.name}=${m.peer_urls[0]}`), `m3=${peer}`].sort();
  t.same(initial, expected, 'initial_cluster as etcdctl member add prints it');
  const id = added.member.id as string;
  t.same(await members(), await etcdctlMembers(), 'etcdctl lists the unstarted learner too');

  const errors: [string, () => Promise<{ statusCode: number; json(): { code: string } }>, number, string][] = [
    ['promote a learner that has not started', () => app.inject({ method: 'POST', url: `/v1/cluster/members/${id}/promote` }), 409, 'learner_not_ready'],
    ['move leadership to a learner', () => app.inject({ method: 'POST', url: '/v1/maintenance/move-leader', payload: { to: id } }), 400, 'bad_leader_transferee'],
    ['add a URL without a port', () => app.inject({ method: 'POST', url: '/v1/cluster/members', payload: { peer_urls: ['http://127.0.0.1'] } }), 400, 'invalid_peer_urls'],
    ['add a URL with a path', () => app.inject({ method: 'POST', url: '/v1/cluster/members', payload: { peer_urls: ['http://127.0.0.1:1/x'] } }), 400, 'validation_failed'],
    ['add without peer URLs', () => app.inject({ method: 'POST', url: '/v1/cluster/members', payload: { peer_urls: [] } }), 400, 'validation_failed'],
    ['a member ID that is not hex', () => app.inject({ method: 'DELETE', url: '/v1/cluster/members/xyz' }), 400, 'validation_failed'],
  ];
  for (const [what, call, code, name] of errors) {
    const r = await call();
    t.equal(r.statusCode, code, what);
    t.equal(r.json().code, name, what);
  }
  // etcd derives a new member's ID from its peer URLs and the current second,
  // so a repeated add reports the ID or the URL as taken.
  res = await app.inject({ method: 'POST', url: '/v1/cluster/members', payload: { peer_urls: [peer] } });
  t.equal(res.statusCode, 409, 'add a peer URL that exists');
  t.match(res.json().code, /^(member_exists|peer_url_exists)$/);
  res = await app.inject({ method: 'PUT', url: `/v1/cluster/members/${id}`, payload: { peer_urls: [other] } });
  t.equal(res.statusCode, 409, 'updating a learner is refused: etcd 3.4 would forget it is a learner');
  t.equal(res.json().code, 'learner_update_refused');
  t.equal((await members()).length, 4, 'no refused request added a member');
  t.same(await members(), await etcdctlMembers(), 'and the learner is still a learner with its peer URL');

  const dir = await mkdtemp(join(tmpdir(), 'etcd-gw-learner-'));
  const learner = spawnEtcd({
    name: 'm3',
    dataDir: join(dir, 'm3'),
    clientUrl: `http://127.0.0.1:${clientPort}`,
    peerUrl: peer,
    initialCluster: added.initial_cluster,
    initialClusterState: 'existing',
    extraArgs: ['--heartbeat-interval=50', '--election-timeout=500'],
  });
  t.teardown(async () => {
    await learner.stop('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });
  await learner.ready;
  t.match((await members()).find((m) => m.id === id), { name: 'm3', started: true, is_learner: true });

  res = await retryRefused(t, () => app.inject({ method: 'POST', url: `/v1/cluster/members/${id}/promote` }), ['learner_not_ready', 'unhealthy_cluster']);
  t.equal(res.statusCode, 200, res.body);
  t.match(res.json().members.find((m: Member) => m.id === id), { is_learner: false, started: true });
  t.equal((await etcdctlMembers()).find((m) => m.id === id)?.is_learner, false, 'etcdctl sees a voting member');
  res = await app.inject({ method: 'POST', url: `/v1/cluster/members/${id}/promote` });
  t.equal(res.statusCode, 400, 'promoting a voting member');
  t.equal(res.json().code, 'member_not_learner');

  // A voting member's peer URLs can change: point m3's elsewhere (its peers
  // lose it; three of four still make a quorum), then back.
  res = await app.inject({ method: 'PUT', url: `/v1/cluster/members/${id}`, payload: { peer_urls: [other] } });
  t.equal(res.statusCode, 200, res.body);
  t.same(res.json().members.find((m: Member) => m.id === id).peer_urls, [other]);
  t.same((await etcdctlMembers()).find((m) => m.id === id)?.peer_urls, [other], 'etcdctl sees the updated peer URL');
  res = await app.inject({ method: 'PUT', url: `/v1/cluster/members/${id}`, payload: { peer_urls: [peer] } });
  t.equal(res.statusCode, 200, res.body);
  t.same((await etcdctlMembers()).find((m) => m.id === id)?.peer_urls, [peer]);

  res = await retryRefused(t, () => app.inject({ method: 'DELETE', url: `/v1/cluster/members/${id}` }), ['unhealthy_cluster']);
  t.equal(res.statusCode, 200, res.body);
  t.equal(res.json().members.length, 3);
  t.same(await members(), await etcdctlMembers());
  await learner.stop('SIGKILL');

  for (const [what, req] of [
    ['remove', { method: 'DELETE' as const, url: `/v1/cluster/members/${id}` }],
    ['update', { method: 'PUT' as const, url: `/v1/cluster/members/${id}`, payload: { peer_urls: [peer] } }],
    ['promote', { method: 'POST' as const, url: `/v1/cluster/members/${id}/promote` }],
  ] as const) {
    const r = await app.inject(req);
    t.equal(r.statusCode, 404, `${what} a removed member`);
    t.equal(r.json().code, 'member_not_found');
  }
});

t.test('move-leader hands leadership to the member named', async (t) => {
  const before = await status();
  const previous = leaderOf(before)[0]!;
  const target = before.find((e) => e.reachable && !e.is_leader)!;
  const res = await app.inject({ method: 'POST', url: '/v1/maintenance/move-leader', payload: { to: target.id } });
  t.equal(res.statusCode, 200, res.body);
  t.same(res.json(), { leader: target.id, previous: previous.id });
  const after = await status();
  t.same(leaderOf(after).map((e) => e.id), [target.id], 'the named member leads now');
  t.same((await etcdctlStatus()).filter((e) => e.is_leader).map((e) => e.id), [target.id], 'etcdctl agrees');

  let refused = await app.inject({ method: 'POST', url: '/v1/maintenance/move-leader', payload: { to: 'abcdef' } });
  t.equal(refused.statusCode, 400, 'a member that does not exist');
  t.equal(refused.json().code, 'bad_leader_transferee');
  refused = await app.inject({ method: 'POST', url: '/v1/maintenance/move-leader', payload: { to: 'not-hex' } });
  t.equal(refused.statusCode, 400);
  t.equal(refused.json().code, 'validation_failed');

  // A gateway whose endpoints do not include the leader cannot reach it, as etcdctl move-leader cannot.
  const followers = (await status()).filter((e) => e.reachable && !e.is_leader);
  const partial = await buildTestApp(t, [followers[0]!.endpoint]);
  refused = await partial.inject({ method: 'POST', url: '/v1/maintenance/move-leader', payload: { to: followers[1]!.id } });
  t.equal(refused.statusCode, 503);
  t.equal(refused.json().code, 'no_leader');
  t.equal(refused.headers['retry-after'], '1');
});

t.test('with one member frozen or stopped, status and health answer within their deadline and mark it', async (t) => {
  const i = (await status()).findIndex((e) => e.reachable && !e.is_leader);
  const pid = cluster.members[i]!.pid;
  const endpoint = cluster.endpoints[i]!;
  await freeze(pid, t);

  let started = Date.now();
  let report = await status();
  let took = Date.now() - started;
  t.ok(took < PROBE_MS + 1000, `status answered in ${took} ms with a frozen member`);
  let dead = report.find((e) => e.endpoint === endpoint)!;
  if (dead.reachable) {
    // Should not happen: say which process answers on the frozen member's port.
    const { execSync } = await import('node:child_process');
    t.comment(execSync(`ss -Htlnp | grep ':${new URL(endpoint).port} ' || true; ps -o pid,stat,args -p ${pid} || true`).toString());
  }
  // Its probe ends at the deadline, or earlier when the channel's keepalive has already found the member dead;
  // either way a fixed text, never grpc-js's own.
  t.match(dead, { reachable: false, error: /^etcd (did not answer before the deadline|is unavailable)$/ });
  t.ok(dead.took_ms <= PROBE_MS + 500, `the frozen member held its probe no longer than the deadline (${dead.took_ms} ms)`);
  t.equal(report.filter((e) => e.reachable).length, 2);
  t.equal(leaderOf(report).length, 1, 'the other two still show one leader');

  started = Date.now();
  let health = (await app.inject({ url: '/v1/cluster/health' })).json();
  took = Date.now() - started;
  t.ok(took < PROBE_MS + 1000, `health answered in ${took} ms`);
  t.equal(health.healthy, false);
  t.match(health.endpoints.find((e: { endpoint: string }) => e.endpoint === endpoint), { healthy: false, error: /^etcd (did not answer before the deadline|is unavailable)$/ });
  t.equal(health.endpoints.filter((e: { healthy: boolean }) => e.healthy).length, 2);
  process.kill(pid, 'SIGCONT');

  await cluster.stopMember(i);
  started = Date.now();
  report = await status();
  took = Date.now() - started;
  t.ok(took < PROBE_MS + 1000, `status answered in ${took} ms with a stopped member`);
  dead = report.find((e) => e.endpoint === endpoint)!;
  t.equal(dead.reachable, false);
  t.type(dead.error, 'string');
  health = (await app.inject({ url: '/v1/cluster/health' })).json();
  t.equal(health.healthy, false);
  t.equal(health.endpoints.find((e: { endpoint: string }) => e.endpoint === endpoint).healthy, false);
  t.equal((await app.inject({ url: '/v1/cluster/members' })).statusCode, 200, 'the member list still answers');
  await cluster.startMember(i);
});

// Last: the member thawed here may start an election when it wakes up.
t.test('a move-leader to a frozen member runs out of time with its outcome unknown', async (t) => {
  const quick = await buildTestApp(t, cluster.endpoints, { REQUEST_TIMEOUT_MS: 1500 });
  const before = await status();
  const target = before.find((e) => e.reachable && !e.is_leader)!;
  const pid = cluster.members[cluster.endpoints.indexOf(target.endpoint)]!.pid;
  await freeze(pid, t);
  const started = Date.now();
  const res = await quick.inject({ method: 'POST', url: '/v1/maintenance/move-leader', payload: { to: target.id } });
  const took = Date.now() - started;
  process.kill(pid, 'SIGCONT');
  t.equal(res.statusCode, 504);
  t.match(res.json(), { code: /^(etcd_timeout|leader_transfer_timeout)$/, outcome: 'unknown' });
  t.ok(took < 1500 + PROBE_MS + 500, `answered in ${took} ms`);
});
