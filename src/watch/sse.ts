// One Server-Sent Events stream: queued until the handler knows it can
// answer 200 (errors before that are plain HTTP problems, which EventSource
// does not retry), heartbeats against idle timeouts in proxies, a bounded
// send buffer (a stream that falls behind ends; EventSource reconnects with
// Last-Event-ID and resumes), the token's expiry, permission re-checks after
// auth changes, and shutdown.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { WatchClientHandle } from '../plugins/watch-hub.js';
import { toProblem } from '../errors.js';
import type { WatchError } from './hub.js';
import { atExpiry } from '../auth/expiry.js';

export interface SseOptions {
  heartbeatMs: number;
  maxBufferedBytes: number;
  /** Registry of open streams (shutdown, auth re-checks). */
  clients: Set<WatchClientHandle>;
  /** Throws when the caller may no longer read what the stream shows. */
  recheck?: () => Promise<void>;
}

/**
 * How long a client cut off for not reading keeps its connection, so that the
 * end of the stream (the websocket's 4008 close with its resume revisions)
 * reaches it once it reads again; bounded, so one that never does is freed.
 */
export const SLOW_CONSUMER_DRAIN_MS = 20_000;

/** The `error` message of the watch protocols (websocket and SSE); `id` names the subscription that ended. */
export function watchErrorMessage(err: WatchError, id?: string): Record<string, unknown> {
  return {
    type: 'error',
    ...(id === undefined ? {} : { id }),
    status: err.status,
    code: err.code,
    message: err.message,
    ...(err.compact_revision ? { compact_revision: err.compact_revision } : {}),
  };
}

export class SseStream {
  private readonly queue: string[] = [];
  private opened = false;
  private ended = false;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly cancelExpiry: (() => void) | undefined;
  private readonly handle: WatchClientHandle;
  /** Called once when the stream ends, whatever ends it. */
  onEnd: (() => void) | undefined;

  constructor(
    private readonly req: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly opts: SseOptions,
  ) {
    this.heartbeat = setInterval(() => this.write(': heartbeat\n\n'), opts.heartbeatMs);
    this.heartbeat.unref();
    const caller = req.caller;
    this.cancelExpiry = caller ? atExpiry(caller.exp, () => this.fail({ status: 401, code: 'token_expired', message: 'the token expired' })) : undefined;
    this.handle = {
      shutdown: () => this.end(),
      recheck: () => void opts.recheck?.().catch((err) => {
        const p = toProblem(err);
        this.fail({ status: p.status, code: p.code, message: p.message });
      }),
    };
  }

  get isOpen(): boolean {
    return this.opened;
  }

  /** Sends one event (`data` is JSON text). */
  send(data: string, opts: { event?: string; id?: number } = {}): void {
    this.write(`${opts.id === undefined ? '' : `id: ${opts.id}\n`}${opts.event ? `event: ${opts.event}\n` : ''}data: ${data}\n\n`);
  }

  /** Sends an `error` event and ends the stream. */
  fail(err: WatchError): void {
    this.write(`event: error\ndata: ${JSON.stringify(watchErrorMessage(err))}\n\n`);
    this.end();
  }

  private write(chunk: string): void {
    if (this.ended) return;
    if (!this.opened) {
      this.queue.push(chunk);
      return;
    }
    const raw = this.reply.raw;
    raw.write(chunk);
    if (raw.writableLength > this.opts.maxBufferedBytes) {
      this.end();
      // The end waits behind what is buffered; a client that does not read
      // again within the grace period is dropped, freeing the buffer.
      setTimeout(() => raw.destroy(), SLOW_CONSUMER_DRAIN_MS).unref();
    }
  }

  /** Answers 200 and starts streaming what was queued. */
  open(): void {
    this.reply.hijack();
    const raw = this.reply.raw;
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
      'x-request-id': this.req.id,
    });
    raw.write('retry: 1000\n\n');
    this.opened = true;
    this.opts.clients.add(this.handle);
    for (const chunk of this.queue.splice(0)) this.write(chunk);
    // The response's close: the request's fires as soon as it has been read.
    raw.on('close', () => this.end());
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.heartbeat);
    this.cancelExpiry?.();
    this.opts.clients.delete(this.handle);
    this.onEnd?.();
    if (this.opened) this.reply.raw.end();
  }
}
