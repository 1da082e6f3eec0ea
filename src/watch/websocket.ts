// The /v1 websocket protocol (GET /v1/watch): many subscriptions and
// election observers on one socket, lease keep-alives, and the socket's life
// (shutdown, token expiry, permission re-checks, a reader that falls behind,
// a peer that vanished) with the resume revisions each ending tells.
import type { FastifyRequest } from 'fastify';
import { Compile } from 'typebox/compile';
import type { RawData, WebSocket } from 'ws';
import { Problem } from '../errors.js';
import { leaseOwnerGuard } from '../auth/lease-owners.js';
import { electionPrefix } from '../concurrency/election.js';
import { bytesField, leaseHex, num } from '../kv/codec.js';
import { keepAliveOnce, leaseIdToEtcd } from '../kv/lease.js';
import { rangeOf } from '../kv/range.js';
import { WatchClientMessage, type WatchObserve, type WatchSubscribe } from '../schemas/watch.js';
import { eventsJson, type EventBatch } from './events.js';
import type { WatchError } from './hub.js';
import { followLeader, leaderMessage } from './leader.js';
import { dropUnlessDrained, registerStream, type StreamLife } from './lifecycle.js';
import { checkReadable, openWatch, type TransportSink, type WatchContext } from './session.js';
import { toWatchError, watchErrorMessage } from './sse.js';

/** Close codes of the websocket protocol (4000-4999 are the application's). */
export const CLOSE_SLOW_CONSUMER = 4008;
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_TOKEN_EXPIRED = 4001;

export interface WatchSocketOptions {
  /** The caller's watch context (its KV client, the hub). */
  context: WatchContext;
  maxSubscriptions: number;
  maxBufferedBytes: number;
  /** Ping interval: a peer that misses one pong is dropped. */
  heartbeatMs: number;
  requestTimeoutMs: number;
}

interface Subscription {
  /** Where the subscription resumes: past what actually went out. */
  resume: number | undefined;
  close: (() => void) | undefined;
  range?: { key: Buffer; rangeEnd: Buffer };
}

const checkClientMessage = Compile(WatchClientMessage);

export class WatchSocket {
  private readonly subs = new Map<string, Subscription>();
  private readonly life: StreamLife;
  /** Cut off for falling behind: nothing more is sent. */
  private cut = false;

  /** Listens from the start: messages that arrive during async work would otherwise be lost (@fastify/websocket README). */
  constructor(
    private readonly socket: WebSocket,
    private readonly req: FastifyRequest,
    private readonly opts: WatchSocketOptions,
  ) {
    this.life = registerStream(req.server.watchClients, req.caller, {
      shutdown: () => {
        socket.send(JSON.stringify({ type: 'shutdown', resume: this.resume() }));
        socket.close(CLOSE_GOING_AWAY, 'gateway shutting down');
      },
      recheck: () => {
        for (const [id, s] of this.subs) {
          if (!s.range) continue;
          checkReadable(req.etcd.kv, s.range).catch((err) => this.endSub(id, toWatchError(err)));
        }
      },
      // The socket lives no longer than the token that opened it.
      expire: () => {
        this.send({ type: 'error', status: 401, code: 'token_expired', message: 'the token expired: reconnect with a new one and resume', resume: this.resume() });
        socket.close(CLOSE_TOKEN_EXPIRED, 'token expired');
        this.life.end();
      },
    });
    this.life.own(() => {
      for (const s of this.subs.values()) s.close?.();
      this.subs.clear();
    });
    socket.on('message', (data, isBinary) => this.receive(data, isBinary));
    socket.on('close', () => this.life.end());
    socket.on('error', (err) => req.log.debug({ err }, 'websocket error'));

    // Ping/pong: a peer that vanished without a close is noticed and dropped.
    let alive = true;
    socket.on('pong', () => (alive = true));
    const pinger = setInterval(() => {
      if (!alive) {
        socket.terminate();
        return;
      }
      alive = false;
      socket.ping();
    }, opts.heartbeatMs);
    this.life.own(() => clearInterval(pinger));
  }

  private resume(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [id, s] of this.subs) if (s.resume !== undefined) out[id] = s.resume;
    return out;
  }

  /** Sends; false when the message could not go out (and never will). */
  private send(msg: Record<string, unknown> | string): boolean {
    const socket = this.socket;
    if (this.cut || socket.readyState !== socket.OPEN) return false;
    // A client that does not read must not grow our memory: cut it off,
    // telling it where each subscription resumes.
    if (socket.bufferedAmount > this.opts.maxBufferedBytes) {
      this.cut = true;
      socket.send(
        JSON.stringify({ type: 'error', status: 503, code: 'slow_consumer', message: 'the client fell too far behind and was disconnected', resume: this.resume() }),
      );
      socket.close(CLOSE_SLOW_CONSUMER, 'slow consumer: resume from the error message');
      // Nothing more is queued after the error and the close frame.
      dropUnlessDrained(() => socket.terminate());
      this.life.end();
      return false;
    }
    socket.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
    return true;
  }

  /** Ends one subscription with an error (permission revoked). */
  private endSub(id: string, err: WatchError): void {
    const s = this.subs.get(id);
    if (!s) return;
    this.subs.delete(id);
    s.close?.();
    this.send(watchErrorMessage(err, id));
  }

  /** A subscription's end as etcd or the hub tells it (its upstream is already gone). */
  private failed(id: string, err: WatchError): void {
    this.subs.delete(id);
    this.send(watchErrorMessage(err, id));
  }

  private receive(data: RawData, isBinary: boolean): void {
    let msg: unknown;
    try {
      msg = isBinary ? undefined : JSON.parse(data.toString());
    } catch {
      msg = undefined;
    }
    if (!checkClientMessage.Check(msg)) {
      const first = msg === undefined ? undefined : [...checkClientMessage.Errors(msg)][0];
      const id = typeof (msg as { id?: unknown })?.id === 'string' ? (msg as { id: string }).id : undefined;
      return void this.send(watchErrorMessage({ status: 400, code: 'invalid_message', message: first ? `${first.instancePath || '/'} ${first.message}` : 'messages are JSON text' }, id));
    }
    if (msg.type === 'subscribe') return void this.subscribe(msg);
    if (msg.type === 'observe') return void this.observe(msg);
    if (msg.type === 'unsubscribe') {
      const s = this.subs.get(msg.id);
      if (!s) return void this.send(watchErrorMessage({ status: 404, code: 'unknown_subscription', message: `no subscription ${msg.id}` }, msg.id));
      this.subs.delete(msg.id);
      s.close?.();
      return void this.send({ type: 'canceled', id: msg.id });
    }
    this.keepAlive(msg);
  }

  /** A new subscription's place on the socket, or undefined (and an error sent) when it cannot have one. */
  private reserve(id: string, range?: Subscription['range']): Subscription | undefined {
    // Messages still arrive while a socket closes: nothing subscribes after the end.
    if (this.life.ended) return undefined;
    if (this.subs.has(id)) return void this.send(watchErrorMessage({ status: 409, code: 'duplicate_id', message: `subscription ${id} exists on this socket` }, id));
    if (this.subs.size >= this.opts.maxSubscriptions) {
      const message = `at most ${this.opts.maxSubscriptions} subscriptions per socket (WATCH_MAX_SUBSCRIPTIONS)`;
      return void this.send(watchErrorMessage({ status: 429, code: 'too_many_subscriptions', message }, id));
    }
    const state: Subscription = { resume: undefined, close: undefined, range };
    this.subs.set(id, state);
    return state;
  }

  /** Opens the reserved subscription's watch, unless it was unsubscribed (or the socket closed) meanwhile. */
  private async open(id: string, state: Subscription, opts: Parameters<typeof openWatch>[1], sink: TransportSink): Promise<void> {
    try {
      const close = await openWatch(this.opts.context, opts, sink);
      if (this.subs.get(id) !== state) close();
      else state.close = close;
    } catch (err) {
      this.failed(id, toWatchError(err));
    }
  }

  private async subscribe(m: WatchSubscribe): Promise<void> {
    const state = this.reserve(m.id);
    if (!state) return;
    const sink: TransportSink = {
      created: (start) => {
        state.resume = start;
        this.send({ type: 'created', id: m.id, start_revision: start });
      },
      initial: (events, revision) => this.send({ type: 'events', id: m.id, revision, events, initial: true }),
      synced: (revision) => this.send({ type: 'synced', id: m.id, revision }),
      events: (batch: EventBatch) => {
        const msg = `{"type":"events","id":${JSON.stringify(m.id)},"revision":${batch.revision},"events":${eventsJson(batch)}}`;
        if (this.send(msg)) state.resume = batch.revision + 1;
      },
      progress: (revision) => {
        if (this.send({ type: 'progress', id: m.id, revision })) state.resume = revision + 1;
      },
      error: (err) => this.failed(m.id, err),
    };
    let range: Subscription['range'];
    try {
      const key = bytesField(m, 'key', 'invalid_option') ?? Buffer.alloc(0);
      range = rangeOf(key, { prefix: m.prefix, fromKey: m.from_key, rangeEnd: bytesField(m, 'range_end', 'invalid_option') });
    } catch (err) {
      return this.failed(m.id, toWatchError(err));
    }
    state.range = range;
    await this.open(m.id, state, {
      range,
      startRevision: m.start_revision,
      prevKv: m.prev_kv,
      filters: { noPut: m.filters?.includes('noput'), noDelete: m.filters?.includes('nodelete') },
      progressNotify: m.progress_notify,
      initial: m.initial,
    }, sink);
  }

  // An election's leader (etcdctl elect -l), as the SSE observe sends it:
  // `leader` now and at each change of leader or value, `no_leader` when
  // the last candidate leaves. Each (re)subscription starts with the
  // current state, so there is no revision to resume from.
  private async observe(m: WatchObserve): Promise<void> {
    const range = rangeOf(Buffer.from(electionPrefix(m.election)), { prefix: true });
    const state = this.reserve(m.id, range);
    if (!state) return;
    const sink: TransportSink = {
      created: (start) => void this.send({ type: 'created', id: m.id, start_revision: start }),
      ...followLeader((lead, revision) =>
        this.send(lead ? { type: 'leader', id: m.id, ...leaderMessage(m.election, lead) } : { type: 'no_leader', id: m.id, name: m.election, revision }),
      ),
      progress: () => undefined,
      error: (err) => this.failed(m.id, err),
    };
    await this.open(m.id, state, { range, initial: true }, sink);
  }

  private keepAlive(m: Extract<WatchClientMessage, { type: 'keepalive' }>): void {
    const req = this.req;
    Promise.resolve(leaseOwnerGuard(req.server.etcd, req)?.check(leaseIdToEtcd(m.lease)))
      .then(() => keepAliveOnce(req.etcd.lease, m.lease, this.opts.requestTimeoutMs))
      .then((res) => this.send({ type: 'keepalive', lease: leaseHex(res.ID) ?? m.lease, ttl: num(res.TTL) }))
      .catch((err) => this.send({ ...watchErrorMessage(toWatchError(err)), lease: m.lease }));
  }
}
