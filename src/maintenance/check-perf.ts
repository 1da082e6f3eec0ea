// `etcdctl check perf` over HTTP: the same workloads (puts of 256-byte keys
// and 1 KiB values under a prefix, at a fixed rate from a fixed number of
// concurrent clients), the same pass criteria (throughput above 90% of the
// rate, slowest request under 500 ms, standard deviation under 100 ms), and
// the same clean-up (the prefix deleted; optionally compacted and
// defragmented). The load runs as the caller, through the gateway's etcd
// connection, so it measures the cluster as the gateway's users see it.
import { randomBytes } from 'node:crypto';
import type { EtcdScope } from '../etcd/connection.js';
import { Problem, toProblem } from '../errors.js';
import { num, prefixEnd } from '../kv/codec.js';

/** etcdctl's workload models (limit: puts per second). */
export const CHECK_PERF_LOADS = {
  s: { limit: 150, clients: 50 },
  m: { limit: 1000, clients: 200 },
  l: { limit: 8000, clients: 500 },
  xl: { limit: 15000, clients: 1000 },
} as const;
export type CheckPerfLoad = keyof typeof CHECK_PERF_LOADS;
/** etcdctl's load names and their long forms. */
export const CHECK_PERF_ALIASES: Record<string, CheckPerfLoad> = { s: 's', small: 's', m: 'm', medium: 'm', l: 'l', large: 'l', xl: 'xl', xLarge: 'xl' };

export interface CheckPerfOptions {
  load: CheckPerfLoad;
  prefix: string;
  durationSeconds: number;
  autoCompact: boolean;
  autoDefrag: boolean;
  /** Deadline of each put, and of the clean-up calls. */
  timeoutMs: number;
  signal: AbortSignal;
}

export interface CheckPerfResult {
  load: CheckPerfLoad;
  limit: number;
  clients: number;
  duration_seconds: number;
  writes: number;
  errors: Record<string, number>;
  throughput: number;
  slowest: number;
  average: number;
  stddev: number;
  checks: { pass: boolean; message: string }[];
  pass: boolean;
  compacted_revision?: number;
  defragmented?: string[];
}

const KEY_SIZE = 256;
const VALUE = Buffer.alloc(1024);

export async function checkPerf(etcd: EtcdScope, opts: CheckPerfOptions): Promise<CheckPerfResult> {
  const { limit, clients } = CHECK_PERF_LOADS[opts.load];
  const prefix = Buffer.from(opts.prefix);
  const range = { key: prefix, range_end: prefixEnd(prefix) };
  const existing = await etcd.kv.range({ ...range, limit: 1, count_only: true });
  if (num(existing.count) > 0) {
    throw new Problem(409, 'prefix_not_empty', `prefix ${JSON.stringify(opts.prefix)} has keys: delete them first (DELETE /v1/kv/${opts.prefix}?prefix)`);
  }

  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  const started = performance.now();
  const until = started + opts.durationSeconds * 1000;
  let issued = 0;
  // A put is due every 1/limit s (etcdctl's rate limiter, burst 1), taken
  // by whichever of the `clients` workers is free: when etcd is slower than
  // the rate, the workers fall behind and the throughput shows it.
  const worker = async () => {
    for (;;) {
      if (opts.signal.aborted) return;
      const due = started + (issued * 1000) / limit;
      if (due >= until) return;
      issued++;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      if (opts.signal.aborted) return;
      const key = Buffer.alloc(KEY_SIZE);
      randomBytes(8).copy(key);
      const t0 = performance.now();
      try {
        await etcd.kv.put({ key: Buffer.concat([prefix, key]), value: VALUE }, { deadline: Date.now() + opts.timeoutMs });
        latencies.push((performance.now() - t0) / 1000);
      } catch (err) {
        const message = toProblem(err).message;
        errors[message] = (errors[message] ?? 0) + 1;
      }
    }
  };
  let deletedAt = 0;
  try {
    await Promise.all(Array.from({ length: clients }, worker));
  } finally {
    // The keys go, whatever happened: the check leaves nothing behind.
    deletedAt = num((await etcd.kv.deleteRange(range, { deadline: Date.now() + 30_000 })).header.revision);
  }
  if (opts.signal.aborted) throw opts.signal.reason;
  const elapsed = (performance.now() - started) / 1000;

  const result: CheckPerfResult = {
    load: opts.load,
    limit,
    clients,
    duration_seconds: opts.durationSeconds,
    writes: latencies.length,
    errors,
    throughput: latencies.length / elapsed,
    slowest: Math.max(0, ...latencies),
    average: mean(latencies),
    stddev: stddev(latencies),
    checks: [],
    pass: false,
  };
  if (opts.autoCompact) {
    await etcd.kv.compact({ revision: deletedAt, physical: true }, { deadline: Date.now() + 120_000 });
    result.compacted_revision = deletedAt;
  }
  if (opts.autoDefrag) {
    result.defragmented = [];
    for (const endpoint of etcd.endpoints) {
      await etcd.execOn(endpoint, 'Maintenance', 'defragment', {}, { deadline: Date.now() + 120_000 });
      result.defragmented.push(endpoint);
    }
  }
  // etcdctl's verdicts, in its words.
  const checks = result.checks;
  for (const [message, count] of Object.entries(errors)) checks.push({ pass: false, message: `FAIL: ERROR(${message}) -> ${count}` });
  const rps = Math.floor(result.throughput) + 1;
  checks.push(
    result.throughput / limit > 0.9 ? { pass: true, message: `PASS: Throughput is ${rps} writes/s` } : { pass: false, message: `FAIL: Throughput too low: ${rps} writes/s` },
  );
  checks.push(
    result.slowest <= 0.5
      ? { pass: true, message: `PASS: Slowest request took ${result.slowest.toFixed(6)}s` }
      : { pass: false, message: `FAIL: Slowest request took too long: ${result.slowest.toFixed(6)}s` },
  );
  checks.push(
    result.stddev <= 0.1 ? { pass: true, message: `PASS: Stddev is ${result.stddev.toFixed(6)}s` } : { pass: false, message: `FAIL: Stddev too high: ${result.stddev.toFixed(6)}s` },
  );
  result.pass = checks.every((c) => c.pass);
  return result;
}

function mean(xs: number[]): number {
  return xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length;
}

function stddev(xs: number[]): number {
  if (xs.length === 0) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / xs.length);
}
