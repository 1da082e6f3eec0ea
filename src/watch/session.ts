// Opening a subscription for a transport: the optional initial state
// (list-then-watch in one step) and then the live events from the hub.
import type { KVClient } from 'etcd3';
import { badRequest } from '../errors.js';
import { kvToJson, num } from '../kv/codec.js';
import { ZERO_KEY } from '../kv/codec.js';
import type { WatchEventJson } from './events.js';
import type { SubscribeOptions, WatchHub, WatchSink } from './hub.js';

export interface TransportSink extends WatchSink {
  /** Synthetic put events of the current state (`initial` subscriptions), in key order. */
  initial(events: WatchEventJson[], revision: number): void;
  /** The initial state is complete; live events follow. */
  synced(revision: number): void;
}

export interface WatchContext {
  hub: WatchHub;
  /** The caller's KV client (req.etcd.kv). */
  kv: KVClient;
  maxKeys: number;
  /** Check the caller's read permission before joining a shared watch (authentication on). */
  checkRead: boolean;
}

/**
 * Asks etcd whether the caller may read the whole range: shared upstream
 * watches run as the gateway, so each subscriber is checked as itself first,
 * as etcd's grpc-proxy does (checkPermissionForWatch).
 */
export async function checkReadable(kv: KVClient, range: { key: Buffer; rangeEnd: Buffer }): Promise<void> {
  await kv.range({ key: range.key, range_end: range.rangeEnd, count_only: true, limit: 1, serializable: true });
}

/** Most pages an `initial` subscription may read before it is refused. */
const INITIAL_MAX_PAGES = 10;

/**
 * Subscribes `sink`. With `initial`, the range is read at one revision R
 * first; the subscription then starts at R + 1, so the state plus the events
 * are exactly etcd's history, with nothing missed or repeated.
 */
export async function openWatch(ctx: WatchContext, opts: SubscribeOptions & { initial?: boolean }, sink: TransportSink): Promise<() => void> {
  // With `initial`, reading the range as the caller is the permission check.
  if (ctx.checkRead && !opts.initial) await checkReadable(ctx.kv, opts.range);
  if (!opts.initial) return ctx.hub.subscribe(opts, sink);
  if (opts.startRevision !== undefined) throw badRequest('initial and start_revision do not combine: initial starts after the state it sends', 'invalid_option');
  const pages: WatchEventJson[][] = [];
  let revision: number | undefined;
  let from = opts.range.key;
  const rangeEnd = opts.range.rangeEnd;
  for (let page = 0; ; page++) {
    if (page === INITIAL_MAX_PAGES) {
      throw badRequest(`the range holds more than ${INITIAL_MAX_PAGES * ctx.maxKeys} keys: list it in pages, then watch from the listing's revision + 1`, 'initial_too_large');
    }
    const res = await ctx.kv.range({ key: from, range_end: rangeEnd, limit: ctx.maxKeys, revision });
    revision ??= num(res.header.revision);
    pages.push(res.kvs.map((kv) => ({ type: 'put', kv: kvToJson(kv) })));
    if (!res.more || res.kvs.length === 0 || rangeEnd.length === 0) break;
    from = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, ZERO_KEY]);
  }
  const at = revision!;
  return ctx.hub.subscribe({ ...opts, startRevision: at + 1 }, {
    ...sink,
    created(start) {
      sink.created(start);
      for (const events of pages) if (events.length) sink.initial(events, at);
      sink.synced(at);
    },
  });
}
