// Clients of etcd's /v3 JSON protocol for the /v3 tests: plain requests to
// the gateway and to etcd's built-in gateway, raw chunked streams and websockets.
import { connect } from 'node:net';
import { WebSocket } from 'ws';
import type tap from 'tap';
import { parseJson } from '../../src/v3/protojson.js';
import { buildTestApp, listen } from './app.js';
import { startCluster } from './cluster.js';

export const b64 = (s: string) => Buffer.from(s).toString('base64');
export const unb64 = (s: string) => Buffer.from(s, 'base64').toString();

export interface Answer {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  text: string;
  headers: Headers;
}

export async function post(base: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(base + path, {
    method: 'POST',
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = parseJson(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, body: parsed, text, headers: res.headers };
}

/** Requests to the gateway (`v3`) and to etcd's built-in gateway on a member (`builtin`), and `same`, which sends one to both. */
export function v3Clients(gw: string, etcd: string) {
  const v3 = (path: string, body?: unknown, headers?: Record<string, string>) => post(gw, path, body, headers);
  const builtin = (path: string, body?: unknown, headers?: Record<string, string>) => post(etcd, path, body, headers);
  /** Sends the same request to the gateway and to etcd's built-in gateway; both answers must have the same shape and status. */
  async function same(t: Pick<typeof tap, 'equal' | 'same'>, path: string, body: unknown): Promise<[Answer, Answer]> {
    const ours = await v3(path, body);
    const theirs = await builtin(path, body);
    t.equal(ours.status, theirs.status, `${path}: same status`);
    t.same(shape(ours.body), shape(theirs.body), `${path}: same shape as etcd's gateway (${theirs.text.trim()})`);
    return [ours, theirs];
  }
  return { v3, builtin, same };
}

/** The JSON shape with values that differ between members or moments replaced by their type. */
export function shape(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(shape);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, k === 'header' ? Object.keys(x as object).sort() : shape(x)]));
  }
  return typeof v;
}

export interface RawStream {
  head: string;
  /** Decoded HTTP chunks, in order, as written by the server. */
  chunks: string[];
  /** Sends more of the request body (one HTTP chunk). */
  send(text: string): void;
  /** Ends the request body. */
  end(): void;
  close(): void;
  /** Resolves once `n` chunks have arrived. */
  waitChunks(n: number, timeoutMs?: number): Promise<string[]>;
  /** Resolves with the first chunk `pick` accepts. */
  waitFor(pick: (chunk: string) => boolean, what: string, timeoutMs?: number): Promise<string>;
  ended: Promise<void>;
}

/** A raw HTTP/1.1 request on a socket, parsing the chunked answer by hand. */
export function openRaw(base: string, requestLine: string, headers: Record<string, string> = { 'transfer-encoding': 'chunked' }): RawStream {
  const url = new URL(base);
  const socket = connect(Number(url.port), url.hostname);
  const lines = [`${requestLine} HTTP/1.1`, `host: ${url.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  let endResponse: () => void = () => undefined;
  const out: RawStream = {
    head: '',
    chunks: [],
    send(text) {
      const b = Buffer.from(text);
      socket.write(`${b.length.toString(16)}\r\n`);
      socket.write(b);
      socket.write('\r\n');
    },
    end() {
      socket.write('0\r\n\r\n');
    },
    close() {
      socket.destroy();
    },
    async waitChunks(n, timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      while (out.chunks.length < n) {
        if (Date.now() > until) throw new Error(`only ${out.chunks.length} of ${n} chunks: ${JSON.stringify(out.chunks)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return out.chunks;
    },
    async waitFor(pick, what, timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const found = out.chunks.find(pick);
        if (found !== undefined) return found;
        if (Date.now() > until) throw new Error(`no ${what} in ${JSON.stringify(out.chunks)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    ended: new Promise((resolve) => {
      endResponse = resolve;
      socket.on('close', () => resolve());
    }),
  };
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (!out.head) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        out.head = buf.subarray(0, i).toString();
        buf = buf.subarray(i + 4);
        continue;
      }
      const i = buf.indexOf('\r\n');
      if (i < 0) return;
      const size = parseInt(buf.subarray(0, i).toString(), 16);
      if (buf.length < i + 2 + size + 2) return;
      if (size > 0) out.chunks.push(buf.subarray(i + 2, i + 2 + size).toString());
      else endResponse();
      buf = buf.subarray(i + 2 + size + 2);
    }
  });
  return out;
}


/** A whole (non-streamed) request, for bodies without Content-Type. */
export async function rawRequest(base: string, requestLine: string, body: string, headers: Record<string, string>): Promise<{ head: string; body: string }> {
  const url = new URL(base);
  const socket = connect(Number(url.port), url.hostname);
  const h = Object.entries(headers).map(([k, v]) => `${k}: ${v === 'auto' ? Buffer.byteLength(body) : v}`);
  socket.write(`${[`${requestLine} HTTP/1.1`, `host: ${url.host}`, 'connection: close', ...h].join('\r\n')}\r\n\r\n${body}`);
  const data: Buffer[] = [];
  socket.on('data', (d: Buffer) => data.push(d));
  await new Promise((r) => socket.on('close', r));
  const text = Buffer.concat(data).toString();
  const i = text.indexOf('\r\n\r\n');
  return { head: text.slice(0, i), body: text.slice(i + 4) };
}

export const result = (chunk: string) => JSON.parse(chunk).result;

export interface WsStream {
  socket: WebSocket;
  protocol: string;
  messages: string[];
  waitMessages(n: number, timeoutMs?: number): Promise<string[]>;
  send(text: string): void;
  closed: Promise<number>;
}

/** A websocket to a /v3 path, as etcd's websocket proxy is used. */
export function openWs(base: string, path: string, protocols?: string[]): Promise<WsStream> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(base.replace('http', 'ws') + path, protocols);
    const messages: string[] = [];
    const waiters: (() => void)[] = [];
    socket.on('message', (data) => {
      messages.push(data.toString());
      for (const w of waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
    const closed = new Promise<number>((r) => socket.on('close', (code) => (r(code), waiters.splice(0).forEach((w) => w()))));
    socket.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { statusCode: res.statusCode })));
    socket.once('open', () =>
      resolve({
        socket,
        protocol: socket.protocol,
        messages,
        closed,
        send: (text) => socket.send(text),
        async waitMessages(n, timeoutMs = 10_000) {
          const until = Date.now() + timeoutMs;
          while (messages.length < n) {
            if (Date.now() > until || socket.readyState === socket.CLOSED) throw new Error(`only ${messages.length} of ${n} messages: ${JSON.stringify(messages)}`);
            await new Promise<void>((r) => {
              const timer = setTimeout(r, until - Date.now());
              waiters.push(() => (clearTimeout(timer), r()));
            });
          }
          return messages;
        },
      }),
    );
  });
}

/** The /v3 test files' set-up: a 3-member cluster, the gateway on a port, and clients of both gateways. */
export async function v3Setup(t: Parameters<typeof startCluster>[0] & Parameters<typeof buildTestApp>[0]) {
  const cluster = await startCluster(t);
  const app = await buildTestApp(t, cluster.endpoints, { BODY_LIMIT: 64 * 1024 });
  const gw = await listen(app);
  const etcd = cluster.endpoints[0]!;
  return { cluster, app, gw, etcd, etcdctl: cluster.etcdctl, ...v3Clients(gw, etcd) };
}
