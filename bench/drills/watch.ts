// Watch drills (issue 12): a frozen etcd member under the gateway's watch
// stream, a websocket client that stops reading, and a gateway crash under a
// few hundred reconnecting watchers. Each watcher's sequence is checked
// against etcd's own history of the drill's prefix: every event exactly once,
// in order. Writes go to etcd directly (not through the gateway), so they go
// on whatever happens to the gateway or to one member.
import type { IWatchResponse } from 'etcd3';
import WebSocket from 'ws';
import { EtcdConnection, EtcdScope } from '../../src/etcd/connection.js';
import { rssMiB } from '../harness.js';
import { sleep } from './lib.js';
import type { Drill, DrillContext } from './types.js';

/** One event: "<revision> <put|delete> <key>". */
type Entry = string;

function writerFor(endpoints: string[]): EtcdScope {
  return new EtcdScope(new EtcdConnection({ endpoints, timeoutMs: 10_000 }));
}

/** etcd's own history of a prefix from `from` through `to`, read with a watch. */
async function etcdHistory(etcd: EtcdScope, prefix: string, from: number, to: number): Promise<Entry[]> {
  const stream = await etcd.watch.watch();
  const end = Buffer.from(prefix);
  end[end.length - 1]! += 1;
  const out: Entry[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`etcd history of ${prefix} did not reach ${to}`)), 30_000);
      stream.on('error', reject);
      stream.on('data', (res: IWatchResponse) => {
        for (const ev of res.events) out.push(`${ev.kv.mod_revision} ${ev.type === 'Delete' ? 'delete' : 'put'} ${ev.kv.key.toString()}`);
        if (out.length && Number(out[out.length - 1]!.split(' ')[0]) >= to) {
          clearTimeout(timer);
          resolve();
        }
      });
      stream.write({ create_request: { key: Buffer.from(prefix), range_end: end, start_revision: from } });
    });
  } finally {
    stream.on('error', () => undefined);
    stream.cancel();
  }
  return out;
}

/** Writes at a steady rate until stopped; remembers each write's revision and when it was acknowledged. */
class Writer {
  readonly acks: { revision: number; at: number }[] = [];
  failures = 0;
  private stopped = false;
  private done: Promise<void> | undefined;
  constructor(
    private readonly etcd: EtcdScope,
    private readonly prefix: string,
  ) {}

  async put(key: string, value = 'v'): Promise<number> {
    const revision = Number((await this.etcd.kv.put({ key: Buffer.from(this.prefix + key), value: Buffer.from(value) })).header.revision);
    this.acks.push({ revision, at: Date.now() });
    return revision;
  }

  start(perSecond: number): void {
    this.done = (async () => {
      const started = Date.now();
      for (let i = 0; !this.stopped; i++) {
        const wait = started + (i * 1000) / perSecond - Date.now();
        if (wait > 0) await sleep(wait);
        try {
          if (i % 7 === 3) {
            const res = await this.etcd.kv.deleteRange({ key: Buffer.from(`${this.prefix}k${(i - 3) % 20}`) });
            this.acks.push({ revision: Number(res.header.revision), at: Date.now() });
          } else {
            await this.put(`k${i % 20}`, String(i));
          }
        } catch {
          // The outcome is unknown; etcd's history says whether it happened.
          this.failures++;
        }
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

/**
 * A websocket watcher of a prefix, as a careful client writes one: after a
 * broken connection it reconnects (with jitter) and resubscribes from the
 * revision after the last one it received.
 */
class Watcher {
  readonly entries: Entry[] = [];
  /** When each revision arrived. */
  readonly arrivals = new Map<number, number>();
  readonly closes: { code: number; at: number }[] = [];
  readonly messages: Record<string, any>[] = [];
  /** When each subscription was confirmed (`created`). */
  readonly created: number[] = [];
  next: number;
  private ws: WebSocket | undefined;
  private stopped = false;
  private waiters: (() => void)[] = [];

  constructor(
    private readonly url: string,
    private readonly prefix: string,
    startRevision: number,
    private readonly reconnect: boolean,
    private readonly keepMessages = false,
  ) {
    this.next = startRevision;
  }

  get socket(): WebSocket {
    return this.ws!;
  }

  open(): Promise<void> {
    return new Promise((resolve) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.on('error', () => undefined);
      ws.on('open', () => ws.send(JSON.stringify({ type: 'subscribe', id: 'w', key: this.prefix, prefix: true, start_revision: this.next })));
      ws.on('message', (data) => {
        const msg = JSON.parse(data.toString());
        if (this.keepMessages) this.messages.push(msg);
        if (msg.type === 'created') {
          this.created.push(Date.now());
          resolve();
        } else if (msg.type === 'events') {
          for (const ev of msg.events) this.entries.push(`${msg.revision} ${ev.type} ${ev.kv.key}`);
          this.arrivals.set(msg.revision, Date.now());
          this.next = msg.revision + 1;
          this.wake();
        }
      });
      ws.on('close', (code) => {
        this.closes.push({ code, at: Date.now() });
        this.wake();
        if (this.stopped || !this.reconnect) return resolve();
        setTimeout(() => void this.open().then(resolve), 50 + Math.random() * 250);
      });
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once the watcher has received `revision`; false after `ms`. */
  reached(revision: number, ms: number): Promise<boolean> {
    return this.until(() => this.next > revision, ms);
  }

  /** Resolves once the socket has closed; false after `ms`. */
  closed(ms: number): Promise<boolean> {
    return this.until(() => this.closes.length > 0, ms);
  }

  private async until(cond: () => boolean, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) return false;
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), sleep(Math.max(0, end - Date.now()))]);
    }
    return true;
  }

  stop(): void {
    this.stopped = true;
    this.ws?.terminate();
  }
}

/** How many watchers etcd has on each member (its own metric). */
async function watchersPerMember(endpoints: string[]): Promise<number[]> {
  return Promise.all(
    endpoints.map(async (e) => {
      const text = await fetch(`${e}/metrics`, { signal: AbortSignal.timeout(1000) }).then((r) => r.text(), () => '');
      return Number(/^etcd_debugging_mvcc_watcher_total (\S+)$/m.exec(text)?.[1] ?? NaN);
    }),
  );
}

/** Checks every watcher against etcd's history; returns how many matched exactly. */
function exact(watchers: Watcher[], history: Entry[]): number {
  return watchers.filter((w) => w.entries.length === history.length && w.entries.every((e, i) => e === history[i])).length;
}

function pct(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

const frozenWatchMember: Drill = {
  name: 'frozen-watch-member',
  description: 'SIGSTOP the etcd member serving the gateway watch stream for 20 s under 50 writes/s and 30 websocket watchers',
  async run(ctx: DrillContext) {
    const { cluster, prefix } = ctx;
    const WATCHERS = 30;
    const all = writerFor(cluster.endpoints);
    const startRev = Number((await all.kv.put({ key: Buffer.from(`${prefix}start`), value: Buffer.from('s') })).header.revision) + 1;
    all.connection.close();

    const before = await watchersPerMember(cluster.endpoints);
    const watchers = Array.from({ length: WATCHERS }, () => new Watcher(`${ctx.gatewayWsUrl}/v1/watch`, prefix, startRev, true));
    await Promise.all(watchers.map((w) => w.open()));
    const after = await watchersPerMember(cluster.endpoints);
    const victim = after.findIndex((n, i) => n > before[i]!);
    if (victim < 0) throw new Error(`no member gained the gateway's watch (etcd watchers ${before} -> ${after})`);
    ctx.log(`${WATCHERS} watchers on one etcd watch, served by member ${victim} (${cluster.endpoints[victim]})`);

    // Writes go to the other members, so they go on during the freeze.
    const others = cluster.endpoints.filter((_, i) => i !== victim);
    const etcd = writerFor(others);
    const writer = new Writer(etcd, prefix);
    try {
      writer.start(50);
      await sleep(3000);
      await ctx.freeze(victim);
      const frozenAt = Date.now();
      let movedAt: number | undefined;
      for (let t = 0; t < 20_000; t += 250) {
        await sleep(250);
        if (movedAt === undefined) {
          const now = await watchersPerMember(others);
          if (now.some((n, i) => n > after[cluster.endpoints.indexOf(others[i]!)]!)) movedAt = Date.now();
        }
      }
      ctx.thaw(victim);
      const thawedAt = Date.now();
      await sleep(3000);
      await writer.stop();
      const endRev = await writer.put('end');

      // Delivery delay of every write acknowledged while the member was frozen.
      const frozenWrites = writer.acks.filter((a) => a.at >= frozenAt && a.at < thawedAt);
      const delays: number[] = [];
      let late = 0;
      for (const w of watchers) {
        for (const a of frozenWrites) {
          const arrived = w.arrivals.get(a.revision);
          if (arrived === undefined || arrived > thawedAt) late++;
          else delays.push(arrived - a.at);
        }
      }
      const reached = await Promise.all(watchers.map((w) => w.reached(endRev, 20_000)));
      const history = await etcdHistory(etcd, prefix, startRev, endRev);
      const exactCount = exact(watchers, history);
      ctx.log(`${writer.acks.length} writes acknowledged (${writer.failures} unknown), ${frozenWrites.length} while frozen; etcd history ${history.length} events`);
      ctx.log(`gateway's etcd watch seen on another member ${movedAt === undefined ? 'never during the freeze' : `${movedAt - frozenAt} ms after the freeze`}`);
      ctx.log(`delivery delay of writes made during the freeze: p50 ${pct(delays, 0.5)} ms, max ${Math.max(...delays)} ms; ${late} deliveries only after the thaw`);
      ctx.check('watches move to another member within 5 s of the freeze', late === 0 && delays.length > 0 && Math.max(...delays) <= 5000, `max delay ${Math.max(...delays)} ms, ${late} late`);
      ctx.check('every event exactly once, in order (etcd history)', exactCount === WATCHERS && reached.every(Boolean), `${exactCount}/${WATCHERS} watchers exact`);
    } finally {
      await writer.stop();
      for (const w of watchers) w.stop();
      etcd.connection.close();
    }
  },
};

const slowConsumer: Drill = {
  name: 'slow-consumer',
  description: 'a websocket watcher stops reading under 200 writes/s of 4 KiB, reads again 10 s after the cut-off, and resumes',
  async run(ctx: DrillContext) {
    const { cluster, prefix } = ctx;
    const etcd = writerFor(cluster.endpoints);
    const writer = new Writer(etcd, prefix);
    const subscribers = async () => (await (await fetch(`${ctx.gatewayUrl}/readyz`)).json()).watch.subscribers as number;
    const slow = new Watcher(`${ctx.gatewayWsUrl}/v1/watch`, prefix, 0, false, true);
    let again: Watcher | undefined;
    try {
      const startRev = (await writer.put('start')) + 1;
      slow.next = startRev;
      const baseline = await subscribers();
      await slow.open();
      const rssBefore = await rssMiB(ctx.gateway().pid!);
      slow.socket.pause();
      const pausedAt = Date.now();
      // 200 writes/s of 4 KiB (four writers of 50/s), until the gateway cuts the client off.
      const value = 'x'.repeat(4096);
      let stop = false;
      let cutAt: number | undefined;
      let rssPeak = rssBefore;
      const loops = Array.from({ length: 4 }, async (_, j) => {
        const started = Date.now();
        for (let i = 0; !stop; i++) {
          const wait = started + i * 20 - Date.now();
          if (wait > 0) await sleep(wait);
          await writer.put(`k${j}-${i % 10}`, value).catch(() => writer.failures++);
        }
      });
      while (Date.now() - pausedAt < 60_000) {
        await sleep(250);
        rssPeak = Math.max(rssPeak, await rssMiB(ctx.gateway().pid!));
        if ((await subscribers()) <= baseline) {
          cutAt = Date.now();
          break;
        }
      }
      stop = true;
      await Promise.all(loops);
      for (let i = 0; i < 10; i++) await writer.put(`after${i}`);
      const endRev = await writer.put('end');
      ctx.log(`cut off ${cutAt === undefined ? 'never (60 s)' : `${cutAt - pausedAt} ms after it stopped reading`}; gateway RSS ${rssBefore.toFixed(0)} -> peak ${rssPeak.toFixed(0)} MiB`);
      // Away a while longer: the close must wait for it, within the gateway's grace period.
      await sleep(Math.max(0, (cutAt ?? Date.now()) + 10_000 - Date.now()));
      slow.socket.resume();
      await slow.closed(30_000);
      const close = slow.closes[0];
      const error = slow.messages.find((m) => m.type === 'error' && m.code === 'slow_consumer');
      const resume = error?.resume?.w as number | undefined;
      ctx.log(`after reading again: ${slow.entries.length} events, then ${error ? `error slow_consumer resume ${resume}` : 'no error'}, close ${close?.code ?? 'none'}`);
      ctx.check('close 4008 with its resume revision when it reads again', close?.code === 4008 && resume === slow.next, `close ${close?.code}, resume ${resume}, next undelivered ${slow.next}`);

      again = new Watcher(`${ctx.gatewayWsUrl}/v1/watch`, prefix, resume ?? slow.next, false);
      await again.open();
      const reached = await again.reached(endRev, 20_000);
      const history = await etcdHistory(etcd, prefix, startRev, endRev);
      const delivered = [...slow.entries, ...again.entries];
      const same = reached && delivered.length === history.length && delivered.every((e, i) => e === history[i]);
      ctx.check('resuming from it misses nothing (etcd history)', same, `${delivered.length} delivered of ${history.length} in etcd history`);
    } finally {
      slow.stop();
      again?.stop();
      etcd.connection.close();
    }
  },
};

const gatewayKill: Drill = {
  name: 'gateway-kill-watchers',
  description: 'SIGKILL the gateway under 300 reconnecting websocket watchers and 50 writes/s; restart it',
  async run(ctx: DrillContext) {
    const { cluster, prefix } = ctx;
    const WATCHERS = 300;
    const etcd = writerFor(cluster.endpoints);
    const writer = new Writer(etcd, prefix);
    const watchers: Watcher[] = [];
    try {
      const startRev = (await writer.put('start')) + 1;
      for (let i = 0; i < WATCHERS; i++) watchers.push(new Watcher(`${ctx.gatewayWsUrl}/v1/watch`, prefix, startRev, true));
      await Promise.all(watchers.map((w) => w.open()));
      writer.start(50);
      await sleep(3000);
      const killedAt = Date.now();
      await ctx.restartGateway('SIGKILL');
      const upAt = Date.now();
      const back = await Promise.all(
        watchers.map(async (w) => {
          for (const end = Date.now() + 30_000; Date.now() < end; await sleep(50)) {
            const at = w.created.find((c) => c > killedAt);
            if (at) return at - killedAt;
          }
          return undefined;
        }),
      );
      await sleep(3000);
      await writer.stop();
      const endRev = await writer.put('end');
      const reached = await Promise.all(watchers.map((w) => w.reached(endRev, 30_000)));
      const history = await etcdHistory(etcd, prefix, startRev, endRev);
      const times = back.filter((b): b is number => b !== undefined);
      const exactCount = exact(watchers, history);
      const down = upAt - killedAt;
      ctx.log(`gateway back ${down} ms after the kill; ${times.length}/${WATCHERS} watchers resubscribed, p50 ${pct(times, 0.5)} ms, max ${Math.max(...times)} ms after the kill (max ${Math.max(...times) - down} ms after the gateway answered again)`);
      ctx.log(`${writer.acks.length} writes acknowledged (${writer.failures} unknown); etcd history ${history.length} events`);
      ctx.check('every watcher re-established after the gateway restart', times.length === WATCHERS, `${times.length}/${WATCHERS}, max ${Math.max(...times)} ms after the kill`);
      ctx.check('watchers exact across the gateway kill (etcd history)', exactCount === WATCHERS && reached.every(Boolean), `${exactCount}/${WATCHERS} watchers exact`);
    } finally {
      await writer.stop();
      for (const w of watchers) w.stop();
      etcd.connection.close();
    }
  },
};

export default [frozenWatchMember, slowConsumer, gatewayKill];
