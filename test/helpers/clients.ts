// Real network clients for watch tests: a websocket client (the `ws`
// package) and a Server-Sent Events client that parses the stream as
// EventSource does, including Last-Event-ID on reconnect.
import { request, type IncomingMessage } from 'node:http';
import WebSocket from 'ws';

export type Message = Record<string, any>;

/** Resolves with the first item for which `pick` returns true, or rejects after `ms`. */
class Inbox<T> {
  readonly items: T[] = [];
  private waiters: { pick: (m: T) => boolean; resolve: (m: T) => void }[] = [];
  push(item: T): void {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pick(item)) return true;
      w.resolve(item);
      return false;
    });
  }
  wait(pick: (m: T) => boolean, ms: number, what: string): Promise<T> {
    const found = this.items.find(pick);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}; got ${JSON.stringify(this.items.slice(-5))}`)), ms);
      this.waiters.push({
        pick,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }
}

export class WsClient {
  readonly inbox = new Inbox<Message>();
  closed: Promise<{ code: number; reason: string }>;
  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => this.inbox.push(JSON.parse(data.toString())));
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  static connect(url: string, headers: Record<string, string> = {}, protocols?: string[]): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const socket = protocols ? new WebSocket(url, protocols, { headers }) : new WebSocket(url, { headers });
      const client = new WsClient(socket);
      socket.once('open', () => resolve(client));
      socket.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { statusCode: res.statusCode })));
      socket.once('error', reject);
    });
  }

  send(msg: Message | string): void {
    this.socket.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  next(pick: (m: Message) => boolean, what = 'a message', ms = 10_000): Promise<Message> {
    return this.inbox.wait(pick, ms, what);
  }

  of(id: string, type?: string): Message[] {
    return this.inbox.items.filter((m) => m.id === id && (!type || m.type === type));
  }

  close(): void {
    this.socket.terminate();
  }
}

export interface SseEvent {
  id?: string;
  event: string;
  data: string;
}

export class SseClient {
  readonly inbox = new Inbox<SseEvent | { comment: string }>();
  lastEventId: string | undefined;
  response!: IncomingMessage;
  ended: Promise<void>;
  private endedResolve!: () => void;
  private constructor(private readonly req: ReturnType<typeof request>) {
    this.ended = new Promise((r) => (this.endedResolve = r));
  }

  /** Opens the stream; resolves once the status line arrived (check `response.statusCode`). */
  static open(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    return new Promise((resolve, reject) => {
      const req = request(url, { headers: { accept: 'text/event-stream', ...headers } });
      const client = new SseClient(req);
      req.on('response', (res) => {
        client.response = res;
        res.setEncoding('utf8');
        let buf = '';
        let body = '';
        res.on('data', (chunk: string) => {
          if (res.statusCode !== 200) {
            body += chunk;
            return;
          }
          buf += chunk;
          let at: number;
          while ((at = buf.indexOf('\n\n')) >= 0) {
            client.parse(buf.slice(0, at));
            buf = buf.slice(at + 2);
          }
        });
        res.on('end', () => {
          (client as { body?: string }).body = body;
          client.endedResolve();
        });
        res.on('error', () => client.endedResolve());
        resolve(client);
      });
      req.on('error', reject);
      req.end();
    });
  }

  body?: string;

  private parse(block: string): void {
    const ev: SseEvent = { event: 'message', data: '' };
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) {
        this.inbox.push({ comment: line.slice(1).trim() });
        continue;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'id') ev.id = value;
      else if (field === 'event') ev.event = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0 && ev.id === undefined) return;
    ev.data = data.join('\n');
    if (ev.id !== undefined) this.lastEventId = ev.id;
    this.inbox.push(ev);
  }

  events(): SseEvent[] {
    return this.inbox.items.filter((e): e is SseEvent => 'event' in e);
  }

  next(pick: (e: SseEvent) => boolean, what = 'an event', ms = 10_000): Promise<SseEvent> {
    return this.inbox.wait((e) => 'event' in e && pick(e), ms, what) as Promise<SseEvent>;
  }

  close(): void {
    this.req.destroy();
  }
}
