import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { CompareResult, CompareTarget, type ICompare, type IDeleteRangeResponse, type IKeyValue, type ITxnResponse } from 'etcd3';
import { Type } from 'typebox';
import { Problem, badRequest } from '../errors.js';
import { kvToJson, leaseHex, num, type KeyValueJson } from '../kv/codec.js';
import { leaseIdToEtcd } from '../kv/lease.js';
import { putKey } from '../kv/write.js';
import { isRange, keyRange, list } from '../kv/range.js';
import { txnGuard } from '../auth/txn-guard.js';
import { refuseExpiredStream } from '../auth/expiry.js';
import { longPoll } from '../watch/longpoll.js';
import { checkReadable } from '../watch/session.js';
import { errorResponses, isSet } from '../schemas/common.js';
import {
  DeleteKeyQuery,
  DeleteResultSchema,
  GetKeyQuery,
  KeyParams,
  KeyValueRef,
  PutKeyQuery,
  PutResultSchema,
} from '../schemas/kv.js';

export interface KvRoutesOptions {
  bodyLimit: number;
  listMaxKeys: number;
  longPollMaxSeconds: number;
}

/** Parses `If-Match` / `If-None-Match`: `*` or one quoted (or bare) mod revision. */
function parseCondition(header: string | string[] | undefined, name: string): '*' | number | undefined {
  if (header === undefined) return undefined;
  const value = (Array.isArray(header) ? header.join(',') : header).trim();
  if (value === '*') return '*';
  const m = /^(?:W\/)?"?(\d{1,16})"?$/.exec(value);
  if (!m || !Number.isSafeInteger(Number(m[1])) || Number(m[1]) < 1) {
    throw badRequest(`${name} must be * or one entity tag "<mod_revision>" (got ${JSON.stringify(value)})`, 'invalid_precondition');
  }
  return Number(m[1]);
}

/** The compare that a conditional header asks for. */
function conditionCompare(key: Buffer, ifMatch: '*' | number | undefined, ifNoneMatch: '*' | number | undefined): ICompare | undefined {
  if (ifMatch !== undefined && ifNoneMatch !== undefined) {
    throw badRequest('use If-Match or If-None-Match, not both', 'invalid_precondition');
  }
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch !== '*') throw badRequest('If-None-Match on a write supports only *', 'invalid_precondition');
    return { key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 };
  }
  if (ifMatch === '*') return { key, target: CompareTarget.Create, result: CompareResult.Greater, create_revision: 0 };
  if (ifMatch !== undefined) return { key, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: ifMatch };
  return undefined;
}

function preconditionFailed(res: ITxnResponse): Problem {
  const current: IKeyValue | undefined = res.responses[0]?.response_range?.kvs[0];
  return new Problem(412, 'precondition_failed', current ? `the key is at mod_revision ${current.mod_revision}` : 'the key does not exist', {
    extra: { current: current ? kvToJson(current) : null, revision: num(res.header.revision) },
    headers: current ? { etag: `"${current.mod_revision}"` } : {},
  });
}

/** GET /v1/kv is three operations: a long-poll (?wait), a listing (a range) and a single read. */
type GetOperation = 'wait' | 'list' | 'get';

/**
 * The options that only some of GET's operations take, in the order they are
 * checked: an option given to another operation is refused, saying where it
 * belongs, rather than silently ignored.
 */
const GET_OPTIONS: readonly (readonly [string, readonly GetOperation[]])[] = [
  ...(['start_revision', 'timeout', 'prev_kv'] as const).map((o) => [o, ['wait']] as const),
  ...(['limit', 'keys_only', 'count_only', 'sort', 'order', 'cursor', 'separator'] as const).map((o) => [o, ['list']] as const),
  ...(['revision', 'serializable'] as const).map((o) => [o, ['list', 'get']] as const),
];

function refuseForeignOptions(query: object, operation: GetOperation): void {
  const q = query as Record<string, unknown>;
  for (const [option, takenBy] of GET_OPTIONS) {
    if (q[option] === undefined || takenBy.includes(operation)) continue;
    const why =
      operation === 'wait'
        ? 'does not apply to a long-poll (wait)'
        : takenBy[0] === 'wait'
          ? 'applies to a long-poll (add ?wait)'
          : 'applies to listings (add ?prefix)';
    throw badRequest(`${option} ${why}`, 'invalid_option');
  }
}

const kvRoutes: FastifyPluginAsyncTypebox<KvRoutesOptions> = async (app, opts) => {
  // Values are bytes: whatever the Content-Type, the body is stored verbatim
  // (a JSON document is stored as its exact bytes, never re-serialised).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: opts.bodyLimit }, (_req, body, done) => done(null, body));

  app.get(
    '/v1/kv/*',
    {
      schema: {
        tags: ['kv'],
        summary: 'Read a key, or list a range of keys',
        description:
          'One key: the raw value as the body with metadata in headers, or JSON with `Accept: application/json`. ' +
          'With `prefix`, `range_end`, `from_key` or `separator`: a JSON listing. ' +
          'With `wait`: a long-poll that answers with the next changes (`LongPollResult`).',
        params: KeyParams,
        querystring: GetKeyQuery,
        response: {
          200: {
            description: 'The value (raw or JSON) or a listing.',
            content: {
              'application/octet-stream': { schema: Type.String({ format: 'binary' }) },
              'application/json': { schema: Type.Union([KeyValueRef, Type.Ref('Listing'), Type.Ref('LongPollResult')]) },
            },
          },
          304: { description: 'Not modified (If-None-Match matched the ETag).', type: 'null' },
          ...errorResponses(404, 410),
        },
      },
    },
    async (req, reply) => {
      const { kv, lease } = req.etcd;
      const q = req.query;
      const sel = { key_encoding: q.key_encoding, prefix: isSet(q.prefix), range_end: q.range_end, from_key: isSet(q.from_key) };
      const operation: GetOperation = isSet(q.wait) ? 'wait' : isRange({ ...sel, separator: q.separator }) ? 'list' : 'get';
      refuseForeignOptions(q, operation);
      if (operation === 'wait') {
        const timeout = q.timeout ?? Math.min(60, opts.longPollMaxSeconds);
        if (timeout > opts.longPollMaxSeconds) throw badRequest(`timeout must be at most ${opts.longPollMaxSeconds} s (LONG_POLL_MAX_SECONDS)`, 'invalid_option');
        const range = keyRange(req.params['*'], sel);
        // A long-poll is a stream: opened only with a token that has not expired (no leeway),
        // and it ends, with nothing new, when that token does.
        refuseExpiredStream(req.caller);
        const timeoutMs = Math.min(timeout * 1000, req.caller ? req.caller.exp * 1000 - Date.now() : Infinity);
        // Shared watches run as the gateway: check the caller may read the range.
        if (app.authEnabled) await checkReadable(kv, range);
        const abort = new AbortController();
        // The response's close (not the request's, which fires once the request is read).
        reply.raw.once('close', () => abort.abort());
        const release = app.streamCaps.acquire(req);
        const result = await longPoll(
          app.watchHub,
          { range, startRevision: q.start_revision, prevKv: isSet(q.prev_kv), timeoutMs },
          abort.signal,
        ).finally(release);
        return reply.type('application/json').send(result);
      }
      if (operation === 'list') {
        const range = keyRange(req.params['*'], { ...sel, prefix: sel.prefix || q.separator !== undefined });
        const listing = await list(
          { kv, maxKeys: opts.listMaxKeys, onHeader: (res) => reply.etcdHeaders(res.header) },
          range,
          {
            ...q,
            keys_only: isSet(q.keys_only),
            count_only: isSet(q.count_only),
            serializable: isSet(q.serializable),
          },
        );
        return reply.type('application/json').send(listing);
      }
      const { key } = keyRange(req.params['*'], sel);
      const res = await kv.range({ key, revision: q.revision, serializable: isSet(q.serializable) });
      reply.etcdHeaders(res.header);
      const found = res.kvs[0];
      if (!found) throw new Problem(404, 'key_not_found', 'the key does not exist');
      const etag = `"${found.mod_revision}"`;
      reply.header('etag', etag);
      reply.header('x-etcd-create-revision', found.create_revision);
      reply.header('x-etcd-mod-revision', found.mod_revision);
      reply.header('x-etcd-version', found.version);
      const leaseId = leaseHex(found.lease);
      if (leaseId) reply.header('x-etcd-lease', leaseId);
      reply.header('vary', 'Accept');
      const inm = req.headers['if-none-match'];
      if (inm && inm.split(',').some((t) => t.trim().replace(/^W\//, '') === etag || t.trim() === '*')) {
        return reply.code(304).send(null);
      }
      if (wantsJson(req.headers.accept)) {
        const out: KeyValueJson & { ttl?: number } = kvToJson(found);
        if (leaseId) {
          // A TTL key's time left is its lease's. A lease gone since the read
          // (TTL -1) means the key is being deleted: 0 seconds left.
          const ttl = await lease.leaseTimeToLive({ ID: found.lease });
          out.ttl = Math.max(num(ttl.TTL), 0);
        }
        return reply.type('application/json').send(out);
      }
      // Raw bytes, never sniffed: a value is data, not a page (Consul's ?raw XSS, CVE-2020-25864).
      reply.header('x-content-type-options', 'nosniff');
      reply.header('content-security-policy', "default-src 'none'; sandbox");
      return reply.type('application/octet-stream').send(found.value);
    },
  );

  app.put(
    '/v1/kv/*',
    {
      bodyLimit: opts.bodyLimit,
      schema: {
        tags: ['kv'],
        summary: 'Write a key',
        description:
          'Stores the request body verbatim. `If-None-Match: *` creates only; `If-Match: "<mod_revision>"` replaces only that revision (412 with the current pair otherwise). 201 when created, 200 when replaced.',
        params: KeyParams,
        querystring: PutKeyQuery,
        body: Type.Optional(Type.Unknown({ description: 'The value: any bytes, any Content-Type.' })),
        response: {
          200: PutResultSchema,
          201: PutResultSchema,
          ...errorResponses(403, 404, 412, 413),
        },
      },
    },
    async (req, reply) => {
      const { kv, lease } = req.etcd;
      const q = req.query;
      const { key } = keyRange(req.params['*'], { key_encoding: q.key_encoding });
      const value = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const condition = conditionCompare(
        key,
        parseCondition(req.headers['if-match'], 'If-Match'),
        parseCondition(req.headers['if-none-match'], 'If-None-Match'),
      );
      if (q.lease && q.ttl) throw badRequest('use lease or ttl, not both', 'conflicting_lease');
      let leaseId = q.lease ? leaseIdToEtcd(q.lease) : undefined;
      let grantedLease = false;
      const guard = txnGuard(app.etcd, req);
      const owners = guard?.owners;
      // Only the lease: the txn below that carries a lease also compares the
      // key, which etcd checks for read permission, so its prev_kv is covered.
      // Whether the lease holds the caller's owner record.
      let ownLease = leaseId ? ((await guard?.put({ key, lease: leaseId })) ?? false) : false;
      if (q.ttl) {
        const granted = await lease.leaseGrant({ TTL: q.ttl, ID: 0 });
        leaseId = granted.ID;
        grantedLease = true;
        await owners?.record(leaseId);
        ownLease = owners !== undefined;
      }
      const revokeGranted = async () => {
        const revoke = () => lease.leaseRevoke({ ID: leaseId });
        await (owners ? owners.revoke(leaseId!, revoke) : revoke()).catch(() => undefined);
      };
      const put = { key, value, lease: leaseId, prev_kv: isSet(q.prev_kv) };
      let res: ITxnResponse;
      let createdKnown: boolean;
      try {
        ({ res, createdKnown } = await putKey(req.etcd, put, { condition, prevKv: isSet(q.prev_kv), ownLease }));
        reply.etcdHeaders(res.header);
        if (condition && !res.succeeded) throw preconditionFailed(res);
      } catch (err) {
        // The one place a lease this request granted is revoked: never leave
        // one behind for a write that failed or was refused.
        if (grantedLease) await revokeGranted();
        throw err;
      }
      const created = condition ? condition.target === CompareTarget.Create && condition.result === CompareResult.Equal : res.succeeded;
      const putRes = res.responses[0]!.response_put;
      reply.header('etag', `"${res.header.revision}"`);
      const out: { revision: number; created?: boolean; lease?: string; prev_kv?: ReturnType<typeof kvToJson> } = {
        revision: num(res.header.revision),
        ...(createdKnown ? { created } : {}),
      };
      const hex = leaseHex(leaseId);
      if (hex) out.lease = hex;
      if (putRes.prev_kv && isSet(q.prev_kv)) out.prev_kv = kvToJson(putRes.prev_kv);
      return reply.code(created && createdKnown ? 201 : 200).send(out);
    },
  );

  app.delete(
    '/v1/kv/*',
    {
      schema: {
        tags: ['kv'],
        summary: 'Delete a key or a range of keys',
        description: 'Deleting a key that does not exist succeeds with `deleted: 0`, as in etcd.',
        params: KeyParams,
        querystring: DeleteKeyQuery,
        response: { 200: DeleteResultSchema, ...errorResponses(412) },
      },
    },
    async (req, reply) => {
      const { kv } = req.etcd;
      const q = req.query;
      const range = keyRange(req.params['*'], {
        key_encoding: q.key_encoding,
        prefix: isSet(q.prefix),
        range_end: q.range_end,
        from_key: isSet(q.from_key),
      });
      const prevKv = isSet(q.prev_kv);
      const ifMatch = parseCondition(req.headers['if-match'], 'If-Match');
      if (req.headers['if-none-match'] !== undefined) throw badRequest('If-None-Match does not apply to DELETE', 'invalid_precondition');
      const del = { key: range.key, range_end: range.rangeEnd, prev_kv: prevKv };
      let d: IDeleteRangeResponse;
      let revision: string;
      if (ifMatch !== undefined) {
        if (range.rangeEnd.length > 0) throw badRequest('If-Match applies to a single key, not a range', 'invalid_precondition');
        const res = await kv.txn({
          compare: [conditionCompare(range.key, ifMatch, undefined)!],
          success: [{ request_delete_range: del }],
          failure: [{ request_range: { key: range.key } }],
        });
        reply.etcdHeaders(res.header);
        if (!res.succeeded) throw preconditionFailed(res);
        d = res.responses[0]!.response_delete_range;
        revision = res.header.revision;
      } else {
        d = await kv.deleteRange(del);
        reply.etcdHeaders(d.header);
        revision = d.header.revision;
      }
      const out: { revision: number; deleted: number; prev_kvs?: ReturnType<typeof kvToJson>[] } = {
        revision: num(revision),
        deleted: num(d.deleted),
      };
      if (prevKv) out.prev_kvs = d.prev_kvs.map((kv) => kvToJson(kv));
      return out;
    },
  );
};

/** Whether the client prefers JSON over raw bytes. */
function wantsJson(accept: string | undefined): boolean {
  if (!accept) return false;
  let json = -1;
  let raw = -1;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.trim().toLowerCase().split(';');
    const qp = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const qv = qp ? Number(qp.slice(2)) : 1;
    if (type === 'application/json' || type === 'application/problem+json') json = Math.max(json, qv);
    else if (type === 'application/octet-stream' || type === '*/*') raw = Math.max(raw, qv);
  }
  return json > 0 && json >= raw;
}

export default kvRoutes;
