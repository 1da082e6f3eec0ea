// The two transports of a /v3 stream, as etcd serves them: a chunked HTTP
// response (grpc-gateway: one `{"result":...}` + "\n" per write, requests
// read from the body as it arrives) and a websocket on the same path (etcd's
// websocket proxy: each text message the client sends is one request line,
// each answer line goes back as one text message). The stream handlers in
// src/routes/v3.ts are written once against these interfaces.
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { V3Error } from './protojson.js';

/** Where a stream's answers go. */
export interface ChunkSink {
  /** One answer: a JSON line on HTTP, a text message on a websocket. */
  send(chunk: unknown): void;
  /** The stream is over: the response ends, the socket closes (1001 when the gateway is going away, else 1000). */
  end(goingAway?: boolean): void;
  /** Cuts the client off at once (it stopped reading). */
  destroy(): void;
  /** Bytes written but not yet taken by the client's connection. */
  readonly buffered: number;
  onClose(fn: () => void): void;
  /** Calls `fn` once the buffered bytes have gone out. */
  onDrain(fn: () => void): void;
}

export interface RequestHandlers {
  /** One request (a complete JSON value). */
  message(text: string): void;
  /** The client has sent everything (the request body ended). */
  end(): void;
  error(err: unknown): void;
}

/** Where a stream's requests come from. */
export type RequestSource = (handlers: RequestHandlers) => void;

/**
 * Splits text into top-level JSON values as it arrives, with or without
 * newlines between them ({"a":1}{"b":2}), as grpc-gateway's JSON decoder
 * reads a request body. A value longer than `maxBytes` is an error.
 */
export class JsonSplitter {
  /** Text not yet handed out as a value. */
  private pending = '';
  // The scan resumes where the last chunk ended, so a large value arriving
  // in many chunks is scanned once.
  private scanned = 0;
  private depth = 0;
  private inString = false;
  private escaped = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onValue: (text: string) => void,
  ) {}

  push(chunk: string): void {
    const text = this.pending + chunk;
    let start = 0;
    for (let i = this.scanned; i < text.length; i++) {
      const c = text[i]!;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.inString = false;
        continue;
      }
      if (c === '"') this.inString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') {
        this.depth--;
        // (A stray closing bracket is handed out too: it fails to parse, and the client hears why.)
        if (this.depth <= 0) {
          this.depth = 0;
          this.onValue(text.slice(start, i + 1));
          start = i + 1;
        }
      }
    }
    this.pending = text.slice(start);
    if (this.depth === 0 && this.pending.trim() === '') this.pending = '';
    this.scanned = this.pending.length;
    if (this.pending.length > this.maxBytes) throw new V3Error(GrpcStatus.RESOURCE_EXHAUSTED, `a request in the stream is larger than ${this.maxBytes} bytes`);
  }

  /** The end of input: whatever is left is one last (possibly broken) value. */
  finish(): void {
    const rest = this.pending;
    this.pending = '';
    if (rest.trim() !== '') this.onValue(rest);
  }
}

/**
 * Text in, requests out, for either transport: the first failure (a request
 * too large) is reported once, and nothing after it is handed out.
 */
function requestFeed(maxBytes: number, h: RequestHandlers): { push(text: string): boolean; end(): void } {
  const splitter = new JsonSplitter(maxBytes, h.message);
  let failed = false;
  const attempt = (fn: () => void): boolean => {
    if (failed) return false;
    try {
      fn();
      return true;
    } catch (err) {
      failed = true;
      h.error(err);
      return false;
    }
  };
  return {
    push: (text) => attempt(() => splitter.push(text)),
    end: () => {
      if (attempt(() => splitter.finish())) h.end();
    },
  };
}

/** Starts a streamed HTTP answer: 200, etcd's content type, headers on the wire at once. */
export function httpSink(reply: FastifyReply): ChunkSink {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': String(reply.request.id) });
  res.flushHeaders();
  return {
    // The object and its newline in a single write, as grpc-gateway sends it.
    send: (chunk) => {
      if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(chunk)}\n`);
    },
    end: (goingAway) => {
      // A client still sending its body would hold the connection (and a
      // shutdown) open: once the answer is out, the connection goes too.
      const socket = res.socket;
      if (goingAway && socket) res.once('finish', () => socket.destroy());
      if (!res.writableEnded) res.end();
    },
    destroy: () => res.destroy(),
    get buffered() {
      return res.writableLength;
    },
    onClose: (fn) => void res.once('close', fn),
    onDrain: (fn) => void res.once('drain', fn),
  };
}

/** The requests of an HTTP stream: its body, read as it arrives. */
export function httpRequests(req: FastifyRequest, maxBytes: number): RequestSource {
  return (h) => {
    const feed = requestFeed(maxBytes, h);
    req.raw.setEncoding('utf8');
    req.raw.on('data', (chunk: string) => {
      // After a failure the rest of the body is read and dropped.
      if (!feed.push(chunk)) req.raw.resume();
    });
    req.raw.on('end', () => feed.end());
  };
}

/** A websocket as a stream's answers: one text message per answer. */
export function wsSink(socket: WebSocket): ChunkSink {
  const drainWaiters: (() => void)[] = [];
  const written = () => {
    if (socket.bufferedAmount === 0) for (const fn of drainWaiters.splice(0)) fn();
  };
  return {
    send: (chunk) => {
      if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(chunk), written);
    },
    end: (goingAway) => socket.close(goingAway ? 1001 : 1000),
    destroy: () => socket.terminate(),
    get buffered() {
      return socket.bufferedAmount;
    },
    onClose: (fn) => void socket.once('close', fn),
    onDrain: (fn) => {
      if (socket.bufferedAmount === 0) fn();
      else drainWaiters.push(fn);
    },
  };
}

/**
 * A websocket's messages as a stream's requests. Each message is followed
 * by a newline, as etcd's proxy writes it into the request body, so a
 * message may hold several requests or (in theory) part of one. The
 * requests end when the socket closes.
 */
export function wsRequests(socket: WebSocket, maxBytes: number): RequestSource {
  return (h) => {
    const feed = requestFeed(maxBytes, h);
    socket.on('message', (data, isBinary) => void feed.push(`${isBinary ? Buffer.from(data as Buffer).toString('utf8') : data.toString()}\n`));
    socket.once('close', () => feed.end());
  };
}
