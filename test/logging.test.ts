// Logs are JSON lines with request ids; credentials never reach them.
import { Writable } from 'node:stream';
import t from 'tap';
import { buildTestApp } from './helpers/app.js';

t.test('Authorization and cookies are redacted; request ids are logged and returned', async (t) => {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  const app = await buildTestApp(t, ['http://127.0.0.1:1'], { LOG_LEVEL: 'info' }, { stream });
  const res = await app.inject({
    url: '/healthz',
    headers: { authorization: 'Bearer very-secret-token', cookie: 'session=also-secret', 'x-request-id': 'req-123' },
  });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['x-request-id'], 'req-123');
  const log = lines.join('\n');
  t.notMatch(log, /very-secret-token/);
  t.notMatch(log, /also-secret/);
  t.match(log, /\[redacted\]/);
  const entries = lines.map((l) => JSON.parse(l));
  t.ok(entries.every((e) => e.reqId === 'req-123' || !e.reqId), 'every request log line carries the id');
  t.ok(entries.some((e) => e.req?.headers?.authorization === '[redacted]'));
});
