// Logs are JSON lines with request ids; credentials never reach them.
import { Writable } from 'node:stream';
import t from 'tap';
import { ConfigError, loadConfig } from '../src/config.js';
import { redactUrl } from '../src/logging.js';
import { buildTestApp } from './helpers/app.js';

/** A log destination that keeps each line written to it. */
function capture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { lines, stream };
}

t.test('Authorization and cookies are redacted; request ids are logged and returned', async (t) => {
  const { lines, stream } = capture();
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

t.test('credentials in the query string are redacted from logged URLs', async (t) => {
  const { lines, stream } = capture();
  const app = await buildTestApp(t, ['http://127.0.0.1:1'], { LOG_LEVEL: 'info' }, { stream });
  await app.inject({ url: '/healthz?token=tok-secret&Access_Token=at-secret&ticket=ticket-secret&keep=visible' });
  const log = lines.join('\n');
  t.notMatch(log, /tok-secret|at-secret|ticket-secret/);
  const urls = lines.map((l) => JSON.parse(l).req?.url).filter(Boolean);
  t.same(urls, ['/healthz?token=[redacted]&Access_Token=[redacted]&ticket=[redacted]&keep=visible']);
  t.equal(redactUrl('/v1/watch/k?prefix&access_token=a.b.c#x'), '/v1/watch/k?prefix&access_token=[redacted]#x');
});

t.test('configuration errors never repeat a secret', async (t) => {
  const refusal = (env: Record<string, string>) => {
    try {
      loadConfig(env);
      return '';
    } catch (err) {
      t.ok(err instanceof ConfigError);
      return (err as Error).message;
    }
  };
  const short = refusal({ AUTH_JWT_SECRET: 'hunter2-but-too-short' });
  t.match(short, /^AUTH_JWT_SECRET: /);
  t.notMatch(short, /hunter2/);
  t.notMatch(refusal({ ETCD_PASSWORD: 'x', AUTH_JWT_SECRET: 'short' }), /"short"|"x"/);
  t.equal(refusal({ PORT: '70000' }), 'PORT: must be <= 65535 (got "70000")', 'other values are still shown');
});
