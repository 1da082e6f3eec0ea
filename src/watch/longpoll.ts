// Long-poll (`GET /v1/kv/{key}?wait`): one subscription that ends with the
// first events at or after the start revision, or with nothing at the timeout.
// Either way the answer says where to continue, so a loop of long-polls
// misses nothing (etcd v2's ?wait, Consul's blocking queries).
import { Problem } from '../errors.js';
import type { WatchEventJson } from './events.js';
import type { WatchError, WatchHub, WatchRange } from './hub.js';

export interface LongPollResult {
  events: WatchEventJson[];
  revision: number;
  next_start_revision: number;
}

export function longPoll(
  hub: WatchHub,
  opts: { range: WatchRange; startRevision?: number; prevKv?: boolean; timeoutMs: number },
  abort: AbortSignal,
): Promise<LongPollResult> {
  return new Promise((resolve, reject) => {
    const events: WatchEventJson[] = [];
    let next: number | undefined;
    let last: number | undefined;
    let done = false;
    let flush: NodeJS.Immediate | undefined;
    const finish = (err?: WatchError) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearImmediate(flush);
      abort.removeEventListener('abort', onAbort);
      unsubscribe?.();
      if (err) {
        reject(new Problem(err.status, err.code, err.message, { extra: err.compact_revision ? { compact_revision: err.compact_revision } : {} }));
        return;
      }
      const revision = last ?? (next ?? 1) - 1;
      resolve({ events, revision, next_start_revision: next ?? revision + 1 });
    };
    const onAbort = () => finish();
    const timer = setTimeout(() => finish(), opts.timeoutMs);
    abort.addEventListener('abort', onAbort);
    let unsubscribe: (() => void) | undefined;
    unsubscribe = hub.subscribe(
      { range: opts.range, startRevision: opts.startRevision, prevKv: opts.prevKv },
      {
        created: (start) => {
          next = start;
        },
        events: (batch) => {
          events.push(...batch.events);
          last = batch.revision;
          next = batch.revision + 1;
          // Take every batch already on its way (a catch-up delivers several
          // at once), then answer.
          flush ??= setImmediate(() => finish());
        },
        progress: (revision) => {
          next = Math.max(next ?? 0, revision + 1);
        },
        error: (err) => finish(err),
      },
    );
    if (done) unsubscribe();
  });
}
