// Exactly-once under faults: a writer does a few hundred writes (single puts,
// deletes and multi-key txns) while the etcd member serving the gateway's
// watch stream is killed and restarted, or frozen (SIGSTOP: it keeps its
// connections open and says nothing); and a websocket client that stops
// reading is cut off and resumes. Every subscriber's delivered sequence must
// equal etcd's own history of the range, read from etcd afterwards with
// etcdctl.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import t from 'tap';
import { EtcdConnection, EtcdScope } from '../src/etcd/connection.js';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { SseClient, WsClient, type Message } from './helpers/clients.js';
import { freeze } from './helpers/etcd-waits.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints, { REQUEST_TIMEOUT_MS: 3000 });
const base = await listen(app);

type Entry = string; // "<revision> <put|delete> <key>"

/** etcd's own history of a prefix between two revisions, via `etcdctl watch --rev`. */
async function etcdHistory(prefix: string, from: number, to: number, endpoints = cluster.endpoints): Promise<Entry[]> {
  const child = spawn('etcdctl', [`--endpoints=${endpoints.join(',')}`, 'watch', '--prefix', prefix, `--rev=${from}`, '-w', 'json'], {
    env: { ...process.env, ETCDCTL_API: '3' },
  });
  const out: Entry[] = [];
  try {
    for await (const line of createInterface({ input: child.stdout! })) {
      if (!line.startsWith('{')) continue;
      const res = JSON.parse(line) as { Events?: { type?: number; kv: { key: string; mod_revision: number } }[] };
      for (const ev of res.Events ?? []) {
        out.push(`${ev.kv.mod_revision} ${ev.type === 1 ? 'delete' : 'put'} ${Buffer.from(ev.kv.key, 'base64').toString()}`);
      }
      if (out.length && Number(out[out.length - 1]!.split(' ')[0]) >= to) break;
    }
  } finally {
    child.kill('SIGKILL');
  }
  return out;
}

const flatten = (revision: number, events: Message[]): Entry[] => events.map((e) => `${revision} ${e.type} ${e.kv.key}`);

t.test('every subscriber sees etcd history exactly once while the watch member is killed and restarted', async (t) => {
  const startRev = (await (await fetch(`${base}/v1/kv//faults/start`, { method: 'PUT', body: 's' })).json()).revision + 1;
  const wsA = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`);
  const wsB = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`);
  t.teardown(() => (wsA.close(), wsB.close()));
  wsA.send({ type: 'subscribe', id: 'a', key: '/faults/', prefix: true, start_revision: startRev });
  wsB.send({ type: 'subscribe', id: 'b', key: '/faults/', prefix: true });
  await wsA.next((m) => m.type === 'created');
  const bStart = (await wsB.next((m) => m.type === 'created')).start_revision;
  const sse = await SseClient.open(`${base}/v1/watch//faults/?prefix&start_revision=${startRev}`);
  t.teardown(() => sse.close());
  await sse.next((e) => e.event === 'created');

  const peer = app.watchHub.streamEndpoint()!;
  const victim = cluster.endpoints.indexOf(peer);
  t.ok(victim >= 0, `the watch stream is served by ${peer}`);

  let applied = 0;
  let unknown = 0;
  for (let i = 0; i < 300; i++) {
    if (i === 100) await cluster.stopMember(victim);
    if (i === 200) {
      const moved = app.watchHub.streamEndpoint();
      t.not(moved, peer, `the watch stream moved to ${moved} when its member died`);
      await cluster.startMember(victim);
    }
    let res: Response;
    if (i % 10 === 0) {
      res = await fetch(`${base}/v1/txn`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ success: [{ put: { key: `/faults/t${i}/a`, value: 'x' } }, { put: { key: `/faults/t${i}/b`, value: 'y' } }] }),
      });
    } else if (i % 7 === 0) {
      res = await fetch(`${base}/v1/kv//faults/k${(i - 7) % 20}`, { method: 'DELETE' });
    } else {
      res = await fetch(`${base}/v1/kv//faults/k${i % 20}`, { method: 'PUT', body: String(i) });
    }
    if (res.status < 300) applied++;
    else if (res.status === 504 || res.status === 503) unknown++;
    else throw new Error(`write ${i}: ${res.status} ${await res.text()}`);
  }
  t.ok(applied > 250, `${applied} writes succeeded, ${unknown} ended 503/504 during the failure`);
  const endRev = (await (await fetch(`${base}/v1/kv//faults/end`, { method: 'PUT', body: 'e' })).json()).revision;

  await wsA.next((m) => m.type === 'events' && m.revision === endRev, 'the last write on ws a', 30_000);
  await wsB.next((m) => m.type === 'events' && m.revision === endRev, 'the last write on ws b', 30_000);
  await sse.next((e) => e.id === String(endRev), 'the last write on SSE', 30_000);

  const history = await etcdHistory('/faults/', startRev, endRev);
  t.ok(history.length > 250, `etcd history has ${history.length} events`);
  const a = wsA.of('a', 'events').flatMap((m) => flatten(m.revision, m.events));
  const b = wsB.of('b', 'events').flatMap((m) => flatten(m.revision, m.events));
  const s = sse.events().filter((e) => e.event === 'message').flatMap((e) => {
    const d = JSON.parse(e.data);
    return flatten(d.revision, d.events);
  });
  t.same(a, history, 'websocket subscriber a: exactly etcd history');
  t.same(b, history.filter((h) => Number(h.split(' ')[0]) >= bStart), 'websocket subscriber b: exactly etcd history from its start');
  t.same(s, history, 'SSE subscriber: exactly etcd history');
});

/** Resolves once `cond()` holds (checked every 20 ms), or rejects after `ms`. */
async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await new Promise((r) => setTimeout(r, 20))) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  }
}

t.test('a frozen watch member: the watches move to another member and deliver etcd history exactly once before it thaws', async (t) => {
  const frozen = app.watchHub.streamEndpoint()!;
  const victim = cluster.endpoints.indexOf(frozen);
  t.ok(victim >= 0, `the watch stream is served by ${frozen}`);
  // Writes go to the other members directly, so they go on whatever the
  // gateway's own request path does with the frozen one.
  const others = cluster.endpoints.filter((_, i) => i !== victim);
  const writer = new EtcdScope(new EtcdConnection({ endpoints: others, timeoutMs: 10_000 }));
  t.teardown(() => writer.connection.close());
  // A write in flight when the leader freezes may time out, its outcome
  // unknown: etcd's history, read afterwards, says what happened.
  let unknown = 0;
  const settle = (p: Promise<{ header: { revision: string } }>) =>
    p.then(
      (r) => Number(r.header.revision),
      () => void unknown++,
    );
  const put = (key: string, value = 'v') => settle(writer.kv.put({ key: Buffer.from(key), value: Buffer.from(value) }));
  const del = (key: string) => settle(writer.kv.deleteRange({ key: Buffer.from(key) }));

  const startRev = (await put('/hang/start'))! + 1;
  const ws = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`);
  t.teardown(() => ws.close());
  ws.send({ type: 'subscribe', id: 'a', key: '/hang/', prefix: true, start_revision: startRev });
  ws.send({ type: 'subscribe', id: 'b', key: '/hang/', prefix: true, start_revision: startRev, progress_notify: true });
  await ws.next((m) => m.type === 'created' && m.id === 'a');
  await ws.next((m) => m.type === 'created' && m.id === 'b');
  const sse = await SseClient.open(`${base}/v1/watch//hang/?prefix&start_revision=${startRev}`);
  t.teardown(() => sse.close());
  await sse.next((e) => e.event === 'created');
  t.equal(app.watchHub.streamEndpoint(), frozen, 'the subscriptions share the stream on the member about to freeze');

  for (let i = 0; i < 10; i++) await put(`/hang/k${i}`, `before ${i}`);
  await freeze(cluster.members[victim]!.pid, t);
  const frozenAt = Date.now();
  const moved = until(() => (app.watchHub.streamEndpoint() ?? frozen) !== frozen, 'the watch stream to leave the frozen member').then(() => Date.now() - frozenAt);
  // Written while the stream's member is frozen, most before the watches move.
  for (let i = 0; i < 10; i++) await put(`/hang/k${i}`, `frozen ${i}`);
  t.comment(`the watch stream moved to ${app.watchHub.streamEndpoint()} ${await moved} ms after the freeze`);
  for (let i = 0; i < 10; i++) await (i % 3 === 0 ? del(`/hang/k${i}`) : put(`/hang/k${i}`, `moved ${i}`));
  let endRev: number | undefined;
  while (endRev === undefined) endRev = await put('/hang/end');

  await ws.next((m) => m.type === 'events' && m.id === 'a' && m.revision === endRev, 'the last write on subscription a', 20_000);
  await ws.next((m) => m.type === 'events' && m.id === 'b' && m.revision === endRev, 'the last write on subscription b', 20_000);
  await sse.next((e) => e.id === String(endRev), 'the last write on SSE', 20_000);
  const history = await etcdHistory('/hang/', startRev, endRev, others);
  t.ok(history.length >= 31 - unknown, `etcd history: ${history.length} events (${unknown} writes with outcome unknown)`);
  const a = ws.of('a', 'events').flatMap((m) => flatten(m.revision, m.events));
  const b = ws.of('b', 'events').flatMap((m) => flatten(m.revision, m.events));
  const s = sse.events().filter((e) => e.event === 'message').flatMap((e) => {
    const d = JSON.parse(e.data);
    return flatten(d.revision, d.events);
  });
  t.same(a, history, 'websocket subscriber a: exactly etcd history, before the member thaws');
  t.same(b, history, 'websocket subscriber b (progress_notify): exactly etcd history');
  t.same(s, history, 'SSE subscriber: exactly etcd history');
  process.kill(cluster.members[victim]!.pid, 'SIGCONT');
});

t.test('a watch member that loses its leader ends the stream; the watches move and lose nothing once the cluster heals', async (t) => {
  const startRev = (await (await fetch(`${base}/v1/kv//noleader/start`, { method: 'PUT', body: 's' })).json()).revision + 1;
  const ws = await WsClient.connect(`${base.replace('http', 'ws')}/v1/watch`);
  t.teardown(() => ws.close());
  ws.send({ type: 'subscribe', id: 'n', key: '/noleader/', prefix: true, start_revision: startRev });
  await ws.next((m) => m.type === 'created');
  const member = app.watchHub.streamEndpoint()!;
  const kept = cluster.endpoints.indexOf(member);
  // The other two stop: the stream's member is alive but has no leader.
  const others = cluster.members.map((_, i) => i).filter((i) => i !== kept);
  for (const i of others) await freeze(cluster.members[i]!.pid, t);
  await until(() => (app.watchHub.streamEndpoint() ?? member) !== member, 'the watch stream to leave the member without a leader');
  for (const i of others) process.kill(cluster.members[i]!.pid, 'SIGCONT');
  let endRev = 0;
  for (let i = 0; i < 10; i++) {
    let res: Response;
    // 503 no_leader (refused, not applied) while the thawed members elect a leader.
    while ((res = await fetch(`${base}/v1/kv//noleader/k${i}`, { method: 'PUT', body: String(i) })).status === 503) await res.arrayBuffer();
    t.ok(res.status < 300, `write ${i} once the cluster has healed`);
    endRev = (await res.json()).revision;
  }
  await ws.next((m) => m.type === 'events' && m.revision === endRev, 'the last write', 20_000);
  t.notOk(ws.inbox.items.some((m) => m.type === 'error'), 'the subscription never ended');
  t.same(ws.of('n', 'events').flatMap((m) => flatten(m.revision, m.events)), await etcdHistory('/noleader/', startRev, endRev), 'exactly etcd history');
});

t.test('a websocket client that stops reading gets close 4008 with its resume revision when it reads again; resuming misses nothing', async (t) => {
  // A small send buffer and no pings in the way: the cut-off comes from the buffer alone.
  const slowApp = await buildTestApp(t, cluster.endpoints, { WATCH_MAX_BUFFERED_BYTES: 64 * 1024, WATCH_HEARTBEAT_MS: 120_000 });
  const slowBase = await listen(slowApp);
  const put = async (key: string, value: string) =>
    (await (await fetch(`${slowBase}/v1/kv/${key}`, { method: 'PUT', body: value })).json()).revision as number;
  const startRev = (await put('/slow/start', 's')) + 1;
  const ws = await WsClient.connect(`${slowBase.replace('http', 'ws')}/v1/watch`);
  t.teardown(() => ws.close());
  ws.send({ type: 'subscribe', id: 's', key: '/slow/', prefix: true, start_revision: startRev });
  await ws.next((m) => m.type === 'created');

  ws.socket.pause();
  const big = 'x'.repeat(100 * 1024);
  let writes = 0;
  while (slowApp.watchHub.stats().subscribers > 0) {
    if (++writes > 2000) throw new Error('the client that stopped reading was never cut off');
    await put(`/slow/k${writes % 10}`, big);
  }
  t.comment(`cut off after ${writes} writes of 100 KiB`);
  // Written after the cut-off: only the resumed subscription can see these.
  for (let i = 0; i < 5; i++) await put(`/slow/after${i}`, 'a');
  const endRev = await put('/slow/end', 'e');
  // The client stays away a while after the cut-off, as a stalled reader
  // does (the pause is the scenario, not a wait for something): the close
  // must still be there for it.
  await new Promise((r) => setTimeout(r, 6000));
  ws.socket.resume();
  const closed = await ws.closed;
  t.equal(closed.code, 4008, 'close 4008 (slow consumer)');
  const cut = ws.inbox.items.find((m) => m.type === 'error' && m.code === 'slow_consumer');
  t.ok(cut, 'an error slow_consumer came before the close');
  const resume = cut!.resume.s as number;
  const before = ws.of('s', 'events');
  t.equal(before.length > 0 ? before[before.length - 1]!.revision + 1 : startRev, resume, 'the resume revision follows the last event delivered');

  const again = await WsClient.connect(`${slowBase.replace('http', 'ws')}/v1/watch`);
  t.teardown(() => again.close());
  again.send({ type: 'subscribe', id: 's', key: '/slow/', prefix: true, start_revision: resume });
  await again.next((m) => m.type === 'events' && m.revision === endRev, 'the last write after resuming', 20_000);
  const delivered = [...before, ...again.of('s', 'events')].flatMap((m) => flatten(m.revision, m.events));
  t.same(delivered, await etcdHistory('/slow/', startRev, endRev), 'before the cut-off plus after resuming: exactly etcd history');
});
