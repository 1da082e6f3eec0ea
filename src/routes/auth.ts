import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { setTimeout as sleep } from 'node:timers/promises';
import { Type } from 'typebox';
import { refuseExpiredStream } from '../auth/expiry.js';
import { Problem, toProblem } from '../errors.js';
import { errorResponses } from '../schemas/common.js';
import { TokenRequestSchema } from '../schemas/auth.js';

// Every answer of the token exchange takes at least this long, so that the
// time it takes does not tell a wrong password or an unknown user from a
// right one (etcd's bcrypt check costs tens of milliseconds).
export const MIN_EXCHANGE_MS = 250;

/** Public: exchanging etcd credentials for a gateway token. */
export const tokenRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/auth/token',
    {
      schema: {
        tags: ['auth'],
        summary: 'Exchange an etcd username and password for a gateway token',
        description: 'etcd checks the password (Authenticate). The answer is a JWT for `Authorization: Bearer`.',
        body: TokenRequestSchema,
        response: { 200: Type.Ref('Token'), ...errorResponses(401, 404) },
      },
    },
    async (req) => {
      if (!app.authEnabled || !app.issueToken) {
        throw new Problem(404, 'auth_not_configured', 'token exchange needs AUTH_JWT_SECRET or AUTH_JWT_PRIVATE_KEY_FILE');
      }
      await app.limitPasswordChecks(req, req.body.username);
      const started = Date.now();
      let ok = false;
      try {
        // Root and the gateway's own user are refused before etcd sees the
        // password, with a wrong password's answer: no oracle for theirs.
        if (!app.isReservedUser(req.body.username)) {
          await app.etcdConnection.exec('Auth', 'authenticate', { name: req.body.username, password: req.body.password });
          ok = true;
        }
      } catch (err) {
        const p = toProblem(err);
        if (p.status >= 500) throw p;
      } finally {
        await sleep(Math.max(0, MIN_EXCHANGE_MS - (Date.now() - started)));
      }
      if (!ok) throw new Problem(401, 'authentication_failed', 'wrong username or password', { headers: { 'www-authenticate': 'Bearer realm="etcd-gateway"' } });
      const { token, expiresIn } = app.issueToken(req.body.username);
      return { token, token_type: 'Bearer' as const, expires_in: expiresIn };
    },
  );
};

/** Protected: a single-use ticket for one Server-Sent Events stream. */
export const ticketRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/auth/ticket',
    {
      schema: {
        tags: ['auth'],
        summary: 'A short-lived single-use ticket for one event stream',
        description:
          'EventSource cannot send headers and a long-lived token in a URL lands in logs: get a ticket (valid 30 s, once) and open `/v1/watch/{key}?ticket=<ticket>`. The stream still ends when the token that got the ticket expires.',
        response: { 200: Type.Ref('Ticket'), ...errorResponses(401, 404) },
      },
    },
    async (req) => {
      if (!req.caller || !app.issueTicket) throw new Problem(404, 'auth_not_configured', 'tickets exist only with authentication on and a signing key');
      // A ticket is good for opening a stream only: the same rule as opening one.
      refuseExpiredStream(req.caller);
      const { ticket, expiresIn } = app.issueTicket(req.caller);
      return { ticket, expires_in: expiresIn };
    },
  );
};
