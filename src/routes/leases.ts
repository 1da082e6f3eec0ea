import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { leaseHex, num } from '../kv/codec.js';
import { errorResponses, isSet } from '../schemas/common.js';
import { GrantLeaseBody, LeaseInfoQuery, LeaseParams } from '../schemas/leases.js';
import { leaseOwnerGuard } from '../auth/lease-owners.js';
import { keepAliveOnce, leaseIdToEtcd, timeToLiveToJson } from '../kv/lease.js';

export interface LeaseRoutesOptions {
  /** Deadline of the one-shot keep-alive stream. */
  timeoutMs: number;
}

const leaseRoutes: FastifyPluginAsyncTypebox<LeaseRoutesOptions> = async (app, opts) => {

  app.post(
    '/v1/leases',
    {
      schema: {
        tags: ['leases'],
        summary: 'Grant a lease (etcdctl lease grant)',
        description:
          'Keys attached to the lease are deleted when it expires or is revoked. etcd extends every lease when a new leader is elected, so a TTL is a minimum, not an exact time.',
        body: GrantLeaseBody,
        response: { 201: Type.Ref('Lease'), ...errorResponses(409) },
      },
    },
    async (req, reply) => {
      const res = await req.etcd.lease.leaseGrant({ TTL: req.body.ttl, ID: req.body.id ? leaseIdToEtcd(req.body.id) : 0 });
      await leaseOwnerGuard(app.etcd, req)?.record(String(res.ID));
      reply.etcdHeaders(res.header);
      const id = leaseHex(res.ID)!;
      reply.header('location', `/v1/leases/${id}`);
      return reply.code(201).send({ id, ttl: num(res.TTL) });
    },
  );

  app.get(
    '/v1/leases/:id',
    {
      schema: {
        tags: ['leases'],
        summary: 'Time to live of a lease (etcdctl lease timetolive [--keys])',
        params: LeaseParams,
        querystring: LeaseInfoQuery,
        response: { 200: Type.Ref('LeaseInfo'), ...errorResponses(403, 404) },
      },
    },
    async (req, reply) => {
      const withKeys = isSet(req.query.keys);
      if (withKeys) await leaseOwnerGuard(app.etcd, req)?.check(leaseIdToEtcd(req.params.id));
      const res = await req.etcd.lease.leaseTimeToLive({ ID: leaseIdToEtcd(req.params.id), keys: withKeys });
      reply.etcdHeaders(res.header);
      return timeToLiveToJson(req.params.id, res, withKeys);
    },
  );

  app.post(
    '/v1/leases/:id/keepalive',
    {
      schema: {
        tags: ['leases'],
        summary: 'Renew a lease once (one round of etcdctl lease keep-alive)',
        description: 'Resets the lease to its granted TTL. Call again before it runs out to keep it alive.',
        params: LeaseParams,
        response: { 200: Type.Ref('Lease'), ...errorResponses(403, 404) },
      },
    },
    async (req, reply) => {
      await leaseOwnerGuard(app.etcd, req)?.check(leaseIdToEtcd(req.params.id));
      const res = await keepAliveOnce(req.etcd.lease, req.params.id, opts.timeoutMs);
      reply.etcdHeaders(res.header);
      return { id: leaseHex(res.ID) ?? req.params.id, ttl: num(res.TTL) };
    },
  );

  app.delete(
    '/v1/leases/:id',
    {
      schema: {
        tags: ['leases'],
        summary: 'Revoke a lease and delete its keys (etcdctl lease revoke)',
        params: LeaseParams,
        response: { 200: Type.Ref('LeaseRevoked'), ...errorResponses(403, 404) },
      },
    },
    async (req, reply) => {
      const id = leaseIdToEtcd(req.params.id);
      const owners = leaseOwnerGuard(app.etcd, req);
      await owners?.check(id);
      const revoke = () => req.etcd.lease.leaseRevoke({ ID: id });
      const res = owners ? await owners.revoke(id, revoke) : await revoke();
      reply.etcdHeaders(res.header);
      return { id: leaseHex(leaseIdToEtcd(req.params.id)) ?? req.params.id, revision: num(res.header.revision) };
    },
  );
};

export default leaseRoutes;

/** Every lease in etcd, whoever granted it: registered in the admin scope (src/auth/admin.ts). */
export const leaseListRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/leases',
    {
      schema: {
        tags: ['leases'],
        summary: 'List the live leases (etcdctl lease list)',
        response: { 200: Type.Ref('LeaseList'), ...errorResponses() },
      },
    },
    async (req, reply) => {
      const res = await req.etcd.lease.leaseLeases();
      reply.etcdHeaders(res.header);
      const ids = res.leases.map((l) => leaseHex(l.ID)!).sort();
      return { leases: ids.map((id) => ({ id })) };
    },
  );
};
