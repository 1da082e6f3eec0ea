// The websocket server behind every socket route (/v1/watch, the /v3 streams).
import websocket from '@fastify/websocket';
import fp from 'fastify-plugin';
import { WS_ETCD_BEARER, WS_PROTOCOL } from './auth.js';

export interface WebsocketOptions {
  /** Largest message a client may send (WATCH_MAX_MESSAGE_BYTES). */
  maxPayload: number;
}

export default fp<WebsocketOptions>(
  async (app, opts) => {
    await app.register(websocket, {
      options: {
        maxPayload: opts.maxPayload,
        // Browsers send the token as a subprotocol beside ours; the answer names
        // ours only, so the token is never echoed back. etcd's websocket proxy
        // takes "Bearer, <token>" and answers "Bearer": /v3 clients get that.
        handleProtocols: (protocols: Set<string>) => (protocols.has(WS_PROTOCOL) ? WS_PROTOCOL : protocols.has(WS_ETCD_BEARER) ? WS_ETCD_BEARER : false),
      },
      // Replaces the plugin's default, which closes sockets without a word:
      // every watch client first learns where to resume.
      preClose(done) {
        for (const client of app.watchClients) client.shutdown();
        app.websocketServer.close();
        done();
      },
    });
  },
  { name: 'websocket', fastify: '5.x', dependencies: ['auth', 'watch-hub'] },
);
