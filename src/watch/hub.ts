// The watch hub: every HTTP watcher (websocket, SSE, long-poll) is a
// subscriber here, and subscribers on the same range share one etcd watch,
// as etcd's grpc-proxy coalesces watchers (shared/reference/anchors.md §5).
//
// Exactly-once, in order: each upstream etcd watch and each subscriber keep
// the next revision they may receive. Events below it are dropped, so an
// upstream re-created after a broken stream (from its own next revision, never
// from a response header revision: etcd's catch-up batches carry the current
// revision) cannot deliver anything twice, and nothing is skipped.
//
// Late joiners: each upstream keeps a bounded buffer of its recent batches. A
// subscriber asking for a start revision the buffer covers is replayed from it
// and joins the shared watch; an older start gets a dedicated etcd watch of
// its own, so it never holds back or disturbs the others.
//
// Progress: etcd 3.4 answers a progress request on the stream at once with
// its current revision, through a different queue than the events (etcd
// issue 15220, fixed after 3.4.23): the answer can overtake events at or
// below its revision, and it speaks for no watch still catching up from an
// old start revision. Taking it as "every watch is past R" loses those
// events. So a stream-wide answer moves only upstreams etcd has in its
// synced set, and only once it has settled: a later answer arrived at
// least PROGRESS_SETTLE_MS after it. etcd's per-watch progress answers (sent
// in order with that watch's events, only when it is synced) count at once.
// What this cannot see: etcd also drops a watch from its synced set, without
// a word, when the stream's buffer (128 answers) is full because we read too
// slowly; the settle delay covers ordinary backlogs, not a stall longer than it.
//
// A hung member: a member that is frozen (SIGSTOP, a GC pause, a stalled disk)
// or cut off from its peers keeps the TCP connection open and says nothing,
// and every watch on the stream stalls with it. Two guards: the stream asks
// for etcd's require-leader check (the connection's `hasleader` metadata), so
// a member that loses its leader ends the stream; and a watchdog asks a
// stream that has been quiet for progress and, when nothing at all comes
// back within STREAM_STALL_MS, treats it as broken: every watch moves to
// another member from its next revision, as after any broken stream. The
// watchdog needs liveness only (any answer counts), never positions, so it
// cannot break the progress rule above.
import type { IDuplexStream, IWatchRequest, IWatchResponse } from 'etcd3';
import type { FastifyBaseLogger } from 'fastify';
import type { EtcdScope } from '../etcd/connection.js';
import { fromEtcdError } from '../errors.js';
import { num } from '../kv/codec.js';
import { filterBatch, groupByRevision, type EventBatch, type EventFilters } from './events.js';

/** How old a stream-wide progress answer must be before it counts (see the top of the file). */
export const PROGRESS_SETTLE_MS = 1000;
/** etcd's watchBatchMaxRevs: the most revisions one catch-up answer holds. */
const ETCD_CATCH_UP_REVISIONS = 1000;
/**
 * How long the watch stream may stay silent after a progress request before
 * it counts as broken. etcd 3.4 answers a progress request at once (it skips
 * the event queue), so a healthy member answers in milliseconds even under
 * load; 3 s leaves room for a busy host and still moves the watches within
 * the 5 s the gateway promises (issue 12) when a member hangs.
 */
export const STREAM_STALL_MS = 3000;
/** A stream with watches that has been quiet this long is asked for progress (the watchdog's probe). */
const STREAM_QUIET_MS = 500;

export interface WatchRange {
  key: Buffer;
  /** Empty for a single key. */
  rangeEnd: Buffer;
}

export interface WatchError {
  status: number;
  code: string;
  message: string;
  compact_revision?: number;
}

/** What a transport implements to receive a subscription's messages. */
export interface WatchSink {
  /** Called once, before any event: the revision the subscription starts at. */
  created(startRevision: number): void;
  events(batch: EventBatch): void;
  /** No events below `revision + 1` are pending for this subscription. */
  progress(revision: number): void;
  /** Terminal: the subscription has ended. */
  error(err: WatchError): void;
}

export interface SubscribeOptions {
  range: WatchRange;
  startRevision?: number;
  prevKv?: boolean;
  filters?: EventFilters;
  progressNotify?: boolean;
}

export interface WatchHubOptions {
  log: FastifyBaseLogger;
  /** Most batches an upstream keeps for late joiners. */
  bufferBatches: number;
  /** Most bytes (approximately) an upstream keeps for late joiners. */
  bufferBytes: number;
  /**
   * Most bytes all upstreams together keep: with many busy ranges the
   * per-upstream limit alone would add up without bound. Over it, the
   * largest buffer gives up its oldest batches first.
   */
  bufferTotalBytes: number;
  /** How often to ask etcd for progress while someone wants progress notifications. */
  progressIntervalMs: number;
  /** Renews the gateway's etcd token (its scope's refresh), when etcd auth is on. */
  refreshAuth?: () => Promise<void>;
}

class Subscriber {
  nextRev: number | undefined;
  active = true;
  /** The upstream it is attached to or waiting on. */
  upstream: Upstream | undefined;
  constructor(
    readonly opts: SubscribeOptions,
    readonly sink: WatchSink,
  ) {}

  start(revision: number): void {
    this.nextRev = revision;
    this.sink.created(revision);
  }

  offer(batch: EventBatch): void {
    if (!this.active || this.nextRev === undefined || batch.revision < this.nextRev) return;
    this.nextRev = batch.revision + 1;
    const filtered = filterBatch(batch, this.opts.filters ?? {});
    if (filtered) this.sink.events(filtered);
  }

  progressed(revision: number): void {
    if (!this.active || this.nextRev === undefined || revision + 1 < this.nextRev) return;
    this.nextRev = revision + 1;
    if (this.opts.progressNotify) this.sink.progress(revision);
  }
}

class Upstream {
  /** The revision etcd will deliver next; unknown until the first `created`. */
  nextRev: number | undefined;
  created = false;
  readonly subs = new Set<Subscriber>();
  /** Subscribers waiting for `created` to learn where they can join. */
  readonly pending: Subscriber[] = [];
  buffer: EventBatch[] = [];
  bufferBytes = 0;
  /** The buffer holds every event of the range from this revision on. */
  bufferFrom: number | undefined;
  /** A refused create was retried once on a stream with a fresh token. */
  authRetried = false;
  /** The start revision of the last create sent to etcd (0: from now). */
  requestedStart = 0;
  /**
   * etcd has this watch in its synced set: it gets each event as it happens.
   * A watch created at an old revision is caught up by etcd in the
   * background; until it has seen the current revision it is not.
   */
  synced = false;

  constructor(
    readonly watchId: number,
    readonly sharedKey: string | undefined,
    readonly range: WatchRange,
    readonly prevKv: boolean,
    readonly startRev: number | undefined,
  ) {}
}

export interface WatchHubStats {
  etcd_watches: number;
  subscribers: number;
  /** Bytes (approximately) of recent events kept for late joiners, all watches together. */
  buffered_bytes: number;
  stream_connected: boolean;
}

export class WatchHub {
  private readonly shared = new Map<string, Upstream>();
  private readonly byId = new Map<number, Upstream>();
  private stream: IDuplexStream<IWatchRequest, IWatchResponse> | undefined;
  private connecting = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private nextWatchId = 1;
  private closed = false;
  /** The newest store revision etcd has reported on the watch stream. */
  private storeRevision = 0;
  /** Sum of every upstream's bufferBytes. */
  private bufferedBytes = 0;
  /** Stream-wide progress answers waiting to settle (oldest first). */
  private progressAnswers: { revision: number; at: number }[] = [];
  private lastProgressRequest = 0;
  /** Who asked for each progress answer still to come on the stream, oldest first. */
  private progressAsked: ('wanted' | 'probe')[] = [];
  private readonly progressTimer: NodeJS.Timeout;
  /** The etcd endpoint (as configured) serving the current stream. */
  private streamMember: string | undefined;
  /** When the current stream last answered anything, or opened. */
  private lastHeard = 0;
  /** When the watchdog last asked the current stream for progress. */
  private probeSentAt: number | undefined;
  private readonly watchdogTimer: NodeJS.Timeout;
  /** The member whose stream broke for want of answers or of a leader: the next stream opens elsewhere. */
  private avoidNext: string | undefined;

  constructor(
    private readonly etcd: EtcdScope,
    private readonly opts: WatchHubOptions,
  ) {
    this.progressTimer = setInterval(() => this.requestProgress(), opts.progressIntervalMs);
    this.progressTimer.unref();
    this.watchdogTimer = setInterval(() => this.watchdog(), STREAM_QUIET_MS / 2);
    this.watchdogTimer.unref();
  }

  stats(): WatchHubStats {
    let subscribers = 0;
    for (const u of this.byId.values()) subscribers += u.subs.size + u.pending.length;
    return {
      etcd_watches: this.byId.size,
      subscribers,
      buffered_bytes: this.bufferedBytes,
      stream_connected: this.stream !== undefined,
    };
  }

  /** The etcd endpoint (one of the configured ones) serving the watch stream, when connected. */
  streamEndpoint(): string | undefined {
    return this.stream ? this.streamMember : undefined;
  }

  /**
   * Subscribes to a range. The sink's `created` is called (possibly
   * synchronously) before any events. Returns the function that unsubscribes.
   */
  subscribe(opts: SubscribeOptions, sink: WatchSink): () => void {
    if (this.closed) throw new Error('watch hub closed');
    const sub = new Subscriber(opts, sink);
    const key = `${opts.prevKv ? 1 : 0}:${opts.range.key.toString('base64')}:${opts.range.rangeEnd.toString('base64')}`;
    const existing = this.shared.get(key);
    if (!existing) {
      const up = this.createUpstream(key, opts.range, Boolean(opts.prevKv), opts.startRevision);
      wait(up, sub);
    } else if (!existing.created && existing.nextRev === undefined) {
      wait(existing, sub);
    } else {
      this.join(existing, sub);
    }
    return () => this.unsubscribe(sub);
  }

  /** Decides how a subscriber joins an upstream whose position is known. */
  private join(up: Upstream, sub: Subscriber): void {
    const next = up.nextRev!;
    // "Now" is the store's current revision, not the position of an upstream
    // that may still be replaying history for the subscriber that created it.
    const want = sub.opts.startRevision ?? Math.max(next, this.storeRevision + 1);
    if (want >= next) {
      attach(up, sub);
      sub.start(want);
      return;
    }
    if (up.bufferFrom !== undefined && want >= up.bufferFrom) {
      attach(up, sub);
      sub.start(want);
      for (const batch of up.buffer) sub.offer(batch);
      return;
    }
    // Older than the buffer: a dedicated watch replays etcd's history.
    wait(this.createUpstream(undefined, up.range, up.prevKv, want), sub);
  }

  private unsubscribe(sub: Subscriber): void {
    if (!sub.active) return;
    sub.active = false;
    const up = sub.upstream;
    if (!up || !this.byId.has(up.watchId)) return;
    up.subs.delete(sub);
    removeFrom(up.pending, sub);
    if (up.subs.size === 0 && up.pending.length === 0) this.dropUpstream(up, true);
  }

  private createUpstream(sharedKey: string | undefined, range: WatchRange, prevKv: boolean, startRev: number | undefined): Upstream {
    const up = new Upstream(this.nextWatchId++, sharedKey, range, prevKv, startRev);
    if (sharedKey) this.shared.set(sharedKey, up);
    this.byId.set(up.watchId, up);
    if (this.stream) this.sendCreate(up);
    else this.connect();
    return up;
  }

  private dropUpstream(up: Upstream, cancelInEtcd: boolean): void {
    if (!this.byId.has(up.watchId)) return;
    this.byId.delete(up.watchId);
    this.bufferedBytes -= up.bufferBytes;
    up.buffer = [];
    up.bufferBytes = 0;
    if (up.sharedKey && this.shared.get(up.sharedKey) === up) this.shared.delete(up.sharedKey);
    if (cancelInEtcd && this.stream) this.stream.write({ cancel_request: { watch_id: up.watchId } });
  }

  private sendCreate(up: Upstream): void {
    up.created = false;
    up.synced = false;
    // Resume exactly where this upstream stopped; a new one starts where asked or now.
    up.requestedStart = up.nextRev ?? up.startRev ?? 0;
    this.stream!.write({
      create_request: {
        key: up.range.key,
        range_end: up.range.rangeEnd,
        start_revision: up.requestedStart,
        prev_kv: up.prevKv,
        progress_notify: true,
        watch_id: up.watchId,
      },
    });
  }

  private connect(): void {
    if (this.stream || this.connecting || this.closed || this.reconnectTimer) return;
    this.connecting = true;
    // Marked again right before the stream opens (the member is chosen then):
    // a member without a leader is alive and answers the connection's probe
    // at once, yet refuses require-leader streams.
    if (this.avoidNext) this.etcd.connection.markSuspect(this.avoidNext, 'its watch stream broke');
    this.etcd.watch
      .watch()
      .then((stream) => {
        this.connecting = false;
        this.avoidNext = undefined;
        if (this.closed) {
          stream.end();
          return;
        }
        this.stream = stream;
        this.streamMember = memberOf(stream, this.etcd.endpoints);
        this.lastHeard = Date.now();
        this.probeSentAt = undefined;
        stream.on('data', (res: IWatchResponse) => {
          this.failures = 0;
          this.lastHeard = Date.now();
          this.onResponse(res);
        });
        stream.on('error', (err: Error) => this.onBroken(stream, err));
        stream.on('end', () => this.onBroken(stream, new Error('etcd ended the watch stream')));
        for (const up of this.byId.values()) this.sendCreate(up);
      })
      .catch((err: Error) => {
        this.connecting = false;
        this.scheduleReconnect(err);
      });
  }

  private onBroken(stream: IDuplexStream<IWatchRequest, IWatchResponse>, err: Error): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    // Answers from another stream say nothing about the next one.
    this.progressAnswers = [];
    this.progressAsked = [];
    (stream as unknown as NodeJS.EventEmitter).removeAllListeners('data');
    // A stream that errored may still have a pending 'error' for the write side.
    stream.on('error', () => undefined);
    if (this.closed) return;
    for (const up of this.byId.values()) up.created = false;
    // A member that lost its leader ends require-leader streams: the next
    // stream must go elsewhere, or it is refused (or ended) the same way.
    if (this.streamMember && isNoLeader(err.message)) this.avoid(this.streamMember, err.message);
    this.scheduleReconnect(err);
  }

  /**
   * The watchdog (see the top of the file): a stream with watches that has
   * been quiet is asked for progress; one that then says nothing for
   * STREAM_STALL_MS is abandoned, and its watches resume on another member.
   */
  private watchdog(): void {
    const stream = this.stream;
    if (!stream || this.byId.size === 0) return;
    const now = Date.now();
    if (now - this.lastHeard < STREAM_QUIET_MS) return;
    if (this.probeSentAt === undefined || this.probeSentAt < this.lastHeard) {
      this.probeSentAt = now;
      this.progressAsked.push('probe');
      stream.write({ progress_request: {} });
      return;
    }
    if (now - this.probeSentAt < STREAM_STALL_MS) return;
    // Judge after pending I/O: when our own event loop was blocked, the
    // answer may be waiting to be read, and timers run before reads.
    setImmediate(() => {
      if (this.stream !== stream || this.lastHeard >= this.probeSentAt!) return;
      this.abandon(stream, new Error(`etcd member ${this.streamMember ?? '?'} did not answer on the watch stream for ${Date.now() - this.probeSentAt!} ms`));
    });
  }

  /** Gives up a stream whose member cannot serve it: every watch resumes on another member. */
  private abandon(stream: IDuplexStream<IWatchRequest, IWatchResponse>, err: Error): void {
    if (this.stream !== stream) return;
    if (this.streamMember) this.avoid(this.streamMember, err.message);
    this.onBroken(stream, err);
    (stream as unknown as { cancel?: () => void }).cancel?.();
  }

  /** Tells the connection layer the member is unhealthy, so the next stream (and other calls) go elsewhere. */
  private avoid(member: string, reason: string): void {
    this.avoidNext = member;
    this.etcd.connection.markSuspect(member, reason);
  }

  private scheduleReconnect(err: Error): void {
    if (this.closed || this.byId.size === 0) return;
    this.failures++;
    const delay = Math.min(100 * 2 ** (this.failures - 1), 2000);
    this.opts.log.warn({ err: err.message, retryInMs: delay }, 'etcd watch stream broken; resuming every watch from its next revision');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, delay);
  }

  private onResponse(res: IWatchResponse): void {
    const watchId = num(res.watch_id);
    const revision = num(res.header?.revision);
    if (revision > this.storeRevision) this.storeRevision = revision;
    if (watchId === -1 && !res.created && !res.canceled) {
      // etcd 3.4 answers each progress request once, in order: the
      // watchdog's answers prove the stream alive and nothing more, so
      // subscribers get progress at the pace they asked for.
      if (this.progressAsked.shift() !== 'probe') this.onProgressAnswer(revision);
      return;
    }
    // etcd 3.4 answers a refused create (permission) with watch_id -1: it is
    // the oldest create still waiting, as etcd handles creates in order.
    const up = watchId === -1 && (res.created || res.canceled) ? this.oldestPending() : this.byId.get(watchId);
    if (!up) return; // canceled by us, or a late answer on a dropped watch
    if (res.created) {
      this.onCreated(up, revision);
      if (!res.canceled) return;
    }
    if (res.canceled) {
      this.onCanceled(up, res);
      return;
    }
    if (res.events.length === 0) {
      // etcd's own progress notification for this watch: sent in order with
      // its events, and only while it is synced.
      up.synced = true;
      this.progress(up, revision);
      return;
    }
    for (const batch of groupByRevision(res.events)) {
      if (up.nextRev !== undefined && batch.revision < up.nextRev) continue;
      up.nextRev = batch.revision + 1;
      this.remember(up, batch);
      for (const sub of up.subs) sub.offer(batch);
    }
    if (!up.synced) {
      // etcd catches a watch up in answers of at most ETCD_CATCH_UP_REVISIONS
      // revisions each, with the current revision in the header, and moves
      // it to its synced set after the last one: an answer reaching its
      // header revision, or one with fewer revisions than a full batch, is
      // the last one.
      const revisions = new Set(res.events.map((e) => String(e.kv!.mod_revision)));
      const lastRev = num(res.events[res.events.length - 1]!.kv!.mod_revision);
      if (lastRev >= revision || revisions.size < ETCD_CATCH_UP_REVISIONS) up.synced = true;
    }
  }

  /** A stream-wide progress answer: settle the older ones, keep this one for later. */
  private onProgressAnswer(revision: number): void {
    const now = Date.now();
    let settled: number | undefined;
    while (this.progressAnswers.length > 0 && now - this.progressAnswers[0]!.at >= PROGRESS_SETTLE_MS) {
      settled = this.progressAnswers.shift()!.revision;
    }
    if (settled !== undefined) for (const up of this.byId.values()) if (up.created && up.synced) this.progress(up, settled);
    // Answers closer together than this add nothing the older one will not settle.
    const newest = this.progressAnswers[this.progressAnswers.length - 1];
    if (!newest || now - newest.at >= PROGRESS_SETTLE_MS / 4) this.progressAnswers.push({ revision, at: now });
  }

  private onCreated(up: Upstream, headerRevision: number): void {
    up.created = true;
    // etcd's rule: a watch from now, or from a revision still to come, starts synced.
    up.synced = up.requestedStart === 0 || up.requestedStart > headerRevision;
    if (up.nextRev === undefined) {
      // etcd starts a watch without start revision right after the current one.
      up.nextRev = up.startRev && up.startRev > 0 ? up.startRev : headerRevision + 1;
      up.bufferFrom = up.nextRev;
    }
    for (const sub of up.pending.splice(0)) if (sub.active) this.join(up, sub);
  }

  private oldestPending(): Upstream | undefined {
    for (const up of this.byId.values()) if (!up.created) return up;
    return undefined;
  }

  private onCanceled(up: Upstream, res: IWatchResponse): void {
    // A member without a leader speaks for no watch: a stream break, not the
    // subscribers' end (etcd 3.4 ends the whole stream; this covers a
    // per-watch cancel too).
    if (isNoLeader(res.cancel_reason ?? '') && this.stream) {
      this.abandon(this.stream, new Error(res.cancel_reason!));
      return;
    }
    // The shared stream runs as the gateway, which may read everything: a
    // refusal means its token predates a change to users or roles (etcd checks
    // the stream's token when a watch is created). Renew it and reopen the
    // stream once; every watch resumes from its next revision.
    if (!up.authRetried && this.opts.refreshAuth && (res.cancel_reason ?? '').includes('permission denied') && num(res.compact_revision) === 0) {
      up.authRetried = true;
      up.created = false;
      this.opts.refreshAuth().then(
        () => this.restart(),
        () => this.restart(),
      );
      return;
    }
    this.dropUpstream(up, false);
    const compact = num(res.compact_revision);
    const err: WatchError =
      compact > 0
        ? {
            status: 410,
            code: 'revision_compacted',
            message: `the start revision has been compacted; watch again from ${compact} or later (relist first)`,
            compact_revision: compact,
          }
        : this.cancelReason(res.cancel_reason);
    for (const sub of [...up.subs, ...up.pending]) {
      if (!sub.active) continue;
      sub.active = false;
      sub.sink.error(err);
    }
  }

  private cancelReason(reason: string | undefined): WatchError {
    const text = reason || 'etcd canceled the watch';
    const p = fromEtcdError({ code: 2, details: text, message: text }, 'read');
    return { status: p.status, code: p.code, message: p.message };
  }

  private progress(up: Upstream, revision: number): void {
    if (up.nextRev !== undefined && revision + 1 > up.nextRev) up.nextRev = revision + 1;
    for (const sub of up.subs) sub.progressed(revision);
  }

  private remember(up: Upstream, batch: EventBatch): void {
    up.buffer.push(batch);
    up.bufferBytes += batch.bytes;
    this.bufferedBytes += batch.bytes;
    while (up.buffer.length > this.opts.bufferBatches || (up.bufferBytes > this.opts.bufferBytes && up.buffer.length > 1)) this.forget(up);
    if (this.bufferedBytes <= this.opts.bufferTotalBytes) return;
    // Over the budget of all buffers: the writer's own buffer gives way while
    // it holds more than an equal share; otherwise the largest one does.
    const share = this.opts.bufferTotalBytes / this.byId.size;
    while (this.bufferedBytes > this.opts.bufferTotalBytes && up.bufferBytes > share && up.buffer.length > 0) this.forget(up);
    while (this.bufferedBytes > this.opts.bufferTotalBytes) {
      let largest: Upstream | undefined;
      for (const u of this.byId.values()) if (!largest || u.bufferBytes > largest.bufferBytes) largest = u;
      if (!largest || largest.buffer.length === 0) break;
      this.forget(largest);
    }
  }

  /** Drops an upstream's oldest buffered batch: joiners from before it get a watch of their own. */
  private forget(up: Upstream): void {
    const dropped = up.buffer.shift()!;
    up.bufferBytes -= dropped.bytes;
    this.bufferedBytes -= dropped.bytes;
    up.bufferFrom = dropped.revision + 1;
  }

  private requestProgress(): void {
    if (!this.stream) return;
    for (const up of this.byId.values()) {
      for (const sub of up.subs) {
        if (sub.opts.progressNotify) {
          this.requestProgressNow();
          return;
        }
      }
    }
  }

  /**
   * Asks etcd for a progress answer now (at most a few per settle period):
   * for a caller waiting until its subscriptions have progressed (the /v3
   * watch's progress_request), which needs answers PROGRESS_SETTLE_MS apart.
   */
  requestProgressNow(): void {
    const now = Date.now();
    if (!this.stream || now - this.lastProgressRequest < PROGRESS_SETTLE_MS / 4) return;
    this.lastProgressRequest = now;
    this.progressAsked.push('wanted');
    this.stream.write({ progress_request: {} });
  }

  /**
   * Reopens the etcd stream (with the gateway's current token); every watch
   * is re-created from its next revision, so subscribers lose nothing.
   */
  restart(): void {
    const stream = this.stream;
    if (!stream || this.closed) return;
    this.onBroken(stream, new Error('renewing the watch stream after an auth change'));
    stream.end();
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.failures = 0;
    this.connect();
  }

  /** Ends every subscription with `err` and cancels every etcd watch. */
  close(err: WatchError): void {
    this.closed = true;
    clearInterval(this.progressTimer);
    clearInterval(this.watchdogTimer);
    clearTimeout(this.reconnectTimer);
    for (const up of [...this.byId.values()]) {
      this.dropUpstream(up, false);
      for (const sub of [...up.subs, ...up.pending]) {
        if (!sub.active) continue;
        sub.active = false;
        sub.sink.error(err);
      }
    }
    if (this.stream) {
      const stream = this.stream;
      this.stream = undefined;
      stream.on('error', () => undefined);
      stream.end();
      (stream as unknown as { cancel?: () => void }).cancel?.();
    }
  }
}

/** Which configured endpoint a stream's call went to (each channel has exactly one member as its target). */
function memberOf(stream: unknown, endpoints: string[]): string | undefined {
  const peer = (stream as { getPeer?: () => string }).getPeer?.() ?? '';
  return endpoints.find((e) => {
    const hostPort = e.replace(/^\w+:\/\//, '').replace(/\/.*$/, '');
    return peer === hostPort || peer.endsWith(`:${hostPort}`) || peer.endsWith(`/${hostPort}`);
  });
}

function isNoLeader(text: string): boolean {
  return text.includes('no leader');
}

function attach(up: Upstream, sub: Subscriber): void {
  sub.upstream = up;
  up.subs.add(sub);
}

function wait(up: Upstream, sub: Subscriber): void {
  sub.upstream = up;
  up.pending.push(sub);
}

function removeFrom<T>(list: T[], item: T): boolean {
  const i = list.indexOf(item);
  if (i < 0) return false;
  list.splice(i, 1);
  return true;
}

