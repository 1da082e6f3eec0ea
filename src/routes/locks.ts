import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { acquire, release } from '../concurrency/mutex.js';
import { GrantedLeases, sessionDeps } from '../concurrency/session.js';
import { Waits } from '../concurrency/wait.js';
import { badRequest, Problem } from '../errors.js';
import { errorResponses } from '../schemas/common.js';
import { LockBody, LockParams, LockQuery, ReleaseQuery } from '../schemas/locks.js';

export interface LockRoutesOptions {
  /** Deadline of one etcd call (the wait itself has none unless the caller sets `timeout`). */
  timeoutMs: number;
}

/** Options may come in the query (curl -X POST '...?ttl=30') or a JSON body, not both at once. */
export function mergeOptions<T extends object>(query: T, body: T | undefined): T {
  for (const name of Object.keys(body ?? {})) {
    if (name in query) throw badRequest(`${name} is given in both the query and the body`, 'conflicting_option');
  }
  return { ...query, ...body };
}

const lockRoutes: FastifyPluginAsyncTypebox<LockRoutesOptions> = async (app, opts) => {
  const deps = (req: FastifyRequest) => sessionDeps(app.etcd, req, opts.timeoutMs);
  const granted = new GrantedLeases();
  const waits = new Waits(app);
  // The body is optional: without one, the options are in the query.
  app.addHook('preValidation', async (req) => {
    req.body ??= {};
  });

  app.post(
    '/v1/locks/:name',
    {
      schema: {
        tags: ['locks'],
        summary: 'Acquire a lock, waiting in line (etcdctl lock)',
        description:
          'Blocks until the lock is held, then answers its key. Same keys and order as `etcdctl lock` and etcd\'s lock API, so HTTP callers and etcdctl wait in one line. ' +
          'The gateway keeps the lease alive while the request waits; once held, keep it alive yourself (`POST /v1/leases/{lease}/keepalive`): when it runs out, the lock is lost. ' +
          'A wait that times out (409 `lock_timeout`) or whose client disconnects leaves nothing behind. Locking again with a lease that already holds the lock answers at once. ' +
          'Options go in the query or in a JSON body; the body may be left out.',
        params: LockParams,
        querystring: LockQuery,
        body: LockBody,
        response: { 200: Type.Ref('Lock'), ...errorResponses(403, 404, 409) },
      },
    },
    async (req, reply) => {
      const options = mergeOptions(req.query, req.body);
      const held = await waits.run(
        reply,
        {
          timeoutSeconds: options.timeout,
          onTimeout: () => new Problem(409, 'lock_timeout', `${req.params.name} is still held by another after ${options.timeout} s`),
        },
        (scope) => acquire(deps(req), granted, req.params.name, options, scope),
      );
      reply.etcdHeaders(held.header);
      return { key: held.key, lease: held.lease, revision: held.revision };
    },
  );

  app.delete(
    '/v1/locks/:name',
    {
      schema: {
        tags: ['locks'],
        summary: 'Release a lock by its key (etcdctl lock ends)',
        description: 'Deletes the lock key; the next in line gets the lock. A lease the gateway granted for the lock is revoked too.',
        params: LockParams,
        querystring: ReleaseQuery,
        response: { 200: Type.Ref('LockReleased'), ...errorResponses(404) },
      },
    },
    async (req, reply) => {
      const res = await release(deps(req), granted, req.params.name, req.query.key);
      reply.etcdHeaders(res.header);
      return { released: true, lease_revoked: res.leaseRevoked };
    },
  );
};

export default lockRoutes;
