// Maintenance against a real 3-member cluster, checked with etcdctl: a
// snapshot downloaded over HTTP that etcdctl can inspect and restore,
// compaction, defragmentation, alarms, hashkv, and what a stopped member
// does to each.
import { createWriteStream } from 'node:fs';
import { request } from 'node:http';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AlarmAction, AlarmType } from 'etcd3';
import t from 'tap';
import { freeze, nextEvent } from './helpers/etcd-waits.js';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints);
const base = await listen(app);
const { etcdctl } = cluster;
const dir = await mkdtemp(join(tmpdir(), 'etcd-gw-maintenance-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

const put = (key: string, value: string) =>
  app.inject({ method: 'PUT', url: `/v1/kv/${key}`, payload: value, headers: { 'content-type': 'text/plain' } });
const post = (url: string, payload?: Record<string, unknown>) => app.inject({ method: 'POST', url, ...(payload ? { payload } : {}) });
const status = async () =>
  (await app.inject({ url: '/v1/cluster/status' })).json().endpoints as { endpoint: string; id: string; db_size: number; errors: string[] }[];

/** Downloads a snapshot over a real socket into a file; answers the response and the file. */
async function download(query = ''): Promise<{ res: Response; file: string }> {
  const res = await fetch(`${base}/v1/maintenance/snapshot${query}`);
  const file = join(dir, `snapshot-${Date.now()}-${Math.random().toString(36).slice(2)}.db`);
  if (res.ok && res.body) await pipeline(Readable.fromWeb(res.body as never), createWriteStream(file));
  return { res, file };
}

t.test('a snapshot downloaded over HTTP passes etcdctl snapshot status and restores', async (t) => {
  for (let i = 0; i < 20; i++) t.equal((await put(`/snap/k${i}`, `v${i}`)).statusCode, 201);
  const revision = (await put('/snap/last', 'x')).json().revision;

  const { res, file } = await download();
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'application/octet-stream');
  t.match(res.headers.get('content-disposition'), /^attachment; filename="etcd-snapshot-\d{8}T\d{6}Z\.db"$/);
  t.ok(cluster.endpoints.includes(res.headers.get('x-etcd-endpoint')!), 'names the member it came from');
  t.equal(res.headers.get('transfer-encoding'), 'chunked', 'streamed as etcd sends it, not sized up front');

  const info = JSON.parse(await etcdctl('snapshot', 'status', file, '--write-out=json'));
  t.ok(info.revision >= revision, `the snapshot is at revision ${info.revision}, after the last write (${revision})`);
  t.ok(info.totalKey >= 21, `${info.totalKey} keys`);
  t.ok(info.totalSize > 0 && info.totalSize < (await stat(file)).size, 'the file is the database plus the integrity hash');
  // restore checks the sha256 etcd appends to the stream.
  await etcdctl('snapshot', 'restore', file, `--data-dir=${join(dir, 'restored')}`);
  t.ok((await stat(join(dir, 'restored', 'member', 'snap', 'db'))).size > 0, 'etcdctl snapshot restore accepts it');

  const one = await download(`?endpoint=${encodeURIComponent(cluster.endpoints[2]!)}`);
  t.equal(one.res.status, 200);
  t.equal(one.res.headers.get('x-etcd-endpoint'), cluster.endpoints[2], 'from the member asked for');
  t.ok(JSON.parse(await etcdctl('snapshot', 'status', one.file, '--write-out=json')).revision >= revision);

  const bad = await app.inject({ url: '/v1/maintenance/snapshot?endpoint=http://127.0.0.1:1' });
  t.equal(bad.statusCode, 400);
  t.equal(bad.json().code, 'unknown_endpoint');
});

t.test('compaction: history below the revision is gone (410), at or above it stays', async (t) => {
  const revs: number[] = [];
  for (let i = 1; i <= 5; i++) revs.push((await put('/compact/k', `v${i}`)).json().revision);
  const [r1, r2, r3, r4, r5] = revs as [number, number, number, number, number];

  let res = await post('/v1/maintenance/compaction', { revision: r4 });
  t.equal(res.statusCode, 200);
  t.same(res.json(), { compact_revision: r4, physical: false });
  t.ok(res.headers['x-etcd-revision']);

  res = await app.inject({ url: `/v1/kv//compact/k?revision=${r3}` });
  t.equal(res.statusCode, 410, 'a read below the compacted revision');
  t.equal(res.json().code, 'revision_compacted');
  await t.rejects(etcdctl('get', '/compact/k', `--rev=${r2}`), /required revision has been compacted/, 'etcdctl agrees');
  res = await app.inject({ url: `/v1/kv//compact/k?revision=${r4}` });
  t.equal(res.statusCode, 200);
  t.equal(res.body, 'v4', 'the compacted revision itself is still readable');

  res = await post('/v1/maintenance/compaction', { revision: r1 });
  t.equal(res.statusCode, 410, 'compacting an already compacted revision');
  t.equal(res.json().code, 'revision_compacted');
  res = await post('/v1/maintenance/compaction', { revision: r5 + 1000 });
  t.equal(res.statusCode, 400, 'compacting a future revision');
  t.equal(res.json().code, 'future_revision');
  res = await post('/v1/maintenance/compaction', { revision: 0 });
  t.equal(res.statusCode, 400);
  t.equal(res.json().code, 'validation_failed');

  res = await post('/v1/maintenance/compaction', { revision: r5, physical: true });
  t.same(res.json(), { compact_revision: r5, physical: true });
  t.equal((await app.inject({ url: `/v1/kv//compact/k?revision=${r4}` })).statusCode, 410);
});

t.test('defragmentation frees the space compaction left, member by member', async (t) => {
  const blob = 'x'.repeat(10_000);
  for (let i = 0; i < 200; i += 20) {
    await Promise.all(Array.from({ length: 20 }, (_, j) => put(`/defrag/k${i + j}`, blob)));
  }
  const { revision } = (await app.inject({ method: 'DELETE', url: '/v1/kv//defrag/?prefix' })).json();
  t.equal((await post('/v1/maintenance/compaction', { revision, physical: true })).statusCode, 200);
  const before = await status();

  let res = await post('/v1/maintenance/defragment');
  t.equal(res.statusCode, 200);
  const report = res.json().endpoints;
  t.same(report.map((e: { endpoint: string }) => e.endpoint), cluster.endpoints, 'every member, in order');
  for (const e of report) t.match(e, { defragmented: true, took_ms: Number });
  const after = await status();
  for (const [i, e] of after.entries()) {
    t.ok(e.db_size < before[i]!.db_size, `${e.endpoint}: ${before[i]!.db_size} → ${e.db_size} bytes`);
  }

  res = await post(`/v1/maintenance/defragment?endpoint=${encodeURIComponent(cluster.endpoints[1]!)}`);
  t.equal(res.statusCode, 200);
  t.match(res.json().endpoints, [{ endpoint: cluster.endpoints[1], defragmented: true }]);
  t.equal(res.json().endpoints.length, 1, 'only the member asked for');
  res = await post('/v1/maintenance/defragment?endpoint=http://127.0.0.1:1');
  t.equal(res.statusCode, 400);
  t.equal(res.json().code, 'unknown_endpoint');
});

t.test('alarms: none, then a raised NOSPACE refuses writes until disarmed', async (t) => {
  let res = await app.inject({ url: '/v1/maintenance/alarms' });
  t.equal(res.statusCode, 200);
  t.same(res.json(), { alarms: [] });
  t.equal(await etcdctl('alarm', 'list'), '');
  res = await app.inject({ method: 'DELETE', url: '/v1/maintenance/alarms' });
  t.same(res.json(), { alarms: [] }, 'disarming nothing');

  // etcd raises NOSPACE itself when the backend quota is full; raising it
  // through etcd's alarm API has the same effect without filling 256 MiB.
  const [member] = await status();
  const memberDecimal = BigInt(`0x${member!.id}`).toString();
  await app.etcd.maintenance.alarm({ action: AlarmAction.Activate, memberID: memberDecimal, alarm: AlarmType.Nospace });
  t.teardown(() =>
    app.etcd.maintenance.alarm({ action: AlarmAction.Deactivate, memberID: memberDecimal, alarm: AlarmType.Nospace }).catch(() => undefined),
  );

  res = await app.inject({ url: '/v1/maintenance/alarms' });
  t.same(res.json(), { alarms: [{ member_id: member!.id, alarm: 'NOSPACE' }] });
  t.equal(await etcdctl('alarm', 'list'), `memberID:${memberDecimal} alarm:NOSPACE \n`, 'etcdctl alarm list shows the same alarm');
  res = await put('/alarm/k', 'refused');
  t.equal(res.statusCode, 507, 'writes are refused while NOSPACE is raised');
  t.equal(res.json().code, 'no_space');
  const health = (await app.inject({ url: '/v1/cluster/health' })).json();
  t.equal(health.healthy, false, 'endpoint health reports the alarm, as etcdctl does');
  for (const e of health.endpoints) t.match(e, { healthy: false, error: 'Active Alarm(s): NOSPACE' });
  t.match((await status())[0]!.errors, [/alarm:NOSPACE/], 'status shows it in errors');

  res = await app.inject({ method: 'DELETE', url: '/v1/maintenance/alarms' });
  t.equal(res.statusCode, 200);
  t.same(res.json(), { alarms: [{ member_id: member!.id, alarm: 'NOSPACE' }] }, 'answers what it disarmed');
  t.equal(await etcdctl('alarm', 'list'), '', 'etcdctl sees no alarm');
  t.same((await app.inject({ url: '/v1/maintenance/alarms' })).json(), { alarms: [] });
  t.equal((await put('/alarm/k', 'accepted')).statusCode, 201, 'writes are accepted again');
  t.equal((await app.inject({ url: '/v1/cluster/health' })).json().healthy, true);
});

t.test('hashkv: every member has the same hash at one revision, as etcdctl endpoint hashkv says', async (t) => {
  const revision = (await put('/hash/k', 'v')).json().revision;
  const res = await app.inject({ url: `/v1/maintenance/hashkv?revision=${revision}` });
  t.equal(res.statusCode, 200);
  const report = res.json().endpoints;
  t.same(report.map((e: { endpoint: string }) => e.endpoint), cluster.endpoints);
  const hashes = new Set(report.map((e: { hash: number }) => e.hash));
  t.equal(hashes.size, 1, 'consistent members');
  for (const e of report) t.match(e, { id: /^[0-9a-f]+$/, hash: Number, revision: Number, compact_revision: Number });
  const cli = JSON.parse(await etcdctl('endpoint', 'hashkv', `--rev=${revision}`, '--write-out=json')) as { HashKV: { hash: number } }[];
  t.same(new Set(cli.map((e) => e.HashKV.hash)), hashes, 'etcdctl computes the same hash');

  let refused = await app.inject({ url: '/v1/maintenance/hashkv?revision=1' });
  t.equal(refused.statusCode, 410, 'a compacted revision');
  t.equal(refused.json().code, 'revision_compacted');
  refused = await app.inject({ url: `/v1/maintenance/hashkv?revision=${revision + 1000}` });
  t.equal(refused.statusCode, 400, 'a future revision');
  t.equal(refused.json().code, 'future_revision');
});

t.test('a frozen member that never starts sending a snapshot answers 504 within the request deadline', async (t) => {
  const quick = await buildTestApp(t, cluster.endpoints, { REQUEST_TIMEOUT_MS: 1000 });
  const i = 1;
  const endpoint = encodeURIComponent(cluster.endpoints[i]!);
  // Connect to every member first, so the request is sent to the frozen one rather than refused.
  t.equal((await quick.inject({ url: '/v1/cluster/status' })).statusCode, 200);
  const pid = cluster.members[i]!.pid;
  await freeze(pid, t);
  const started = Date.now();
  const res = await quick.inject({ url: `/v1/maintenance/snapshot?endpoint=${endpoint}` });
  const took = Date.now() - started;
  process.kill(pid, 'SIGCONT');
  t.equal(res.statusCode, 504);
  t.equal(res.json().code, 'etcd_timeout');
  t.ok(took >= 1000 && took < 2500, `answered after ${took} ms`);
  t.equal((await quick.inject({ url: `/v1/maintenance/snapshot?endpoint=${endpoint}` })).statusCode, 200, 'and serves again once it thaws');
});

t.test('with quorum lost, the surviving member still hands out its snapshot and defragments, as etcdctl gets them (disaster recovery)', async (t) => {
  t.equal((await put('/dr/k', 'v')).statusCode, 201);
  const survivor = cluster.endpoints[0]!;
  await cluster.stopMember(1);
  await cluster.stopMember(2);
  let restarted = false;
  t.teardown(async () => {
    if (restarted) return;
    await cluster.startMember(1);
    await cluster.startMember(2);
  });
  // A state to wait for, not an event: the survivor notices it has no leader
  // within an election timeout.
  const leaderless = async () => {
    const s = (await app.inject({ url: '/v1/cluster/status' })).json().endpoints as { endpoint: string; leader?: string }[];
    return s.find((e) => e.endpoint === survivor)?.leader === '0';
  };
  for (let i = 0; i < 150 && !(await leaderless()); i++) await new Promise((r) => setTimeout(r, 100));
  t.ok(await leaderless(), 'the survivor has no leader');

  const { res, file } = await download(`?endpoint=${encodeURIComponent(survivor)}`);
  t.equal(res.status, 200, 'the survivor\'s snapshot');
  t.ok(JSON.parse(await etcdctl('snapshot', 'status', file, '--write-out=json')).totalKey > 0, 'a snapshot etcdctl accepts');
  const restoreDir = join(dir, 'dr-restore');
  await etcdctl('snapshot', 'restore', file, `--data-dir=${restoreDir}`);
  t.ok((await stat(join(restoreDir, 'member'))).isDirectory(), 'and restores, to rebuild the cluster from');
  const defrag = await post(`/v1/maintenance/defragment?endpoint=${encodeURIComponent(survivor)}`);
  t.equal(defrag.statusCode, 200, defrag.body);

  await cluster.startMember(1);
  await cluster.startMember(2);
  restarted = true;
});

t.test('with one member stopped: its snapshot and defragmentation fail cleanly, the others still work', async (t) => {
  const i = 2;
  const endpoint = cluster.endpoints[i]!;
  await cluster.stopMember(i);
  let restarted = false;
  t.teardown(async () => {
    if (!restarted) await cluster.startMember(i);
  });

  let res = await app.inject({ url: `/v1/maintenance/snapshot?endpoint=${encodeURIComponent(endpoint)}` });
  t.equal(res.statusCode, 503, 'a problem answer, not a broken download');
  t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
  t.equal(res.json().code, 'etcd_unavailable');

  res = await post(`/v1/maintenance/defragment?endpoint=${encodeURIComponent(endpoint)}`);
  t.equal(res.statusCode, 503);
  res = await post('/v1/maintenance/defragment');
  t.equal(res.statusCode, 200);
  const report = res.json().endpoints as { endpoint: string; defragmented: boolean; error?: string }[];
  t.match(report.find((e) => e.endpoint === endpoint), { defragmented: false, error: String });
  t.equal(report.filter((e) => e.defragmented).length, 2, 'the others were defragmented');

  res = await app.inject({ url: '/v1/maintenance/hashkv' });
  t.equal(res.statusCode, 200);
  const hashes = res.json().endpoints as { endpoint: string; hash?: number; error?: string }[];
  t.match(hashes.find((e) => e.endpoint === endpoint), { error: String });
  t.equal(hashes.filter((e) => e.hash !== undefined).length, 2);

  const { res: snap, file } = await download();
  t.equal(snap.status, 200, 'a snapshot from a live member');
  t.not(snap.headers.get('x-etcd-endpoint'), endpoint);
  t.ok(JSON.parse(await etcdctl('snapshot', 'status', file, '--write-out=json')).totalKey > 0);
  await cluster.startMember(i);
  restarted = true;
});

t.test('check perf, as etcdctl check perf: its load, its verdicts, and nothing left behind', async (t) => {
  const res = await post('/v1/maintenance/check-perf', { load: 'small', duration: 2, auto_compact: true });
  t.equal(res.statusCode, 200, res.body);
  const r = res.json();
  t.match(r, { load: 's', limit: 150, clients: 50, duration_seconds: 2 });
  t.ok(r.writes > 0 && r.writes <= 300, `${r.writes} puts at 150/s for 2 s`);
  const [throughput, slowest, spread] = r.checks as { pass: boolean; message: string }[];
  t.same(
    r.checks.map((c: { message: string }) => c.message.replace(/[\d.]+/g, 'N')),
    [
      throughput!.pass ? 'PASS: Throughput is N writes/s' : 'FAIL: Throughput too low: N writes/s',
      slowest!.pass ? 'PASS: Slowest request took Ns' : 'FAIL: Slowest request took too long: Ns',
      spread!.pass ? 'PASS: Stddev is Ns' : 'FAIL: Stddev too high: Ns',
    ],
    "etcdctl's three verdicts, in its words",
  );
  t.equal(throughput!.pass, r.throughput / 150 > 0.9, 'throughput judged as etcdctl judges it');
  t.equal(slowest!.pass, r.slowest <= 0.5);
  t.equal(r.pass, r.checks.every((c: { pass: boolean }) => c.pass));
  t.equal(await etcdctl('get', '--prefix', '/etcdctl-check-perf/', '--keys-only'), '', 'the test keys are deleted');
  t.equal((await app.inject({ url: `/v1/kv//dr/k?revision=${r.compacted_revision - 1}` })).statusCode, 410, 'auto_compact compacted at the clean-up');

  // A prefix with keys is refused before anything is written, and its keys stay.
  t.equal((await put('/perf-busy/mine', 'keep')).statusCode, 201);
  const busy = await post('/v1/maintenance/check-perf', { prefix: '/perf-busy/', duration: 1 });
  t.equal(busy.statusCode, 409);
  t.equal(busy.json().code, 'prefix_not_empty');
  t.equal(await etcdctl('get', '/perf-busy/mine', '--print-value-only'), 'keep\n');
  const unknown = await post('/v1/maintenance/check-perf', { load: 'huge' });
  t.equal(unknown.statusCode, 400);

  // A client that leaves mid-run: the load stops and the keys are deleted.
  const deleted = await nextEvent(app.etcd, '/perf-gone/', 'delete');
  // (A plain request whose socket is destroyed: fetch's abort leaves its
  // pooled connection open, which would hold the app's close.)
  const url = new URL(base);
  const leaving = request({ host: url.hostname, port: url.port, method: 'POST', path: '/v1/maintenance/check-perf', headers: { 'content-type': 'application/json' } });
  leaving.on('error', () => undefined);
  leaving.end(JSON.stringify({ prefix: '/perf-gone/', duration: 30 }));
  const firstPut = await nextEvent(app.etcd, '/perf-gone/', 'put');
  await firstPut.event;
  leaving.destroy();
  await deleted.event;
  t.equal(await etcdctl('get', '--prefix', '/perf-gone/', '--keys-only'), '', 'nothing left behind');
});
