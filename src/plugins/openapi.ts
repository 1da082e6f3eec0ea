// OpenAPI 3.1 generated from the route schemas (@fastify/swagger), served at
// /openapi.json with Swagger UI at /docs. The same document is committed as
// openapi/openapi.json (npm run openapi) and a test fails when they drift.
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import fp from 'fastify-plugin';
import { createRequire } from 'node:module';

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
        tags: [
          { name: 'kv', description: 'Keys: read, list, write, delete' },
          { name: 'txn', description: 'Transactions: compare, then put, get, delete or nested txn, atomically' },
          { name: 'leases', description: 'Leases: grant, list, time to live, keep-alive, revoke' },
          { name: 'operations', description: 'Health, readiness, documentation' },
        ],
      },
      refResolver: {
        // Components keep the names of their $id instead of def-0, def-1, ...
        buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`),
      },
      transform: ({ schema, url }) => {
        const out = renameWildcard(url, schema as unknown as JsonObject);
        return { url: out.url, schema: out.schema as never };
      },
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'openapi', fastify: '5.x' },
);
