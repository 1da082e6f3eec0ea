// etcd's own streams passed through as the caller: /v3/lease/keepalive
// (with the lease-owner check /v1 applies) and /v3/maintenance/snapshot.
import type { ClientDuplexStream, ClientReadableStream } from '@grpc/grpc-js';
import type { ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, ISnapshotResponse } from 'etcd3';
import type { FastifyRequest } from 'fastify';
import type { LeaseOwnerGuard } from '../auth/lease-owners.js';
import { etcdRefused, streamError } from './errors.js';
import { decodeMessage, encodeMessage, parseJson } from './protojson.js';
import type { ChunkSink, RequestSource } from './streams.js';

/**
 * /v3/lease/keepalive: each request line is sent to etcd's keep-alive stream,
 * each answer comes back. With authentication on, each request first passes
 * the owner check, in order; another subject's lease ends the stream with
 * PermissionDenied, as an etcd stream ends on its first error.
 */
export function keepAliveStream(req: FastifyRequest, requests: RequestSource, sink: ChunkSink, owners?: LeaseOwnerGuard): void {
  let upstream: ClientDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> | undefined;
  // Requests that came before etcd's stream was open.
  const early: Record<string, unknown>[] = [];
  let ended = false;
  let done = false;
  const finish = (err?: unknown) => {
    if (done) return;
    done = true;
    if (err !== undefined) sink.send(streamError(err));
    sink.end();
    upstream?.cancel();
  };
  sink.onClose(() => finish());
  // With owners to check, each request (and the end) waits for the checks of those before it: etcd sees them in order.
  let checked = Promise.resolve();
  const inOrder = (check: (() => Promise<unknown>) | undefined, then: () => void) => {
    if (!owners) return then();
    checked = checked
      .then(async () => {
        if (!done) await check?.();
        if (!done) then();
      })
      .catch((err: unknown) => finish(etcdRefused(err)));
  };
  // Listening starts at once: a websocket's first messages may come before etcd answers.
  requests({
    message: (line) => {
      let request: Record<string, unknown>;
      try {
        request = decodeMessage('LeaseKeepAliveRequest', parseJson(line));
      } catch (err) {
        return finish(err);
      }
      inOrder(
        () => owners!.check(String(request.ID ?? '0')),
        () => {
          if (upstream) upstream.write(request as never);
          else early.push(request);
        },
      );
    },
    end: () =>
      inOrder(undefined, () => {
        ended = true;
        upstream?.end();
      }),
    error: (err) => finish(err),
  });
  req.etcd.lease.leaseKeepAlive().then(
    (stream) => {
      const s = stream as unknown as ClientDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;
      if (done) return void s.cancel();
      upstream = s;
      s.on('data', (r) => sink.send({ result: encodeMessage('LeaseKeepAliveResponse', r) }));
      s.on('error', (err) => finish(err));
      s.on('end', () => finish());
      for (const request of early.splice(0)) s.write(request as never);
      if (ended) s.end();
    },
    (err: unknown) => finish(err),
  );
}

/** /v3/maintenance/snapshot: etcd's snapshot chunks, paced by the client's reading. */
export function snapshotStream(req: FastifyRequest, requests: RequestSource, sink: ChunkSink, opts: { maxBufferedBytes: number }): void {
  // The request is empty; its body is read and ignored.
  requests({ message: () => undefined, end: () => undefined, error: () => undefined });
  // As etcd's gateway: from whichever member, with or without a leader.
  let s: ClientReadableStream<ISnapshotResponse>;
  try {
    s = req.etcd.serverStream<ISnapshotResponse>('Maintenance', 'snapshot', {}).stream;
  } catch (err) {
    sink.send(streamError(err));
    sink.end();
    return;
  }
  sink.onClose(() => s.cancel());
  s.on('data', (r) => {
    sink.send({ result: encodeMessage('SnapshotResponse', r) });
    // Backpressure: pause etcd's stream while the client drains.
    if (sink.buffered > opts.maxBufferedBytes) {
      s.pause();
      sink.onDrain(() => s.resume());
    }
  });
  s.on('error', (err) => {
    sink.send(streamError(err));
    sink.end();
  });
  s.on('end', () => sink.end());
}
