// Plain-JSON transactions to etcd TxnRequests and back. Every refusal names
// the operation it is about (`success[3]`, `success[0].txn.compare[1]`), in
// the detail and in the problem's `operation` member, so a client with a long
// transaction knows which entry to fix.
import type { FastifySchemaValidationError } from 'fastify';
import {
  CompareResult,
  CompareTarget,
  type ICompare,
  type IPutRequest,
  type IRangeRequest,
  type IRequestOp,
  type IResponseOp,
  type ITxnRequest,
} from 'etcd3';
import { Problem, badRequest } from '../errors.js';
import { bytesField, kvToJson, num, ZERO_KEY, type KeyValueJson } from '../kv/codec.js';
import { rangeOf as keyRangeOf, rangeRequest, type KeyRange } from '../kv/range.js';
import {
  MAX_TXN_OPS,
  type TxnCompareJson,
  type TxnDeleteJson,
  type TxnGetJson,
  type TxnOpJson,
  type TxnPutJson,
  type TxnRequestJson,
} from '../schemas/txn.js';
import { leaseIdToEtcd } from '../kv/lease.js';

export interface TxnContext {
  /** LIST_MAX_KEYS: the default and the maximum `limit` of a get. */
  maxKeys: number;
}

export type TxnOpResult =
  | { type: 'put'; prev_kv?: KeyValueJson }
  | { type: 'get'; count: number; more: boolean; kvs: KeyValueJson[] }
  | { type: 'delete'; deleted: number; prev_kvs?: KeyValueJson[] }
  | { type: 'txn'; succeeded: boolean; responses: TxnOpResult[] };

function opProblem(operation: string, detail: string, code = 'invalid_txn'): Problem {
  return badRequest(`${operation}: ${detail}`, code, { operation });
}

/** Re-throws the shared key/range validation errors with the operation named. */
function at<T>(operation: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof Problem && err.status === 400 && err.extra.operation === undefined) {
      throw opProblem(operation, err.message, err.code);
    }
    throw err;
  }
}

function bytesOf(operation: string, fields: object, name: string): Buffer | undefined {
  return at(operation, () => bytesField(fields, name, 'invalid_txn'));
}

interface RangeJson {
  key?: string;
  key_base64?: string;
  prefix?: boolean;
  range_end?: string;
  range_end_base64?: string;
  from_key?: boolean;
}

/**
 * The same ranges as the key API's, so `prefix` means exactly what `?prefix`
 * means. A single key has no range end at all: etcd reads an empty but present
 * range_end in a Compare as "every key from here on" (mkGteRange), so a
 * compare on one key would silently cover the rest of the keyspace.
 */
function rangeOf(operation: string, sel: RangeJson): { key: Buffer; rangeEnd: Buffer | undefined } {
  const key = bytesOf(operation, sel, 'key');
  if (key === undefined) throw opProblem(operation, 'key or key_base64 is required');
  const rangeEnd = bytesOf(operation, sel, 'range_end');
  const range: KeyRange = at(operation, () => keyRangeOf(key, { prefix: sel.prefix, fromKey: sel.from_key, rangeEnd }));
  return { key: range.key, rangeEnd: range.rangeEnd.length > 0 ? range.rangeEnd : undefined };
}

const TARGETS = {
  value: CompareTarget.Value,
  version: CompareTarget.Version,
  create_revision: CompareTarget.Create,
  mod_revision: CompareTarget.Mod,
  lease: CompareTarget.Lease,
} as const;

const RESULTS = {
  '==': CompareResult.Equal,
  '=': CompareResult.Equal,
  '!=': CompareResult.NotEqual,
  '<': CompareResult.Less,
  '>': CompareResult.Greater,
} as const;

function toCompare(operation: string, c: TxnCompareJson): ICompare {
  const { key, rangeEnd } = rangeOf(operation, c);
  const given = (['value', 'version', 'create_revision', 'mod_revision', 'lease'] as const).filter(
    (name) => c[name] !== undefined || (name === 'value' && c.value_base64 !== undefined),
  );
  const stray = given.find((name) => name !== c.target);
  if (stray) throw opProblem(operation, `${stray} does not apply to target ${c.target}`);
  if (given.length === 0) {
    throw opProblem(operation, `target ${c.target} needs ${c.target === 'value' ? 'value or value_base64' : c.target}`);
  }
  // Numeric enums only: etcd3 encodes an unknown enum string as 0 (Equal /
  // Version) without a word, which would silently change the predicate.
  const out: ICompare = { key, range_end: rangeEnd, target: TARGETS[c.target], result: RESULTS[c.result] };
  switch (c.target) {
    case 'value':
      out.value = bytesOf(operation, c, 'value')!;
      break;
    case 'lease':
      out.lease = leaseIdToEtcd(c.lease!);
      break;
    default:
      out[c.target] = c[c.target]!;
  }
  return out;
}

function toPut(operation: string, p: TxnPutJson): IPutRequest {
  const { key } = rangeOf(operation, p);
  const value = bytesOf(operation, p, 'value');
  if (p.ignore_value && value !== undefined) throw opProblem(operation, 'ignore_value keeps the current value: give no value');
  if (!p.ignore_value && value === undefined) throw opProblem(operation, 'put needs value or value_base64 (or ignore_value)');
  if (p.ignore_lease && p.lease !== undefined) throw opProblem(operation, 'ignore_lease keeps the current lease: give no lease');
  return {
    key,
    value: value ?? Buffer.alloc(0),
    lease: p.lease === undefined ? undefined : leaseIdToEtcd(p.lease),
    prev_kv: p.prev_kv,
    ignore_value: p.ignore_value,
    ignore_lease: p.ignore_lease,
  };
}

function toRange(operation: string, g: TxnGetJson, ctx: TxnContext): IRangeRequest {
  const { key, rangeEnd } = rangeOf(operation, g);
  // As in a listing (an empty range_end is a single key in a Range, unlike in a Compare).
  return at(operation, () => rangeRequest({ key, rangeEnd: rangeEnd ?? Buffer.alloc(0) }, g, ctx.maxKeys));
}

function toDelete(operation: string, d: TxnDeleteJson) {
  const { key, rangeEnd } = rangeOf(operation, d);
  return { key, range_end: rangeEnd, prev_kv: d.prev_kv };
}

function toRequestOp(operation: string, op: TxnOpJson, ctx: TxnContext): IRequestOp {
  if (op.put) return { request_put: toPut(operation, op.put) };
  if (op.get) return { request_range: toRange(operation, op.get, ctx) };
  if (op.delete) return { request_delete_range: toDelete(operation, op.delete) };
  if (op.txn) return { request_txn: toTxn(`${operation}.txn`, op.txn, ctx) };
  throw opProblem(operation, 'an operation needs exactly one of put, get, delete, txn');
}

/**
 * etcd refuses a branch that writes one key twice ("duplicate key given in txn
 * request") without saying where. The cases on one level are found here to
 * name both operations: two puts of a key, or a put of a key that a delete of
 * the same branch removes. Deletes to the end of the keyspace are left out on
 * purpose: etcd 3.4 lets a put through next to them. Nested cases are left to
 * etcd's own check.
 */
function checkDuplicates(names: string[], ops: IRequestOp[]): void {
  const deletes = ops.flatMap((op, i) => (op.request_delete_range ? [{ i, ...op.request_delete_range }] : []));
  const puts = new Map<string, number>();
  ops.forEach((op, i) => {
    if (!op.request_put) return;
    const key = op.request_put.key!;
    const id = key.toString('hex');
    const earlier = puts.get(id);
    if (earlier !== undefined) {
      throw opProblem(names[i]!, `puts a key that ${names[earlier]} puts too: etcd allows one write per key in a branch`, 'duplicate_key');
    }
    puts.set(id, i);
    const del = deletes.find(({ key: start, range_end: end }) => {
      if (end === undefined) return key.equals(start!);
      if (end.equals(ZERO_KEY)) return false;
      return Buffer.compare(key, start!) >= 0 && Buffer.compare(key, end) < 0;
    });
    if (del) {
      throw opProblem(names[i]!, `puts a key that ${names[del.i]} deletes: etcd allows one write per key in a branch`, 'duplicate_key');
    }
  });
}

function toTxn(path: string, req: TxnRequestJson, ctx: TxnContext): ITxnRequest {
  const name = (list: string, i: number) => (path ? `${path}.${list}[${i}]` : `${list}[${i}]`);
  const branch = (list: 'success' | 'failure') => {
    const ops = req[list] ?? [];
    const names = ops.map((_, i) => name(list, i));
    const out = ops.map((op, i) => toRequestOp(names[i]!, op, ctx));
    checkDuplicates(names, out);
    return out;
  };
  return {
    compare: (req.compare ?? []).map((c, i) => toCompare(name('compare', i), c)),
    success: branch('success'),
    failure: branch('failure'),
  };
}

/** Converts a validated request body; throws a 400 Problem naming the operation. */
export function txnToEtcd(req: TxnRequestJson, ctx: TxnContext): ITxnRequest {
  return toTxn('', req, ctx);
}

/** Types each response by the operation it answers, in order, recursing into nested txns. */
export function responsesToJson(ops: TxnOpJson[], responses: IResponseOp[]): TxnOpResult[] {
  return ops.map((op, i): TxnOpResult => {
    const r = responses[i]!;
    if (op.put) {
      const prev = r.response_put.prev_kv;
      return op.put.prev_kv && prev ? { type: 'put', prev_kv: kvToJson(prev) } : { type: 'put' };
    }
    if (op.get) {
      const range = r.response_range;
      return {
        type: 'get',
        count: num(range.count),
        more: Boolean(range.more),
        kvs: range.kvs.map((kv) => kvToJson(kv, !op.get!.keys_only)),
      };
    }
    if (op.delete) {
      const d = r.response_delete_range;
      const out: TxnOpResult = { type: 'delete', deleted: num(d.deleted) };
      if (op.delete.prev_kv) out.prev_kvs = d.prev_kvs.map((kv) => kvToJson(kv));
      return out;
    }
    const nested = r.response_txn;
    const branch = (nested.succeeded ? op.txn!.success : op.txn!.failure) ?? [];
    return { type: 'txn', succeeded: Boolean(nested.succeeded), responses: responsesToJson(branch, nested.responses) };
  });
}

/** `/success/0/txn/failure/2/put/lease` → operation `success[0].txn.failure[2]`, field `put.lease`. */
function splitPath(instancePath: string): { operation?: string; field: string } {
  const parts = instancePath.split('/').slice(1);
  let opEnd = 0;
  for (let i = 1; i < parts.length; i++) {
    if (/^\d+$/.test(parts[i]!) && ['compare', 'success', 'failure'].includes(parts[i - 1]!)) opEnd = i + 1;
  }
  const dotted = (segs: string[]) => segs.map((s, i) => (/^\d+$/.test(s) ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');
  return { operation: opEnd ? dotted(parts.slice(0, opEnd)) : undefined, field: dotted(parts.slice(opEnd)).replace(/^\./, '') };
}

/**
 * Route-level schemaErrorFormatter for POST /v1/txn: Ajv reports JSON
 * pointers; clients get the operation in the notation of the issue
 * (`success[3]: ...`) and a code to branch on.
 */
export function txnSchemaErrorFormatter(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const e = errors[0]!;
  if (e.keyword === 'maxItems') {
    const { operation } = splitPath(`${e.instancePath}/${MAX_TXN_OPS}`);
    const where = operation ?? dataVar;
    return badRequest(`${where}: more than ${MAX_TXN_OPS} entries in one list (etcd's --max-txn-ops)`, 'too_many_operations', {
      operation: where,
    });
  }
  const { operation, field } = splitPath(e.instancePath);
  let message = e.message ?? 'is invalid';
  const params = e.params as Record<string, unknown>;
  if (e.keyword === 'additionalProperties') message += ` (${String(params.additionalProperty)})`;
  if (e.keyword === 'enum') message += ` (${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')})`;
  if ((e.keyword === 'minProperties' || e.keyword === 'maxProperties') && operation && !field) {
    message = 'an operation needs exactly one of put, get, delete, txn';
  }
  const where = operation ?? dataVar;
  const detail = field ? `${where}: ${field} ${message}` : `${where}: ${message}`;
  return badRequest(detail, 'validation_failed', operation ? { operation } : undefined);
}
