// The checks etcd 3.4 leaves out on writes, which the gateway promises
// (shared/API.md): a put may not read through prev_kv what the caller may not
// read, nor attach a lease that belongs to another subject.
//
// What etcd 3.4 itself checks (etcdserver/apply_auth.go, authApplierV3):
// - a plain Put: write on the key; write on every key already attached to its
//   lease (checkLeasePuts); read on the key when prev_kv is set;
// - a plain DeleteRange: delete, and read on the range when prev_kv is set;
// - a Txn (checkTxnAuth, recursing into nested txns): read on every compare
//   and every range, write on every put's key, delete (and read with prev_kv)
//   on every delete.
// What it skips: the puts of a txn are applied by the backend applier, not
// the auth applier, so neither their prev_kv (read) nor their lease
// (checkLeasePuts) is checked, at any depth; and etcd has no lease ownership
// at all. The guard enforces exactly that and nothing etcd already does: the
// prev_kv of a txn's put, as the caller, and the lease of every put, txn or
// plain, against the owner the gateway recorded (src/auth/lease-owners.ts).
//
// The checks run just before the write, not inside it: a permission revoked
// in between is etcd's own race too (it checks a user's permissions at apply
// time, against the auth revision of the request).
import type { IPutRequest, IPutResponse, IRequestOp, ITxnRequest } from 'etcd3';
import type { FastifyRequest } from 'fastify';
import type { EtcdScope } from '../etcd/connection.js';
import { Problem, toProblem } from '../errors.js';
import { leaseOwnerGuard, type LeaseOwnerGuard } from './lease-owners.js';

export interface TxnGuard {
  /** The caller's lease ownership (grant, check, revoke). */
  readonly owners: LeaseOwnerGuard;
  /** A txn, nested ones included: every put's prev_kv and lease. */
  txn(txn: ITxnRequest): Promise<void>;
  /** A plain put: its lease (etcd checks its prev_kv itself). Answers whether the lease is the caller's by record. */
  put(put: IPutRequest): Promise<boolean>;
}

type LeaseId = IPutRequest['lease'];

function leaseOf(lease: LeaseId): string | undefined {
  if (lease === undefined || lease === null) return undefined;
  const id = String(lease);
  return id === '0' || id === '' ? undefined : id;
}

/** One put of a txn, with the name /v1 gives its operation (`success[0].txn.failure[2]`). */
interface NamedPut {
  operation: string;
  put: IPutRequest;
}

function putsOf(txn: ITxnRequest, path = '', out: NamedPut[] = []): NamedPut[] {
  for (const list of ['success', 'failure'] as const) {
    (txn[list] ?? []).forEach((op: IRequestOp, i) => {
      const operation = path ? `${path}.${list}[${i}]` : `${list}[${i}]`;
      if (op.request_put) out.push({ operation, put: op.request_put });
      else if (op.request_txn) putsOf(op.request_txn, `${operation}.txn`, out);
    });
  }
  return out;
}

/** With authentication off there is no caller and no ownership: undefined, and nothing to check. */
export function txnGuard(service: EtcdScope, req: FastifyRequest): TxnGuard | undefined {
  const owners = leaseOwnerGuard(service, req);
  if (!owners) return undefined;
  const lease = async (id: string, operation?: string): Promise<boolean> => {
    try {
      return await owners.check(id);
    } catch (err) {
      if (operation && err instanceof Problem && err.code === 'lease_not_owned') {
        throw new Problem(403, err.code, `${operation}: ${err.message}`, { extra: { operation } });
      }
      throw err;
    }
  };
  const readable = async (key: Buffer, operation: string) => {
    try {
      // As the caller: etcd itself answers whether this caller may read the
      // key. Linearizable, unlike the watch checks' serializable read: a
      // lagging member could still hold a permission revoked a moment ago.
      await req.etcd.kv.range({ key, count_only: true, limit: 1 });
    } catch (err) {
      const problem = toProblem(err);
      if (problem.status !== 403) throw err;
      throw new Problem(403, 'permission_denied', `${operation}: prev_kv needs read permission on the key`, { extra: { operation } });
    }
  };
  return {
    owners,
    async txn(txn) {
      const puts = putsOf(txn);
      if (puts.length === 0) return;
      // Each distinct key and lease once, all at the same time.
      const checks = new Map<string, () => Promise<void>>();
      for (const { operation, put } of puts) {
        const id = leaseOf(put.lease);
        if (id && !checks.has(`l${id}`)) checks.set(`l${id}`, async () => void (await lease(id, operation)));
        const key = Buffer.from(put.key ?? Buffer.alloc(0));
        if (put.prev_kv && !checks.has(`k${key.toString('hex')}`)) checks.set(`k${key.toString('hex')}`, () => readable(key, operation));
      }
      await Promise.all([...checks.values()].map((check) => check()));
    },
    async put(put) {
      const id = leaseOf(put.lease);
      return id ? lease(id) : false;
    },
  };
}

/**
 * A plain put (/v3/kv/put) through the guard. A lease the gateway granted
 * holds its owner record, a key no ordinary caller may write, so etcd's
 * checkLeasePuts would refuse the owner's own plain put with it: the owner's
 * put goes as a txn of that one put, which etcd does not check so, and its
 * prev_kv is then checked here as in any txn. Every other put stays a plain
 * put, checked by etcd as for any client.
 */
export async function guardedPut(etcd: EtcdScope, guard: TxnGuard | undefined, put: IPutRequest): Promise<IPutResponse> {
  if (!guard || !(await guard.put(put))) return etcd.kv.put(put);
  // The lease is checked already; what is left is the prev_kv.
  if (put.prev_kv) await guard.txn({ success: [{ request_put: { key: put.key, prev_kv: true } }] });
  return putAsTxn(etcd, put);
}

/** A put with a lease that holds its owner's record, which etcd would refuse as a plain put (see guardedPut): a txn of that one put. */
export async function putAsTxn(etcd: EtcdScope, put: IPutRequest): Promise<IPutResponse> {
  const res = await etcd.kv.txn({ success: [{ request_put: put }] });
  return { header: res.header, prev_kv: res.responses[0]?.response_put.prev_kv } as IPutResponse;
}
