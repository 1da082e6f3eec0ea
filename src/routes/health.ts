import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { Problem } from '../errors.js';
import { idHex } from '../kv/codec.js';
import { errorResponses, HealthSchema } from '../schemas/common.js';

export interface HealthRoutesOptions {
  /** Deadline of the readiness probe's etcd call. */
  readyTimeoutMs: number;
}

const healthRoutes: FastifyPluginAsyncTypebox<HealthRoutesOptions> = async (app, opts) => {
  app.get(
    '/healthz',
    {
      config: { anyHost: true },
      schema: {
        tags: ['operations'],
        summary: 'Liveness: the gateway process is up',
        response: { 200: HealthSchema },
      },
    },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      config: { anyHost: true },
      schema: {
        tags: ['operations'],
        summary: 'Readiness: etcd is reachable and has a leader',
        response: {
          200: Type.Object({
            status: Type.String(),
            leader: Type.String({ description: 'Member ID of the etcd leader (hex).' }),
            revision: Type.Integer(),
            etcd_version: Type.String(),
            watch: Type.Object(
              {
                etcd_watches: Type.Integer({ description: 'etcd watches this gateway holds (shared by its subscribers).' }),
                subscribers: Type.Integer(),
                buffered_bytes: Type.Integer({ description: 'Recent events kept for late joiners, all watches together (WATCH_BUFFER_TOTAL_BYTES at most).' }),
                stream_connected: Type.Boolean(),
              },
              { description: 'Watch fan-out of this gateway process.' },
            ),
          }),
          ...errorResponses(),
        },
      },
    },
    async (_req, reply) => {
      const status = await app.etcd.maintenance.status({ deadline: Date.now() + opts.readyTimeoutMs });
      reply.etcdHeaders(status.header);
      if (!status.leader || status.leader === '0') {
        throw new Problem(503, 'no_leader', 'etcd is reachable but has no leader', { headers: { 'retry-after': '1' } });
      }
      const { etcd_watches, subscribers, buffered_bytes, stream_connected } = app.watchHub.stats();
      return {
        status: 'ready',
        leader: idHex(status.leader),
        revision: Number(status.header.revision),
        etcd_version: status.version,
        // Public and answered for any Host: no etcd member address (the hub's stream_peer).
        watch: { etcd_watches, subscribers, buffered_bytes, stream_connected },
      };
    },
  );
};

export default healthRoutes;
