// The watch hub decorator: one hub per gateway process, shared by the
// websocket, SSE and long-poll transports; every etcd watch is canceled when
// the app closes.
import fp from 'fastify-plugin';
import { atExpiry } from '../auth/expiry.js';
import { WatchHub, type WatchHubOptions } from '../watch/hub.js';

/** An open websocket or SSE stream, told where to resume when the gateway stops. */
export interface WatchClientHandle {
  shutdown(): void;
  /** Users or roles changed in etcd: check the caller may still read what it watches. */
  recheck?(): void;
}

/**
 * An open stream's registration (shutdown, auth re-checks, its token's
 * expiry) and everything it holds. It ends once, whatever ends it first;
 * what is handed to it after the end is released at once, so nothing can be
 * registered for a stream that is already over.
 */
export class StreamLife {
  private readonly releases: (() => void)[] = [];
  private over = false;

  get ended(): boolean {
    return this.over;
  }

  /** Releases `fn` when the stream ends (at once when it has). */
  own(fn: () => void): void {
    if (this.over) fn();
    else this.releases.push(fn);
  }

  end(): void {
    if (this.over) return;
    this.over = true;
    for (const fn of this.releases.splice(0).reverse()) fn();
  }
}

/**
 * Registers a stream in `clients` until it ends, and has `expire` called when
 * the caller's token expires (which should end it).
 */
export function registerStream(clients: Set<WatchClientHandle>, caller: { exp: number } | undefined, handle: WatchClientHandle & { expire(): void }): StreamLife {
  const life = new StreamLife();
  clients.add(handle);
  life.own(() => clients.delete(handle));
  if (caller) life.own(atExpiry(caller.exp, () => handle.expire()));
  return life;
}

declare module 'fastify' {
  interface FastifyInstance {
    watchHub: WatchHub;
    /** Open watch connections; src/app.ts shuts them down before the server closes. */
    watchClients: Set<WatchClientHandle>;
  }
}

export default fp<Omit<WatchHubOptions, 'log'>>(
  async (app, opts) => {
    const hub = new WatchHub(app.etcd, { ...opts, log: app.log, refreshAuth: app.minter ? () => app.minter!.refresh() : undefined });
    app.decorate('watchHub', hub);
    const clients = new Set<WatchClientHandle>();
    app.decorate('watchClients', clients);
    // etcd does not re-check open watches when permissions change
    // (shared/reference/stack.md §3.1): the gateway does, on every auth revision.
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
