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
  'Maintenance.hashKV',
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

export class EtcdConnection implements ICallable<Host> {
  readonly callOptionsFactory = undefined;
  readonly endpoints: string[];
  readonly kv: KVClient;
  readonly lease: LeaseClient;
  readonly cluster: ClusterClient;
  readonly maintenance: MaintenanceClient;
  readonly auth: AuthClient;
  readonly watch: WatchClient;

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
    this.kv = new KVClient(this);
    this.lease = new LeaseClient(this);
    this.cluster = new ClusterClient(this);
    this.maintenance = new MaintenanceClient(this);
    this.auth = new AuthClient(this);
    this.watch = new WatchClient(this);
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

  private invoke<T>(host: Host, service: ServiceName, method: string, params: unknown, md: Metadata, options: CallOptions): Promise<T> {
    const client = host.getServiceClient(service) as unknown as Record<
      string,
      (p: unknown, m: Metadata, o: CallOptions, cb: (err: GrpcLikeError | null, res: T) => void) => void
    >;
    return new Promise<T>((resolve, reject) => {
      client[method]!(params, md, options, (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  /** The ICallable entry point used by etcd3's generated clients. */
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
    return this.invoke<T>(this.hosts[index]!, service, method, params, this.metadata(token), { ...callOptions, deadline });
  }

  /** Used by etcd3's stream clients (watch, lease keep-alive). */
  async withConnection<R>(
    service: ServiceName,
    fn: (args: { resource: Host; client: Client; metadata: Metadata }) => Promise<R> | R,
  ): Promise<R> {
    const host = this.orderedHosts(service)[0]!;
    return fn({ resource: host, client: host.getServiceClient(service), metadata: this.metadata() });
  }

  markFailed(): void {
    // Host choice follows live channel state; nothing to record.
  }

  close(): void {
    this.closed = true;
    for (const host of this.hosts) host.close();
  }
}

function channelCredentials(opts: EtcdConnectionOptions): ChannelCredentials {
  const secure = opts.endpoints.some((e) => e.startsWith('https:'));
  if (!secure) return grpcCredentials.createInsecure();
  const read = (f?: string) => (f ? readFileSync(f) : null);
  return grpcCredentials.createSsl(read(opts.tls?.caFile), read(opts.tls?.keyFile), read(opts.tls?.certFile));
}

/** etcd's response header, with numbers as etcd3 returns them (strings). */
export type EtcdHeader = IResponseHeader;
