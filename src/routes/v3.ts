// etcd's own /v3 JSON protocol (its grpc-gateway), so etcd JSON-gateway
// clients move behind the gateway by changing only a URL. Unary calls go to
// etcd as the caller (req.etcd) and come back in etcd's JSON; /v3/watch and
// /v3/election/observe run on the shared watch hub; the streams are framed
// as grpc-gateway frames them (one `{"result":...}` + "\n" per write) and
// also answer a websocket on the same path, as etcd's websocket proxy does
// (src/v3/streams.ts). Errors are etcd's error body, not problem+json.
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WebSocket } from 'ws';
import { refuseExpiredStream } from '../auth/expiry.js';
import type { WaitClient } from '../concurrency/wait.js';
import { errorBody, streamError, useV3Errors } from '../v3/errors.js';
import { observeStream } from '../v3/observe.js';
import { decodeMessage, encodeMessage, parseBody, parseJson, V3Error } from '../v3/protojson.js';
import { keepAliveStream, snapshotStream } from '../v3/relay.js';
import { httpRequests, httpSink, wsRequests, wsSink, type ChunkSink, type RequestSource } from '../v3/streams.js';
import { ADMIN_UNARY, capRange, concurrencyRoutes, guardOf, UNARY, type UnaryRoute } from '../v3/unary.js';
import { watchStream } from '../v3/watch.js';
import { registerStream, type WatchClientHandle } from '../watch/lifecycle.js';

export interface V3RoutesOptions {
  /** Longest request line a stream accepts (the body limit of unary calls). */
  bodyLimit: number;
  /** How far a stream client may fall behind before it is cut off. */
  maxBufferedBytes: number;
  /** Deadline of one etcd call while a lock waits. */
  timeoutMs: number;
  /** Page size of the initial read of an election observer; the most keys a range reads. */
  listMaxKeys: number;
  /** Most watches on one /v3/watch stream (WATCH_MAX_SUBSCRIPTIONS). */
  maxWatches: number;
}

/** Both prefixes etcd serves: `/v3/`, and `/v3beta/` which etcd rewrites to it. */
const PREFIXES = ['/v3/', '/v3beta/'];

// The spec lists each call once: the /v3beta/ aliases are left out of it.
const schema = (summary: string, prefix = '/v3/', streamed = false) => ({
  tags: ['v3'],
  summary,
  description:
    "etcd's own request and response JSON (protojson: base64 bytes, 64-bit integers as strings); errors are etcd's {error, code, message}." +
    (streamed
      ? ' A stream: requests are read from the body as they arrive, each answer is one `{"result": ...}` line. A websocket upgrade (GET) on the same path carries the same lines, one per message.'
      : ''),
  hide: prefix !== '/v3/',
});

/** Unary calls that also answer a websocket (one request message in, one answer out), as etcd's proxy allows. */
function websocketRoute(app: FastifyInstance, url: string, ws: (socket: WebSocket, req: FastifyRequest) => void): void {
  app.route({
    method: 'GET',
    url,
    schema: { hide: true },
    handler: async (_req, reply) => {
      reply.header('allow', 'POST');
      throw new V3Error(GrpcStatus.UNIMPLEMENTED, `${url} takes POST, or GET with a websocket upgrade`, 405);
    },
    wsHandler: ws,
  });
}

export interface V3PublicOptions {
  bodyLimit: number;
  /** Least time a token exchange takes, whatever its outcome (see src/routes/auth.ts). */
  minExchangeMs: number;
}

/**
 * The calls that need no token: GET /version, and /v3/auth/authenticate,
 * which with gateway authentication on answers a gateway token for the
 * user etcd has checked the password of, so clients that authenticate and
 * then send the token keep working unchanged.
 */
export async function v3PublicRoutes(app: FastifyInstance, opts: V3PublicOptions): Promise<void> {
  useV3Errors(app);
  acceptAnyBody(app, opts.bodyLimit);

  const authenticate = async (req: FastifyRequest, request: Record<string, unknown>) => {
    // Every password check, whoever issues the token: each is a bcrypt in etcd.
    await app.limitPasswordChecks(req, String(request.name ?? ''));
    if (!app.authEnabled) return encodeMessage('AuthenticateResponse', await app.etcd.auth.authenticate(request as Parameters<typeof app.etcd.auth.authenticate>[0]));
    const name = String(request.name ?? '');
    if (!app.issueToken) throw new V3Error(GrpcStatus.UNIMPLEMENTED, 'token exchange needs AUTH_JWT_SECRET or AUTH_JWT_PRIVATE_KEY_FILE');
    const started = Date.now();
    try {
      // Root and the gateway's own user get a wrong password's answer
      // without etcd seeing the password: no oracle for theirs.
      if (app.isReservedUser(name)) throw new V3Error(GrpcStatus.INVALID_ARGUMENT, 'etcdserver: authentication failed, invalid user ID or password');
      // etcd checks the password; its answer (or refusal) is etcd's own.
      const res = await app.etcdConnection.exec<{ header: unknown }>('Auth', 'authenticate', { name, password: String(request.password ?? '') });
      return encodeMessage('AuthenticateResponse', { header: res.header, token: app.issueToken(name).token });
    } finally {
      await sleep(Math.max(0, opts.minExchangeMs - (Date.now() - started)));
    }
  };
  for (const prefix of PREFIXES) {
    const url = `${prefix}auth/authenticate`;
    app.post(url, { schema: { ...schema("etcd auth/authenticate (etcd's /v3 JSON protocol)", prefix), description: 'With gateway authentication on, the token is a gateway JWT for that user (etcd checks the password).' } }, async (req, reply) =>
      reply.type('application/json').send(await authenticate(req, parseBody('AuthenticateRequest', req.body as Buffer | undefined))),
    );
    websocketRoute(app, url, (socket, req) => unaryOverWebsocket(socket, opts.bodyLimit, (line) => authenticate(req, decodeMessage('AuthenticateRequest', parseJson(line)))));
  }

  // etcd answers its own version and the cluster's (the lowest member
  // version, major.minor) here; clients read it to choose the /v3 prefix.
  app.get('/version', { schema: schema('etcd server and cluster versions (GET /version on etcd)') }, async (_req, reply) => {
    const results = await app.etcd.execOnEach<{ version: string }>('Maintenance', 'status', {});
    const versions = results.filter((m) => m.result).map((m) => m.result!.version);
    if (versions.length === 0) throw results[0]?.error ?? new V3Error(GrpcStatus.UNAVAILABLE, 'no etcd member answered');
    const minor = (v: string) => v.split('.').slice(0, 2).map(Number);
    const lowest = versions.map(minor).sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!)[0]!;
    return reply.type('application/json').send({ etcdserver: versions[0], etcdcluster: `${lowest[0]}.${lowest[1]}.0` });
  });
}

/** A unary call over a websocket: the first message is the request, the answer is one message, then the socket closes. */
function unaryOverWebsocket(socket: WebSocket, maxBytes: number, call: (line: string) => Promise<unknown>): void {
  const sink = wsSink(socket);
  let started = false;
  wsRequests(socket, maxBytes)({
    message: (line) => {
      if (started) return; // etcd's handler reads one request and answers it
      started = true;
      call(line).then(
        (answer) => sink.send(answer),
        (err) => sink.send(errorBody(err)),
      ).finally(() => sink.end());
    },
    end: () => undefined,
    error: (err) => {
      sink.send(errorBody(err));
      sink.end();
    },
  });
}

/** Unary calls (authenticate too): the body is the request message, whatever Content-Type the client sent (some send none, some form-encoded). */
function acceptAnyBody(unary: FastifyInstance, bodyLimit: number): void {
  unary.removeAllContentTypeParsers();
  unary.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
}

/** Each call of the table under both prefixes, as a POST and as a websocket. */
function unaryRoutes(unary: FastifyInstance, routes: UnaryRoute[], bodyLimit: number, listMaxKeys: number): void {
  for (const route of routes) {
    for (const prefix of PREFIXES) {
      for (const path of route.paths) {
        unary.post(`${prefix}${path}`, { schema: schema(`etcd ${path} (etcd's /v3 JSON protocol)`, prefix) }, async (req, reply) => {
          const request = capRange(route, parseBody(route.request, req.body as Buffer | undefined), listMaxKeys);
          const res = (await route.call(req.etcd, request, req)) as Record<string, unknown>;
          return reply.type('application/json').send(encodeMessage(route.response, res));
        });
        websocketRoute(unary, `${prefix}${path}`, (socket, req) =>
          unaryOverWebsocket(socket, bodyLimit, async (line) =>
            encodeMessage(route.response, (await route.call(req.etcd, capRange(route, decodeMessage(route.request, parseJson(line)), listMaxKeys), req)) as Record<string, unknown>),
          ),
        );
      }
    }
  }
}

/**
 * The admin calls (members, maintenance, compaction, the lease list, users,
 * roles and auth) and the snapshot stream, for the admin scope
 * (src/auth/admin.ts), whose refusal is answered here in etcd's words.
 */
export async function v3AdminRoutes(app: FastifyInstance, opts: V3RoutesOptions): Promise<void> {
  useV3Errors(app);
  await app.register(async (unary) => {
    acceptAnyBody(unary, opts.bodyLimit);
    unaryRoutes(unary, ADMIN_UNARY, opts.bodyLimit, opts.listMaxKeys);
  });
  await v3Streams(app, opts, (stream) => {
    stream('maintenance/snapshot', "Snapshot stream (etcd's /v3 JSON protocol)", (req, requests, sink) => snapshotStream(req, requests, sink, opts));
  });
}

export default async function v3Routes(app: FastifyInstance, opts: V3RoutesOptions): Promise<void> {
  useV3Errors(app);
  await app.register(async (unary) => {
    acceptAnyBody(unary, opts.bodyLimit);
    unaryRoutes(unary, UNARY, opts.bodyLimit, opts.listMaxKeys);

    for (const route of concurrencyRoutes(unary, opts.timeoutMs)) {
      for (const prefix of PREFIXES) {
        const url = `${prefix}${route.path}`;
        unary.post(url, { schema: schema(`etcd ${route.path} (etcd's /v3 JSON protocol)`, prefix) }, async (req, reply) =>
          reply.type('application/json').send(await route.call(req, parseBody(route.request, req.body as Buffer | undefined), reply)),
        );
        websocketRoute(unary, url, (socket, req) =>
          unaryOverWebsocket(socket, opts.bodyLimit, (line) => route.call(req, decodeMessage(route.request, parseJson(line)), socketClient(socket, req))),
        );
      }
    }
  });

  await v3Streams(app, opts, (stream) => {
    stream('lease/keepalive', "Lease keep-alive stream (etcd's /v3 JSON protocol)", (req, requests, sink) => keepAliveStream(req, requests, sink, guardOf(req)?.owners));
    stream('watch', "Watch stream on the shared watch hub (etcd's /v3 JSON protocol)", (req, requests, sink) => watchStream(app, req, requests, sink, opts));
    stream('election/observe', "Election observe stream on the shared watch hub (etcd's /v3 JSON protocol)", (req, requests, sink) =>
      observeStream(app, req, requests, sink, opts),
    );
  });
}

type DefineStream = (path: string, summary: string, handler: StreamHandler) => void;

async function v3Streams(app: FastifyInstance, opts: V3RoutesOptions, define: (stream: DefineStream) => void): Promise<void> {
  // Streams: the body is read as it arrives, so the content type parser
  // hands over the untouched request stream. Each stream is written once
  // against a request source and a chunk sink, and served both as a chunked
  // POST and as a websocket on the same path.
  await app.register(async (streams) => {
    streams.removeAllContentTypeParsers();
    streams.addContentTypeParser('*', (_req, _payload, done) => done(null));
    const serve = (handler: StreamHandler, req: FastifyRequest, requests: RequestSource, sink: ChunkSink) => {
      // A shutdown ends the stream as etcd's gateway ends one whose server
      // went away (an Unavailable error chunk), so the server can close.
      const handle: WatchClientHandle & { expire(): void } = {
        shutdown: () => {
          sink.send(streamError(new V3Error(GrpcStatus.UNAVAILABLE, 'the gateway is shutting down')));
          sink.end(true);
        },
        // A stream lives no longer than the gateway token that opened it.
        expire: () => {
          sink.send(streamError(new V3Error(GrpcStatus.UNAUTHENTICATED, 'the token expired: open the stream again with a new one')));
          sink.end();
        },
      };
      const life = registerStream(app.watchClients, req.caller, handle);
      sink.onClose(() => life.end());
      // After a change to users or roles: what the caller may no longer read ends.
      handle.recheck = handler(req, requests, sink)?.recheck;
    };
    const stream = (path: string, summary: string, handler: StreamHandler) => {
      for (const prefix of PREFIXES) {
        streams.post(`${prefix}${path}`, { schema: schema(summary, prefix, true) }, async (req, reply) => {
          // (Websockets are refused before the upgrade, by the authentication hook.)
          refuseExpiredStream(req.caller);
          const release = app.streamCaps.acquire(req);
          const sink = httpSink(reply);
          sink.onClose(release);
          serve(handler, req, httpRequests(req, opts.bodyLimit), sink);
        });
        websocketRoute(streams, `${prefix}${path}`, (socket, req) => {
          if (app.streamCaps.acquireSocket(socket, req)) serve(handler, req, wsRequests(socket, opts.bodyLimit), wsSink(socket));
        });
      }
    };
    define(stream);
  });
}

/** A websocket waiting for its one answer (a lock, a campaign): gone when it closes first. */
function socketClient(socket: WebSocket, request: FastifyRequest): WaitClient {
  return {
    request,
    onGone(fn) {
      socket.once('close', fn);
      return () => socket.off('close', fn);
    },
  };
}

type StreamHandler = (req: FastifyRequest, requests: RequestSource, sink: ChunkSink) => void | { recheck(): void };
