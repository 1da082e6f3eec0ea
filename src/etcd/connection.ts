// The gateway's connection to etcd: etcd3's generated gRPC clients (KVClient,
// LeaseClient, ...) running on a call executor of our own instead of etcd3's
// ConnectionPool. etcd3's pool retries every "recoverable" error three times,
// writes included, and shares one circuit breaker per host between all
// callers, so one caller's permission error (UNKNOWN in etcd 3.4) could block
// everybody for seconds (shared/reference/stack.md §2.4). Here:
// - every call has a deadline (REQUEST_TIMEOUT_MS unless the caller gives one);
// - reads move on to the next member on UNAVAILABLE until the deadline;
// - writes are sent again only when etcd provably never saw them: no
//   connection could be established, or etcd refused them up front because the
//   member has no leader (we ask for that check with `hasleader` metadata, as
//   etcd's Go client does). Anything else fails with the outcome unknown.
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class EtcdConnection {
  readonly endpoints: string[];

  private readonly hosts: Host[];
  private readonly timeoutMs: number;
  private rr = 0;
  private closed = false;

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
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      // etcd answers can exceed grpc's 4 MiB default (etcd#14997).
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
    };
    this.hosts = opts.endpoints.map((url) => new Host(url, creds, channelOptions, noop));
  }

  /** Hosts in the order to try them: healthy channels first, round-robin among equals. */
  private orderedHosts(service: ServiceName): Host[] {
    const start = this.rr++ % this.hosts.length;
    const rotated = [...this.hosts.slice(start), ...this.hosts.slice(0, start)];
    const rank = (h: Host) => STATE_RANK[h.getServiceClient(service).getChannel().getConnectivityState(false)] ?? 5;
    return rotated
      .map((host, i) => ({ host, key: rank(host) * 100 + i }))
      .sort((a, b) => a.key - b.key)
      .map((x) => x.host);
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
    const client = host.getServiceClient(service) as unknown as Record<
      string,
      (p: unknown, m: Metadata, o: CallOptions, cb: (err: GrpcLikeError | null, res: T) => void) => void
    >;
    return new Promise<T>((resolve, reject) => {
      client[method]!(params, md, options, (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  /** Runs one unary call (etcd3's generated clients reach it through an EtcdScope). */
  async exec<T>(service: ServiceName, method: string, params: unknown, options?: EtcdCallOptions): Promise<T> {
    if (this.closed) throw Object.assign(new Error('etcd connection closed'), { code: GrpcStatus.UNAVAILABLE, details: 'etcd connection closed', metadata: new Metadata(), [NOT_SENT]: true });
    const { token, kind: kindOption, ...callOptions } = options ?? {};
    const kind: CallKind = kindOption ?? (READ_METHODS.has(`${service}.${method}`) ? 'read' : 'write');
    const deadline = callOptions.deadline ? new Date(callOptions.deadline).getTime() : Date.now() + this.timeoutMs;
    const md = this.metadata(token);
    let lastError: GrpcLikeError | undefined;
    for (let round = 0; ; round++) {
      let allNotSent = true;
      for (const host of this.orderedHosts(service)) {
        try {
          return await this.invoke<T>(host, service, method, params, md, { ...callOptions, deadline });
        } catch (e) {
          const err = e as GrpcLikeError;
          (err as unknown as Record<symbol, CallKind>)[CALL_KIND] = kind;
          lastError = err;
          const notSent = isNotSent(err);
          if (notSent) (err as unknown as Record<symbol, boolean>)[NOT_SENT] = true;
          else allNotSent = false;
          const tryNext =
            notSent ||
            isRefusedUpFront(err) ||
            (kind === 'read' && err.code === GrpcStatus.UNAVAILABLE);
          if (!tryNext || Date.now() >= deadline) throw err;
        }
      }
      // Every member refused the connection: the cluster is down, say so now
      // rather than spinning until the deadline.
      if (allNotSent) throw lastError;
      // Members are up but none could serve (an election in progress): back
      // off briefly and go round again until the deadline.
      const wait = Math.min(50 * 2 ** round, 500, deadline - Date.now());
      if (wait <= 0) throw lastError;
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
    return this.retryStale((token) => this.connection.exec<T>(service, method, params, { ...options, token }));
  }

  execOn<T>(endpoint: string, service: ServiceName, method: string, params: unknown, options?: EtcdCallOptions): Promise<T> {
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
    // Host choice follows live channel state; nothing to record.
  }
}
