// The app factory. The gateway is a Fastify app built from plugins; the
// process entry (src/server.ts) and the tests build the same app.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Config } from './config.js';
import { loggerOptions, type LoggingOptions } from './logging.js';
import errorsPlugin from './plugins/errors.js';
import etcdPlugin from './plugins/etcd.js';
import openapiPlugin from './plugins/openapi.js';
import healthRoutes from './routes/health.js';
import kvRoutes from './routes/kv.js';
import leaseRoutes from './routes/leases.js';
import txnRoutes from './routes/txn.js';
import { ProblemSchema } from './schemas/common.js';
import { DeleteResultSchema, KeyValueSchema, ListingSchema, PutResultSchema } from './schemas/kv.js';
import { LeaseInfoSchema, LeaseListSchema, LeaseRevokedSchema, LeaseSchema } from './schemas/leases.js';
import { TxnCompareSchema, TxnOpResponseSchema, TxnOpSchema, TxnRequestSchema, TxnResponseSchema } from './schemas/txn.js';

export type GatewayConfig = Pick<
  Config,
  'BODY_LIMIT' | 'REQUEST_TIMEOUT_MS' | 'LIST_MAX_KEYS' | 'LOG_LEVEL' | 'ETCD_CA_FILE' | 'ETCD_CERT_FILE' | 'ETCD_KEY_FILE'
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
  const app = Fastify({
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

  for (const schema of [
    ProblemSchema,
    KeyValueSchema,
    ListingSchema,
    PutResultSchema,
    DeleteResultSchema,
    TxnCompareSchema,
    TxnOpSchema,
    TxnRequestSchema,
    TxnOpResponseSchema,
    TxnResponseSchema,
    LeaseSchema,
    LeaseInfoSchema,
    LeaseListSchema,
    LeaseRevokedSchema,
  ]) {
    app.addSchema(schema);
  }

  await app.register(errorsPlugin);
  await app.register(etcdPlugin, {
    endpoints: opts.endpoints,
    timeoutMs: config.REQUEST_TIMEOUT_MS,
    tls: { caFile: config.ETCD_CA_FILE, certFile: config.ETCD_CERT_FILE, keyFile: config.ETCD_KEY_FILE },
  });
  await app.register(openapiPlugin);
  await app.register(healthRoutes, { readyTimeoutMs: Math.min(config.REQUEST_TIMEOUT_MS, 2000) });
  await app.register(kvRoutes, { bodyLimit: config.BODY_LIMIT, listMaxKeys: config.LIST_MAX_KEYS });
  await app.register(txnRoutes, { listMaxKeys: config.LIST_MAX_KEYS });
  await app.register(leaseRoutes, { timeoutMs: config.REQUEST_TIMEOUT_MS });
  return app;
}
