// The lease behind a lock or a candidacy, as etcd's concurrency.Session: a
// lease the gateway grants (`ttl`) or one the caller brings (`lease`), kept
// alive by the gateway only while the HTTP request waits in line. Once the
// caller holds the lock or leads, keeping the lease alive is the caller's job
// (POST /v1/leases/{id}/keepalive), exactly as with etcd's own lock API.
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import { leaseOwnerGuard, type LeaseOwnerGuard } from '../auth/lease-owners.js';
import type { EtcdScope } from '../etcd/connection.js';
import { badRequest } from '../errors.js';
import { leaseHex, num } from '../kv/codec.js';
import { keepAliveOnce, leaseIdToEtcd, leaseNotFound } from '../kv/lease.js';

/**
 * etcd's concurrency.Session default (DefaultTTL), which etcdctl elect uses.
 * etcdctl lock defaults to 10 s, but it renews the lease while it runs; an
 * HTTP caller renews by hand, so the longer default.
 */
export const DEFAULT_TTL = 60;

export interface LeaseChoice {
  /** Seconds: the gateway grants a new lease. */
  ttl?: number;
  /** Hex ID of an existing lease. */
  lease?: string;
}

export interface SessionDeps {
  etcd: EtcdScope;
  /** Lease ownership of the caller (authentication on). */
  owners?: LeaseOwnerGuard;
  /** Deadline of one etcd call. */
  timeoutMs: number;
  log: FastifyBaseLogger;
}

/**
 * The one way routes (/v1 locks and elections, /v3 lock and election) build
 * a session's dependencies: etcd as the caller, so etcd checks the caller's
 * permissions on the keys, and the caller's lease ownership, which etcd
 * does not have.
 */
export function sessionDeps(service: EtcdScope, req: FastifyRequest, timeoutMs: number): SessionDeps {
  return { etcd: req.etcd, timeoutMs, log: req.log, owners: leaseOwnerGuard(service, req) };
}

export class Session {
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly deps: SessionDeps,
    /** int64 decimal string, as etcd3 takes it. */
    readonly id: string,
    readonly ttl: number,
    /** Whether the gateway granted the lease (and so may revoke it). */
    readonly granted: boolean,
  ) {}

  static async open(deps: SessionDeps, choice: LeaseChoice): Promise<Session> {
    if (choice.ttl !== undefined && choice.lease !== undefined) {
      throw badRequest('give ttl (a new lease) or lease (an existing one), not both', 'conflicting_lease');
    }
    if (choice.lease !== undefined) {
      const id = leaseIdToEtcd(choice.lease);
      await deps.owners?.check(id);
      const res = await deps.etcd.lease.leaseTimeToLive({ ID: id, keys: false });
      if (num(res.TTL) < 0) throw leaseNotFound(choice.lease);
      return new Session(deps, id, num(res.grantedTTL), false);
    }
    const res = await deps.etcd.lease.leaseGrant({ TTL: choice.ttl ?? DEFAULT_TTL, ID: 0 });
    await deps.owners?.record(String(res.ID));
    return new Session(deps, String(res.ID), num(res.TTL), true);
  }

  /** 16 hex digits, as the rest of the API prints lease IDs. */
  get hex(): string {
    return leaseHex(this.id)!;
  }

  /**
   * The key suffix etcd's concurrency package uses: Go's `%x` of the lease ID,
   * without zero padding, so that etcdctl and the gateway queue on the same keys.
   */
  get keySuffix(): string {
    return BigInt(this.id).toString(16);
  }

  /**
   * Renews the lease every third of its TTL while the caller waits, as the Go
   * session does; a caller blocked in one HTTP request cannot renew it itself.
   * A failed renewal is only logged: if the lease does run out, etcd deletes
   * the waiter's key and the wait ends with lock_lost / candidacy_lost.
   */
  keepAlive(): void {
    const every = Math.max(500, (this.ttl * 1000) / 3);
    this.timer = setInterval(() => {
      keepAliveOnce(this.deps.etcd.lease, this.hex, this.deps.timeoutMs).catch((err: unknown) =>
        this.deps.log.warn({ lease: this.hex, err: (err as Error).message }, 'lease renewal while waiting failed'),
      );
    }, every);
  }

  stopKeepAlive(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Revokes a lease the gateway granted; best effort, the TTL is the backstop. */
  async revokeIfGranted(): Promise<boolean> {
    if (!this.granted) return false;
    return revokeQuietly(this.deps, this.id);
  }
}

/** Revokes a lease and reports whether etcd confirmed it; never throws. */
export async function revokeQuietly(deps: Pick<SessionDeps, 'etcd' | 'log' | 'owners'>, id: string): Promise<boolean> {
  try {
    const revoke = () => deps.etcd.lease.leaseRevoke({ ID: id });
    await (deps.owners ? deps.owners.revoke(id, revoke) : revoke());
    return true;
  } catch (err) {
    deps.log.warn({ lease: leaseHex(id), err: (err as Error).message }, 'lease revoke failed; it expires with its TTL');
    return false;
  }
}

/**
 * Leases this gateway granted for a lock or a candidacy, by the key they hold,
 * so that releasing or resigning also revokes them. In memory: after a restart,
 * or through another gateway instance, release deletes the key and the unused
 * lease simply expires.
 */
export class GrantedLeases {
  private readonly byKey = new Map<string, string>();

  /**
   * Holders whose lease simply runs out are never released, so their entries
   * would stay forever: past the cap the oldest are forgotten, and their
   * leases expire instead of being revoked.
   */
  constructor(private readonly max = 100_000) {}

  add(key: string, id: string): void {
    this.byKey.delete(key);
    this.byKey.set(key, id);
    if (this.byKey.size > this.max) this.byKey.delete(this.byKey.keys().next().value!);
  }

  take(key: string): string | undefined {
    const id = this.byKey.get(key);
    this.byKey.delete(key);
    return id;
  }

  /** The lease ID, as etcd3 takes it, that a key of the form `<prefix><lease %x>` names. */
  static leaseOfKey(key: string, prefix: string): string | undefined {
    const suffix = key.slice(prefix.length);
    if (!key.startsWith(prefix) || !/^[0-9a-f]{1,16}$/.test(suffix)) return undefined;
    return leaseIdToEtcd(suffix);
  }
}
