// Ties a waiting HTTP request (lock, campaign) to one AbortSignal, so the wait
// ends and its key is cleaned up when the caller's timeout passes, when the
// caller disconnects, or when the gateway shuts down.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { StreamCaps } from '../auth/stream-caps.js';
import { Problem } from '../errors.js';

export interface WaitScope {
  signal: AbortSignal;
  /** Whether the caller disconnected (nobody will read the answer). */
  gone(): boolean;
}

/** Whoever waits for the answer: tells when it has gone away. */
export interface WaitClient {
  /** Calls `fn` if the client goes away; returns the function that stops watching. */
  onGone(fn: () => void): () => void;
  /** The request that waits: a wait takes one of its caller's stream places. */
  request: FastifyRequest;
}

/**
 * An HTTP request waiting for its response. The response, not the request:
 * Node emits the request's 'close' as soon as its body has been read, while
 * the response's 'close' before it was finished means the connection went away.
 */
function replyClient(reply: FastifyReply): WaitClient {
  return {
    request: reply.request,
    onGone(fn) {
      const onClose = () => {
        if (!reply.raw.writableFinished) fn();
      };
      reply.raw.on('close', onClose);
      return () => reply.raw.off('close', onClose);
    },
  };
}

/** The waits of one route plugin. */
export class Waits {
  private readonly closing = new AbortController();
  private readonly running = new Set<Promise<unknown>>();
  private readonly caps: StreamCaps | undefined;

  constructor(app: FastifyInstance) {
    this.caps = app.hasDecorator('streamCaps') ? app.streamCaps : undefined;
    app.addHook('preClose', async () => this.closing.abort());
    // A plugin's onClose runs before its parent's, so the cleanups of the
    // aborted waits still reach etcd before the etcd plugin closes the
    // connection (inject() requests are not awaited by the server's close).
    app.addHook('onClose', async () => {
      await Promise.allSettled(this.running);
    });
  }

  run<T>(client: FastifyReply | WaitClient, opts: { timeoutSeconds?: number; onTimeout: () => Problem }, wait: (scope: WaitScope) => Promise<T>): Promise<T> {
    const waiter = 'onGone' in client ? client : replyClient(client);
    // Each waiter holds an etcd watch on the key ahead of it: one caller's
    // waits are capped with its streams (429 over the cap, before anything).
    const release = this.caps?.acquire(waiter.request);
    const ac = new AbortController();
    let gone = false;
    const timer =
      opts.timeoutSeconds === undefined ? undefined : setTimeout(() => ac.abort(opts.onTimeout()), opts.timeoutSeconds * 1000);
    const onClose = () => {
      gone = true;
      ac.abort(new Problem(499, 'client_closed_request', 'the client disconnected while waiting'));
    };
    const stopWatching = waiter.onGone(onClose);
    const onShutdown = () =>
      ac.abort(new Problem(503, 'shutting_down', 'the gateway is shutting down', { headers: { 'retry-after': '1' } }));
    if (this.closing.signal.aborted) onShutdown();
    else this.closing.signal.addEventListener('abort', onShutdown, { once: true });
    const done = wait({ signal: ac.signal, gone: () => gone }).finally(() => {
      clearTimeout(timer);
      stopWatching();
      release?.();
      this.closing.signal.removeEventListener('abort', onShutdown);
      this.running.delete(done);
    });
    this.running.add(done);
    return done;
  }
}
