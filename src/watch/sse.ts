// One Server-Sent Events stream: queued until the handler knows it can
// answer 200 (errors before that are plain HTTP problems, which EventSource
// does not retry), heartbeats against idle timeouts in proxies, a bounded
// send buffer (a stream that falls behind ends; EventSource reconnects with
// Last-Event-ID and resumes), the token's expiry, permission re-checks after
// auth changes, and shutdown.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { dropUnlessDrained, registerStream, type StreamLife, type WatchClientHandle } from './lifecycle.js';
import { Problem, toProblem } from '../errors.js';
import type { WatchError } from './hub.js';
import { refuseExpiredStream } from '../auth/expiry.js';

export interface SseOptions {
  heartbeatMs: number;
  maxBufferedBytes: number;
  /** Registry of open streams (shutdown, auth re-checks). */
  clients: Set<WatchClientHandle>;
  /** Throws when the caller may no longer read what the stream shows. */
  recheck?: () => Promise<void>;
}

/** A failure as the watch protocols tell it (through the one error table). */
export function toWatchError(err: unknown): WatchError {
  const p = toProblem(err);
  return { status: p.status, code: p.code, message: p.message };
}

/** A stream's end as a plain HTTP answer, for a stream refused before it answered 200. */
export function watchProblem(err: WatchError): Problem {
  return new Problem(err.status, err.code, err.message, { extra: err.compact_revision ? { compact_revision: err.compact_revision } : {} });
}

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
  private readonly life: StreamLife;
  /** Why the stream ended (what a stream that ends before it opens answers). */
  private reason: WatchError | undefined;

  /** Throws (a plain HTTP answer) when the caller's token cannot open a stream. */
  constructor(
    private readonly req: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly opts: SseOptions,
  ) {
    refuseExpiredStream(req.caller);
    const release = req.server.streamCaps.acquire(req);
    this.life = registerStream(opts.clients, req.caller, {
      // EventSource reconnects to another replica (or this one restarted) and resumes.
      shutdown: () => {
        this.reason ??= { status: 503, code: 'shutting_down', message: 'the gateway is shutting down' };
        this.end();
      },
      recheck: () => void opts.recheck?.().catch((err) => this.fail(toWatchError(err))),
      expire: () => this.fail({ status: 401, code: 'token_expired', message: 'the token expired' }),
    });
    const heartbeat = setInterval(() => this.write(': heartbeat\n\n'), opts.heartbeatMs);
    heartbeat.unref();
    this.life.own(() => clearInterval(heartbeat));
    this.life.own(release);
    // The response's close (the request's fires as soon as it has been read),
    // listened to from the start: a client may leave while the watch opens.
    reply.raw.once('close', () => this.end());
  }

  get isOpen(): boolean {
    return this.opened;
  }

  /** Releases `fn` when the stream ends, whatever ends it (at once if it has ended). */
  set onEnd(fn: () => void) {
    this.life.own(fn);
  }

  /** Sends one event (`data` is JSON text). */
  send(data: string, opts: { event?: string; id?: number } = {}): void {
    this.write(`${opts.id === undefined ? '' : `id: ${opts.id}\n`}${opts.event ? `event: ${opts.event}\n` : ''}data: ${data}\n\n`);
  }

  /** Sends an `error` event and ends the stream. */
  fail(err: WatchError): void {
    if (this.life.ended) return;
    this.reason = err;
    this.write(`event: error\ndata: ${JSON.stringify(watchErrorMessage(err))}\n\n`);
    this.end();
  }

  private write(chunk: string): void {
    if (this.life.ended) return;
    if (!this.opened) {
      this.queue.push(chunk);
      return;
    }
    const raw = this.reply.raw;
    raw.write(chunk);
    if (raw.writableLength > this.opts.maxBufferedBytes) {
      this.end();
      dropUnlessDrained(() => raw.destroy());
    }
  }

  /**
   * Answers 200 and starts streaming what was queued. A stream that ended
   * while it was being set up answers its reason as a plain HTTP error
   * instead (thrown).
   */
  open(): void {
    if (this.life.ended) {
      throw watchProblem(this.reason ?? { status: 503, code: 'stream_ended', message: 'the stream ended before it opened' });
    }
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
    for (const chunk of this.queue.splice(0)) this.write(chunk);
  }

  /** Ends the stream (idempotent). */
  end(): void {
    if (this.life.ended) return;
    this.life.end();
    this.queue.length = 0;
    if (this.opened) this.reply.raw.end();
  }
}
