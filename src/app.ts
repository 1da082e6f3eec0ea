// The app factory. The gateway is a Fastify app built from plugins; the
// process entry (src/server.ts) and the tests build the same app.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Config } from './config.js';
import { loggerOptions, type LoggingOptions } from './logging.js';
import { adminScope } from './auth/admin.js';
import { EtcdTokenMinter, passwordScope } from './auth/etcd-tokens.js';
import { EtcdConnection, type ScopeAuth } from './etcd/connection.js';
import authPlugin from './plugins/auth.js';
import limitsPlugin from './plugins/limits.js';

export { FailClosedError } from './plugins/auth.js';
import browserGuardPlugin from './plugins/browser-guard.js';
import corsPlugin from './plugins/cors.js';
import errorsPlugin from './plugins/errors.js';
import etcdPlugin from './plugins/etcd.js';
import metricsPlugin from './plugins/metrics.js';
import openapiPlugin from './plugins/openapi.js';
import watchHubPlugin from './plugins/watch-hub.js';
import websocketPlugin from './plugins/websocket.js';
import clusterRoutes from './routes/cluster.js';
import electionRoutes from './routes/elections.js';
import healthRoutes from './routes/health.js';
import adminRoutes from './routes/admin.js';
import { MIN_EXCHANGE_MS, ticketRoutes, tokenRoutes } from './routes/auth.js';
import kvRoutes from './routes/kv.js';
import leaseRoutes, { leaseListRoutes } from './routes/leases.js';
import lockRoutes from './routes/locks.js';
import maintenanceRoutes from './routes/maintenance.js';
import txnRoutes from './routes/txn.js';
import v3Routes, { v3AdminRoutes, v3PublicRoutes } from './routes/v3.js';
import uiRoutes from './routes/ui.js';
import watchRoutes from './routes/watch.js';
import { sharedSchemas } from './schemas/index.js';

export type GatewayConfig = Omit<
  Config,
  'ETCD_ENDPOINTS' | 'PORT' | 'ALLOW_INSECURE_PUBLIC' | 'EMBEDDED_ETCD_DATA_DIR' | 'EMBEDDED_ETCD_CLIENT_PORT' | 'EMBEDDED_ETCD_PEER_PORT' | 'ETCD_BINARY'
>;

export interface AppOptions {
  config: GatewayConfig;
  /** etcd client URLs (the embedded member's, or ETCD_ENDPOINTS). */
  endpoints: string[];
  /** false: no logs. Otherwise pino options (pretty, stream). */
  logging?: false | Omit<LoggingOptions, 'level'>;
}

export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const { config } = opts;
  // HTTPS (and wss://) when a certificate is configured; the files are read
  // once here, so a bad path fails start-up rather than the first request.
  // A client trickling its headers holds a socket: they must arrive within
  // HEADERS_TIMEOUT_MS, checked every 2 s (Node: 60 s, checked every 30 s).
  const server = { headersTimeout: config.HEADERS_TIMEOUT_MS, connectionsCheckingInterval: Math.min(2000, config.HEADERS_TIMEOUT_MS) };
  const https = config.TLS_CERT_FILE && config.TLS_KEY_FILE ? { ...server, cert: readFileSync(config.TLS_CERT_FILE), key: readFileSync(config.TLS_KEY_FILE) } : null;
  const app = Fastify({
    https,
    ...(https ? {} : { http: server }),
    logger: opts.logging === false ? false : loggerOptions({ level: config.LOG_LEVEL, ...opts.logging }),
    bodyLimit: config.BODY_LIMIT,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    routerOptions: { maxParamLength: 64 * 1024 },
    ajv: {
      // Unknown query parameters are errors, not silently dropped: a typo like
      // ?prefx must not turn a listing into a single-key read.
      customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false },
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.addHook('onSend', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });

  for (const schema of sharedSchemas) app.addSchema(schema);

  const connection = new EtcdConnection({
    endpoints: opts.endpoints,
    timeoutMs: config.REQUEST_TIMEOUT_MS,
    tls: { caFile: config.ETCD_CA_FILE, certFile: config.ETCD_CERT_FILE, keyFile: config.ETCD_KEY_FILE },
  });
  const { minter, serviceAuth } = etcdIdentities(config, connection);

  await app.register(errorsPlugin);
  const corsOrigins = config.CORS_ORIGINS.split(',').map((o) => o.trim()).filter(Boolean);
  await app.register(etcdPlugin, { connection, serviceAuth });
  await app.register(authPlugin, {
    secret: config.AUTH_JWT_SECRET,
    publicKeyFile: config.AUTH_JWT_PUBLIC_KEY_FILE,
    jwksUrl: config.AUTH_JWKS_URL,
    privateKeyFile: config.AUTH_JWT_PRIVATE_KEY_FILE,
    issuer: config.AUTH_JWT_ISSUER,
    audience: config.AUTH_JWT_AUDIENCE,
    usernameClaim: config.AUTH_USERNAME_CLAIM,
    rolesClaim: config.AUTH_ROLES_CLAIM,
    tokenTtlSeconds: config.AUTH_TOKEN_TTL_SECONDS,
    typ: config.AUTH_JWT_TYP,
    allowRoot: config.AUTH_ALLOW_ROOT,
    serviceUser: config.ETCD_USERNAME,
    minter,
  });
  await app.register(watchHubPlugin, {
    bufferBatches: config.WATCH_BUFFER_BATCHES,
    bufferBytes: 8 * 1024 * 1024,
    bufferTotalBytes: config.WATCH_BUFFER_TOTAL_BYTES,
    progressIntervalMs: config.WATCH_HEARTBEAT_MS,
  });
  await app.register(websocketPlugin, { maxPayload: config.WATCH_MAX_MESSAGE_BYTES });
  // After the websocket plugin, whose own hooks must see a refused upgrade to close its socket.
  await app.register(browserGuardPlugin, { allowedHosts: config.ALLOWED_HOSTS, listenHost: config.HOST, corsOrigins });
  await app.register(openapiPlugin);
  await app.register(corsPlugin, { origins: corsOrigins });

  // Public scope: health, metrics, documentation, the web console, token exchange.
  await app.register(healthRoutes, { readyTimeoutMs: Math.min(config.REQUEST_TIMEOUT_MS, 2000) });
  await app.register(metricsPlugin);
  // Limits apply to every route registered from here on (not to the above).
  await app.register(limitsPlugin, {
    rateLimitMax: config.RATE_LIMIT_MAX,
    rateLimitWindowMs: config.RATE_LIMIT_WINDOW_MS,
    authRateLimitMax: config.AUTH_RATE_LIMIT_MAX,
    authRateLimitWindowMs: config.AUTH_RATE_LIMIT_WINDOW_MS,
    streamsPerSubject: config.STREAMS_PER_SUBJECT,
    wsMaxMessagesPerSecond: config.WS_MAX_MESSAGES_PER_SECOND,
    bodyTimeoutMs: config.BODY_TIMEOUT_MS,
  });
  await app.register(tokenRoutes);
  await app.register(v3PublicRoutes, { bodyLimit: config.BODY_LIMIT, minExchangeMs: MIN_EXCHANGE_MS });
  await app.register(uiRoutes);

  // Protected scope: every route registered in here runs the authentication
  // hook (when authentication is on) and calls etcd as its caller.
  await app.register(async (api) => {
    if (app.authEnabled) api.addHook('onRequest', app.authenticate);
    api.addHook('onRoute', (route) => {
      route.schema = { ...route.schema, security: [{ bearerAuth: [] }] };
    });
    await api.register(kvRoutes, {
      bodyLimit: config.BODY_LIMIT,
      listMaxKeys: config.LIST_MAX_KEYS,
      longPollMaxSeconds: config.LONG_POLL_MAX_SECONDS,
    });
    await api.register(watchRoutes, {
      maxSubscriptions: config.WATCH_MAX_SUBSCRIPTIONS,
      maxBufferedBytes: config.WATCH_MAX_BUFFERED_BYTES,
      heartbeatMs: config.WATCH_HEARTBEAT_MS,
      listMaxKeys: config.LIST_MAX_KEYS,
      requestTimeoutMs: config.REQUEST_TIMEOUT_MS,
    });
    await api.register(txnRoutes, { listMaxKeys: config.LIST_MAX_KEYS });
    await api.register(leaseRoutes, { timeoutMs: config.REQUEST_TIMEOUT_MS });
    await api.register(ticketRoutes);
    await api.register(lockRoutes, { timeoutMs: config.REQUEST_TIMEOUT_MS });
    await api.register(electionRoutes, {
      timeoutMs: config.REQUEST_TIMEOUT_MS,
      heartbeatMs: config.WATCH_HEARTBEAT_MS,
      maxBufferedBytes: config.WATCH_MAX_BUFFERED_BYTES,
      listMaxKeys: config.LIST_MAX_KEYS,
    });
    const v3Options = {
      bodyLimit: config.BODY_LIMIT,
      maxBufferedBytes: config.WATCH_MAX_BUFFERED_BYTES,
      timeoutMs: config.REQUEST_TIMEOUT_MS,
      listMaxKeys: config.LIST_MAX_KEYS,
      maxWatches: config.WATCH_MAX_SUBSCRIPTIONS,
    };
    // Admin scope, inside the protected one so that its hook runs after
    // authentication: every admin route of /v1 and /v3 is registered here
    // and nowhere else, and only holders of etcd's root role get through.
    await api.register(async (admin) => {
      adminScope(admin);
      await admin.register(adminRoutes);
      await admin.register(leaseListRoutes);
      // Per-member probes get a short deadline so one dead member cannot stall a
      // report; defragmentation and physical compaction a long one.
      const probeTimeoutMs = Math.min(config.REQUEST_TIMEOUT_MS, 2000);
      await admin.register(clusterRoutes, { probeTimeoutMs });
      await admin.register(maintenanceRoutes, {
        timeoutMs: config.REQUEST_TIMEOUT_MS,
        probeTimeoutMs,
        longTimeoutMs: Math.max(config.REQUEST_TIMEOUT_MS, 120_000),
      });
      await admin.register(v3AdminRoutes, v3Options);
    });
    await api.register(v3Routes, v3Options);
  });
  if (config.MAX_CONNECTIONS > 0) app.server.maxConnections = config.MAX_CONNECTIONS;
  return app;
}

/**
 * Who the gateway is to etcd. With etcd's signing key it mints tokens for its
 * service user and for every caller (learning the auth revision with the
 * service user's password); with only a password it uses etcd's own token;
 * with neither, etcd runs without authentication.
 */
function etcdIdentities(config: GatewayConfig, connection: EtcdConnection): { minter?: EtcdTokenMinter; serviceAuth?: ScopeAuth } {
  const { ETCD_USERNAME: name, ETCD_PASSWORD: password } = config;
  const authenticate = async () => {
    if (!name || !password) throw new Error('ETCD_USERNAME and ETCD_PASSWORD are needed to learn etcd\'s auth revision');
    const res = await connection.exec<{ token: string }>('Auth', 'authenticate', { name, password });
    return res.token;
  };
  if (config.ETCD_TOKEN_SIGNING_KEY_FILE) {
    if (!name || !password) throw new Error('ETCD_TOKEN_SIGNING_KEY_FILE needs ETCD_USERNAME and ETCD_PASSWORD (the gateway\'s service user)');
    const minter = EtcdTokenMinter.fromFile(config.ETCD_TOKEN_SIGNING_KEY_FILE, { signMethod: config.ETCD_TOKEN_SIGN_METHOD, authenticate });
    return { minter, serviceAuth: minter.scopeFor(name) };
  }
  if (name && password) return { serviceAuth: passwordScope(authenticate) };
  return {};
}
