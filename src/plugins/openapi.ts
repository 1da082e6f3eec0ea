// OpenAPI 3.1 generated from the route schemas (@fastify/swagger), served at
// /openapi.json with Swagger UI at /docs. The same document is committed as
// openapi/openapi.json (npm run openapi) and a test fails when they drift.
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import fp from 'fastify-plugin';
import { createRequire } from 'node:module';
import { problemResponse } from '../schemas/common.js';

const pkg = createRequire(import.meta.url)('../../package.json') as { version: string; description: string };

type JsonObject = Record<string, unknown>;

/** Publishes Fastify's wildcard `*` as a named path parameter `{key}`: code generators reject `{*}`. */
export function renameWildcard(url: string, schema: JsonObject | undefined): { url: string; schema: JsonObject | undefined } {
  if (!url.endsWith('*')) return { url, schema };
  const params = schema?.params as { properties?: JsonObject; required?: string[] } | undefined;
  if (!params?.properties?.['*']) return { url: url.replace(/\*$/, '{key}'), schema };
  const { '*': wildcard, ...rest } = params.properties;
  return {
    url: url.replace(/\*$/, '{key}'),
    schema: {
      ...schema,
      params: { ...params, properties: { ...rest, key: wildcard }, required: ['key'] },
    },
  };
}

/**
 * @fastify/websocket hides websocket routes from the spec; OpenAPI cannot
 * model a message stream, so the upgrade is described as a GET answering 101,
 * with the message schemas as components.
 */
export const WEBSOCKET_PATHS: Record<string, unknown> = {
  '/v1/watch': {
    get: {
      tags: ['watch'],
      summary: 'Watch over a websocket: many subscriptions per socket',
      description: [
        'Upgrade to a websocket. Every message is one JSON text frame.',
        'Client → gateway: `WatchSubscribe`, `WatchUnsubscribe`, `WatchKeepAlive`, `WatchObserve` (an election\'s leader).',
        'Gateway → client: `WatchServerMessage` (`created`, `events`, `synced`, `progress`, `canceled`, `leader`, `no_leader`, `keepalive`, `error`, `shutdown`).',
        'Close codes: 1001 gateway shutting down (after a `shutdown` message with resume revisions), 1009 message too large,',
        '4008 slow consumer (after an `error` message with resume revisions). Resubscribe with `start_revision` = the resume revision.',
        'Browsers from other origins need CORS_ORIGINS.',
      ].join('\n'),
      'x-websocket': true,
      security: [{ bearerAuth: [] }],
      'x-websocket-messages': {
        client: [
          { $ref: '#/components/schemas/WatchSubscribe' },
          { $ref: '#/components/schemas/WatchUnsubscribe' },
          { $ref: '#/components/schemas/WatchKeepAlive' },
          { $ref: '#/components/schemas/WatchObserve' },
        ],
        server: { $ref: '#/components/schemas/WatchServerMessage' },
      },
      responses: {
        101: { description: 'Switching Protocols: the watch protocol begins' },
        400: { description: 'Not a valid websocket upgrade' },
        426: { description: 'Upgrade Required: a plain GET', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
        403: { description: 'Origin not allowed', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
        421: { description: 'Host not in ALLOWED_HOSTS', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
      },
    },
  },
};

const HOST_NOT_ALLOWED = { ...problemResponse(421), description: 'Host not in ALLOWED_HOSTS (`host_not_allowed`)' };
const ORIGIN_NOT_ALLOWED = { ...problemResponse(403), description: 'Not permitted; from a browser, an origin neither the gateway\'s own nor in CORS_ORIGINS (`origin_not_allowed`)' };

/**
 * The answers of src/plugins/browser-guard.ts, which runs before every route:
 * 421 wherever Host is checked, 403 on unsafe methods. Listed on routes that
 * describe their errors as problem+json (not /v3, whose errors are etcd's).
 */
export function withBrowserGuard(schema: JsonObject | undefined, method: string | string[], anyHost: boolean): JsonObject | undefined {
  const response = schema?.response as Record<string, { content?: Record<string, unknown> }> | undefined;
  if (!response || !Object.values(response).some((r) => r?.content?.['application/problem+json'])) return schema;
  const methods = ([] as string[]).concat(method);
  const unsafe = methods.some((m) => ['POST', 'PUT', 'PATCH', 'DELETE'].includes(m));
  return {
    ...schema,
    response: {
      ...response,
      ...(unsafe && !response[403] ? { 403: ORIGIN_NOT_ALLOWED } : {}),
      ...(anyHost ? {} : { 421: HOST_NOT_ALLOWED }),
    },
  };
}

const VALUE_BODY = {
  required: false,
  description: 'The value, stored verbatim whatever the Content-Type (an empty body stores an empty value).',
  content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } }, '*/*': { schema: { type: 'string', format: 'binary' } } },
};

// The console's policy (src/routes/ui.ts) for Swagger UI, whose scripts and
// styles are files of its own: no inline script, no other origin, no framing.
// The spec is fetched from this origin and "Try it out" calls it. The hash is
// the one inline <style> Swagger UI renders (its SVG logo's fill colours).
export const DOCS_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; img-src 'self' data:; " +
  "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

export default fp(
  async (app) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'etcd-gateway',
          version: pkg.version,
          description: `${pkg.description}. Errors are RFC 9457 problem details; see the README.`,
        },
        components: {
          securitySchemes: {
            bearerAuth: {
              type: 'http',
              scheme: 'bearer',
              bearerFormat: 'JWT',
              description: 'A gateway JWT (POST /v1/auth/token or your identity provider). Required when the gateway runs with authentication.',
            },
          },
        },
        tags: [
          { name: 'kv', description: 'Keys: read, list, write, delete' },
          { name: 'watch', description: 'Watches: websocket, Server-Sent Events, long-poll (`?wait` on /v1/kv)' },
          { name: 'txn', description: 'Transactions: compare, then put, get, delete or nested txn, atomically' },
          { name: 'leases', description: 'Leases: grant, list, time to live, keep-alive, revoke' },
          { name: 'locks', description: 'Locks that wait in line, shared with etcdctl lock' },
          { name: 'elections', description: 'Leader elections: campaign, leader, proclaim, resign; shared with etcdctl elect' },
          { name: 'cluster', description: 'Members (add, remove, update, promote), per-endpoint status and health' },
          { name: 'maintenance', description: 'Compaction, defragmentation, snapshots, alarms, hashkv, move-leader' },
          { name: 'operations', description: 'Health, readiness, documentation' },
          { name: 'auth', description: 'Tokens, tickets, users and roles' },
          { name: 'v3', description: "etcd's own /v3 JSON protocol (its grpc-gateway), for existing etcd JSON clients" },
        ],
      },
      refResolver: {
        // Components keep the names of their $id instead of def-0, def-1, ...
        buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`),
      },
      transform: ({ schema, url, route }) => {
        const out = renameWildcard(url, schema as unknown as JsonObject);
        return { url: out.url, schema: withBrowserGuard(out.schema, route.method, route.config?.anyHost === true) as never };
      },
      transformObject: (documentObject) => {
        type Paths = Record<string, Record<string, { requestBody?: unknown }>>;
        const doc = (documentObject as { openapiObject: { paths?: Paths } }).openapiObject;
        const paths: Paths = { ...(doc.paths ?? {}), ...(WEBSOCKET_PATHS as Paths) };
        doc.paths = paths;
        // Request bodies @fastify/swagger cannot describe from a schema: a
        // value is any bytes, and options bodies may be left out.
        const put = paths['/v1/kv/{key}']?.put;
        if (put) put.requestBody = VALUE_BODY;
        for (const path of ['/v1/locks/{name}', '/v1/leases/{id}/keepalive']) {
          const post = paths[path]?.post as { requestBody?: { required?: boolean } } | undefined;
          if (post?.requestBody) post.requestBody.required = false;
        }
        return doc as never;
      },
    });
    await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: DOCS_CSP });
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'openapi', fastify: '5.x' },
);
