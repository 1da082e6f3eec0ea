// What one caller may hold open at once. A stream, a long-poll or a lock or
// campaign wait holds a socket, a subscriber on a shared watch or an etcd
// watch of its own (each waiter watches the key ahead of it) for as long as
// the caller likes, so one user could otherwise hold the gateway's memory and
// etcd's watchers. One counter per etcd user; every transport takes a place
// where it starts and gives it back however it ends.
import type { FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { tooManyStreams } from '../errors.js';

/** The websocket close code for a refused or misbehaving client (RFC 6455). */
export const CLOSE_POLICY_VIOLATION = 1008;

const nothingHeld = (): void => undefined;

export class StreamCaps {
  private readonly held = new Map<string, number>();

  /** `max` places per user; 0: no cap. */
  constructor(private readonly max: number) {}

  /**
   * Takes a place for one of the caller's streams or throws 429. The
   * function returned gives it back and may be called any number of times.
   * Without authentication there is no subject to count: every caller is the
   * gateway's own identity, on loopback unless the operator opened it up.
   */
  acquire(req: FastifyRequest): () => void {
    const user = req.caller?.username;
    if (user === undefined || this.max === 0) return nothingHeld;
    const n = this.held.get(user) ?? 0;
    if (n >= this.max) throw tooManyStreams(this.max);
    this.held.set(user, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.held.get(user) ?? 1) - 1;
      if (left <= 0) this.held.delete(user);
      else this.held.set(user, left);
    };
  }

  /**
   * The same for a websocket, which is already upgraded when its handler
   * runs: over the cap it is closed with 1008 and false is returned; else
   * the place is given back when it closes.
   */
  acquireSocket(socket: WebSocket, req: FastifyRequest): boolean {
    let release: () => void;
    try {
      release = this.acquire(req);
    } catch (err) {
      socket.close(CLOSE_POLICY_VIOLATION, (err as Error).message);
      return false;
    }
    socket.once('close', release);
    return true;
  }

  /** Places a user holds now (what the tests watch). */
  count(user: string): number {
    return this.held.get(user) ?? 0;
  }
}
