// /v3/watch: etcd's watch stream on the shared watch hub, written once
// against a request source and a chunk sink (src/v3/streams.ts serves it as
// a chunked POST and as a websocket).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isGrpcError } from '../errors.js';
import { num } from '../kv/codec.js';
import type { WatchError } from '../watch/hub.js';
import { checkReadable } from '../watch/session.js';
import { isRefusal, rpcErrorText, streamError, v3ErrorOf } from './errors.js';
import { decodeMessage, encodeMessage, parseJson, watchEventToEtcd } from './protojson.js';
import type { ChunkSink, RequestSource } from './streams.js';

export interface WatchStreamOptions {
  /** How far a stream client may fall behind before it is cut off. */
  maxBufferedBytes: number;
  /** Most watches on one stream (WATCH_MAX_SUBSCRIPTIONS). */
  maxWatches: number;
}

/** The header fields etcd puts on every answer, learned from a read, with a revision of our choosing. */
export class HeaderBase {
  private base: Record<string, unknown> = {};
  learn(header: { cluster_id?: unknown; member_id?: unknown; raft_term?: unknown } | undefined): void {
    if (header) this.base = { cluster_id: header.cluster_id, member_id: header.member_id, raft_term: header.raft_term };
  }
  at(revision: number | string): Record<string, unknown> {
    return encodeMessage('ResponseHeader', { ...this.base, revision: String(revision) });
  }
}

/** How long a progress_request waits for every watch of its stream to catch up before answering with the revision they all reached. */
const PROGRESS_WAIT_MS = 3000;

/**
 * /v3/watch: each create_request becomes a subscriber of the shared watch
 * hub, numbered per stream from 0 as etcd numbers watch IDs; hub messages go
 * back as etcd WatchResponses. Watches live until the client disconnects
 * (etcd keeps them after the request body ends too).
 */
export function watchStream(app: FastifyInstance, req: FastifyRequest, requests: RequestSource, sink: ChunkSink, opts: WatchStreamOptions): { recheck(): void } {
  interface Watch {
    range: { key: Buffer; rangeEnd: Buffer };
    unsubscribe: () => void;
    /** Every event up to this revision has been sent. */
    through: number;
  }
  const watches = new Map<string, Watch>();
  let nextId = 0n;
  let closed = false;
  const headers = new HeaderBase();
  // Someone waits for a watch to move (progress_request).
  let moved: (() => void)[] = [];
  const wake = () => {
    for (const fn of moved.splice(0)) fn();
  };

  const send = (chunk: unknown) => {
    if (closed) return;
    sink.send(chunk);
    if (sink.buffered > opts.maxBufferedBytes) {
      // A client that stopped reading is cut off rather than buffered without bound.
      req.log.warn('v3 watch client fell too far behind; closing the stream');
      sink.destroy();
    }
  };
  const cleanup = () => {
    if (closed) return;
    closed = true;
    for (const w of watches.values()) w.unsubscribe();
    watches.clear();
    wake();
  };
  sink.onClose(cleanup);
  const closedP = new Promise<void>((resolve) => sink.onClose(() => resolve()));

  // The header of answers that carry no data (cancel, refusal) is read as
  // the gateway: a caller refused everything still gets etcd's header, as
  // etcd gives it.
  const currentRevision = async (): Promise<string> => {
    const r = await app.etcd.kv.range({ key: Buffer.from([0]), count_only: true, limit: 1, serializable: true });
    headers.learn(r.header);
    return r.header.revision;
  };

  // etcd 3.4 answers at once with its current revision, which may overtake
  // events still on their way (etcd issue 15220). Here the answer waits
  // until every watch of the stream has sent everything up to the current
  // revision (linearizable read), so it is a true fence; a watch still
  // catching up after PROGRESS_WAIT_MS lowers the answer to what all reached.
  const progress = async () => {
    const r = await req.etcd.kv.range({ key: Buffer.from([0]), count_only: true, limit: 1 });
    headers.learn(r.header);
    const target = num(r.header.revision);
    const deadline = Date.now() + PROGRESS_WAIT_MS;
    const lowest = () => Math.min(target, ...[...watches.values()].map((w) => w.through));
    while (!closed && lowest() < target && Date.now() < deadline) {
      app.watchHub.requestProgressNow();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 250);
        moved.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    send({ result: { header: headers.at(lowest()), watch_id: '-1' } });
  };

  const createWatch = async (create: Record<string, unknown>) => {
    const range = { key: (create.key as Buffer | undefined) ?? Buffer.alloc(0), rangeEnd: (create.range_end as Buffer | undefined) ?? Buffer.alloc(0) };
    let id: string;
    if (create.watch_id !== undefined && create.watch_id !== '0') id = String(create.watch_id);
    else {
      while (watches.has(String(nextId))) nextId++;
      id = String(nextId++);
    }
    const idField = id === '0' ? undefined : id;
    if (watches.has(id)) {
      // etcd's mvcc refusal, with watch ID -1 as etcd answers it.
      send({
        result: { header: headers.at(await currentRevision()), watch_id: '-1', created: true, canceled: true, cancel_reason: 'mvcc: duplicate watch ID provided on the WatchStream' },
      });
      return;
    }
    // As on /v1's websocket, a stream holds a bounded number of watches;
    // over it a watch is refused the way etcd refuses one.
    if (watches.size >= opts.maxWatches) {
      const reason = `too many watches on this stream: at most ${opts.maxWatches} (WATCH_MAX_SUBSCRIPTIONS)`;
      send({ result: { header: headers.at(await currentRevision()), watch_id: '-1', created: true, canceled: true, cancel_reason: reason } });
      return;
    }
    let at: string;
    try {
      if (app.authEnabled) await checkReadable(req.etcd.kv, range);
      // The current revision (linearizable) and the rest of the header.
      const r = await req.etcd.kv.range({ key: range.key.length ? range.key : Buffer.from([0]), count_only: true, limit: 1 });
      headers.learn(r.header);
      at = r.header.revision;
    } catch (err) {
      // etcd answers a refused watch as created and canceled at once, with
      // watch ID -1 and the gRPC error's text as the reason.
      const e = v3ErrorOf(err);
      if (e.status >= 500) throw err;
      const reason = isGrpcError(err) ? rpcErrorText(err) : e.message;
      send({ result: { header: headers.at(await currentRevision()), watch_id: '-1', created: true, canceled: true, cancel_reason: reason } });
      return;
    }
    const filters = (create.filters as number[] | undefined) ?? [];
    const wantsProgress = create.progress_notify === true;
    let ended = false;
    const watch: Watch = { range, unsubscribe: () => undefined, through: 0 };
    // The next request waits for this one's `created`, so answers come in
    // the order of the requests, as etcd sends them.
    let answered!: () => void;
    const createdOrEnded = new Promise<void>((resolve) => (answered = resolve));
    const hubSink = {
      created: (start: number) => {
        watch.through = start - 1;
        send({ result: { header: headers.at(at), watch_id: idField, created: true } });
        answered();
      },
      events: (batch: { revision: number; events: Parameters<typeof watchEventToEtcd>[0][] }) => {
        watch.through = batch.revision;
        send({ result: { header: headers.at(batch.revision), watch_id: idField, events: batch.events.map(watchEventToEtcd) } });
        wake();
      },
      // Subscribed with progress always, to know where the watch stands;
      // the client hears of it only when it asked.
      progress: (revision: number) => {
        watch.through = Math.max(watch.through, revision);
        if (wantsProgress) send({ result: { header: headers.at(revision), watch_id: idField } });
        wake();
      },
      error: (err: WatchError) => {
        ended = true;
        watches.delete(id);
        const result: Record<string, unknown> = { header: headers.at(at), watch_id: idField, canceled: true };
        if (err.compact_revision) result.compact_revision = String(err.compact_revision);
        else result.cancel_reason = err.message;
        send({ result });
        answered();
        wake();
      },
    };
    watch.unsubscribe = app.watchHub.subscribe(
      {
        range,
        startRevision: create.start_revision !== undefined && create.start_revision !== '0' ? num(create.start_revision as string) : undefined,
        prevKv: create.prev_kv === true,
        progressNotify: true,
        filters: { noPut: filters.includes(0), noDelete: filters.includes(1) },
      },
      hubSink,
    );
    if (closed) watch.unsubscribe();
    else if (!ended) watches.set(id, watch);
    await Promise.race([createdOrEnded, closedP]);
  };

  const handle = async (line: string) => {
    const request = decodeMessage('WatchRequest', parseJson(line));
    const create = request.create_request as Record<string, unknown> | undefined;
    const cancel = request.cancel_request as Record<string, unknown> | undefined;
    if (create) await createWatch(create);
    else if (cancel) {
      const id = String(cancel.watch_id ?? '0');
      const watch = watches.get(id);
      if (watch) {
        watch.unsubscribe();
        watches.delete(id);
        send({ result: { header: headers.at(await currentRevision()), watch_id: id === '0' ? undefined : id, canceled: true } });
      }
    } else if (request.progress_request) await progress();
  };

  const fail = (err: unknown) => {
    send(streamError(err));
    sink.end();
    cleanup();
  };
  // Requests are handled one after another, in the order they were sent, as
  // etcd's watch stream handles them.
  let queue = Promise.resolve();
  requests({
    message: (line) => {
      queue = queue.then(() => (closed ? undefined : handle(line))).catch(fail);
    },
    end: () => undefined,
    error: fail,
  });
  return {
    // A watch over a range the caller may no longer read is canceled as
    // etcd cancels a refused one; the stream and its other watches go on.
    recheck: () => {
      for (const [id, watch] of watches) {
        checkReadable(req.etcd.kv, watch.range).catch((err: unknown) => {
          if (!isRefusal(err) || watches.get(id) !== watch) return;
          watch.unsubscribe();
          watches.delete(id);
          send({ result: { header: headers.at(watch.through), watch_id: id === '0' ? undefined : id, canceled: true, cancel_reason: rpcErrorText(err) } });
        });
      }
    },
  };
}
