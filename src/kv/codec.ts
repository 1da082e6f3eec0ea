// Byte-level conversions between etcd's representation and our JSON:
// keys and values are bytes; JSON shows them as UTF-8 strings where they are
// valid UTF-8 and as base64 fields where they are not. Revisions are numbers,
// lease IDs lowercase hex.
import { isUtf8 } from 'node:buffer';
import type { IKeyValue } from 'etcd3';
import { badRequest } from '../errors.js';

export type KeyEncoding = 'utf8' | 'base64url';

/** Decodes a key (or range end) given in the URL, in the chosen encoding. */
export function decodeKey(raw: string, encoding: KeyEncoding = 'utf8', what = 'key'): Buffer {
  if (encoding === 'utf8') return Buffer.from(raw, 'utf8');
  // Base64url (RFC 4648 §5); padding optional. Node's decoder silently skips
  // bad characters, so validate first: a typo must not address another key.
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(raw) || raw.replace(/=+$/, '').length % 4 === 1) {
    throw badRequest(`${what} is not valid base64url`, 'invalid_base64');
  }
  return Buffer.from(raw, 'base64url');
}

/** Base64 in a JSON body (either alphabet, padding optional). */
export function decodeBase64(text: string, what: string): Buffer {
  // Node's decoder skips characters it does not know: validate first, so a
  // typo cannot address another key.
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(text) || text.replace(/=+$/, '').length % 4 === 1) {
    throw badRequest(`${what} is not valid base64`, 'invalid_base64');
  }
  return Buffer.from(text, 'base64');
}

/** A JSON body's `name` as UTF-8 or `name_base64` as base64, never both; undefined when neither is given. */
export function bytesField(fields: object, name: string, conflictCode: string): Buffer | undefined {
  const f = fields as Record<string, string | undefined>;
  const text = f[name];
  const b64 = f[`${name}_base64`];
  if (text !== undefined && b64 !== undefined) throw badRequest(`give ${name} or ${name}_base64, not both`, conflictCode);
  if (text !== undefined) return Buffer.from(text, 'utf8');
  return b64 === undefined ? undefined : decodeBase64(b64, `${name}_base64`);
}

/** etcd's "all keys with this prefix" end: the prefix with its last byte below 0xff incremented. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  // Empty prefix or all 0xff: every key from here on.
  return Buffer.from([0]);
}

export const ZERO_KEY = Buffer.from([0]);

/** Revision-like int64 strings from etcd3 to JSON numbers. */
export function num(v: string | number | undefined | null): number {
  return v === undefined || v === null ? 0 : Number(v);
}

/**
 * etcd lease IDs (int64, decimal strings from etcd3) as 16 lowercase hex
 * digits, exactly as etcdctl prints them (`%016x`); null for no lease.
 */
export function leaseHex(v: string | number | undefined | null): string | null {
  if (v === undefined || v === null || v === '0' || v === 0) return null;
  return BigInt.asUintN(64, BigInt(v)).toString(16).padStart(16, '0');
}

export interface KeyValueJson {
  key?: string;
  key_base64?: string;
  value?: string;
  value_base64?: string;
  create_revision: number;
  mod_revision: number;
  version: number;
  lease: string | null;
}

/** Bytes as JSON: `field` where they are valid UTF-8, else `field_base64`. */
export function bytesJson(bytes: Buffer, field: string): Record<string, string> {
  return isUtf8(bytes) ? { [field]: bytes.toString('utf8') } : { [`${field}_base64`]: bytes.toString('base64') };
}

export function kvToJson(kv: IKeyValue, withValue = true): KeyValueJson {
  const out: Record<string, unknown> = {};
  Object.assign(out, bytesJson(kv.key, 'key'));
  if (withValue) Object.assign(out, bytesJson(kv.value, 'value'));
  out.create_revision = num(kv.create_revision);
  out.mod_revision = num(kv.mod_revision);
  out.version = num(kv.version);
  out.lease = leaseHex(kv.lease);
  return out as unknown as KeyValueJson;
}

/** uint64 member and cluster IDs: decimal strings in etcd3, `%x` hex (no padding) in etcdctl and here. */
export function idHex(id: string | number): string {
  return BigInt(id).toString(16);
}

/** A member ID in hex (validated by the schema) → etcd3's uint64 decimal string. */
export function idFromHex(hex: string): string {
  return BigInt(`0x${hex}`).toString();
}
