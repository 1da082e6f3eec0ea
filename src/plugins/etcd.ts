// The etcd decorator: one EtcdConnection per app, closed with the app, and
// reply.etcdHeaders() to stamp every answer that touched etcd with the store
// revision and cluster ID.
import fp from 'fastify-plugin';
import type { IResponseHeader } from 'etcd3';
import { EtcdConnection, type EtcdConnectionOptions } from '../etcd/connection.js';

declare module 'fastify' {
  interface FastifyInstance {
    etcd: EtcdConnection;
  }
  interface FastifyReply {
    etcdHeaders(header: IResponseHeader | undefined): FastifyReply;
  }
}

export default fp<EtcdConnectionOptions>(
  async (app, opts) => {
    const etcd = new EtcdConnection(opts);
    app.decorate('etcd', etcd);
    app.decorateReply('etcdHeaders', function (header: IResponseHeader | undefined) {
      if (header) {
        this.header('x-etcd-revision', String(header.revision));
        if (header.cluster_id) this.header('x-etcd-cluster-id', BigInt(header.cluster_id).toString(16));
      }
      return this;
    });
    app.addHook('onClose', async () => etcd.close());
  },
  { name: 'etcd', fastify: '5.x' },
);
