// The watch hub decorator: one hub per gateway process, shared by the
// websocket, SSE and long-poll transports; every etcd watch is canceled when
// the app closes.
import fp from 'fastify-plugin';
import { WatchHub, type WatchHubOptions } from '../watch/hub.js';
import type { WatchClientHandle } from '../watch/lifecycle.js';

declare module 'fastify' {
  interface FastifyInstance {
    watchHub: WatchHub;
    /** Open streams; src/plugins/websocket.ts shuts them down before the server closes. */
    watchClients: Set<WatchClientHandle>;
  }
}

export default fp<Omit<WatchHubOptions, 'log'>>(
  async (app, opts) => {
    const hub = new WatchHub(app.etcd, { ...opts, log: app.log, refreshAuth: app.minter ? () => app.minter!.refresh() : undefined });
    app.decorate('watchHub', hub);
    const clients = new Set<WatchClientHandle>();
    app.decorate('watchClients', clients);
    // etcd does not re-check open watches when permissions change (its
    // watchers keep what they were granted): the gateway does, on every auth revision.
    app.minter?.on('revision', () => {
      hub.restart();
      for (const client of clients) client.recheck?.();
    });
    app.addHook('onClose', async () => {
      hub.close({ status: 503, code: 'shutting_down', message: 'the gateway is shutting down' });
    });
  },
  { name: 'watch-hub', fastify: '5.x', dependencies: ['etcd', 'auth'] },
);
