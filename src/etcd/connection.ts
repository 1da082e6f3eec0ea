// The gateway's connection to etcd: etcd3's generated gRPC clients (KVClient,
// LeaseClient, ...) running on a call executor of our own instead of etcd3's
// ConnectionPool. etcd3's pool retries every "recoverable" error three times,
// writes included, and shares one circuit breaker per host between all
// callers, so one caller's permission error (UNKNOWN in etcd 3.4) could block
// everybody for seconds (shared/reference/stack.md §2.4). Here:
// - every call has a deadline (REQUEST_TIMEOUT_MS unless the caller gives one);
// - reads move on to the next member on UNAVAILABLE until the deadline, and a
//   read with no answer after HEDGE_MS goes to a second member too (first
//   answer wins, the other is cancelled);
// - writes are sent again only when etcd provably never saw them: no
//   connection could be established, or etcd refused them up front because the
//   member has no leader (we ask for that check with `hasleader` metadata, as
//   etcd's Go client does). Anything else fails with the outcome unknown.
// - a member that stops answering (a call unanswered for STALL_MS, or a call
//   that hit its deadline) is suspect: new calls go to the others at once, and
//   it gets calls again once it answers a background probe, as etcd's Go
//   client balancer does. A frozen member (GC pause, stalled disk, SIGSTOP)
//   keeps its TCP connection READY, so channel state alone never shows it.
// - when the members that answer say they have no leader for NO_LEADER_GRACE_MS
//   (quorum lost, not a short election), calls fail at once with that answer
//   instead of waiting for the deadline. Serializable reads do not ask for a
//   leader: any live member answers them from its own store.
import { readFileSync } from 'node:fs';
import {
  credentials as grpcCredentials,
  connectivityState,
  Metadata,
  status as GrpcStatus,
  type CallOptions,
  type ChannelCredentials,
  type ClientReadableStream,
  type Client,
} from '@grpc/grpc-js';
import { noop } from 'cockatiel';
import {
  AuthClient,
  ClusterClient,
  KVClient,
  LeaseClient,
  MaintenanceClient,
  WatchClient,
  type ICallable,
  type IResponseHeader,
} from 'etcd3';
import { Host } from 'etcd3/lib/connection-pool.js';
import { CALL_KIND, NOT_SENT, type CallKind, type GrpcLikeError } from '../errors.js';

type ServiceName = 'KV' | 'Watch' | 'Lease' | 'Cluster' | 'Maintenance' | 'Auth';

export interface EtcdConnectionOptions {
  endpoints: string[];
  /** Default deadline of one call, in milliseconds. */
  timeoutMs: number;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

/** grpc CallOptions plus what the gateway adds per call. */
export interface EtcdCallOptions extends CallOptions {
  /** etcd auth token to send as the caller (auth issue). */
  token?: string;
  /** Overrides the read/write classification of the method. */
  kind?: CallKind;
}

// Calls that cannot change etcd's state: safe to send to another member.
const READ_METHODS = new Set([
  'KV.range',
  'Lease.leaseTimeToLive',
  'Lease.leaseLeases',
  'Cluster.memberList',
  'Maintenance.status',
  'Maintenance.hash',
  'Maintenance.hashKv',
  'Auth.authenticate',
  'Auth.userGet',
  'Auth.userList',
  'Auth.roleGet',
  'Auth.roleList',
]);

const STATE_RANK: Record<number, number> = {
  [connectivityState.READY]: 0,
  [connectivityState.IDLE]: 1,
  [connectivityState.CONNECTING]: 2,
  [connectivityState.TRANSIENT_FAILURE]: 3,
  [connectivityState.SHUTDOWN]: 4,
};

/** Errors raised before the request reached etcd. */
function isNotSent(err: GrpcLikeError): boolean {
  if (err.code !== GrpcStatus.UNAVAILABLE) return false;
  const text = err.details ?? err.message;
  return /No connection established|Name resolution failed|DNS resolution failed|ECONNREFUSED/i.test(text);
}

/** etcd refused the request before proposing it: nothing was applied. */
function isRefusedUpFront(err: GrpcLikeError): boolean {
  const text = err.details ?? err.message;
  return text.includes('etcdserver: no leader') || text.includes('rpc not supported for learner');
}

function isNoLeader(err: GrpcLikeError): boolean {
  return (err.details ?? err.message).includes('etcdserver: no leader');
}

/**
 * Errors the member itself did not produce: the call got no answer (its
 * deadline passed, we cancelled it) or the connection failed. etcd's own
 * refusals ("etcdserver: no leader") also travel as UNAVAILABLE, but they are
 * answers: the member is alive.
 */
function isUnanswered(err: GrpcLikeError): boolean {
  if (err.code === GrpcStatus.DEADLINE_EXCEEDED || err.code === GrpcStatus.CANCELLED) return true;
  return err.code === GrpcStatus.UNAVAILABLE && !(err.details ?? err.message).includes('etcdserver:');
}

const NOT_CONNECTED = 'No connection established in time';

/** The member's connection did not come up within CONNECT_TIMEOUT_MS: the call was never sent. */
function notConnectedError(): GrpcLikeError {
  return Object.assign(new Error(`14 UNAVAILABLE: ${NOT_CONNECTED}`), { code: GrpcStatus.UNAVAILABLE, details: NOT_CONNECTED, metadata: new Metadata() });
}

function isNotConnected(err: GrpcLikeError): boolean {
  return err.details === NOT_CONNECTED;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// A healthy member answers in milliseconds, even under load (answers to some
// call keep coming). A member that answered nothing for this long while calls
// to it were outstanding is suspect: new calls go elsewhere, and a probe tells
// within milliseconds whether it was merely slow, so a false alarm costs
// little. Shorter than etcd's election timeout (1 s by default): when members
// freeze and quorum is lost, the gateway has stopped sending to the frozen
// ones by the time the live one knows it has no leader.
const STALL_MS = 500;
// Connecting to a live member on a LAN takes milliseconds, even with TLS.
const CONNECT_TIMEOUT_MS = 1000;
// Probes are a cheap Maintenance.status; a live member answers well within this.
const PROBE_TIMEOUT_MS = 1000;
const PROBE_INTERVAL_MS = 1000;
// A read with no answer this long goes to the next member too. Longer than any
// ordinary read on loopback or a LAN, short enough that a read behind a frozen
// member still answers within about a second.
const HEDGE_MS = 500;
// During an ordinary election members say "no leader" from the moment they
// campaign until they learn the winner, usually a few hundred milliseconds,
// and calls are worth retrying; past this, quorum is most likely lost (or a
// split vote is taking another election timeout) and waiting for the
// deadline only delays the honest answer, which the caller may retry.
const NO_LEADER_GRACE_MS = 1000;

interface MemberHealth {
  /** Calls sent to the member that have not settled. */
  pending: number;
  /** When the oldest call sent since the member's last answer was sent. */
  unansweredSince?: number;
  /** Why new calls avoid the member, until it answers a probe. */
  suspect?: string;
  probing: boolean;
}

interface Attempt<T> {
  promise: Promise<T>;
  cancel(): void;
}

type RoundResult<T> = { result: T } | { errors: GrpcLikeError[]; fatal?: GrpcLikeError };

export class EtcdConnection {
  readonly endpoints: string[];

  private readonly hosts: Host[];
  private readonly health: MemberHealth[];
  private readonly timeoutMs: number;
  private rr = 0;
  private closed = false;
  /** Since when the members that answer have said they have no leader. */
  private leaderlessSince: number | undefined;

  constructor(opts: EtcdConnectionOptions) {
    if (opts.endpoints.length === 0) throw new Error('no etcd endpoints');
    this.endpoints = opts.endpoints;
    this.timeoutMs = opts.timeoutMs;
    const creds = channelCredentials(opts);
    const channelOptions = {
      // Reconnect quickly after a member comes back: grpc's default backoff
      // grows to two minutes, far longer than an etcd restart takes.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      // Pings on connections with calls in flight (watch streams, long
      // calls), so a member that stops answering breaks them within ~8 s.
      // etcd sends GOAWAY (ENHANCE_YOUR_CALM) to clients that ping more
      // often than its --grpc-keepalive-min-time (5 s) and, since it does not
      // permit pings without streams, to idle connections that ping at all:
      // hence no keepalive_permit_without_calls.
      'grpc.keepalive_time_ms': 6000,
      'grpc.keepalive_timeout_ms': 2500,
      // etcd answers can exceed grpc's 4 MiB default (etcd#14997).
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
    };
    this.hosts = opts.endpoints.map((url) => new Host(url, creds, channelOptions, noop));
    this.health = this.hosts.map(() => ({ pending: 0, probing: false }));
  }

  /**
   * Indexes of the members in the order to try them: members that answer
   * before suspect ones, then by channel state, round-robin among equals.
   */
  private order(service: ServiceName): number[] {
    const n = this.hosts.length;
    const start = this.rr++ % n;
    const now = Date.now();
    const rank = (i: number) =>
      (this.checkStalled(i, now) ? 10 : 0) + (STATE_RANK[this.hosts[i]!.getServiceClient(service).getChannel().getConnectivityState(false)] ?? 5);
    return Array.from({ length: n }, (_, k) => (start + k) % n)
      .map((i, k) => ({ i, key: rank(i) * 100 + k }))
      .sort((a, b) => a.key - b.key)
      .map((x) => x.i);
  }

  /** Hosts in the order to try them (see order()). */
  private orderedHosts(service: ServiceName): Host[] {
    return this.order(service).map((i) => this.hosts[i]!);
  }

  /** Whether member i is suspect, marking it so if its calls went unanswered for STALL_MS. */
  private checkStalled(i: number, now: number): boolean {
    const h = this.health[i]!;
    if (!h.suspect && h.unansweredSince !== undefined && now - h.unansweredSince >= STALL_MS) {
      this.markSuspectAt(i, `no answer for ${now - h.unansweredSince} ms`);
    }
    return h.suspect !== undefined;
  }

  /** Whether new calls avoid this member until it answers a probe. */
  isSuspect(endpoint: string): boolean {
    const i = this.endpoints.indexOf(endpoint);
    return i >= 0 && this.checkStalled(i, Date.now());
  }

  /**
   * Marks a member suspect (e.g. a watch stream on it stopped answering):
   * new calls and streams go to the other members until it answers a probe.
   */
  markSuspect(endpoint: string, reason: string): void {
    const i = this.endpoints.indexOf(endpoint);
    if (i >= 0) this.markSuspectAt(i, reason);
  }

  private markSuspectAt(i: number, reason: string): void {
    const h = this.health[i]!;
    if (h.suspect === undefined) {
      h.suspect = reason;
      // A hung member is often not alone (a partition, a host with two
      // members): check the others now, before requests find them.
      for (let j = 0; j < this.health.length; j++) if (j !== i) this.checkOnce(j);
    }
    if (!h.probing && !this.closed) {
      h.probing = true;
      void this.probe(i).finally(() => (h.probing = false));
    }
  }

  /** One probe of a member not (yet) suspect; start() marks it suspect if the probe hits its deadline. */
  private checkOnce(j: number): void {
    const h = this.health[j]!;
    if (h.suspect !== undefined || h.probing || this.closed) return;
    h.probing = true;
    this.start(j, 'Maintenance', 'status', {}, this.memberMetadata(), { deadline: Date.now() + PROBE_TIMEOUT_MS })
      .promise.catch(() => undefined)
      .finally(() => {
        h.probing = false;
        // Found hung: keep probing it until it answers.
        if (h.suspect !== undefined) this.markSuspectAt(j, h.suspect);
      });
  }

  /** Probes a suspect member until it answers anything at all, or the connection closes. */
  private async probe(i: number): Promise<void> {
    const h = this.health[i]!;
    while (h.suspect !== undefined && !this.closed) {
      const started = Date.now();
      try {
        await this.start(i, 'Maintenance', 'status', {}, this.memberMetadata(), { deadline: started + PROBE_TIMEOUT_MS }).promise;
        return;
      } catch (err) {
        // Any refusal from etcd itself (auth, ...) proves the member alive.
        if (!isUnanswered(err as GrpcLikeError)) {
          h.suspect = undefined;
          return;
        }
      }
      await sleep(Math.max(0, PROBE_INTERVAL_MS - (Date.now() - started)));
    }
  }

  private metadata(token?: string): Metadata {
    const md = new Metadata();
    // Ask etcd to refuse (instead of queueing) a request while the member has
    // no leader, so we can move on to a member that has one.
    md.set('hasleader', 'true');
    if (token) md.set('token', token);
    return md;
  }

  /**
   * For calls aimed at one member (defragment, snapshot): no `hasleader`,
   * as etcdctl sends none. A member cut off from its cluster still
   * defragments and still hands out its snapshot, which is exactly what an
   * operator restoring a cluster that lost quorum needs.
   */
  private memberMetadata(token?: string): Metadata {
    const md = new Metadata();
    if (token) md.set('token', token);
    return md;
  }

  private invoke<T>(host: Host, service: ServiceName, method: string, params: unknown, md: Metadata, options: CallOptions): Promise<T> {
    return this.start<T>(this.hosts.indexOf(host), service, method, params, md, options).promise;
  }

  /** Sends one unary call to member i, keeping the member's health record. */
  private start<T>(i: number, service: ServiceName, method: string, params: unknown, md: Metadata, options: CallOptions): Attempt<T> {
    const client = this.hosts[i]!.getServiceClient(service) as unknown as Client &
      Record<string, (p: unknown, m: Metadata, o: CallOptions, cb: (err: GrpcLikeError | null, res: T) => void) => { cancel(): void }>;
    const h = this.health[i]!;
    h.pending++;
    h.unansweredSince ??= Date.now();
    let call: { cancel(): void } | undefined;
    let settle!: (err: GrpcLikeError | null, res?: T) => void;
    const promise = new Promise<T>((resolve, reject) => {
      let settled = false;
      settle = (err, res) => {
        if (settled) return;
        settled = true;
        h.pending--;
        if (!err || !isUnanswered(err)) {
          // The member answered: it is alive, whatever it said. Calls still
          // pending on it (a proposal waiting for a leader) do not count
          // against it any more; calls sent from now on do.
          h.unansweredSince = undefined;
          h.suspect = undefined;
        } else if (err.code === GrpcStatus.DEADLINE_EXCEEDED) {
          this.markSuspectAt(i, 'a call hit its deadline');
        } else if (isNotConnected(err)) {
          this.markSuspectAt(i, `no connection within ${CONNECT_TIMEOUT_MS} ms`);
        } else if (h.pending === 0 && err.code === GrpcStatus.UNAVAILABLE) {
          // The connection broke or was refused: channel state says so now.
          h.unansweredSince = undefined;
        }
        if (err) reject(err);
        else resolve(res as T);
      };
    });
    const send = () => {
      call = client[method]!(params, md, options, settle);
    };
    // grpc-js queues a call on a connecting channel until the connection is
    // up, and a frozen member accepts TCP connections (the kernel does) but
    // never completes the HTTP/2 handshake: the call would wait for its
    // deadline. Wait for the connection ourselves, briefly; the request has
    // not left the gateway, so even a write may then go to another member.
    // A refused connection (TRANSIENT_FAILURE) fails the call at once anyway.
    const channel = client.getChannel();
    const deadline = options.deadline === undefined ? Infinity : new Date(options.deadline).getTime();
    const connectBy = Math.min(deadline, Date.now() + CONNECT_TIMEOUT_MS);
    const whenConnected = () => {
      if (call) return;
      const state = channel.getConnectivityState(true);
      if (state === connectivityState.READY || state === connectivityState.TRANSIENT_FAILURE || state === connectivityState.SHUTDOWN) send();
      else if (Date.now() >= connectBy - 5) settle(notConnectedError());
      else channel.watchConnectivityState(state, connectBy, whenConnected);
    };
    whenConnected();
    return {
      promise,
      cancel: () => {
        if (call) call.cancel();
        else settle(Object.assign(new Error('1 CANCELLED: cancelled before it was sent'), { code: GrpcStatus.CANCELLED, details: 'cancelled before it was sent', metadata: new Metadata() }));
      },
    };
  }

  /**
   * One pass over the members in `order`: calls one member at a time, moving
   * on after an error `tryNext` accepts; with `hedge`, after HEDGE_MS without
   * an answer it calls all the remaining members at once (with two of three
   * members frozen, the live one still answers within HEDGE_MS). Settles with
   * the first answer, with an error that ends the call (`fatal`), or with
   * every member's error.
   */
  private round<T>(
    order: number[],
    send: (i: number) => Attempt<T>,
    tryNext: (err: GrpcLikeError) => boolean,
    hedge: boolean,
  ): Promise<RoundResult<T>> {
    return new Promise((resolve) => {
      const active = new Set<Attempt<T>>();
      const errors: GrpcLikeError[] = [];
      let next = 0;
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (r: RoundResult<T>) => {
        done = true;
        clearTimeout(timer);
        for (const a of active) a.cancel();
        resolve(r);
      };
      const hedgeAll = () => {
        while (!done && next < order.length) launch();
      };
      const launch = () => {
        if (done) return;
        if (next >= order.length) {
          if (active.size === 0) finish({ errors });
          return;
        }
        const attempt = send(order[next++]!);
        active.add(attempt);
        if (hedge && next < order.length && timer === undefined) timer = setTimeout(hedgeAll, HEDGE_MS);
        attempt.promise.then(
          (result) => {
            active.delete(attempt);
            if (!done) finish({ result });
          },
          (err: GrpcLikeError) => {
            active.delete(attempt);
            if (done) return;
            errors.push(err);
            if (!tryNext(err)) finish({ errors, fatal: err });
            // Every member has been asked and one has no leader: the reads
            // still waiting have had HEDGE_MS and may be stuck on hung
            // members. Cancel them and let exec() decide whether the
            // leaderless state lasts, rather than wait for the deadline.
            else if (hedge && next >= order.length && isNoLeader(err)) finish({ errors });
            else launch();
          },
        );
      };
      launch();
    });
  }

  /** Runs one unary call (etcd3's generated clients reach it through an EtcdScope). */
  async exec<T>(service: ServiceName, method: string, params: unknown, options?: EtcdCallOptions): Promise<T> {
    if (this.closed) throw Object.assign(new Error('etcd connection closed'), { code: GrpcStatus.UNAVAILABLE, details: 'etcd connection closed', metadata: new Metadata(), [NOT_SENT]: true });
    const { token, kind: kindOption, ...callOptions } = options ?? {};
    const kind: CallKind = kindOption ?? (READ_METHODS.has(`${service}.${method}`) ? 'read' : 'write');
    const deadline = callOptions.deadline ? new Date(callOptions.deadline).getTime() : Date.now() + this.timeoutMs;
    // A serializable read is answered from the member's own store, leader or
    // not: that is what keeps such reads working after quorum is lost.
    const anyMember = service === 'KV' && method === 'range' && (params as { serializable?: boolean } | null)?.serializable === true;
    const md = anyMember ? this.memberMetadata(token) : this.metadata(token);
    const send = (i: number) => this.start<T>(i, service, method, params, md, { ...callOptions, deadline });
    const tryNext = (err: GrpcLikeError) => {
      (err as unknown as Record<symbol, CallKind>)[CALL_KIND] = kind;
      const notSent = isNotSent(err);
      if (notSent) (err as unknown as Record<symbol, boolean>)[NOT_SENT] = true;
      return (notSent || isRefusedUpFront(err) || (kind === 'read' && err.code === GrpcStatus.UNAVAILABLE)) && Date.now() < deadline;
    };
    let noLeaderSince: number | undefined;
    for (let round = 0; ; round++) {
      const order = this.order(service);
      // Members that answer are tried first anyway; leave the suspect ones out
      // altogether while any other is left. A write sent to a hung member
      // would end unknown; a read would wait for its deadline after the live
      // members refused it (no leader) instead of saying so.
      const answering = order.filter((i) => this.health[i]!.suspect === undefined);
      const suspect = order.filter((i) => this.health[i]!.suspect !== undefined);
      let r = await this.round(answering.length > 0 ? answering : suspect, send, tryNext, kind === 'read');
      // The others could not even be reached: the suspect members are all that is left.
      if (!('result' in r) && !r.fatal && answering.length > 0 && suspect.length > 0 && r.errors.every((e) => (e as unknown as Record<symbol, boolean>)[NOT_SENT])) {
        r = await this.round(suspect, send, tryNext, kind === 'read');
      }
      if ('result' in r) {
        if (!anyMember) this.leaderlessSince = undefined;
        return r.result;
      }
      if (r.fatal) throw r.fatal;
      const lastError = r.errors[r.errors.length - 1]!;
      // Every member refused the connection: the cluster is down, say so now
      // rather than spinning until the deadline.
      if (r.errors.every((e) => (e as unknown as Record<symbol, boolean>)[NOT_SENT])) throw lastError;
      const noLeader = r.errors.find(isNoLeader);
      let graceLeft = Infinity;
      if (noLeader) {
        const now = Date.now();
        this.leaderlessSince ??= now;
        noLeaderSince ??= now;
        graceLeft = Math.min(noLeaderSince, this.leaderlessSince) + NO_LEADER_GRACE_MS - now;
        if (graceLeft <= 0) throw noLeader;
      }
      // Members are up but none could serve (an election in progress): back
      // off briefly and go round again until the deadline (the last round
      // when the grace for "no leader" ends).
      const wait = Math.min(50 * 2 ** round, 500, graceLeft, deadline - Date.now());
      if (wait <= 0) throw noLeader ?? lastError;
      await sleep(wait);
    }
  }

  /** Runs a call against one specific member (endpoint status, defrag, ...). */
  execOn<T>(endpoint: string, service: ServiceName, method: string, params: unknown, options?: EtcdCallOptions): Promise<T> {
    const index = this.endpoints.indexOf(endpoint);
    if (index < 0) throw new Error(`unknown endpoint ${endpoint}`);
    const { token, kind: _kind, ...callOptions } = options ?? {};
    const deadline = callOptions.deadline ?? Date.now() + this.timeoutMs;
    return this.invoke<T>(this.hosts[index]!, service, method, params, this.memberMetadata(token), { ...callOptions, deadline });
  }

  /** Used by etcd3's stream clients (watch, lease keep-alive). */
  async withConnection<R>(
    service: ServiceName,
    fn: (args: { resource: Host; client: Client; metadata: Metadata }) => Promise<R> | R,
    token?: string,
  ): Promise<R> {
    const host = this.orderedHosts(service)[0]!;
    return fn({ resource: host, client: host.getServiceClient(service), metadata: this.metadata(token) });
  }

  close(): void {
    this.closed = true;
    for (const h of this.health) h.suspect = undefined;
    for (const host of this.hosts) host.close();
  }

  /**
   * Runs one call on every configured member at once, each with its own
   * deadline, and settles with every answer or error and how long it took:
   * per-member reports (endpoint status, hashkv) where one dead or frozen
   * member must show as unreachable instead of stalling or failing the rest.
   * Unlike other calls, these do not ask etcd to refuse them on a member
   * without a leader unless `requireLeader` says so: a leaderless member's
   * own status (leader 0) is what an operator needs to see.
   */
  execOnEach<T>(
    service: ServiceName,
    method: string,
    params: unknown,
    options: EtcdCallOptions & { requireLeader?: boolean } = {},
  ): Promise<MemberResult<T>[]> {
    const { token, kind: _kind, requireLeader, ...callOptions } = options;
    const md = requireLeader ? this.metadata(token) : this.memberMetadata(token);
    const deadline = callOptions.deadline ?? Date.now() + this.timeoutMs;
    return Promise.all(
      this.endpoints.map(async (endpoint, i) => {
        const started = performance.now();
        const took = () => Math.round((performance.now() - started) * 10) / 10;
        try {
          const result = await this.invoke<T>(this.hosts[i]!, service, method, params, md, { ...callOptions, deadline });
          return { endpoint, tookMs: took(), result };
        } catch (err) {
          return { endpoint, tookMs: took(), error: err as GrpcLikeError };
        }
      }),
    );
  }

  /**
   * Opens a server-streaming call (the snapshot) on the given member, or on
   * the best-connected one. The returned stream is a Node Readable in object
   * mode whose reads pull from gRPC's flow control, so a slow consumer slows
   * etcd's sending instead of filling memory. etcd3's own snapshot() cannot
   * be aimed at a member and drops the call options (deadline included).
   */
  serverStream<T>(
    service: ServiceName,
    method: string,
    params: unknown,
    options: EtcdCallOptions & { endpoint?: string } = {},
  ): { endpoint: string; stream: ClientReadableStream<T> } {
    const { token, kind: _kind, endpoint, ...callOptions } = options;
    const index = endpoint === undefined ? this.hosts.indexOf(this.orderedHosts(service)[0]!) : this.endpoints.indexOf(endpoint);
    if (index < 0) throw new Error(`unknown endpoint ${endpoint}`);
    const client = this.hosts[index]!.getServiceClient(service) as unknown as Record<
      string,
      (p: unknown, m: Metadata, o: CallOptions) => ClientReadableStream<T>
    >;
    return { endpoint: this.endpoints[index]!, stream: client[method]!(params, this.memberMetadata(token), callOptions) };
  }
}

export interface MemberResult<T> {
  endpoint: string;
  /** Milliseconds the call took, to a tenth. */
  tookMs: number;
  result?: T;
  error?: GrpcLikeError;
}

function channelCredentials(opts: EtcdConnectionOptions): ChannelCredentials {
  const secure = opts.endpoints.some((e) => e.startsWith('https:'));
  if (!secure) return grpcCredentials.createInsecure();
  const read = (f?: string) => (f ? readFileSync(f) : null);
  return grpcCredentials.createSsl(read(opts.tls?.caFile), read(opts.tls?.keyFile), read(opts.tls?.certFile));
}

/** etcd's response header, with numbers as etcd3 returns them (strings). */
export type EtcdHeader = IResponseHeader;

/** The etcd identity a scope calls as: the token to send, and how to renew it. */
export interface ScopeAuth {
  /** The current etcd auth token (minted or renewed as needed). */
  token(): string;
  /** etcd said the token's auth revision is old: learn the current one. */
  refresh(): Promise<void>;
}

// "old": any change to users or roles invalidates every token. "invalid auth
// token": an expired one. "user name is empty": no token yet (first call).
// All three are refused before etcd proposes anything.
const STALE_AUTH = ['revision of auth store is old', 'invalid auth token', 'user name is empty'];

function isStaleAuth(err: unknown): boolean {
  const e = err as GrpcLikeError;
  if (typeof e?.message !== 'string') return false;
  const text = e.details ?? e.message;
  return STALE_AUTH.some((m) => text.includes(m));
}

/**
 * etcd3's generated clients bound to one etcd identity: the gateway's own
 * (app.etcd) or a caller's (req.etcd, with authentication). Every call carries
 * the identity's token, so etcd itself enforces what that identity may do.
 * After any change to users or roles etcd refuses every outstanding token as
 * "old"; etcd checks that before it proposes anything, so one refresh and one
 * retry is safe for writes too.
 */
export class EtcdScope implements ICallable<Host> {
  readonly callOptionsFactory = undefined;
  readonly kv: KVClient;
  readonly lease: LeaseClient;
  readonly cluster: ClusterClient;
  readonly maintenance: MaintenanceClient;
  readonly auth: AuthClient;
  readonly watch: WatchClient;

  constructor(
    readonly connection: EtcdConnection,
    private readonly identity?: ScopeAuth,
    /** Runs before every call made through this scope (a caller's scope refuses writes to the gateway's own records). */
    private readonly check?: (service: ServiceName, method: string, params: unknown) => void,
  ) {
    this.kv = new KVClient(this);
    this.lease = new LeaseClient(this);
    this.cluster = new ClusterClient(this);
    this.maintenance = new MaintenanceClient(this);
    this.auth = new AuthClient(this);
    this.watch = new WatchClient(this);
  }

  get endpoints(): string[] {
    return this.connection.endpoints;
  }

  /** The token calls carry; undefined when etcd auth is not in use. */
  token(): string | undefined {
    return this.identity?.token();
  }

  private async retryStale<T>(call: (token: string | undefined) => Promise<T>): Promise<T> {
    try {
      return await call(this.token());
    } catch (err) {
      if (!this.identity || !isStaleAuth(err)) throw err;
      await this.identity.refresh();
      return call(this.token());
    }
  }

  exec<T>(service: ServiceName, method: string, params: unknown, options?: EtcdCallOptions): Promise<T> {
    try {
      this.check?.(service, method, params);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.retryStale((token) => this.connection.exec<T>(service, method, params, { ...options, token }));
  }

  execOn<T>(endpoint: string, service: ServiceName, method: string, params: unknown, options?: EtcdCallOptions): Promise<T> {
    try {
      this.check?.(service, method, params);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.retryStale((token) => this.connection.execOn<T>(endpoint, service, method, params, { ...options, token }));
  }

  execOnEach<T>(service: ServiceName, method: string, params: unknown, options?: EtcdCallOptions): Promise<MemberResult<T>[]> {
    return this.connection.execOnEach<T>(service, method, params, { ...options, token: this.token() });
  }

  serverStream<T>(service: ServiceName, method: string, params: unknown, options: EtcdCallOptions & { endpoint?: string } = {}) {
    return this.connection.serverStream<T>(service, method, params, { ...options, token: this.token() });
  }

  withConnection<R>(service: ServiceName, fn: (args: { resource: Host; client: Client; metadata: Metadata }) => Promise<R> | R): Promise<R> {
    return this.connection.withConnection(service, fn, this.token());
  }

  markFailed(): void {
    // etcd3's stream clients call this on any stream error, a cancellation
    // included, which says nothing about the member. Host choice follows
    // channel state and the connection's health record (unanswered calls,
    // probes); the watch hub marks a member suspect itself when it knows why.
  }
}
