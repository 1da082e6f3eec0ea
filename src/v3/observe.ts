// /v3/election/observe on the shared watches, following the leader as
// /v1/elections does (src/watch/leader.ts).
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isUtf8 } from 'node:buffer';
import { Problem } from '../errors.js';
import { prefixEnd } from '../kv/codec.js';
import type { WatchError } from '../watch/hub.js';
import { followLeader } from '../watch/leader.js';
import { checkReadable, openWatch, type TransportSink } from '../watch/session.js';
import { isRefusal, streamError } from './errors.js';
import { decodeMessage, encodeMessage, kvFromGatewayJson, parseJson, V3Error } from './protojson.js';
import type { ChunkSink, RequestSource } from './streams.js';
import { HeaderBase } from './watch.js';

export interface ObserveOptions {
  /** Page size of the initial read of the candidates. */
  listMaxKeys: number;
}

/**
 * A lock or election name (bytes in the /v3 protocol) as the concurrency
 * code takes it, which names keys by text as /v1 does.
 */
export function utf8Name(b: unknown, what = 'election names'): string {
  const name = (b as Buffer | undefined) ?? Buffer.alloc(0);
  if (!isUtf8(name)) throw new V3Error(GrpcStatus.INVALID_ARGUMENT, `${what} must be valid UTF-8 here`);
  return name.toString('utf8');
}

/**
 * The leader (the candidate created first under `<name>/`) now, and again
 * each time the leader changes or proclaims, as etcd's Observe sends it;
 * nothing while there is no leader. The initial state and the events are
 * exactly etcd's history from one revision on.
 */
export function observeStream(app: FastifyInstance, req: FastifyRequest, requests: RequestSource, sink: ChunkSink, opts: ObserveOptions): { recheck(): void } {
  let close: (() => void) | undefined;
  let observed: { key: Buffer; rangeEnd: Buffer } | undefined;
  let started = false;
  let done = false;
  const finish = (err?: unknown) => {
    if (done) return;
    done = true;
    close?.();
    if (err !== undefined) sink.send(streamError(err));
    sink.end();
  };
  sink.onClose(() => {
    done = true;
    close?.();
  });
  const headers = new HeaderBase();
  const start = async (line: string) => {
    const name = utf8Name(decodeMessage('LeaderRequest', parseJson(line)).name);
    const prefix = Buffer.from(`${name}/`);
    const range = { key: prefix, rangeEnd: prefixEnd(prefix) };
    observed = range;
    // The rest of the header (cluster, member, term) from a read as the caller.
    headers.learn((await req.etcd.kv.range({ key: prefix, range_end: prefixEnd(prefix), count_only: true, serializable: true })).header);
    let failed: WatchError | undefined;
    const leaderWatch: TransportSink = {
      created: () => undefined,
      ...followLeader(
        (lead, revision) => {
          if (lead) sink.send({ result: encodeMessage('LeaderResponse', { header: headers.at(revision), kv: kvFromGatewayJson(lead) }) });
        },
        { everyWrite: true },
      ),
      progress: () => undefined,
      error: (err) => (close ? finish(new Problem(err.status, err.code, err.message)) : (failed = err)),
    };
    const unsubscribe = await openWatch({ hub: app.watchHub, kv: req.etcd.kv, maxKeys: opts.listMaxKeys, checkRead: app.authEnabled }, { range, initial: true }, leaderWatch);
    if (failed) throw new Problem(failed.status, failed.code, failed.message);
    if (done) unsubscribe();
    else close = unsubscribe;
  };
  requests({
    message: (line) => {
      if (started) return; // one request, as etcd's server stream reads it
      started = true;
      start(line).catch((err: unknown) => finish(err));
    },
    end: () => {
      if (!started) finish(new V3Error(GrpcStatus.INVALID_ARGUMENT, 'observe needs a request naming the election'));
    },
    error: (err) => finish(err),
  });
  return {
    recheck: () => {
      if (observed && !done) checkReadable(req.etcd.kv, observed).catch((err: unknown) => isRefusal(err) && finish(err));
    },
  };
}
