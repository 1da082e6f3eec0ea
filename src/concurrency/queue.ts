// The waiting line shared by locks and elections, with the key layout and
// ordering of etcd's Go concurrency package (client/v3/concurrency: Mutex,
// Election), so that etcdctl lock / elect and the gateway wait in one line:
// - a waiter's key is `<name>/<lease ID in %x>`, created with its lease in a
//   transaction that only creates it if it does not exist yet;
// - the key with the lowest create revision holds the lock / leads;
// - a waiter waits for the deletion of the key created just before its own
//   (waitDeletes), never polling and never woken by unrelated changes.
// Two things go beyond the Go code of etcd 3.4: the wait also watches the
// waiter's own key, so a lease that runs out ends the wait at once instead of
// granting a lock whose key is gone (3.5 checks this after the wait); and a
// broken watch stream is reopened from a fresh read instead of failing.
import { setTimeout as sleep } from 'node:timers/promises';
import { CompareResult, CompareTarget, FilterType, SortOrder, SortTarget, type IKeyValue, type IResponseHeader, type IWatchResponse } from 'etcd3';
import type { EtcdCallOptions, EtcdScope } from '../etcd/connection.js';
import { Problem } from '../errors.js';
import { num, prefixEnd } from '../kv/codec.js';

export interface Joined {
  /** Whether this call created the key (false: the lease was already in line). */
  created: boolean;
  /** Create revision of the key: its place in line, and the fencing token. */
  createRevision: number;
  /** The key's value now. */
  value: Buffer;
  header: IResponseHeader;
}

// A transaction of reads only: safe to send to another member on failure.
const READ: EtcdCallOptions = { kind: 'read' };

/** Puts `key` (with `lease`) unless it exists; either way, answers its place in line. */
export async function join(etcd: EtcdScope, key: Buffer, value: Buffer, lease: string): Promise<Joined> {
  const res = await etcd.kv.txn({
    compare: [{ key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 }],
    success: [{ request_put: { key, value, lease } }],
    failure: [{ request_range: { key } }],
  });
  if (res.succeeded) return { created: true, createRevision: num(res.header.revision), value, header: res.header };
  const kv = res.responses[0]!.response_range!.kvs[0]!;
  return { created: false, createRevision: num(kv.create_revision), value: kv.value, header: res.header };
}

/** The waiter's key is gone (lease expired, or released from elsewhere). */
export class LostPlace extends Error {
  constructor() {
    super('the key left the line while waiting');
  }
}

/**
 * Resolves with etcd's header once no key under `prefix` was created before
 * `createRevision`, i.e. once `own` is first in line. Throws LostPlace if
 * `own` disappears meanwhile, and `signal.reason` if the signal aborts
 * while there is still someone ahead.
 */
export async function waitTurn(
  etcd: EtcdScope,
  prefix: Buffer,
  own: Buffer,
  createRevision: number,
  signal: AbortSignal,
): Promise<IResponseHeader> {
  for (let failures = 0; ; ) {
    const res = await etcd.kv.txn(
      {
        success: [
          { request_range: { key: own } },
          {
            request_range: {
              key: prefix,
              range_end: prefixEnd(prefix),
              sort_target: SortTarget.Create,
              sort_order: SortOrder.Descend,
              max_create_revision: createRevision - 1,
              limit: 1,
            },
          },
        ],
      },
      READ,
    );
    const mine: IKeyValue | undefined = res.responses[0]!.response_range!.kvs[0];
    if (!mine || num(mine.create_revision) !== createRevision) throw new LostPlace();
    const ahead: IKeyValue | undefined = res.responses[1]!.response_range!.kvs[0];
    if (!ahead) return res.header;
    signal.throwIfAborted();
    const outcome = await waitDelete(etcd, ahead.key, own, num(res.header.revision) + 1, signal);
    if (outcome === 'own') throw new LostPlace();
    if (outcome === 'broken') {
      // The member went away or lost its leader: read again (which fails
      // properly if etcd is really gone) after a short, growing pause.
      failures++;
      await sleep(Math.min(100 * 2 ** failures, 1000), undefined, { signal }).catch(() => signal.throwIfAborted());
    } else {
      failures = 0;
    }
  }
}

type WaitOutcome = 'ahead' | 'own' | 'broken';

const AHEAD_WATCH = 1;
const OWN_WATCH = 2;

/**
 * One watch stream with two watchers from `fromRevision`, deletions only:
 * the key ahead (its deletion moves us up) and our own key (its deletion
 * means our lease ran out). etcd 3.4 accepts client-chosen watch IDs.
 */
async function waitDelete(
  etcd: EtcdScope,
  ahead: Buffer,
  own: Buffer,
  fromRevision: number,
  signal: AbortSignal,
): Promise<WaitOutcome> {
  const stream = await etcd.watch.watch();
  let onAbort = () => undefined as void;
  try {
    return await new Promise<WaitOutcome>((resolve, reject) => {
      onAbort = () => reject(signal.reason);
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      stream.on('data', (res: IWatchResponse) => {
        // Canceled: compacted past fromRevision, or the member lost its leader.
        if (res.canceled) resolve('broken');
        else if (res.events.length > 0) resolve(Number(res.watch_id) === OWN_WATCH ? 'own' : 'ahead');
      });
      stream.on('error', () => resolve('broken'));
      stream.on('end', () => resolve('broken'));
      stream.write({ create_request: { key: ahead, start_revision: fromRevision, filters: [FilterType.Noput], watch_id: AHEAD_WATCH } });
      stream.write({ create_request: { key: own, start_revision: fromRevision, filters: [FilterType.Noput], watch_id: OWN_WATCH } });
    });
  } finally {
    signal.removeEventListener('abort', onAbort);
    // Cancelling reports CANCELLED on the stream: expected, not an error.
    stream.on('error', () => undefined);
    stream.cancel();
  }
}

/**
 * Deletes a key only while it is still the incarnation created at
 * `createRevision`, so a waiter that gives up never removes a successor's key.
 * Answers whether it deleted.
 */
export async function leave(etcd: EtcdScope, key: Buffer, createRevision: number): Promise<boolean> {
  const res = await etcd.kv.txn({
    compare: [{ key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: createRevision }],
    success: [{ request_delete_range: { key } }],
  });
  return Boolean(res.succeeded);
}

/** The first in line under a prefix (the lock holder, the election leader), if any. */
export async function first(etcd: EtcdScope, prefix: Buffer): Promise<{ kv: IKeyValue | undefined; header: IResponseHeader }> {
  const res = await etcd.kv.range({
    key: prefix,
    range_end: prefixEnd(prefix),
    sort_target: SortTarget.Create,
    sort_order: SortOrder.Ascend,
    limit: 1,
  });
  return { kv: res.kvs[0], header: res.header };
}

/** A problem for a key that does not belong to the named lock or election. */
export function foreignKey(what: string, name: string): Problem {
  return new Problem(400, 'invalid_key', `the key is not a ${what} key of ${JSON.stringify(name)} (expected ${name}/<lease hex>)`);
}
