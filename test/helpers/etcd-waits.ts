// Helpers for tests that wait on etcd itself: the next watch event on a
// prefix, and etcdctl as a long-running child process (lock, elect).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { FilterType, type IKeyValue, type IWatchResponse } from 'etcd3';
import type { EtcdScope } from '../../src/etcd/connection.js';

/**
 * Watches `prefix` for the next put (or delete). Resolves once etcd has
 * confirmed the watch, so the action it waits for can start after it without
 * a race, with `event`: the pair of that next put or delete.
 */
export async function nextEvent(etcd: EtcdScope, prefix: string, kind: 'put' | 'delete'): Promise<{ event: Promise<IKeyValue> }> {
  // "From now" on a follower that has not applied the latest writes yet
  // would replay them: start right after the current (linearizable) revision.
  const now = (await etcd.kv.range({ key: Buffer.from(prefix), count_only: true })).header.revision;
  const stream = await etcd.watch.watch();
  const end = Buffer.from(prefix);
  end[end.length - 1]! += 1;
  let created!: () => void;
  const ready = new Promise<void>((resolve) => (created = resolve));
  const event = new Promise<IKeyValue>((resolve, reject) => {
    stream.on('data', (res: IWatchResponse) => {
      if (res.created) created();
      if (res.events[0]) resolve(res.events[0].kv);
    });
    stream.on('error', reject);
  }).finally(() => {
    stream.on('error', () => undefined);
    stream.cancel();
  });
  stream.write({
    create_request: {
      key: Buffer.from(prefix),
      range_end: end,
      start_revision: Number(now) + 1,
      filters: [kind === 'put' ? FilterType.Nodelete : FilterType.Noput],
    },
  });
  await ready;
  return { event };
}

/** `etcdctl <args>` as a child process whose stdout lines can be awaited; killed in teardown. */
export function etcdctlChild(t: { teardown(fn: () => unknown): void }, endpoints: string[], ...args: string[]) {
  const child: ChildProcess = spawn('etcdctl', [`--endpoints=${endpoints.join(',')}`, ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    wake?.();
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return {
    child,
    exited,
    stderr: () => stderr,
    printed: () => [...lines],
    async nextLine(): Promise<string> {
      while (lines.length === 0) {
        if (child.exitCode !== null) throw new Error(`etcdctl exited (${child.exitCode}): ${stderr}`);
        await Promise.race([new Promise<void>((r) => (wake = r)), exited]);
      }
      return lines.shift()!;
    },
  };
}

/** Tracks whether an inject promise has settled. */
export function pending<T>(p: Promise<T>) {
  const state = { settled: false, promise: p };
  p.finally(() => (state.settled = true)).catch(() => undefined);
  return state;
}


/**
 * Freezes a process with SIGSTOP and resolves once the kernel reports it
 * stopped (state T in /proc/<pid>/stat), so a test never probes a member that
 * has not actually stopped yet. With `t`, the process is thawed in teardown.
 */
export async function freeze(pid: number, t?: { teardown(fn: () => unknown): void }): Promise<void> {
  const { readFile } = await import('node:fs/promises');
  process.kill(pid, 'SIGSTOP');
  t?.teardown(() => {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // already gone
    }
  });
  for (let i = 0; ; i++) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The state follows the command name, which is in parentheses.
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('T')) return;
    if (i > 500) throw new Error(`process ${pid} did not stop: ${stat}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
