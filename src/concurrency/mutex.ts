// Distributed locks that wait in line, interoperable with `etcdctl lock` and
// etcd's v3lock service: both are concurrency.Mutex, whose key is
// `<name>/<lease %x>` and whose holder is the key with the lowest create
// revision (see queue.ts). Not etcd3's Lock, which is a try-lock with a key
// layout of its own.
import type { IResponseHeader } from 'etcd3';
import { Problem } from '../errors.js';
import { num } from '../kv/codec.js';
import { foreignKey, join, leave, LostPlace, waitTurn, type Joined } from './queue.js';
import { GrantedLeases, revokeQuietly, Session, type LeaseChoice, type SessionDeps } from './session.js';
import type { WaitScope } from './wait.js';

export interface HeldLock {
  key: string;
  /** Lease ID, 16 hex digits. */
  lease: string;
  /** Create revision of the lock key: increases with every acquisition (a fencing token). */
  revision: number;
  header: IResponseHeader;
}

export function lockPrefix(name: string): string {
  return `${name}/`;
}

/**
 * Waits until the lock is held. Whatever ends the wait early (timeout,
 * disconnect, shutdown, an etcd failure, the lease running out) removes what
 * this call added: its key, and the lease if the gateway granted it.
 */
export async function acquire(
  deps: SessionDeps,
  granted: GrantedLeases,
  name: string,
  choice: LeaseChoice,
  scope: Pick<WaitScope, 'signal' | 'gone'>,
): Promise<HeldLock> {
  const prefix = Buffer.from(lockPrefix(name));
  const session = await Session.open(deps, choice);
  const key = lockPrefix(name) + session.keySuffix;
  const keyBytes = Buffer.from(key);
  let joined: Joined | undefined;
  session.keepAlive();
  try {
    // Not interruptible: once sent, only its answer says whether the key exists.
    joined = await join(deps.etcd, keyBytes, Buffer.alloc(0), session.id);
    const header = await waitTurn(deps.etcd, prefix, keyBytes, joined.createRevision, scope.signal);
    // Taken just as the caller left: nobody would know they hold it.
    if (scope.gone()) throw scope.signal.reason;
    if (session.granted) granted.add(key, session.id);
    return { key, lease: session.hex, revision: joined.createRevision, header };
  } catch (err) {
    await withdraw(deps, session, keyBytes, joined);
    if (err instanceof LostPlace) {
      throw new Problem(409, 'lock_lost', `the lease ${session.hex} ran out or ${key} was deleted while waiting: the lock was not acquired`);
    }
    throw err;
  } finally {
    session.stopKeepAlive();
  }
}

/**
 * Leaves the line after a failed wait. A lease the gateway granted is
 * revoked, which deletes the key with it; a caller's lease stays, and only a
 * key this call created is deleted (a key that was already in line belongs to
 * whoever put it there). Best effort: if etcd is unreachable now, the lease
 * TTL removes the key.
 */
async function withdraw(deps: SessionDeps, session: Session, key: Buffer, joined: Joined | undefined): Promise<void> {
  if (await session.revokeIfGranted()) return;
  if (!joined?.created) return;
  await leave(deps.etcd, key, joined.createRevision).catch((err: unknown) =>
    deps.log.warn({ key: key.toString(), err: (err as Error).message }, 'could not remove a waiter key; its lease TTL will'),
  );
}

export interface Released {
  header: IResponseHeader;
  leaseRevoked: boolean;
}

/** Releases a lock by its key (etcd's Unlock: delete the key). */
export async function release(deps: SessionDeps, granted: GrantedLeases, name: string, key: string): Promise<Released> {
  if (!GrantedLeases.leaseOfKey(key, lockPrefix(name))) throw foreignKey('lock', name);
  const res = await deps.etcd.kv.deleteRange({ key: Buffer.from(key) });
  const lease = granted.take(key);
  const leaseRevoked = lease ? await revokeQuietly(deps, lease) : false;
  if (num(res.deleted) === 0) {
    throw new Problem(404, 'lock_not_held', `${key} does not exist: the lock was released or its lease ran out`);
  }
  return { header: res.header, leaseRevoked };
}
