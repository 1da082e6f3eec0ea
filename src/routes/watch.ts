// The /v1 watch routes: the websocket (its protocol in src/watch/websocket.ts)
// and Server-Sent Events (src/watch/sse.ts); long-poll is ?wait on /v1/kv.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Problem, toProblem } from '../errors.js';
import { keyRange } from '../kv/range.js';
import { errorResponses, isSet } from '../schemas/common.js';
import { KeyParams } from '../schemas/kv.js';
import { SseWatchQuery } from '../schemas/watch.js';
import { eventsJson, type WatchEventJson } from '../watch/events.js';
import type { WatchError } from '../watch/hub.js';
import { checkReadable, openWatch, type TransportSink, type WatchContext } from '../watch/session.js';
import { SseStream, watchProblem } from '../watch/sse.js';
import { WatchSocket } from '../watch/websocket.js';

export interface WatchRoutesOptions {
  maxSubscriptions: number;
  maxBufferedBytes: number;
  heartbeatMs: number;
  listMaxKeys: number;
  requestTimeoutMs: number;
}

const watchRoutes: FastifyPluginAsyncTypebox<WatchRoutesOptions> = async (app, opts) => {
  const watchContext = (req: FastifyRequest): WatchContext => ({
    hub: app.watchHub,
    kv: req.etcd.kv,
    maxKeys: opts.listMaxKeys,
    checkRead: app.authEnabled,
  });
  const clients = app.watchClients;

  app.route({
    method: 'GET',
    url: '/v1/watch',
    // Documented by hand in src/plugins/openapi.ts (OpenAPI cannot model the stream).
    schema: { hide: true },
    handler: async () => {
      throw new Problem(426, 'upgrade_required', 'GET /v1/watch is a websocket: connect with a websocket client', { headers: { upgrade: 'websocket' } });
    },
    wsHandler: (socket, req) => {
      if (!app.streamCaps.acquireSocket(socket, req)) return;
      new WatchSocket(socket, req, {
        context: watchContext(req),
        maxSubscriptions: opts.maxSubscriptions,
        maxBufferedBytes: opts.maxBufferedBytes,
        heartbeatMs: opts.heartbeatMs,
        requestTimeoutMs: opts.requestTimeoutMs,
      });
    },
  });

  app.get(
    '/v1/watch/*',
    {
      schema: {
        tags: ['watch'],
        summary: 'Watch a key or range as Server-Sent Events',
        description:
          'Each event batch is an SSE message whose `id` is its revision; reconnecting with `Last-Event-ID` resumes right after it. ' +
          'Named events: `created`, `synced` (initial state sent), `progress`, `error` (then the stream ends). Comment lines are heartbeats.',
        params: KeyParams,
        querystring: SseWatchQuery,
        response: {
          200: { description: 'An event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          ...errorResponses(404, 410),
        },
      },
    },
    async (req, reply) => {
      const q = req.query;
      const range = keyRange(req.params['*'], { key_encoding: q.key_encoding, prefix: isSet(q.prefix), range_end: q.range_end, from_key: isSet(q.from_key) });
      let startRevision = q.start_revision;
      const lastEventId = req.headers['last-event-id'];
      if (lastEventId !== undefined) {
        if (!/^\d{1,16}$/.test(String(lastEventId))) throw new Problem(400, 'invalid_last_event_id', 'Last-Event-ID must be a revision');
        startRevision = Number(lastEventId) + 1;
      }
      const sse = new SseStream(req, reply, {
        heartbeatMs: opts.heartbeatMs,
        maxBufferedBytes: opts.maxBufferedBytes,
        clients,
        recheck: () => checkReadable(req.etcd.kv, range),
      });

      let ready!: (start: number) => void;
      let refused!: (err: WatchError) => void;
      const started = new Promise<number>((resolve, reject) => {
        ready = resolve;
        refused = (err) => reject(watchProblem(err));
      });
      // A stream that ends while it opens (expiry, shutdown) stops waiting: sse.open() answers why.
      sse.onEnd = () => ready(0);
      const sink: TransportSink = {
        created: (start) => {
          sse.send(JSON.stringify({ start_revision: start }), { event: 'created' });
          // A compacted start: wait for etcd's cancel, which carries compact_revision.
          if (!compacted) ready(start);
        },
        initial: (events: WatchEventJson[], revision) => sse.send(JSON.stringify({ revision, events }), { event: 'initial' }),
        synced: (revision) => sse.send(JSON.stringify({ revision }), { event: 'synced', id: revision }),
        events: (batch) => sse.send(`{"revision":${batch.revision},"events":${eventsJson(batch)}}`, { id: batch.revision }),
        progress: (revision) => sse.send(JSON.stringify({ revision }), { event: 'progress', id: revision }),
        error: (err) => (sse.isOpen ? sse.fail(err) : refused(err)),
      };
      // etcd accepts a watch on a compacted revision and cancels it a moment
      // later. Probe history first so that case is a plain 410 (which
      // EventSource does not retry) rather than a stream that dies at once.
      let compacted = false;
      if (startRevision !== undefined) {
        compacted = await req.etcd.kv
          .range({ key: range.key, range_end: range.rangeEnd, revision: startRevision, count_only: true })
          .then(() => false, (err) => toProblem(err).code === 'revision_compacted');
      }
      try {
        sse.onEnd = await openWatch(watchContext(req), {
          range,
          startRevision,
          prevKv: isSet(q.prev_kv),
          filters: { noPut: isSet(q.no_put), noDelete: isSet(q.no_delete) },
          progressNotify: isSet(q.progress_notify),
          initial: isSet(q.initial),
        }, sink);
        // Wait for etcd to accept the watch, so that a compacted or refused
        // start is a plain HTTP error (EventSource does not retry those).
        await started;
      } catch (err) {
        sse.end();
        throw err;
      }
      sse.open();
    },
  );
};

export default watchRoutes;
