// The "naive 50-line Fastify + etcd3 gateway" column of issue 14: the least a
// gateway must do for the benchmark's /v1 requests (bench/wrk/*.lua), with no
// auth, limits, problem+json or logging. It shows what Fastify and the etcd3
// client cost by themselves; never use it for anything else.
//
//   ETCD_ENDPOINTS=http://127.0.0.1:2379 PORT=8081 tsx bench/naive-gateway.ts
import { Etcd3 } from 'etcd3';
import Fastify from 'fastify';

const client = new Etcd3({ hosts: (process.env.ETCD_ENDPOINTS ?? 'http://127.0.0.1:2379').split(',') });
const app = Fastify();
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

const kv = (kv: { key: Buffer; value: Buffer; create_revision: string; mod_revision: string; version: string; lease: string }) => ({
  key: kv.key.toString(),
  value: kv.value.toString(),
  create_revision: Number(kv.create_revision),
  mod_revision: Number(kv.mod_revision),
  version: Number(kv.version),
  lease: kv.lease,
});

app.get('/healthz', async () => ({ ok: true }));

app.get<{ Params: { '*': string }; Querystring: Record<string, string> }>('/v1/kv/*', async (req, reply) => {
  const key = Buffer.from(req.params['*']);
  const serializable = 'serializable' in req.query;
  if ('prefix' in req.query) {
    // The prefix's range end: its last byte plus one (enough for the benchmark's keys).
    const end = Buffer.from(key);
    end[end.length - 1]!++;
    const res = await client.kv.range({ key, range_end: end, serializable, limit: 1000 });
    return { revision: Number(res.header.revision), count: Number(res.count), more: res.more, kvs: res.kvs.map(kv) };
  }
  const res = await client.kv.range({ key, serializable });
  const found = res.kvs[0];
  if (!found) return reply.code(404).send({ error: 'not found' });
  return reply.header('content-type', 'application/octet-stream').header('etag', `"${found.mod_revision}"`).send(found.value);
});

app.put<{ Params: { '*': string }; Body: Buffer }>('/v1/kv/*', async (req, reply) => {
  const res = await client.kv.put({ key: Buffer.from(req.params['*']), value: req.body, prev_kv: true });
  return reply.code(res.prev_kv ? 200 : 201).send({ revision: Number(res.header.revision) });
});

await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 8081) });
