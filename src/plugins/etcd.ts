// etcd access: one EtcdConnection per app (channels to every member), the
// gateway's own identity as app.etcd, and req.etcd for each request: the
// caller's identity when authentication is on (src/plugins/auth.ts), the
// gateway's otherwise. Routes call etcd through req.etcd so etcd enforces
// what the caller may do. reply.etcdHeaders() stamps answers with the store
// revision and cluster ID.
import fp from 'fastify-plugin';
import type { IResponseHeader } from 'etcd3';
import { EtcdScope, type EtcdConnection, type ScopeAuth } from '../etcd/connection.js';
import { idHex } from '../kv/codec.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** etcd as the gateway itself (its service user when etcd auth is on). */
    etcd: EtcdScope;
    etcdConnection: EtcdConnection;
  }
  interface FastifyRequest {
    /** etcd as this request's caller. */
    etcd: EtcdScope;
  }
  interface FastifyReply {
    etcdHeaders(header: IResponseHeader | undefined): FastifyReply;
  }
}

export interface EtcdPluginOptions {
  connection: EtcdConnection;
  /** The gateway's own etcd identity, when etcd runs with authentication. */
  serviceAuth?: ScopeAuth;
}

export default fp<EtcdPluginOptions>(
  async (app, opts) => {
    const { connection } = opts;
    const service = new EtcdScope(connection, opts.serviceAuth);
    app.decorate('etcdConnection', connection);
    app.decorate('etcd', service);
    app.decorateRequest('etcd', null as unknown as EtcdScope);
    app.addHook('onRequest', async (req) => {
      req.etcd ??= service;
    });
    app.decorateReply('etcdHeaders', function (header: IResponseHeader | undefined) {
      if (header) {
        this.header('x-etcd-revision', String(header.revision));
        if (header.cluster_id) this.header('x-etcd-cluster-id', idHex(header.cluster_id));
      }
      return this;
    });
    app.addHook('onClose', async () => connection.close());
  },
  { name: 'etcd', fastify: '5.x' },
);
