// Exactly-once under faults: a writer does a few hundred writes (single puts,
// deletes and multi-key txns) while the etcd member serving the gateway's
// watch stream is killed and restarted. Every websocket and SSE subscriber's
// delivered sequence must equal etcd's own history of the range, read from
// etcd afterwards with etcdctl.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import t from 'tap';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';
import { SseClient, WsClient, type Message } from './helpers/clients.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints, { REQUEST_TIMEOUT_MS: 3000 });
const base = await listen(app);

type Entry = string; // "<revision> <put|delete> <key>"

/** etcd's own history of a prefix between two revisions, via `etcdctl watch --rev`. */
async function etcdHistory(prefix: string, from: number, to: number): Promise<Entry[]> {
  const child = spawn('etcdctl', [`--endpoints=${cluster.endpoints.join(',')}`, 'watch', '--prefix', prefix, `--rev=${from}`, '-w', 'json'], {
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

  const peer = (await (await fetch(`${base}/readyz`)).json()).watch.stream_peer as string;
  const victim = cluster.endpoints.findIndex((e) => e.endsWith(peer));
  t.ok(victim >= 0, `the watch stream is served by ${peer}`);

  let applied = 0;
  let unknown = 0;
  for (let i = 0; i < 300; i++) {
    if (i === 100) await cluster.stopMember(victim);
    if (i === 200) {
      const moved = (await (await fetch(`${base}/readyz`)).json()).watch.stream_peer;
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
