// Limits against abuse: a request rate per caller, a strict rate of password
// checks, the streams a caller may hold open (src/auth/stream-caps.ts), a
// message rate per websocket, and the time a client has to send a body.
//
// The request rate is @fastify/rate-limit's hook, added to every route
// registered after this plugin (health, readiness and metrics come before it
// and are never limited). The hook belongs to the route, so it runs after the
// protected scope's authentication: the key is the caller's etcd user, or the
// client address where there is none (Fastify's req.ip, which believes
// X-Forwarded-For only with trustProxy, and the gateway does not set it).
import rateLimit, { normalizeIP } from '@fastify/rate-limit';
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { WebSocket } from 'ws';
import { CLOSE_POLICY_VIOLATION, StreamCaps } from '../auth/stream-caps.js';
import { rateLimited } from '../errors.js';
import { ProblemRef } from '../schemas/common.js';

export interface LimitsOptions {
  /** Requests per window per caller; 0: none. */
  rateLimitMax: number;
  rateLimitWindowMs: number;
  /** Password checks per window per client address and per user name; 0: none. */
  authRateLimitMax: number;
  authRateLimitWindowMs: number;
  streamsPerSubject: number;
  /** Messages per second a client may send on one websocket; 0: none. */
  wsMaxMessagesPerSecond: number;
  /** Time a client has to send a request body. */
  bodyTimeoutMs: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Places for each caller's streams, long-polls and waits. */
    streamCaps: StreamCaps;
    /**
     * Counts one password check (token exchange) for the client's address and
     * for the user name, before etcd runs its bcrypt; throws 429 over the limit.
     */
    limitPasswordChecks: (req: FastifyRequest, username: string) => Promise<void>;
  }
}

// The plugin's informational headers cost every answer three writes; the
// refusal carries Retry-After itself (through the error handlers, so /v3
// answers it in etcd's error body).
const NO_HEADERS = { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false, 'retry-after': false } as const;

export default fp<LimitsOptions>(
  async (app, opts) => {
    app.decorate('streamCaps', new StreamCaps(opts.streamsPerSubject));

    await app.register(rateLimit, {
      global: opts.rateLimitMax > 0,
      max: opts.rateLimitMax,
      timeWindow: opts.rateLimitWindowMs,
      hook: 'onRequest',
      cache: 10_000,
      keyGenerator: (req) => (req.caller ? `user:${req.caller.username}` : normalizeIP(req.ip)),
      addHeaders: NO_HEADERS,
      addHeadersOnExceeding: NO_HEADERS,
      errorResponseBuilder: (_req, ctx) =>
        rateLimited(`more than ${ctx.max} requests in ${opts.rateLimitWindowMs} ms (RATE_LIMIT_MAX): retry later`, ctx.ttl / 1000),
    });
    // Every route that documents its problems documents this one too.
    if (opts.rateLimitMax > 0) {
      app.addHook('onRoute', (route) => {
        const response = route.schema?.response as Record<string, unknown> | undefined;
        if (route.config?.rateLimit === false || !response || response[429] || !response[400]) return;
        route.schema = {
          ...route.schema,
          response: { ...response, 429: { description: 'Too many requests (Retry-After)', content: { 'application/problem+json': { schema: ProblemRef } } } },
        };
      });
    }

    // Password checks: each is a bcrypt in etcd, so guessing is slowed per
    // address and per user name (a guesser spreading over addresses still
    // meets the second). Every check counts, right or wrong: each costs etcd
    // a bcrypt, and the count is taken before etcd's answer is known.
    const names = new WeakMap<FastifyRequest, string>();
    const byAddress = app.createRateLimit({ max: opts.authRateLimitMax, timeWindow: opts.authRateLimitWindowMs, keyGenerator: (req) => normalizeIP(req.ip) });
    const byName = app.createRateLimit({ max: opts.authRateLimitMax, timeWindow: opts.authRateLimitWindowMs, keyGenerator: (req) => names.get(req) ?? '' });
    app.decorate('limitPasswordChecks', async (req: FastifyRequest, username: string) => {
      if (opts.authRateLimitMax === 0) return;
      names.set(req, username);
      const checks = await Promise.all([byAddress(req), byName(req)]);
      const waits = checks.flatMap((c) => (!c.isAllowed && c.isExceeded ? [c.ttlInSeconds] : []));
      if (waits.length === 0) return;
      const wait = Math.max(...waits);
      throw rateLimited(`too many password checks for this address or user (AUTH_RATE_LIMIT_MAX): retry in ${wait} s`, wait);
    });

    // Every websocket, whatever its route, from the moment it opens.
    if (opts.wsMaxMessagesPerSecond > 0) {
      app.websocketServer.on('connection', (socket: WebSocket) => limitMessageRate(socket, opts.wsMaxMessagesPerSecond));
    }

    // A body trickled in holds its socket and its parser: the whole body must
    // arrive in time. Requests without a body pay nothing; an answer already
    // streaming (a /v3 stream reads its body while it answers) is exempt.
    app.addHook('onRequest', (req, reply, done) => {
      const raw = req.raw;
      const length = raw.headers['content-length'];
      if (raw.complete || length === '0' || (length === undefined && raw.headers['transfer-encoding'] === undefined)) return done();
      const timer = setTimeout(() => {
        if (raw.complete || raw.readableEnded || reply.raw.headersSent) return;
        req.log.info({ timeoutMs: opts.bodyTimeoutMs }, 'request body not received in time: connection closed');
        // As Node answers its own request timeout: the connection cannot be
        // reused with half a body in it.
        if (raw.socket?.writable) raw.socket.write('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n');
        raw.destroy();
      }, opts.bodyTimeoutMs);
      timer.unref();
      raw.once('close', () => clearTimeout(timer));
      done();
    });
  },
  { name: 'limits', fastify: '5.x', dependencies: ['@fastify/websocket'] },
);

/**
 * A token bucket per socket: `perSecond` messages a second, bursts up to as
 * many. Over it the socket is closed with 1008 and read no further.
 */
function limitMessageRate(socket: WebSocket, perSecond: number): void {
  let tokens = perSecond;
  let at = Date.now();
  const onMessage = () => {
    const now = Date.now();
    tokens = Math.min(perSecond, tokens + ((now - at) * perSecond) / 1000);
    at = now;
    if (tokens >= 1) {
      tokens -= 1;
      return;
    }
    socket.off('message', onMessage);
    socket.close(CLOSE_POLICY_VIOLATION, `more than ${perSecond} messages per second (WS_MAX_MESSAGES_PER_SECOND)`);
    // A client still flooding is not read (its close frame included): it is
    // cut off once the close frame has had time to leave.
    socket.pause();
    setTimeout(() => socket.terminate(), 1000).unref();
  };
  socket.on('message', onMessage);
}
