// The key API through the gateway against a real 3-member etcd cluster, each
// result checked in etcd itself with etcdctl.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { buildTestApp } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints);
const { etcdctl } = cluster;

const put = (url: string, body: string | Buffer, headers: Record<string, string> = {}) =>
  app.inject({ method: 'PUT', url, payload: body, headers: { 'content-type': 'text/plain', ...headers } });
const get = (url: string, headers: Record<string, string> = {}) => app.inject({ method: 'GET', url, headers });
const del = (url: string, headers: Record<string, string> = {}) => app.inject({ method: 'DELETE', url, headers });
const jsonGet = (url: string) => get(url, { accept: 'application/json' });

t.test('the seed walkthrough: put, get, update, del, get --prefix, --limit, del --prefix', async (t) => {
  // etcdctl put /test/key1 "Hello world"
  let res = await put('/v1/kv//test/key1', 'Hello world');
  t.equal(res.statusCode, 201);
  const created = res.json();
  t.equal(created.created, true);
  t.equal(res.headers['x-etcd-revision'], String(created.revision));
  t.match(res.headers['x-etcd-cluster-id'], /^[0-9a-f]+$/);
  t.equal(await etcdctl('get', '/test/key1', '--print-value-only'), 'Hello world\n');

  // etcdctl get /test/key1
  res = await get('/v1/kv//test/key1');
  t.equal(res.statusCode, 200);
  t.equal(res.body, 'Hello world');
  t.equal(res.headers['content-type'], 'application/octet-stream');
  t.equal(res.headers['x-content-type-options'], 'nosniff');
  t.equal(res.headers.etag, `"${created.revision}"`);
  t.equal(res.headers['x-etcd-mod-revision'], String(created.revision));
  t.equal(res.headers['x-etcd-create-revision'], String(created.revision));
  t.equal(res.headers['x-etcd-version'], '1');
  t.notOk(res.headers['x-etcd-lease']);

  // etcdctl --write-out="json" get /test/key1
  res = await jsonGet('/v1/kv//test/key1');
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8');
  t.same(res.json(), {
    key: '/test/key1',
    value: 'Hello world',
    create_revision: created.revision,
    mod_revision: created.revision,
    version: 1,
    lease: null,
  });
  const etcdJson = JSON.parse(await etcdctl('get', '/test/key1', '--write-out=json'));
  t.equal(etcdJson.kvs[0].mod_revision, created.revision, 'revision numbers match etcdctl');

  // etcdctl put /test/key1 "baihezhuo": replaced, not created
  res = await put('/v1/kv//test/key1', 'baihezhuo');
  t.equal(res.statusCode, 200);
  t.equal(res.json().created, false);
  t.equal(await etcdctl('get', '/test/key1', '--print-value-only'), 'baihezhuo\n');

  // etcdctl put /test/key2 1234 ; etcdctl del /test/key2
  t.equal((await put('/v1/kv//test/key2', '1234')).statusCode, 201);
  res = await del('/v1/kv//test/key2');
  t.equal(res.statusCode, 200);
  t.equal(res.json().deleted, 1);
  t.equal(await etcdctl('get', '/test/key2'), '');

  // etcdctl get --prefix /test
  await put('/v1/kv//test/key2', 'two');
  await put('/v1/kv//test/key3', 'three');
  res = await get('/v1/kv//test?prefix');
  t.equal(res.statusCode, 200);
  let listing = res.json();
  t.same(
    listing.kvs.map((kv: { key: string; value: string }) => [kv.key, kv.value]),
    [
      ['/test/key1', 'baihezhuo'],
      ['/test/key2', 'two'],
      ['/test/key3', 'three'],
    ],
  );
  t.equal(listing.count, 3);
  t.equal(listing.more, false);
  t.notOk(listing.next);

  // etcdctl get --prefix --limit=2 /test
  res = await get('/v1/kv//test?prefix&limit=2');
  listing = res.json();
  t.same(listing.kvs.map((kv: { key: string }) => kv.key), ['/test/key1', '/test/key2']);
  t.equal(listing.more, true);
  t.equal(listing.count, 3);
  t.type(listing.next, 'string');

  // etcdctl del --prefix /test
  res = await del('/v1/kv//test?prefix');
  t.equal(res.json().deleted, 3);
  t.equal(await etcdctl('get', '--prefix', '/test'), '');
});

t.test('keys are literal: slashes, percent-encoding, unicode, reserved characters', async (t) => {
  const cases: [string, string][] = [
    ['/v1/kv/%2Fenc%2Fkey1', '/enc/key1'],
    ['/v1/kv//enc/key1', '/enc/key1'],
    ['/v1/kv/plain', 'plain'],
    ['/v1/kv/with%20space', 'with space'],
    ['/v1/kv/%E9%85%8D%E7%BD%AE/%E9%94%AE', '配置/键'],
    ['/v1/kv/q%3Fmark', 'q?mark'],
    ['/v1/kv/hash%23tag', 'hash#tag'],
    ['/v1/kv/100%25', '100%'],
    ['/v1/kv/trailing/', 'trailing/'],
    ['/v1/kv///double', '//double'],
  ];
  for (const [url, key] of cases) {
    const value = `value of ${key}`;
    t.equal((await put(url, value)).statusCode < 300, true, `PUT ${url}`);
    t.equal(await etcdctl('get', key, '--print-value-only'), `${value}\n`, `etcdctl sees ${JSON.stringify(key)}`);
    t.equal((await get(url)).body, value, `GET ${url}`);
  }
  // And the other way round: etcdctl writes, the gateway reads.
  await etcdctl('put', '/from/etcdctl', 'written by etcdctl');
  t.equal((await get('/v1/kv//from/etcdctl')).body, 'written by etcdctl');
  // A long key is not cut by the router.
  const longKey = `/long/${'k'.repeat(5000)}`;
  t.equal((await put(`/v1/kv/${longKey}`, 'x')).statusCode, 201);
  t.equal((await get(`/v1/kv/${longKey}`)).body, 'x');
});

t.test('keys that are not UTF-8 use the base64url form', async (t) => {
  const key = Buffer.from([0x2f, 0x62, 0x69, 0x6e, 0xff, 0xfe, 0x00, 0x01]);
  const b64 = key.toString('base64url');
  let res = await put(`/v1/kv/${b64}?key_encoding=base64url`, 'binary key');
  t.equal(res.statusCode, 201);
  res = await jsonGet(`/v1/kv/${b64}?key_encoding=base64url`);
  t.equal(res.json().key_base64, key.toString('base64'));
  t.notOk(res.json().key);
  // etcdctl reads it back by its hex-escaped bytes through a prefix listing.
  const out = JSON.parse(await etcdctl('get', '/bin', '--prefix', '--write-out=json'));
  t.equal(Buffer.from(out.kvs[0].key, 'base64').toString('hex'), key.toString('hex'));
  res = await get('/v1/kv/%2Fbin?prefix');
  t.equal(res.json().kvs[0].key_base64, key.toString('base64'));

  res = await get('/v1/kv/not*base64?key_encoding=base64url');
  t.equal(res.statusCode, 400);
  t.equal(res.json().code, 'invalid_base64');
  t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
});

t.test('values are bytes: binary, JSON verbatim, empty, any content type', async (t) => {
  const bytes = randomBytes(4096);
  let res = await put('/v1/kv//bytes/random', bytes, { 'content-type': 'application/octet-stream' });
  t.equal(res.statusCode, 201);
  res = await get('/v1/kv//bytes/random');
  t.ok(res.rawPayload.equals(bytes), 'binary round-trips');
  const viaEtcdctl = JSON.parse(await etcdctl('get', '/bytes/random', '--write-out=json'));
  t.equal(viaEtcdctl.kvs[0].value, bytes.toString('base64'), 'etcd holds the same bytes');
  res = await jsonGet('/v1/kv//bytes/random');
  t.equal(res.json().value_base64, bytes.toString('base64'));
  t.notOk('value' in res.json());

  const doc = '{ "a": 1,\n  "b": [true, null] }';
  await put('/v1/kv//bytes/json', doc, { 'content-type': 'application/json' });
  t.equal(await etcdctl('get', '/bytes/json', '--print-value-only'), `${doc}\n`, 'JSON stored as its exact bytes');

  res = await app.inject({ method: 'PUT', url: '/v1/kv//bytes/empty' });
  t.equal(res.statusCode, 201);
  res = await get('/v1/kv//bytes/empty');
  t.equal(res.statusCode, 200);
  t.equal(res.body, '');

  res = await app.inject({ method: 'PUT', url: '/v1/kv//bytes/form', payload: 'a=1&b=2', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
  t.equal(res.statusCode, 201);
  t.equal((await get('/v1/kv//bytes/form')).body, 'a=1&b=2');
});

t.test('history, serializable reads and ETag revalidation', async (t) => {
  const first = (await put('/v1/kv//hist/k', 'v1')).json().revision;
  await put('/v1/kv//hist/k', 'v2');
  t.equal((await get(`/v1/kv//hist/k?revision=${first}`)).body, 'v1');
  t.equal((await get('/v1/kv//hist/k')).body, 'v2');
  t.equal((await get('/v1/kv//hist/k?serializable')).body, 'v2');
  const res = await get('/v1/kv//hist/k');
  const again = await get('/v1/kv//hist/k', { 'if-none-match': res.headers.etag as string });
  t.equal(again.statusCode, 304);
  t.equal(again.body, '');
  t.equal((await get('/v1/kv//hist/k?revision=999999999')).json().code, 'future_revision');
});

t.test('prev_kv on put and delete', async (t) => {
  await put('/v1/kv//pk/a', 'old');
  let res = await put('/v1/kv//pk/a?prev_kv', 'new');
  t.equal(res.json().prev_kv.value, 'old');
  res = await put('/v1/kv//pk/b?prev_kv', 'first');
  t.notOk(res.json().prev_kv, 'no previous pair for a new key');
  res = await del('/v1/kv//pk/?prefix&prev_kv');
  t.same(res.json().prev_kvs.map((kv: { value: string }) => kv.value), ['new', 'first']);
  t.equal(res.json().deleted, 2);
  res = await del('/v1/kv//pk/a');
  t.equal(res.statusCode, 200);
  t.equal(res.json().deleted, 0, 'deleting a missing key is not an error, as in etcd');
});

t.test('conditional writes: If-None-Match and If-Match', async (t) => {
  let res = await put('/v1/kv//cas/k', 'one', { 'if-none-match': '*' });
  t.equal(res.statusCode, 201);
  const rev = res.json().revision;
  t.equal(res.headers.etag, `"${rev}"`);

  res = await put('/v1/kv//cas/k', 'two', { 'if-none-match': '*' });
  t.equal(res.statusCode, 412);
  t.equal(res.json().code, 'precondition_failed');
  t.equal(res.json().current.value, 'one');
  t.equal(await etcdctl('get', '/cas/k', '--print-value-only'), 'one\n', 'the refused write left etcd alone');

  res = await put('/v1/kv//cas/k', 'two', { 'if-match': `"${rev + 1000}"` });
  t.equal(res.statusCode, 412);
  t.equal(res.json().current.mod_revision, rev);
  t.equal(res.headers.etag, `"${rev}"`);

  res = await put('/v1/kv//cas/k', 'two', { 'if-match': `"${rev}"` });
  t.equal(res.statusCode, 200);
  t.equal(res.json().created, false);
  const rev2 = res.json().revision;

  res = await put('/v1/kv//cas/missing', 'x', { 'if-match': '*' });
  t.equal(res.statusCode, 412);
  t.equal(res.json().current, null);
  t.equal(await etcdctl('get', '/cas/missing'), '');
  res = await put('/v1/kv//cas/k', 'three', { 'if-match': '*' });
  t.equal(res.statusCode, 200);
  const rev3 = res.json().revision;
  t.ok(rev3 > rev2);

  res = await del('/v1/kv//cas/k', { 'if-match': `"${rev2}"` });
  t.equal(res.statusCode, 412);
  t.equal(await etcdctl('get', '/cas/k', '--print-value-only'), 'three\n');
  res = await del('/v1/kv//cas/k', { 'if-match': `"${rev3}"` });
  t.equal(res.statusCode, 200);
  t.equal(res.json().deleted, 1);

  for (const bad of ['abc', '"1", "2"', '"-1"', '"0"']) {
    res = await put('/v1/kv//cas/k', 'x', { 'if-match': bad });
    t.equal(res.statusCode, 400, `If-Match: ${bad}`);
    t.equal(res.json().code, 'invalid_precondition');
  }
  res = await put('/v1/kv//cas/k', 'x', { 'if-match': '*', 'if-none-match': '*' });
  t.equal(res.statusCode, 400);
  res = await put('/v1/kv//cas/k', 'x', { 'if-none-match': '"5"' });
  t.equal(res.statusCode, 400);
  res = await del('/v1/kv//cas/?prefix', { 'if-match': '"5"' });
  t.equal(res.statusCode, 400);
  t.equal(await etcdctl('get', '/cas/k'), '', 'no refused request wrote anything');
});

t.test('listings: ranges, options, cursors pinned to the first page', async (t) => {
  for (let i = 0; i < 7; i++) await put(`/v1/kv//ls/k${i}`, `v${i}`);
  await put('/v1/kv//ls/k3', 'v3-updated');
  await put('/v1/kv//lt/outside', 'x');

  // Paging with limit and next: all keys, in order, at the first page's revision.
  let res = await get('/v1/kv//ls/?prefix&limit=3');
  let page = res.json();
  const pinned = page.revision;
  t.equal(page.kvs.length, 3);
  await put('/v1/kv//ls/k5', 'changed after the first page');
  await put('/v1/kv//ls/k9', 'added after the first page');
  const keys: string[] = page.kvs.map((kv: { key: string }) => kv.key);
  let values: string[] = page.kvs.map((kv: { value: string }) => kv.value);
  while (page.next) {
    res = await get(`/v1/kv//ls/?prefix&limit=3&cursor=${page.next}`);
    t.equal(res.statusCode, 200);
    page = res.json();
    t.equal(page.revision, pinned, 'every page is read at the first page revision');
    keys.push(...page.kvs.map((kv: { key: string }) => kv.key));
    values.push(...page.kvs.map((kv: { value: string }) => kv.value));
  }
  t.same(keys, ['/ls/k0', '/ls/k1', '/ls/k2', '/ls/k3', '/ls/k4', '/ls/k5', '/ls/k6']);
  t.equal(values[5], 'v5', 'later writes are not seen by later pages');

  // Descending pages.
  const desc: string[] = [];
  let url = '/v1/kv//ls/?prefix&limit=4&order=desc';
  for (;;) {
    page = (await get(url)).json();
    desc.push(...page.kvs.map((kv: { key: string }) => kv.key));
    if (!page.next) break;
    url = `/v1/kv//ls/?prefix&limit=4&order=desc&cursor=${page.next}`;
  }
  t.same(desc, ['/ls/k9', '/ls/k6', '/ls/k5', '/ls/k4', '/ls/k3', '/ls/k2', '/ls/k1', '/ls/k0']);

  // keys_only, count_only, sort, revisions filters.
  page = (await get('/v1/kv//ls/?prefix&keys_only')).json();
  t.notOk('value' in page.kvs[0]);
  t.equal(page.kvs[0].key, '/ls/k0');
  page = (await get('/v1/kv//ls/?prefix&count_only')).json();
  t.equal(page.count, 8);
  t.same(page.kvs, []);
  page = (await get('/v1/kv//ls/?prefix&sort=mod&order=desc&limit=2')).json();
  t.same(page.kvs.map((kv: { key: string }) => kv.key), ['/ls/k9', '/ls/k5']);
  t.notOk(page.next, 'no cursor outside key order');
  page = (await get('/v1/kv//ls/?prefix&sort=version&order=desc&limit=1')).json();
  t.equal(page.kvs[0].key, '/ls/k3');
  page = (await get('/v1/kv//ls/?prefix&sort=value')).json();
  t.equal(page.kvs[0].value, 'added after the first page');
  page = (await get(`/v1/kv//ls/?prefix&min_mod_revision=${pinned + 1}`)).json();
  t.same(page.kvs.map((kv: { key: string }) => kv.key), ['/ls/k5', '/ls/k9']);
  page = (await get(`/v1/kv//ls/?prefix&max_create_revision=${pinned}&min_create_revision=${pinned - 8}&keys_only`)).json();
  t.equal(page.kvs.length, 7);
  page = (await get('/v1/kv//ls/?prefix&min_create_revision=1&max_mod_revision=1')).json();
  t.equal(page.kvs.length, 0);
  page = (await get(`/v1/kv//ls/?prefix&revision=${pinned}`)).json();
  t.equal(page.kvs.length, 7);

  // range_end and from_key.
  page = (await get('/v1/kv//ls/k2?range_end=%2Fls%2Fk5')).json();
  t.same(page.kvs.map((kv: { key: string }) => kv.key), ['/ls/k2', '/ls/k3', '/ls/k4']);
  page = (await get('/v1/kv//ls/k6?from_key&keys_only')).json();
  t.same(page.kvs.map((kv: { key: string }) => kv.key).slice(0, 3), ['/ls/k6', '/ls/k9', '/lt/outside']);

  // The whole keyspace.
  page = (await get('/v1/kv/?prefix&count_only')).json();
  t.equal(page.count, JSON.parse(await etcdctl('get', '--from-key', '', '--keys-only', '--write-out=json')).count);
});

t.test('listing cap: a listing without limit stops at LIST_MAX_KEYS with more and next', async (t) => {
  const small = await buildTestApp(t, cluster.endpoints, { LIST_MAX_KEYS: 5 });
  for (let i = 0; i < 12; i++) await put(`/v1/kv//cap/${String(i).padStart(2, '0')}`, 'x');
  let page = (await small.inject({ url: '/v1/kv//cap/?prefix' })).json();
  t.equal(page.kvs.length, 5);
  t.equal(page.more, true);
  const seen = page.kvs.length;
  let total = seen;
  while (page.next) {
    page = (await small.inject({ url: `/v1/kv//cap/?prefix&cursor=${page.next}` })).json();
    total += page.kvs.length;
  }
  t.equal(total, 12);
  const res = await small.inject({ url: '/v1/kv//cap/?prefix&limit=6' });
  t.equal(res.statusCode, 400);
  t.equal(res.json().code, 'limit_too_large');
});

t.test('directory view with separator', async (t) => {
  for (const k of ['a', 'b/1', 'b/2', 'b/c/3', 'c', 'd/1', 'e/x/y/z', 'f']) await put(`/v1/kv//dir/${k}`, k);
  let page = (await get('/v1/kv//dir/?separator=/')).json();
  t.same(page.kvs.map((kv: { key: string }) => kv.key), ['/dir/a', '/dir/c', '/dir/f']);
  t.same(page.prefixes.map((p: { key: string }) => p.key), ['/dir/b/', '/dir/d/', '/dir/e/']);
  t.equal(page.count, 6);
  t.equal(page.more, false);
  page = (await get('/v1/kv//dir/b/?separator=/')).json();
  t.same(page.kvs.map((kv: { key: string }) => kv.key), ['/dir/b/1', '/dir/b/2']);
  t.same(page.prefixes.map((p: { key: string }) => p.key), ['/dir/b/c/']);
  // Paged directory view.
  const children: string[] = [];
  let url = '/v1/kv//dir/?separator=/&limit=2';
  for (;;) {
    page = (await get(url)).json();
    children.push(...page.kvs.map((kv: { key: string }) => kv.key), ...page.prefixes.map((p: { key: string }) => p.key));
    if (!page.next) break;
    url = `/v1/kv//dir/?separator=/&limit=2&cursor=${page.next}`;
  }
  t.same(children.sort(), ['/dir/a', '/dir/b/', '/dir/c', '/dir/d/', '/dir/e/', '/dir/f']);
  // Root of the keyspace.
  page = (await get('/v1/kv/?separator=/&keys_only')).json();
  t.ok(page.prefixes.some((p: { key: string }) => p.key === '/'), 'keys starting with / roll up under "/"');
  let res = await get('/v1/kv//dir/?separator=/&sort=mod');
  t.equal(res.statusCode, 400);
  res = await get('/v1/kv//dir/?separator=/&count_only');
  t.equal(res.statusCode, 400);
});

t.test('bad input answers 400 problem+json and touches nothing', async (t) => {
  const cases: [string, string, string][] = [
    ['GET', '/v1/kv//x?limit=abc&prefix', 'validation_failed'],
    ['GET', '/v1/kv//x?limit=0&prefix', 'validation_failed'],
    ['GET', '/v1/kv//x?revision=-3', 'validation_failed'],
    ['GET', '/v1/kv//x?sort=size&prefix', 'validation_failed'],
    ['GET', '/v1/kv//x?prefx', 'validation_failed'],
    ['GET', '/v1/kv//x?prefix=maybe', 'validation_failed'],
    ['GET', '/v1/kv//x?prefix&range_end=y', 'conflicting_range'],
    ['GET', '/v1/kv//x?range_end=%2Fa', 'invalid_range'],
    ['GET', '/v1/kv//x?limit=2', 'invalid_option'],
    ['GET', '/v1/kv//x?prefix&cursor=bm90LWEtY3Vyc29y', 'invalid_cursor'],
    ['GET', '/v1/kv/', 'empty_key'],
    ['PUT', '/v1/kv/', 'empty_key'],
    ['PUT', '/v1/kv//x?lease=xyz', 'validation_failed'],
    ['PUT', '/v1/kv//x?ttl=0', 'validation_failed'],
    ['DELETE', '/v1/kv/', 'empty_key'],
    ['DELETE', '/v1/kv//x?prefix&from_key', 'conflicting_range'],
  ];
  const before = await etcdctl('get', '--from-key', '', '--keys-only', '--write-out=json');
  for (const [method, url, code] of cases) {
    const res = await app.inject({ method: method as 'GET', url, payload: method === 'PUT' ? 'v' : undefined });
    t.equal(res.statusCode, 400, `${method} ${url}`);
    t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
    const body = res.json();
    t.equal(body.code, code, `${method} ${url} → ${code}`);
    t.equal(body.status, 400);
    t.equal(body.type, `urn:etcd-gateway:problem:${code}`);
    t.type(body.detail, 'string');
  }
  // A cursor from one range does not continue another.
  await put('/v1/kv//cur/a', '1');
  await put('/v1/kv//cur/b', '2');
  const next = (await get('/v1/kv//cur/?prefix&limit=1')).json().next;
  const res = await get(`/v1/kv//other/?prefix&limit=1&cursor=${next}`);
  t.equal(res.json().code, 'invalid_cursor');
  const after = await etcdctl('get', '--from-key', '', '--keys-only', '--write-out=json');
  t.equal(JSON.parse(after).count, JSON.parse(before).count + 2, 'only the two cursor keys were written');
});

t.test('404 for absent keys and unknown routes', async (t) => {
  let res = await get('/v1/kv//absent/key');
  t.equal(res.statusCode, 404);
  t.equal(res.json().code, 'key_not_found');
  t.ok(res.headers['x-etcd-revision'], 'the 404 still says which revision it read');
  res = await get('/v1/nothing-here');
  t.equal(res.statusCode, 404);
  t.equal(res.json().code, 'route_not_found');
});

t.test('413 for a value over the body limit, before it reaches etcd', async (t) => {
  const res = await put('/v1/kv//big/value', Buffer.alloc(1_572_864 + 1, 1), { 'content-type': 'application/octet-stream' });
  t.equal(res.statusCode, 413);
  t.equal(res.json().code, 'body_too_large');
  t.equal(await etcdctl('get', '/big/value'), '');
  // Within our limit but over etcd's: etcd's own refusal maps to 413 as well.
  const near = await buildTestApp(t, cluster.endpoints, { BODY_LIMIT: 4 * 1024 * 1024 });
  const res2 = await near.inject({ method: 'PUT', url: '/v1/kv//big/value', payload: Buffer.alloc(2 * 1024 * 1024, 1), headers: { 'content-type': 'application/octet-stream' } });
  t.equal(res2.statusCode, 413);
  t.equal(res2.json().code, 'request_too_large');
  t.equal(await etcdctl('get', '/big/value'), '');
});

t.test('410 for a compacted revision', async (t) => {
  const first = (await put('/v1/kv//compact/k', 'a')).json().revision;
  const second = (await put('/v1/kv//compact/k', 'b')).json().revision;
  await etcdctl('compaction', String(second));
  let res = await get(`/v1/kv//compact/k?revision=${first}`);
  t.equal(res.statusCode, 410);
  t.equal(res.json().code, 'revision_compacted');
  t.equal(res.json().grpc_status, 'OUT_OF_RANGE');
  res = await get(`/v1/kv//compact/?prefix&revision=${first}`);
  t.equal(res.statusCode, 410);
});
