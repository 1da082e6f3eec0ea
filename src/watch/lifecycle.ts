// One stream's life, the same for every transport (websocket, SSE, the /v3
// streams): registered for shutdown and for re-checks after auth changes
// while it runs, ended when its caller's token expires, cut off when its
// reader falls behind, and releasing all it holds once, however it ends.
import { atExpiry } from '../auth/expiry.js';

/** An open stream, told where to resume when the gateway stops. */
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

/**
 * How long a client cut off for not reading keeps its connection, so that the
 * end of the stream (the websocket's 4008 close with its resume revisions)
 * reaches it once it reads again; bounded, so one that never does is freed.
 */
export const SLOW_CONSUMER_DRAIN_MS = 20_000;

/**
 * For a stream that was cut off with its last words queued behind what its
 * reader left unread: `destroy` frees the connection, and the buffer, if the
 * reader does not drain it in time.
 */
export function dropUnlessDrained(destroy: () => void): void {
  setTimeout(destroy, SLOW_CONSUMER_DRAIN_MS).unref();
}
