// Key ranges, listings, cursors and the directory view.
import { SortOrder, SortTarget, type IRangeRequest, type IRangeResponse, type KVClient } from 'etcd3';
import { badRequest } from '../errors.js';
import { ZERO_KEY, decodeKey, kvToJson, num, prefixEnd, type KeyEncoding, type KeyValueJson } from './codec.js';

export interface RangeSelection {
  key_encoding?: KeyEncoding;
  prefix?: boolean;
  range_end?: string;
  from_key?: boolean;
}

export interface KeyRange {
  key: Buffer;
  /** Empty for a single key. */
  rangeEnd: Buffer;
}

/** Builds the etcd range `[key, range_end)` a request addresses. */
export function keyRange(keyParam: string, sel: RangeSelection): KeyRange {
  const encoding = sel.key_encoding ?? 'utf8';
  return rangeOf(decodeKey(keyParam, encoding), {
    prefix: sel.prefix,
    fromKey: sel.from_key,
    rangeEnd: sel.range_end === undefined ? undefined : decodeKey(sel.range_end, encoding, 'range_end'),
  });
}

/** The same for a key already in bytes (websocket messages, transactions). */
export function rangeOf(key: Buffer, sel: { prefix?: boolean; fromKey?: boolean; rangeEnd?: Buffer }): KeyRange {
  const chosen = [sel.prefix, sel.rangeEnd !== undefined, sel.fromKey].filter(Boolean).length;
  if (chosen > 1) throw badRequest('use only one of prefix, range_end and from_key', 'conflicting_range');
  if (sel.prefix) {
    // etcdctl's `get --prefix ""`: the whole keyspace is ["\0", "\0").
    return key.length === 0 ? { key: ZERO_KEY, rangeEnd: ZERO_KEY } : { key, rangeEnd: prefixEnd(key) };
  }
  if (sel.fromKey) return { key: key.length === 0 ? ZERO_KEY : key, rangeEnd: ZERO_KEY };
  if (sel.rangeEnd !== undefined) {
    const rangeEnd = sel.rangeEnd;
    if (rangeEnd.length === 0) throw badRequest('range_end must not be empty', 'invalid_range');
    if (!(rangeEnd.length === 1 && rangeEnd[0] === 0) && Buffer.compare(rangeEnd, key) <= 0) {
      throw badRequest('range_end must sort after the key', 'invalid_range');
    }
    return { key: key.length === 0 ? ZERO_KEY : key, rangeEnd };
  }
  if (key.length === 0) throw badRequest('the key must not be empty', 'empty_key');
  return { key, rangeEnd: Buffer.alloc(0) };
}

export function isRange(sel: RangeSelection & { separator?: string }): boolean {
  return Boolean(sel.prefix || sel.from_key || sel.range_end !== undefined || sel.separator !== undefined);
}

const SORT_TARGET: Record<string, SortTarget> = {
  key: SortTarget.Key,
  version: SortTarget.Version,
  create: SortTarget.Create,
  mod: SortTarget.Mod,
  value: SortTarget.Value,
};

/** The options of one etcd Range call: a listing's page or a transaction's get. */
export interface RangeOptions {
  limit?: number;
  keys_only?: boolean;
  count_only?: boolean;
  sort?: string;
  order?: 'asc' | 'desc';
  revision?: number;
  serializable?: boolean;
  min_create_revision?: number;
  max_create_revision?: number;
  min_mod_revision?: number;
  max_mod_revision?: number;
}

export interface ListOptions extends RangeOptions {
  separator?: string;
  cursor?: string;
}

function checkLimit(limit: number | undefined, maxKeys: number): void {
  if (limit !== undefined && limit > maxKeys) throw badRequest(`limit must be at most ${maxKeys} (LIST_MAX_KEYS)`, 'limit_too_large');
}

const sortOrder = (opts: RangeOptions) => (opts.order === 'desc' ? SortOrder.Descend : opts.sort || opts.order ? SortOrder.Ascend : SortOrder.None);

/**
 * The Range request of a listing page or a transaction's get: unsorted unless
 * asked, and never more than LIST_MAX_KEYS in one answer (`more` says when the
 * range holds more).
 */
export function rangeRequest(range: KeyRange, opts: RangeOptions, maxKeys: number): IRangeRequest {
  checkLimit(opts.limit, maxKeys);
  return {
    key: range.key,
    range_end: range.rangeEnd,
    limit: opts.count_only ? 0 : (opts.limit ?? maxKeys),
    revision: opts.revision,
    sort_order: sortOrder(opts),
    sort_target: SORT_TARGET[opts.sort ?? 'key'],
    serializable: opts.serializable,
    keys_only: opts.keys_only,
    count_only: opts.count_only,
    min_create_revision: opts.min_create_revision,
    max_create_revision: opts.max_create_revision,
    min_mod_revision: opts.min_mod_revision,
    max_mod_revision: opts.max_mod_revision,
  };
}

export interface Listing {
  revision: number;
  count: number;
  more: boolean;
  kvs: KeyValueJson[];
  prefixes?: { key?: string; key_base64?: string }[];
  next?: string;
}

// A cursor pins the revision of the first page and the key to go on from:
// for ascending key order the next start key, for descending the next end.
interface Cursor {
  r: number;
  s?: string; // next start key, base64
  e?: string; // next exclusive end key, base64
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

function decodeCursor(raw: string): Cursor {
  try {
    const c = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Cursor;
    if (!Number.isSafeInteger(c.r) || c.r < 1 || (c.s === undefined) === (c.e === undefined)) throw new Error('shape');
    if (typeof (c.s ?? c.e) !== 'string') throw new Error('shape');
    return c;
  } catch {
    throw badRequest('cursor is not a cursor this gateway issued', 'invalid_cursor');
  }
}

function within(range: KeyRange, key: Buffer): boolean {
  if (Buffer.compare(key, range.key) < 0) return false;
  if (range.rangeEnd.length === 1 && range.rangeEnd[0] === 0) return true;
  return Buffer.compare(key, range.rangeEnd) <= 0;
}

export interface ListContext {
  kv: KVClient;
  maxKeys: number;
  /** Receives the etcd response header of every range call. */
  onHeader: (res: IRangeResponse) => void;
}

export async function list(ctx: ListContext, range: KeyRange, opts: ListOptions): Promise<Listing> {
  checkLimit(opts.limit, ctx.maxKeys);
  if (opts.separator !== undefined) return directory(ctx, range, opts);
  const order = sortOrder(opts);
  const keyOrdered = SORT_TARGET[opts.sort ?? 'key'] === SortTarget.Key;
  let { key, rangeEnd } = range;
  let revision = opts.revision;
  if (opts.cursor !== undefined) {
    if (!keyOrdered) throw badRequest('cursors continue listings in key order only', 'invalid_cursor');
    const c = decodeCursor(opts.cursor);
    if (revision !== undefined && revision !== c.r) throw badRequest('cursor belongs to another revision', 'invalid_cursor');
    revision = c.r;
    const bound = Buffer.from((c.s ?? c.e)!, 'base64');
    if (!within(range, bound)) throw badRequest('cursor belongs to another range', 'invalid_cursor');
    if (c.s !== undefined) key = bound;
    else rangeEnd = bound;
  }
  const req = rangeRequest({ key, rangeEnd }, { ...opts, revision }, ctx.maxKeys);
  const res = await ctx.kv.range(req);
  ctx.onHeader(res);
  // etcd's header carries the current revision even for a historical read.
  const listRevision = revision ?? num(res.header.revision);
  const out: Listing = {
    revision: listRevision,
    count: num(res.count),
    more: Boolean(res.more),
    kvs: res.kvs.map((kv) => kvToJson(kv, !opts.keys_only)),
  };
  const last = res.kvs[res.kvs.length - 1];
  if (out.more && keyOrdered && last) {
    out.next =
      order === SortOrder.Descend
        ? encodeCursor({ r: listRevision, e: last.key.toString('base64') })
        : encodeCursor({ r: listRevision, s: Buffer.concat([last.key, ZERO_KEY]).toString('base64') });
  }
  return out;
}

/**
 * The directory view (Consul's `?keys&separator=`), computed here because etcd
 * has no notion of directories: the immediate children of the prefix, with
 * deeper keys rolled up into sub-prefixes. Whole sub-trees are skipped with a
 * new range that starts after them, so a directory with few children and many
 * deep keys costs few reads. Every read is pinned to the first read's revision.
 * Like Consul's, the view lists keys (with their metadata), not values.
 */
async function directory(ctx: ListContext, range: KeyRange, opts: ListOptions): Promise<Listing> {
  if (opts.sort && opts.sort !== 'key') throw badRequest('separator lists in key order only', 'invalid_option');
  if (opts.order === 'desc') throw badRequest('separator lists in ascending order only', 'invalid_option');
  if (opts.count_only) throw badRequest('separator and count_only do not combine', 'invalid_option');
  const sep = Buffer.from(opts.separator!, 'utf8');
  const base = range.rangeEnd.length === 1 && range.rangeEnd[0] === 0 && range.key.equals(ZERO_KEY) ? Buffer.alloc(0) : range.key;
  const limit = opts.limit ?? ctx.maxKeys;
  let start = range.key;
  let revision = opts.revision;
  if (opts.cursor !== undefined) {
    const c = decodeCursor(opts.cursor);
    if (c.s === undefined) throw badRequest('cursor belongs to another listing', 'invalid_cursor');
    if (revision !== undefined && revision !== c.r) throw badRequest('cursor belongs to another revision', 'invalid_cursor');
    revision = c.r;
    start = Buffer.from(c.s, 'base64');
    if (!within(range, start)) throw badRequest('cursor belongs to another range', 'invalid_cursor');
  }
  const kvs: KeyValueJson[] = [];
  const prefixes: { key?: string; key_base64?: string }[] = [];
  let listRevision = 0;
  let more = false;
  let next: Buffer | undefined;
  const page = Math.min(limit * 4, ctx.maxKeys, 1000);
  scan: for (;;) {
    const res = await ctx.kv.range({
      key: start,
      range_end: range.rangeEnd,
      limit: page,
      revision,
      keys_only: true,
      serializable: opts.serializable,
    });
    ctx.onHeader(res);
    if (revision === undefined) {
      revision = num(res.header.revision);
    }
    listRevision = revision;
    let skipUntil: Buffer | undefined;
    for (const kv of res.kvs) {
      if (skipUntil && Buffer.compare(kv.key, skipUntil) < 0) continue;
      if (kvs.length + prefixes.length === limit) {
        more = true;
        next = kv.key;
        break scan;
      }
      const rest = kv.key.subarray(base.length);
      const at = rest.indexOf(sep);
      if (at < 0) {
        kvs.push(kvToJson(kv, false));
        continue;
      }
      const sub = kv.key.subarray(0, base.length + at + sep.length);
      prefixes.push(bytesField(sub));
      skipUntil = prefixEnd(sub);
    }
    if (!res.more) break;
    const last = res.kvs[res.kvs.length - 1]!.key;
    // Inside a rolled-up sub-prefix: jump past it; otherwise go on after the last key.
    start = skipUntil && Buffer.compare(last, skipUntil) < 0 ? skipUntil : Buffer.concat([last, ZERO_KEY]);
    if (range.rangeEnd.length > 0 && !(range.rangeEnd.length === 1 && range.rangeEnd[0] === 0) && Buffer.compare(start, range.rangeEnd) >= 0) break;
  }
  const out: Listing = { revision: listRevision, count: kvs.length + prefixes.length, more, kvs, prefixes };
  if (more && next) out.next = encodeCursor({ r: listRevision, s: next.toString('base64') });
  return out;
}

function bytesField(b: Buffer): { key?: string; key_base64?: string } {
  const j = kvToJson({ key: b, value: Buffer.alloc(0), create_revision: '0', mod_revision: '0', version: '0', lease: '0' }, false);
  return j.key !== undefined ? { key: j.key } : { key_base64: j.key_base64 };
}
