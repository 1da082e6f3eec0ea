// What several drills share: HTTP calls to the gateway with their timings, a
// write load from several clients, and the check of that load against etcd's
// own store (no acknowledged write lost, none applied twice).
import type { DrillContext } from './types.js';

export interface Answer {
  /** ms since the drill's clock started (see Clock). */
  sentAt: number;
  endedAt: number;
  status: number;
  code?: string;
  outcome?: string;
  body: string;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Milliseconds since a fixed start, to line events up. */
export class Clock {
  private readonly start = performance.now();
  now(): number {
    return Math.round(performance.now() - this.start);
  }
}

/** One HTTP call to the gateway; a client-side failure is status 0. */
export async function call(ctx: DrillContext, clock: Clock, method: string, path: string, body?: unknown): Promise<Answer> {
  const sentAt = clock.now();
  try {
    const res = await fetch(`${ctx.gatewayUrl}${path}`, {
      method,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      headers: body === undefined ? {} : { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json' },
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    let code: string | undefined;
    let outcome: string | undefined;
    if (res.headers.get('content-type')?.startsWith('application/problem+json')) {
      const p = JSON.parse(text) as { code?: string; outcome?: string };
      code = p.code;
      outcome = p.outcome;
    }
    return { sentAt, endedAt: clock.now(), status: res.status, code, outcome, body: text };
  } catch (err) {
    return { sentAt, endedAt: clock.now(), status: 0, body: String(err) };
  }
}

export interface Write extends Answer {
  key: string;
  value: string;
}

/**
 * `clients` writers, each putting a new key under `prefix` (one key per write,
 * so a write applied twice shows as version 2) every 1/`perClientPerSecond`
 * s without waiting for the previous answer (up to MAX_IN_FLIGHT each), as
 * independent callers do: a write stuck on a hung member does not hold back
 * the next ones. Runs until stop().
 */
export function writeLoad(ctx: DrillContext, clock: Clock, prefix: string, clients = 6, perClientPerSecond = 20) {
  const MAX_IN_FLIGHT = 100;
  const writes: Write[] = [];
  const pending = new Set<Promise<void>>();
  const inFlight = new Array<number>(clients).fill(0);
  const seq = new Array<number>(clients).fill(0);
  const timers = Array.from({ length: clients }, (_, c) =>
    setInterval(() => {
      if (inFlight[c]! >= MAX_IN_FLIGHT) return;
      const key = `${prefix}c${c}/${String(seq[c]!++).padStart(6, '0')}`;
      const value = `${c}-${seq[c]}-${Date.now()}`;
      inFlight[c]!++;
      const p = call(ctx, clock, 'PUT', `/v1/kv/${key}`, value).then((a) => {
        writes.push({ ...a, key, value });
        inFlight[c]!--;
        pending.delete(p);
      });
      pending.add(p);
    }, 1000 / perClientPerSecond),
  );
  return {
    writes,
    async stop(): Promise<Write[]> {
      for (const t of timers) clearInterval(t);
      await Promise.all([...pending]);
      return writes;
    },
  };
}

/** Every key under `prefix` as etcd stores it: value and version (puts since creation). */
export async function stored(ctx: DrillContext, prefix: string): Promise<Map<string, { value: string; version: number }>> {
  const out = JSON.parse(await ctx.cluster.etcdctl('get', '--prefix', prefix, '--write-out=json')) as {
    kvs?: { key: string; value: string; version: number }[];
  };
  const b = (s: string) => Buffer.from(s, 'base64').toString();
  return new Map((out.kvs ?? []).map((kv) => [b(kv.key), { value: b(kv.value), version: kv.version }]));
}

/**
 * Checks writes against etcd: every acknowledged write is there with its
 * value, no key was written twice, and a 503 (refused before etcd saw it)
 * left nothing. Prints the answers by status and records the checks.
 */
export async function checkWrites(ctx: DrillContext, prefix: string, writes: Write[]): Promise<void> {
  const keys = await stored(ctx, prefix);
  const acked = writes.filter((w) => w.status >= 200 && w.status < 300);
  const lost = acked.filter((w) => keys.get(w.key)?.value !== w.value);
  const twice = [...keys.values()].filter((kv) => kv.version !== 1);
  const refusedApplied = writes.filter((w) => w.status === 503 && keys.has(w.key));
  const unknown = writes.filter((w) => w.outcome === 'unknown');
  const other = writes.filter((w) => !(w.status >= 200 && w.status < 300) && w.status !== 503 && w.outcome !== 'unknown');
  ctx.log(`writes: ${writes.length} sent, ${summary(writes)}; ${unknown.filter((w) => keys.has(w.key)).length} of ${unknown.length} with outcome unknown were applied`);
  ctx.check('no acknowledged write lost', lost.length === 0, `${lost.length} of ${acked.length} lost`);
  ctx.check('no write applied twice', twice.length === 0, `${twice.length} keys with version > 1`);
  ctx.check('a refused write (503) was not applied', refusedApplied.length === 0, `${refusedApplied.length} applied`);
  ctx.check('every failed write says 503 or 504 outcome unknown', other.length === 0, other.slice(0, 3).map((w) => `${w.status} ${w.body.slice(0, 80)}`).join('; ') || 'none other');
}

/** "201 ×120, 504 etcd_timeout ×3" */
export function summary(answers: Answer[]): string {
  const counts = new Map<string, number>();
  for (const a of answers) {
    const k = a.code ? `${a.status} ${a.code}` : String(a.status);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts].sort().map(([k, n]) => `${k} ×${n}`).join(', ') || 'none';
}

/** Longest time (ms) within [from, to] in which no answer in `answers` succeeded. */
export function longestGap(answers: Answer[], from: number, to: number): number {
  const ok = answers.filter((a) => a.status >= 200 && a.status < 300 && a.endedAt >= from && a.endedAt <= to).map((a) => a.endedAt).sort((x, y) => x - y);
  let last = from;
  let gap = 0;
  for (const t of [...ok, to]) {
    gap = Math.max(gap, t - last);
    last = t;
  }
  return gap;
}

/** Polls until `check` holds; throws after `ms`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await Promise.resolve().then(check).catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
