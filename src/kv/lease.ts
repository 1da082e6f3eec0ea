// Lease IDs and the lease calls that need more than one line: IDs travel as
// lowercase hex (etcdctl's form) in our API and as int64 decimal strings in
// etcd3, and keep-alive exists in etcd only as a bidirectional stream.
import type { ILeaseKeepAliveResponse, ILeaseTimeToLiveResponse, LeaseClient } from 'etcd3';
import { isOwnerRecord } from '../auth/lease-owners.js';
import { Problem } from '../errors.js';
import { bytesJson, leaseHex, num } from './codec.js';

/** Hex lease ID (validated by the schema) → etcd3's int64 decimal string. */
export function leaseIdToEtcd(hex: string): string {
  return BigInt.asIntN(64, BigInt(`0x${hex}`)).toString();
}

export function leaseNotFound(hex: string): Problem {
  return new Problem(404, 'lease_not_found', `lease ${hex} does not exist: it expired, was revoked or was never granted`);
}

export interface LeaseInfoJson {
  id: string;
  ttl: number;
  granted_ttl: number;
  keys?: { key?: string; key_base64?: string }[];
}

/** etcd answers TTL -1 (not an error) for a lease it does not know: that is our 404. */
export function timeToLiveToJson(hex: string, res: ILeaseTimeToLiveResponse, withKeys: boolean): LeaseInfoJson {
  const ttl = num(res.TTL);
  if (ttl < 0) throw leaseNotFound(hex);
  const out: LeaseInfoJson = { id: leaseHex(res.ID) ?? hex, ttl, granted_ttl: num(res.grantedTTL) };
  if (withKeys) {
    out.keys = (res.keys ?? []).filter((k) => !isOwnerRecord(k)).map((k) => bytesJson(k, 'key'));
  }
  return out;
}

/**
 * Renews a lease once: opens etcd's LeaseKeepAlive stream, sends one request,
 * takes one answer and half-closes. etcd answers TTL 0 for a lease it does not
 * know (expired or revoked), which becomes 404 lease_not_found. The deadline
 * bounds a stream that never answers (no leader, partition).
 */
export async function keepAliveOnce(lease: LeaseClient, hex: string, timeoutMs: number): Promise<ILeaseKeepAliveResponse> {
  const stream = await lease.leaseKeepAlive({ deadline: Date.now() + timeoutMs });
  const res = await new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
    };
    stream.on('data', (r) => settle(() => resolve(r)));
    // Errors after the answer (the stream winding down) are expected and
    // must not go unhandled.
    stream.on('error', (err) => settle(() => reject(err)));
    stream.on('end', () =>
      settle(() =>
        reject(new Problem(503, 'etcd_unavailable', 'etcd closed the keep-alive stream without answering', { headers: { 'retry-after': '1' } })),
      ),
    );
    stream.write({ ID: leaseIdToEtcd(hex) });
  });
  stream.end();
  if (num(res.TTL) <= 0) throw leaseNotFound(hex);
  return res;
}
