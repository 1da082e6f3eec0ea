import { isUtf8 } from 'node:buffer';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { campaign, electionPrefix, leader, proclaim, resign, type Leader } from '../concurrency/election.js';
import { GrantedLeases, sessionDeps } from '../concurrency/session.js';
import { Waits } from '../concurrency/wait.js';
import { badRequest, Problem } from '../errors.js';
import { rangeOf } from '../kv/range.js';
import { followLeader, leaderMessage } from '../watch/leader.js';
import type { WatchError } from '../watch/hub.js';
import { checkReadable, openWatch, type TransportSink } from '../watch/session.js';
import { SseStream } from '../watch/sse.js';
import { errorResponses } from '../schemas/common.js';
import { CampaignBody, ElectionParams, ProclaimBody, ResignQuery } from '../schemas/elections.js';

export interface ElectionRoutesOptions {
  /** Deadline of one etcd call (the wait itself has none unless the caller sets `timeout`). */
  timeoutMs: number;
  /** For observe streams (as the watch routes). */
  heartbeatMs: number;
  maxBufferedBytes: number;
  listMaxKeys: number;
}

/** The candidate key a request names, by `key` or by `lease`. */
function candidateKey(name: string, term: { key?: string; lease?: string }): string {
  if ((term.key === undefined) === (term.lease === undefined)) throw badRequest('give the candidate key or its lease (one of them)', 'invalid_candidate');
  return term.key ?? electionPrefix(name) + BigInt(`0x${term.lease}`).toString(16);
}

function leaderJson(name: string, l: Leader) {
  const value = isUtf8(l.value) ? { value: l.value.toString('utf8') } : { value_base64: l.value.toString('base64') };
  return { name, key: l.key, ...value, lease: l.lease, revision: l.revision };
}

const electionRoutes: FastifyPluginAsyncTypebox<ElectionRoutesOptions> = async (app, opts) => {
  const deps = (req: FastifyRequest) => sessionDeps(app.etcd, req, opts.timeoutMs);
  const granted = new GrantedLeases();
  const waits = new Waits(app);
  const leaderResponse = { 200: Type.Ref('ElectionLeader') };

  app.post(
    '/v1/elections/:name',
    {
      schema: {
        tags: ['elections'],
        summary: 'Campaign and wait until elected (etcdctl elect <name> <value>)',
        description:
          'Blocks until this candidate leads, then answers its key and term (`revision`). Same keys and order as `etcdctl elect` and etcd\'s election API. ' +
          'The gateway keeps the lease alive while the request waits; once elected, keep it alive yourself: when it runs out, leadership ends. ' +
          'A wait that times out (409 `campaign_timeout`) or whose client disconnects leaves nothing behind.',
        params: ElectionParams,
        body: CampaignBody,
        response: { ...leaderResponse, ...errorResponses(403, 404, 409) },
      },
    },
    async (req, reply) => {
      const { value, timeout, ...choice } = req.body;
      const elected = await waits.run(
        reply,
        {
          timeoutSeconds: timeout,
          onTimeout: () => new Problem(409, 'campaign_timeout', `not elected in ${req.params.name} within ${timeout} s`),
        },
        (scope) => campaign(deps(req), granted, req.params.name, Buffer.from(value), choice, scope),
      );
      reply.etcdHeaders(elected.header);
      return leaderJson(req.params.name, elected);
    },
  );

  app.get(
    '/v1/elections/:name',
    {
      schema: {
        tags: ['elections'],
        summary: 'The current leader and its value (etcdctl elect -l, first answer)',
        params: ElectionParams,
        response: { ...leaderResponse, ...errorResponses(404) },
      },
    },
    async (req, reply) => {
      const current = await leader(req.etcd, req.params.name);
      reply.etcdHeaders(current.header);
      return leaderJson(req.params.name, current);
    },
  );

  app.get(
    '/v1/elections/:name/observe',
    {
      schema: {
        tags: ['elections'],
        summary: 'Follow the leader as Server-Sent Events (etcdctl elect -l)',
        description:
          'A `leader` event with the current leader, then one each time the leader or its value changes, and `no_leader` when the last candidate leaves. ' +
          'Each connection starts with the current state; event ids are etcd revisions. Runs on the shared watches.',
        params: ElectionParams,
        querystring: Type.Object({ ticket: Type.Optional(Type.String()) }, { additionalProperties: false }),
        response: {
          200: { description: 'An event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          ...errorResponses(403),
        },
      },
    },
    async (req, reply) => {
      const name = req.params.name;
      const range = rangeOf(Buffer.from(electionPrefix(name)), { prefix: true });
      const sse = new SseStream(req, reply, {
        heartbeatMs: opts.heartbeatMs,
        maxBufferedBytes: opts.maxBufferedBytes,
        clients: app.watchClients,
        recheck: () => checkReadable(req.etcd.kv, range),
      });
      let failed: WatchError | undefined;
      const sink: TransportSink = {
        created: () => undefined,
        ...followLeader((lead, revision) =>
          lead
            ? sse.send(JSON.stringify(leaderMessage(name, lead)), { event: 'leader', id: revision })
            : sse.send(JSON.stringify({ name, revision }), { event: 'no_leader', id: revision }),
        ),
        progress: () => undefined,
        error: (err) => (sse.isOpen ? sse.fail(err) : (failed = err)),
      };
      const close = await openWatch({ hub: app.watchHub, kv: req.etcd.kv, maxKeys: opts.listMaxKeys, checkRead: app.authEnabled }, { range, initial: true }, sink);
      sse.onEnd = close;
      if (failed) {
        sse.end();
        throw new Problem(failed.status, failed.code, failed.message);
      }
      sse.open();
    },
  );

  app.put(
    '/v1/elections/:name',
    {
      schema: {
        tags: ['elections'],
        summary: 'Proclaim a new value as leader',
        description: 'Only the leader of the term can proclaim: 409 `election_not_leader` otherwise, 404 `not_a_candidate` when its key is gone.',
        params: ElectionParams,
        body: ProclaimBody,
        response: { ...leaderResponse, ...errorResponses(404, 409) },
      },
    },
    async (req, reply) => {
      const key = candidateKey(req.params.name, req.body);
      const res = await proclaim(req.etcd, req.params.name, key, req.body.revision, Buffer.from(req.body.value));
      reply.etcdHeaders(res.header);
      return leaderJson(req.params.name, res);
    },
  );

  app.delete(
    '/v1/elections/:name',
    {
      schema: {
        tags: ['elections'],
        summary: 'Resign: give up leadership or candidacy (etcdctl elect ends)',
        description: 'Deletes the candidate key; the next candidate leads. A lease the gateway granted for the campaign is revoked too.',
        params: ElectionParams,
        querystring: ResignQuery,
        response: { 200: Type.Ref('Resigned'), ...errorResponses(404, 409) },
      },
    },
    async (req, reply) => {
      const key = candidateKey(req.params.name, req.query);
      const res = await resign(deps(req), granted, req.params.name, key, req.query.revision);
      reply.etcdHeaders(res.header);
      return { resigned: true, lease_revoked: res.leaseRevoked };
    },
  );
};

export default electionRoutes;
