// POST /v1/txn through the gateway against a real 3-member etcd cluster,
// every outcome checked in etcd itself with etcdctl.
import t from 'tap';
import { buildTestApp } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints);
const { etcdctl } = cluster;

const put = (key: string, value: string, query = '') =>
  app.inject({ method: 'PUT', url: `/v1/kv/${key}${query}`, payload: value, headers: { 'content-type': 'text/plain' } });
const txn = (body: unknown, on = app) => on.inject({ method: 'POST', url: '/v1/txn', payload: body as object });
const value = async (key: string) => etcdctl('get', key, '--print-value-only');
const etcdKv = async (key: string) => JSON.parse(await etcdctl('get', key, '--write-out=json')).kvs?.[0];
// etcdctl prints lease IDs as JSON numbers beyond 2^53: read the digits, not a double.
const norm = (hex: string) => BigInt(`0x${hex}`).toString(16);
const etcdLease = async (key: string) => {
  const m = /"lease":(\d+)/.exec(await etcdctl('get', key, '--write-out=json'));
  return m ? BigInt(m[1]!).toString(16) : null;
};

t.test("the seed's etcdctl txn example, verbatim: failure branch, then success branch", async (t) => {
  // etcdctl put /test/key4 "txn1"
  t.equal((await put('/test/key4', 'txn1')).statusCode, 201);
  // compares: value("/test/key4") = "txn2"
  // success requests: put /test/key4 ok
  // failure requests: put /test/key4 no
  const body = {
    compare: [{ key: '/test/key4', target: 'value', result: '=', value: 'txn2' }],
    success: [{ put: { key: '/test/key4', value: 'ok' } }],
    failure: [{ put: { key: '/test/key4', value: 'no' } }],
  };
  let res = await txn(body);
  t.equal(res.statusCode, 200);
  const failed = res.json();
  t.same(failed, { succeeded: false, revision: failed.revision, responses: [{ type: 'put' }] });
  t.equal(res.headers['x-etcd-revision'], String(failed.revision));
  t.match(res.headers['x-etcd-cluster-id'], /^[0-9a-f]+$/);
  // etcdctl get /test/key4 → no
  t.equal(await value('/test/key4'), 'no\n');
  t.equal((await etcdKv('/test/key4')).mod_revision, failed.revision, 'the txn revision is the one etcd recorded');

  t.equal((await put('/test/key4', 'txn2')).statusCode, 200);
  res = await txn(body);
  t.equal(res.statusCode, 200);
  t.equal(res.json().succeeded, true);
  t.same(res.json().responses, [{ type: 'put' }]);
  t.equal(await value('/test/key4'), 'ok\n');
});

t.test('compare-and-swap counter: concurrent clients, final value = succeeded txns', async (t) => {
  const key = '/cas/counter';
  await put(key, '0');
  const clients = 8;
  const attempts = 6;
  const client = async () => {
    let succeeded = 0;
    let current = (await txn({ success: [{ get: { key } }] })).json().responses[0].kvs[0];
    for (let i = 0; i < attempts; i++) {
      const res = await txn({
        compare: [{ key, target: 'mod_revision', result: '==', mod_revision: current.mod_revision }],
        success: [{ put: { key, value: String(Number(current.value) + 1) } }],
        // A loser gets the current pair back in the same round trip.
        failure: [{ get: { key } }],
      });
      t.equal(res.statusCode, 200);
      const out = res.json();
      if (out.succeeded) {
        succeeded++;
        current = { value: String(Number(current.value) + 1), mod_revision: out.revision };
      } else {
        t.equal(out.responses[0].type, 'get');
        current = out.responses[0].kvs[0];
      }
    }
    return succeeded;
  };
  const counts = await Promise.all(Array.from({ length: clients }, client));
  const total = counts.reduce((a, b) => a + b, 0);
  t.ok(total >= attempts, 'progress: at least one client wins each round');
  t.equal(await value(key), `${total}\n`, 'no lost update');
  t.equal((await etcdKv(key)).version, total + 1, 'one etcd write per succeeded txn');
});

t.test('every compare target and result', async (t) => {
  const lease = (await app.inject({ method: 'POST', url: '/v1/leases', payload: { ttl: 300 } })).json().id as string;
  await put('/cmp/k', 'a');
  const last = (await put('/cmp/k', 'b', `?lease=${lease}`)).json().revision as number;
  const { create_revision: c, mod_revision: m, version: v } = await etcdKv('/cmp/k');
  t.equal(m, last);
  t.equal(v, 2);
  await put('/cmp/plain', 'p');

  type Case = [target: string, result: string, operand: unknown, expected: boolean, key?: string];
  const cases: Case[] = [
    ['value', '==', 'b', true],
    ['value', '=', 'b', true],
    ['value', '==', 'x', false],
    ['value', '!=', 'b', false],
    ['value', '!=', 'a', true],
    ['value', '<', 'c', true],
    ['value', '<', 'b', false],
    ['value', '>', 'a', true],
    ['value', '>', 'b', false],
    ['version', '==', v, true],
    ['version', '=', v + 1, false],
    ['version', '!=', v, false],
    ['version', '!=', 0, true],
    ['version', '<', v + 1, true],
    ['version', '<', v, false],
    ['version', '>', v - 1, true],
    ['version', '>', v, false],
    ['version', '==', 0, true, '/cmp/absent'],
    ['create_revision', '==', c, true],
    ['create_revision', '==', m, false],
    ['create_revision', '!=', c, false],
    ['create_revision', '!=', m, true],
    ['create_revision', '<', m, true],
    ['create_revision', '<', c, false],
    ['create_revision', '>', c - 1, true],
    ['create_revision', '>', c, false],
    ['create_revision', '==', 0, true, '/cmp/absent'],
    ['mod_revision', '==', m, true],
    ['mod_revision', '=', m - 1, false],
    ['mod_revision', '!=', m, false],
    ['mod_revision', '!=', c, true],
    ['mod_revision', '<', m + 1, true],
    ['mod_revision', '<', m, false],
    ['mod_revision', '>', c, true],
    ['mod_revision', '>', m, false],
    ['lease', '==', lease, true],
    ['lease', '==', '0', false],
    ['lease', '!=', lease, false],
    ['lease', '!=', '0', true],
    ['lease', '>', '0', true],
    ['lease', '<', lease, false],
    ['lease', '==', '0', true, '/cmp/plain'],
  ];
  for (const [target, result, operand, expected, key] of cases) {
    const res = await txn({
      compare: [{ key: key ?? '/cmp/k', target, result, [target]: operand }],
      success: [{ get: { key: '/cmp/k', keys_only: true } }],
      failure: [],
    });
    t.equal(res.statusCode, 200);
    const label = `${target}("${key ?? '/cmp/k'}") ${result} ${JSON.stringify(operand)}`;
    t.equal(res.json().succeeded, expected, label);
    t.equal(res.json().responses.length, expected ? 1 : 0, `${label}: the right branch ran`);
  }

  // Over a prefix or range, a compare must hold for every key in it.
  await put('/rng/a', '1');
  await put('/rng/a', '2');
  await put('/rng/b', '1');
  await put('/rng/b', '2');
  await put('/rng/c', 'only once');
  const holds = async (compare: Record<string, unknown>) =>
    (await txn({ compare: [{ target: 'version', result: '>', version: 1, ...compare }] })).json().succeeded;
  t.equal(await holds({ key: '/rng/', prefix: true }), false, '/rng/c has version 1');
  t.equal(await holds({ key: '/rng/a', range_end: '/rng/c' }), true, '[/rng/a, /rng/c) all have version 2');
  t.equal(await holds({ key: '/rng/b', from_key: true }), false, 'from /rng/b on includes /rng/c');
  t.equal(
    await holds({ key_base64: Buffer.from('/rng/a').toString('base64'), range_end_base64: Buffer.from('/rng/c').toString('base64') }),
    true,
    'base64 keys and range ends',
  );

  // Binary values compare byte for byte.
  const bytes = Buffer.from([0xff, 0x00, 0xfe]);
  let res = await txn({ success: [{ put: { key: '/cmp/bin', value_base64: bytes.toString('base64') } }] });
  t.equal(res.statusCode, 200);
  res = await txn({ compare: [{ key: '/cmp/bin', target: 'value', result: '==', value_base64: bytes.toString('base64') }] });
  t.equal(res.json().succeeded, true);
  t.equal(Buffer.from((await etcdKv('/cmp/bin')).value, 'base64').toString('hex'), 'ff00fe');
});

t.test('put, get and delete options; binary keys and values', async (t) => {
  const lease = (await app.inject({ method: 'POST', url: '/v1/leases', payload: { ttl: 300 } })).json().id as string;
  let res = await txn({
    success: [
      { put: { key: '/ops/a', value: 'one', lease } },
      { put: { key: '/ops/b', value: 'two' } },
    ],
  });
  t.equal(res.statusCode, 200);
  t.same(res.json().responses, [{ type: 'put' }, { type: 'put' }]);
  t.equal(await etcdLease('/ops/a'), norm(lease), 'lease attached, as etcdctl sees it');

  res = await txn({
    success: [
      { put: { key: '/ops/a', value: 'uno', prev_kv: true, ignore_lease: true } },
      { put: { key: '/ops/b', ignore_value: true, lease } },
    ],
  });
  t.equal(res.statusCode, 200);
  const [first, second] = res.json().responses;
  t.equal(first.type, 'put');
  t.equal(first.prev_kv.value, 'one');
  t.equal(first.prev_kv.lease, lease);
  t.same(second, { type: 'put' });
  t.equal(await value('/ops/a'), 'uno\n');
  t.equal(await etcdLease('/ops/a'), norm(lease), 'ignore_lease kept the lease');
  t.equal(await value('/ops/b'), 'two\n', 'ignore_value kept the value');
  t.equal(await etcdLease('/ops/b'), norm(lease));

  const binKey = Buffer.from([0x2f, 0x6f, 0x70, 0x73, 0x2f, 0xff]);
  const binValue = Buffer.from([0x00, 0x01, 0xfe]);
  res = await txn({
    success: [
      { put: { key_base64: binKey.toString('base64'), value_base64: binValue.toString('base64') } },
      { get: { key_base64: binKey.toString('base64') } },
    ],
  });
  t.equal(res.statusCode, 200);
  const got = res.json().responses[1].kvs[0];
  t.equal(got.key_base64, binKey.toString('base64'));
  t.equal(got.value_base64, binValue.toString('base64'));
  const viaEtcdctl = JSON.parse(await etcdctl('get', '/ops/', '--prefix', '--write-out=json')).kvs;
  t.ok(
    viaEtcdctl.some((kv: { key: string; value: string }) => kv.key === binKey.toString('base64') && kv.value === binValue.toString('base64')),
    'etcd holds the exact bytes',
  );

  res = await txn({ success: [{ delete: { key: '/ops/', prefix: true, prev_kv: true } }] });
  t.equal(res.statusCode, 200);
  const del = res.json().responses[0];
  t.equal(del.type, 'delete');
  t.equal(del.deleted, 3);
  t.same(del.prev_kvs.map((kv: { key?: string }) => kv.key).filter(Boolean), ['/ops/a', '/ops/b']);
  t.equal(await etcdctl('get', '/ops/', '--prefix'), '');

  await put('/del/a', '1');
  await put('/del/b', '2');
  await put('/del/c', '3');
  res = await txn({ success: [{ delete: { key: '/del/a', range_end: '/del/c' } }] });
  t.same(res.json().responses, [{ type: 'delete', deleted: 2 }]);
  t.equal(await etcdctl('get', '/del/', '--prefix', '--keys-only'), '/del/c\n\n');
});

t.test('a get inside a txn takes the listing options', async (t) => {
  for (let i = 0; i < 5; i++) await put(`/list/k${i}`, `v${i}`);
  const pinned = (await put('/list/k2', 'v2-updated')).json().revision as number;
  await put('/list/k4', 'v4-updated');
  await put('/lisu/outside', 'x');
  const get = async (options: Record<string, unknown>) => {
    const res = await txn({ success: [{ get: { key: '/list/', prefix: true, ...options } }] });
    t.equal(res.statusCode, 200, JSON.stringify(options));
    return res.json().responses[0];
  };
  const keys = (r: { kvs: { key: string }[] }) => r.kvs.map((kv) => kv.key);

  let r = await get({});
  t.equal(r.type, 'get');
  t.same(keys(r), ['/list/k0', '/list/k1', '/list/k2', '/list/k3', '/list/k4']);
  t.equal(r.count, 5);
  t.equal(r.more, false);

  r = await get({ limit: 2 });
  t.same(keys(r), ['/list/k0', '/list/k1']);
  t.equal(r.more, true);
  t.equal(r.count, 5);

  r = await get({ sort: 'mod', order: 'desc', limit: 2 });
  t.same(keys(r), ['/list/k4', '/list/k2']);
  r = await get({ order: 'desc' });
  t.same(keys(r), ['/list/k4', '/list/k3', '/list/k2', '/list/k1', '/list/k0']);
  r = await get({ sort: 'version', order: 'desc', limit: 1 });
  t.equal(r.kvs[0].version, 2);
  r = await get({ sort: 'value' });
  t.equal(r.kvs[0].value, 'v0');

  r = await get({ keys_only: true });
  t.notOk('value' in r.kvs[0]);
  t.equal(r.kvs[0].key, '/list/k0');

  r = await get({ count_only: true });
  t.equal(r.count, 5);
  t.same(r.kvs, []);

  r = await get({ revision: pinned });
  t.equal(r.kvs[4].value, 'v4', 'read at a past revision');
  t.equal(r.kvs[2].value, 'v2-updated');

  r = await get({ min_mod_revision: pinned });
  t.same(keys(r), ['/list/k2', '/list/k4']);
  r = await get({ max_mod_revision: pinned - 1 });
  t.same(keys(r), ['/list/k0', '/list/k1', '/list/k3']);
  r = await get({ min_create_revision: pinned - 1, max_create_revision: pinned });
  t.same(keys(r), ['/list/k4']);
  r = await get({ max_create_revision: pinned - 4 });
  t.same(keys(r), ['/list/k0', '/list/k1']);

  let res = await txn({ success: [{ get: { key: '/list/k1', range_end: '/list/k3' } }] });
  t.same(keys(res.json().responses[0]), ['/list/k1', '/list/k2']);
  res = await txn({ success: [{ get: { key: '/list/k4', from_key: true, keys_only: true } }] });
  t.same(keys(res.json().responses[0]).slice(0, 2), ['/list/k4', '/lisu/outside']);
  res = await txn({ success: [{ get: { key: '', prefix: true, count_only: true } }] });
  t.equal(res.json().responses[0].count, JSON.parse(await etcdctl('get', '--from-key', '', '--keys-only', '--write-out=json')).count);

  // Without limit a get stops at LIST_MAX_KEYS, as a listing does.
  const small = await buildTestApp(t, cluster.endpoints, { LIST_MAX_KEYS: 3 });
  res = await txn({ success: [{ get: { key: '/list/', prefix: true } }] }, small);
  t.equal(res.json().responses[0].kvs.length, 3);
  t.equal(res.json().responses[0].more, true);
  res = await txn({ success: [{ put: { key: '/list/x', value: 'x' } }, { get: { key: '/list/', prefix: true, limit: 4 } }] }, small);
  t.equal(res.statusCode, 400);
  t.equal(res.json().code, 'limit_too_large');
  t.equal(res.json().operation, 'success[1]');
  t.match(res.json().detail, /^success\[1\]: /);
  t.equal(await etcdctl('get', '/list/x'), '', 'the refused txn wrote nothing');
});

t.test('nested txn: responses typed and in order, both inner branches', async (t) => {
  const body = {
    compare: [{ key: '/nest/outer', target: 'version', result: '==', version: 0 }],
    success: [
      { put: { key: '/nest/outer', value: 'set' } },
      {
        txn: {
          compare: [{ key: '/nest/inner', target: 'create_revision', result: '==', create_revision: 0 }],
          success: [{ put: { key: '/nest/inner', value: 'first' } }, { get: { key: '/nest/inner' } }],
          failure: [{ get: { key: '/nest/inner' } }, { delete: { key: '/nest/inner', prev_kv: true } }],
        },
      },
      { get: { key: '/nest/', prefix: true, keys_only: true } },
    ],
    failure: [{ delete: { key: '/nest/outer' } }],
  };
  let res = await txn(body);
  t.equal(res.statusCode, 200);
  let out = res.json();
  t.equal(out.succeeded, true);
  t.same(out.responses.map((r: { type: string }) => r.type), ['put', 'txn', 'get']);
  t.equal(out.responses[1].succeeded, true);
  t.same(out.responses[1].responses.map((r: { type: string }) => r.type), ['put', 'get']);
  t.equal(out.responses[1].responses[1].kvs[0].value, 'first', 'ops run in order: the get sees the put');
  t.same(out.responses[2].kvs.map((kv: { key: string }) => kv.key), ['/nest/inner', '/nest/outer']);
  t.equal(await value('/nest/inner'), 'first\n');

  // The outer compare now fails: the failure branch deletes /nest/outer.
  res = await txn(body);
  out = res.json();
  t.equal(out.succeeded, false);
  t.same(out.responses, [{ type: 'delete', deleted: 1 }]);
  t.equal(await etcdctl('get', '/nest/outer'), '');

  // Outer succeeds again; the inner compare fails, its failure branch runs.
  res = await txn(body);
  out = res.json();
  t.equal(out.succeeded, true);
  t.equal(out.responses[1].type, 'txn');
  t.equal(out.responses[1].succeeded, false);
  t.same(out.responses[1].responses.map((r: { type: string }) => r.type), ['get', 'delete']);
  t.equal(out.responses[1].responses[0].kvs[0].value, 'first');
  t.equal(out.responses[1].responses[1].prev_kvs[0].value, 'first');
  t.equal(await etcdctl('get', '/nest/inner'), '');
  t.equal(await value('/nest/outer'), 'set\n');
});

t.test('malformed transactions: 400 naming the operation, nothing written', async (t) => {
  const gets = (n: number) => Array.from({ length: n }, (_, i) => ({ get: { key: `/bad/${i}` } }));
  const puts = (n: number) => Array.from({ length: n }, (_, i) => ({ put: { key: `/bad/${i}`, value: 'x' } }));
  const ok = { put: { key: '/bad/written', value: 'x' } };
  const cases: [label: string, body: unknown, code: string, operation: string | undefined, detail: RegExp][] = [
    ['129 operations', { success: puts(129) }, 'too_many_operations', 'success[128]', /^success\[128\]: more than 128/],
    ['129 compares', { compare: Array.from({ length: 129 }, () => ({ key: '/bad/c', target: 'version', result: '==', version: 0 })), success: [ok] }, 'too_many_operations', 'compare[128]', /128/],
    ['129 nested', { success: [ok, { txn: { failure: gets(129) } }] }, 'too_many_operations', 'success[1].txn.failure[128]', /^success\[1\]\.txn\.failure\[128\]: /],
    ['two kinds in one op', { success: [ok, { put: { key: '/bad/a', value: 'x' }, get: { key: '/bad/a' } }] }, 'validation_failed', 'success[1]', /exactly one of put, get, delete, txn/],
    ['empty op', { failure: [{}] }, 'validation_failed', 'failure[0]', /exactly one of/],
    ['unknown op', { success: [ok, ok, ok, { patch: { key: '/bad/a' } }] }, 'validation_failed', 'success[3]', /^success\[3\]: .*\(patch\)/],
    ['unknown put option', { success: [{ put: { key: '/bad/a', value: 'x', ttl: 5 } }] }, 'validation_failed', 'success[0]', /put .*\(ttl\)/],
    ['put without value', { success: [ok, { put: { key: '/bad/a' } }] }, 'invalid_txn', 'success[1]', /needs value or value_base64/],
    ['ignore_value with a value', { success: [{ put: { key: '/bad/a', value: 'x', ignore_value: true } }] }, 'invalid_txn', 'success[0]', /ignore_value/],
    ['ignore_lease with a lease', { success: [{ put: { key: '/bad/a', value: 'x', lease: 'abc', ignore_lease: true } }] }, 'invalid_txn', 'success[0]', /ignore_lease/],
    ['key and key_base64', { success: [{ get: { key: '/bad/a', key_base64: 'L2JhZC9h' } }] }, 'invalid_txn', 'success[0]', /key or key_base64, not both/],
    ['value and value_base64', { success: [{ put: { key: '/bad/a', value: 'x', value_base64: 'eA==' } }] }, 'invalid_txn', 'success[0]', /not both/],
    ['no key', { success: [ok, { delete: { prefix: true } }] }, 'invalid_txn', 'success[1]', /key or key_base64 is required/],
    ['bad base64', { success: [{ put: { key_base64: 'not*base64', value: 'x' } }] }, 'invalid_base64', 'success[0]', /key_base64 is not valid base64/],
    ['bad value base64', { success: [{ put: { key: '/bad/a', value_base64: 'a' } }] }, 'invalid_base64', 'success[0]', /value_base64/],
    ['empty key', { success: [ok, { put: { key: '', value: 'x' } }] }, 'empty_key', 'success[1]', /must not be empty/],
    ['prefix and range_end', { success: [{ delete: { key: '/bad/', prefix: true, range_end: '/bae' } }] }, 'conflicting_range', 'success[0]', /only one of/],
    ['range_end before key', { failure: [{ get: { key: '/bad/b', range_end: '/bad/a' } }] }, 'invalid_range', 'failure[0]', /range_end must sort after/],
    ['lease not hex', { success: [{ put: { key: '/bad/a', value: 'x', lease: 'ABC' } }] }, 'validation_failed', 'success[0]', /put\.lease must match pattern/],
    ['get limit over LIST_MAX_KEYS', { success: [{ get: { key: '/bad/', prefix: true, limit: 1_000_000 } }] }, 'limit_too_large', 'success[0]', /limit must be at most/],
    ['unknown sort', { success: [{ get: { key: '/bad/', prefix: true, sort: 'size' } }] }, 'validation_failed', 'success[0]', /get\.sort .*"mod"/],
    ['compare without operand', { compare: [{ key: '/bad/a', target: 'mod_revision', result: '==' }], success: [ok] }, 'invalid_txn', 'compare[0]', /needs mod_revision/],
    ['compare value without value', { compare: [{ key: '/bad/a', target: 'value', result: '==' }], success: [ok] }, 'invalid_txn', 'compare[0]', /needs value or value_base64/],
    ['compare with the wrong operand', { compare: [{ key: '/bad/a', target: 'version', result: '==', version: 1 }, { key: '/bad/a', target: 'version', result: '==', mod_revision: 3 }], success: [ok] }, 'invalid_txn', 'compare[1]', /mod_revision does not apply to target version/],
    ['unknown result', { compare: [{ key: '/bad/a', target: 'version', result: '>=', version: 1 }], success: [ok] }, 'validation_failed', 'compare[0]', /result .*"!="/],
    ['unknown target', { compare: [{ key: '/bad/a', target: 'size', result: '==', version: 1 }], success: [ok] }, 'validation_failed', 'compare[0]', /target/],
    ['negative revision', { compare: [{ key: '/bad/a', target: 'mod_revision', result: '==', mod_revision: -1 }], success: [ok] }, 'validation_failed', 'compare[0]', /mod_revision must be >= 0/],
    ['nested malformed compare', { success: [{ txn: { compare: [{ key: '/bad/a', target: 'lease', result: '==' }] } }] }, 'invalid_txn', 'success[0].txn.compare[0]', /needs lease/],
    ['two puts of one key', { success: [ok, { put: { key: '/bad/a', value: '1' } }, { put: { key: '/bad/a', value: '2' } }] }, 'duplicate_key', 'success[2]', /success\[1\] puts too/],
    ['a put of a key deleted in the branch', { failure: [{ delete: { key: '/bad/', prefix: true } }, { put: { key: '/bad/a', value: '1' } }] }, 'duplicate_key', 'failure[1]', /failure\[0\] deletes/],
    ['a put of a key deleted after it', { success: [{ put: { key: '/bad/a', value: '1' } }, { delete: { key: '/bad/a' } }] }, 'duplicate_key', 'success[0]', /success\[1\] deletes/],
    ['unknown member', { success: [ok], otherwise: [] }, 'validation_failed', undefined, /^body: must NOT have additional properties \(otherwise\)/],
    ['not an object', [ok], 'validation_failed', undefined, /^body: must be object/],
  ];
  for (const [label, body, code, operation, detail] of cases) {
    const res = await txn(body);
    t.equal(res.statusCode, 400, label);
    t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8', label);
    const problem = res.json();
    t.equal(problem.code, code, `${label}: ${problem.detail}`);
    t.equal(problem.operation, operation, `${label}: operation`);
    t.match(problem.detail, detail, label);
  }
  t.equal(await etcdctl('get', '/bad/', '--prefix'), '', 'no refused txn wrote anything');

  // The same branch may put one key in both branches of a nested txn (only one runs).
  const res = await txn({
    success: [{ txn: { success: [{ put: { key: '/bad/a', value: 's' } }], failure: [{ put: { key: '/bad/a', value: 'f' } }] } }],
  });
  t.equal(res.statusCode, 200);
  t.equal(await value('/bad/a'), 's\n');
  await etcdctl('del', '/bad/a');
  // A delete to the end of the keyspace next to a put is etcd's call, and etcd 3.4 allows it.
  const fromKey = await txn({ success: [{ delete: { key: '/zzz/', from_key: true } }, { put: { key: '/zzz/a', value: 'x' } }] });
  t.equal(fromKey.statusCode, 200);
});

t.test('etcd refusals inside a txn map to problems', async (t) => {
  let res = await txn({ success: [{ put: { key: '/refused/a', value: 'x', lease: 'abcdef' } }] });
  t.equal(res.statusCode, 404);
  t.equal(res.json().code, 'lease_not_found');
  res = await txn({ success: [{ put: { key: '/refused/a', ignore_value: true } }] });
  t.equal(res.statusCode, 404);
  t.equal(res.json().code, 'key_not_found');
  res = await txn({ success: [{ get: { key: '/refused/a', revision: 999_999_999 } }] });
  t.equal(res.statusCode, 400);
  t.equal(res.json().code, 'future_revision');
  // Duplicates across nesting levels are found by etcd itself.
  res = await txn({
    success: [{ put: { key: '/refused/a', value: '1' } }, { txn: { success: [{ put: { key: '/refused/a', value: '2' } }] } }],
  });
  t.equal(res.statusCode, 400);
  t.equal(res.json().code, 'duplicate_key');
  t.equal(await etcdctl('get', '/refused/', '--prefix'), '');

  const first = (await put('/refused/h', 'a')).json().revision;
  const second = (await put('/refused/h', 'b')).json().revision;
  await etcdctl('compaction', String(second));
  res = await txn({ success: [{ get: { key: '/refused/h', revision: first } }] });
  t.equal(res.statusCode, 410);
  t.equal(res.json().code, 'revision_compacted');
});

t.test('an empty txn succeeds without writing', async (t) => {
  const before = JSON.parse(await etcdctl('get', 'x', '--write-out=json')).header.revision;
  const res = await txn({});
  t.equal(res.statusCode, 200);
  t.same(res.json(), { succeeded: true, revision: before, responses: [] });
});
