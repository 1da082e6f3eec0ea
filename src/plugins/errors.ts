// Renders every error as RFC 9457 problem+json. Handlers throw; this is the
// only place that writes an error response. 5xx answers hide internals.
import fp from 'fastify-plugin';
import { isGrpcError, Problem, toProblem } from '../errors.js';

export default fp(
  async (app) => {
    app.setErrorHandler((err, req, reply) => {
      const problem = toProblem(err);
      if (problem.status >= 500 && !isGrpcError(err)) {
        req.log.error({ err, code: problem.code }, 'request failed');
      } else if (problem.status >= 500) {
        // etcd outages are expected operating conditions, not gateway bugs: no stack.
        req.log.warn({ code: problem.code, grpc: (err as { details?: string }).details }, 'etcd failed');
      } else {
        req.log.info({ code: problem.code, detail: problem.message }, 'request refused');
      }
      for (const [name, value] of Object.entries(problem.headers)) reply.header(name, value);
      return reply.code(problem.status).type('application/problem+json').send(problem.body());
    });
    app.setNotFoundHandler((req) => {
      throw new Problem(404, 'route_not_found', `no route ${req.method} ${req.url.split('?')[0]}`);
    });
  },
  { name: 'errors', fastify: '5.x' },
);

