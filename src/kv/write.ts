// PUT /v1/kv's write of one key: created (201) or replaced (200) is told by
// etcd itself, and a caller with write-only access may still write.
import { CompareResult, CompareTarget, type ICompare, type IPutRequest, type ITxnResponse } from 'etcd3';
import { putAsTxn } from '../auth/txn-guard.js';
import type { EtcdScope } from '../etcd/connection.js';
import { toProblem } from '../errors.js';

export interface PutOutcome {
  /** The put as a txn's answer; without a condition `succeeded` means the key was created. */
  res: ITxnResponse;
  /** False when read permission was missing, so created and replaced could not be told apart. */
  createdKnown: boolean;
}

/**
 * Puts one key, under a condition (If-Match / If-None-Match) if given.
 * `ownLease`: the put's lease holds the caller's owner record.
 */
export async function putKey(
  etcd: EtcdScope,
  put: IPutRequest,
  opts: { condition: ICompare | undefined; prevKv: boolean; ownLease: boolean },
): Promise<PutOutcome> {
  const { kv } = etcd;
  const { condition } = opts;
  const asTxn = (plain: ITxnResponse['responses'][number]['response_put'], succeeded: boolean): ITxnResponse =>
    ({ header: plain.header, succeeded, responses: [{ response_put: plain } as ITxnResponse['responses'][number]] }) as ITxnResponse;
  if (condition || put.lease) {
    try {
      // Without a condition the compare only tells created (201) from
      // replaced (200). With a lease this is a txn, never a plain put:
      // etcd refuses a plain Put whose lease holds a key the caller may
      // not write, and every lease the gateway grants holds its owner
      // record (src/auth/lease-owners.ts); a txn's put is not checked so.
      const res = await kv.txn({
        compare: [condition ?? { key: put.key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 }],
        success: [{ request_put: put }],
        failure: [condition ? { request_range: { key: put.key } } : { request_put: put }],
      });
      return { res, createdKnown: true };
    } catch (err) {
      // A compare needs read permission; a caller with write-only access
      // may still put. etcd refused the txn before applying anything, so
      // the plain put is not a second attempt of the same write.
      if (condition || opts.prevKv || toProblem(err).code !== 'permission_denied') throw err;
      const plain = opts.ownLease ? await putAsTxn(etcd, put) : await kv.put(put);
      return { res: asTxn(plain, false), createdKnown: false };
    }
  }
  // Created (201) or replaced (200) is told by the previous pair a put can
  // return: a plain put costs etcd and the gateway less than a txn with a
  // compare (about a fifth more writes per second; the old value comes back
  // from etcd too, but never goes to the client).
  let plain;
  let createdKnown = true;
  try {
    plain = await kv.put({ ...put, prev_kv: true });
  } catch (err) {
    // The previous pair needs read permission; a caller with write-only
    // access may still put. etcd refused before applying anything, so this
    // is not a second attempt of the same write.
    if (opts.prevKv || toProblem(err).code !== 'permission_denied') throw err;
    plain = await kv.put(put);
    createdKnown = false;
  }
  const wasThere = Boolean(plain.prev_kv);
  if (!opts.prevKv) plain.prev_kv = undefined as never;
  return { res: asTxn(plain, !wasThere), createdKnown };
}
