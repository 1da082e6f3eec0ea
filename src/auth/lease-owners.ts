// Lease ownership, which etcd does not have: with authentication on, the
// subject that granted a lease through the gateway owns it, and others may
// not keep it alive, revoke it, list its keys or attach keys to it.
//
// Stateless, like the rest of the gateway: the owner is recorded in etcd
// itself, in a key attached to the lease (so it disappears with the lease),
// written and read as the gateway's own user. Leases granted outside the
// gateway (etcdctl, other clients) have no record and stay unrestricted, as
// in etcd.
import type { FastifyRequest } from 'fastify';
import type { EtcdScope } from '../etcd/connection.js';
import { Problem } from '../errors.js';
import { prefixEnd } from '../kv/codec.js';

/** Where owners are recorded; under \0 so that it sorts before every ordinary key. */
export const LEASE_OWNER_PREFIX = '\0etcd-gateway/lease-owner/';

export interface LeaseOwnerGuard {
  /** Records the caller as owner of a lease it was just granted (int64 decimal id). */
  record(id: string): Promise<void>;
  /** Refuses (403) when another subject owns the lease; answers whether the caller does (false: no owner recorded). */
  check(id: string): Promise<boolean>;
  /**
   * Revokes as the caller. etcd requires write permission on every key
   * attached to a lease to revoke it, the owner record included, so the
   * gateway detaches the record first and restores it if etcd refuses.
   */
  revoke<T>(id: string, revoke: () => Promise<T>): Promise<T>;
}

const OWNER_PREFIX_BYTES = Buffer.from(LEASE_OWNER_PREFIX);

// The gateway's own records live under \0etcd-gateway/ and are written with
// the gateway's identity. etcd lets any user whose permission covers them
// (readwrite on the whole keyspace, say) rewrite or delete them, which would
// hand that user other subjects' leases: callers' writes may not touch them.
const RESERVED = Buffer.from('\0etcd-gateway/');
const RESERVED_END = prefixEnd(RESERVED);
const EMPTY = new Uint8Array(0);

interface WriteRange {
  key?: Uint8Array | null;
  range_end?: Uint8Array | null;
}

/** Whether [key, range_end) (etcd's range rules: no end = the key alone, \0 = to the end) meets the reserved namespace. */
function touchesReserved(op: WriteRange): boolean {
  // Buffer.compare takes the request's Uint8Arrays as they are: no copy on every write.
  const key = op.key ?? EMPTY;
  const end = op.range_end && op.range_end.length > 0 ? op.range_end : undefined;
  if (!end) return Buffer.compare(key, RESERVED) >= 0 && Buffer.compare(key, RESERVED_END) < 0;
  const toTheEnd = end.length === 1 && end[0] === 0;
  return Buffer.compare(key, RESERVED_END) < 0 && (toTheEnd || Buffer.compare(end, RESERVED) > 0);
}

interface TxnOps {
  success?: { request_put?: WriteRange | null; request_delete_range?: WriteRange | null; request_txn?: TxnOps | null }[] | null;
  failure?: TxnOps['success'];
}

function txnTouchesReserved(txn: TxnOps): boolean {
  return [...(txn.success ?? []), ...(txn.failure ?? [])].some(
    (op) =>
      (op.request_put && touchesReserved(op.request_put)) ||
      (op.request_delete_range && touchesReserved(op.request_delete_range)) ||
      (op.request_txn && txnTouchesReserved(op.request_txn)),
  );
}

/** The check of a caller's EtcdScope: no put, delete or txn write of the caller's reaches the gateway's records. */
export function refuseReservedWrites(service: string, method: string, params: unknown): void {
  if (service !== 'KV') return;
  const touches =
    method === 'put' || method === 'deleteRange' ? touchesReserved(params as WriteRange) : method === 'txn' ? txnTouchesReserved(params as TxnOps) : false;
  if (touches) {
    throw new Problem(403, 'reserved_key', 'keys under "\\0etcd-gateway/" are the gateway\'s own records (lease owners): no caller writes or deletes them; a range that covers them (e.g. the whole keyspace) can start after them, at "\\x01"');
  }
}

/** The record is the gateway's bookkeeping, not one of the keys a caller attached: lease key listings leave it out. */
export function isOwnerRecord(key: Buffer): boolean {
  return key.subarray(0, OWNER_PREFIX_BYTES.length).equals(OWNER_PREFIX_BYTES);
}

function ownerKey(id: string): Buffer {
  return Buffer.from(LEASE_OWNER_PREFIX + BigInt.asUintN(64, BigInt(id)).toString(16).padStart(16, '0'));
}

export function leaseOwnerGuard(service: EtcdScope, req: FastifyRequest): LeaseOwnerGuard | undefined {
  const caller = req.caller;
  if (!caller) return undefined;
  return {
    async record(id) {
      try {
        await service.kv.put({ key: ownerKey(id), value: Buffer.from(caller.username), lease: id });
      } catch (err) {
        // An unrecorded lease would be anyone's: give it back rather than hand it out.
        await req.etcd.lease.leaseRevoke({ ID: id }).catch(() => undefined);
        throw err;
      }
    },
    async check(id) {
      const res = await service.kv.range({ key: ownerKey(id) });
      const owner = res.kvs[0]?.value.toString('utf8');
      if (owner !== undefined && owner !== caller.username) {
        throw new Problem(403, 'lease_not_owned', 'this lease belongs to another subject (it was granted through the gateway by someone else)');
      }
      return owner !== undefined;
    },
    async revoke(id, revoke) {
      const removed = await service.kv.deleteRange({ key: ownerKey(id), prev_kv: true });
      try {
        return await revoke();
      } catch (err) {
        const prev = removed.prev_kvs[0];
        if (prev) await service.kv.put({ key: prev.key, value: prev.value, lease: id }).catch(() => undefined);
        throw err;
      }
    },
  };
}
