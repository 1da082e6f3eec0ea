// Explicit CORS: no origin is allowed unless CORS_ORIGINS lists it, and
// browsers may read the etcd metadata headers. Preflights need no token.
import cors from '@fastify/cors';
import fp from 'fastify-plugin';

export interface CorsOptions {
  /** CORS_ORIGINS, split; `*` allows any origin. */
  origins: string[];
}

export default fp<CorsOptions>(
  async (app, opts) => {
    // Without origins there is nothing to grant, and the plugin would cost
    // every request a hook (about a tenth of the CPU of a key read).
    if (opts.origins.length === 0) return;
    await app.register(cors, {
      origin: opts.origins.includes('*') ? true : opts.origins,
      methods: ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'OPTIONS'],
      allowedHeaders: ['authorization', 'content-type', 'if-match', 'if-none-match', 'last-event-id', 'x-request-id', 'accept'],
      exposedHeaders: [
        'etag',
        'location',
        'retry-after',
        'x-request-id',
        'x-etcd-revision',
        'x-etcd-cluster-id',
        'x-etcd-create-revision',
        'x-etcd-mod-revision',
        'x-etcd-version',
        'x-etcd-lease',
        'x-etcd-endpoint',
      ],
      maxAge: 600,
    });
  },
  { name: 'cors', fastify: '5.x' },
);
