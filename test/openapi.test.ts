// The committed spec is what the routes generate, it is valid OpenAPI 3.1
// (two independent validators), and every path parameter is declared.
import SwaggerParser from '@apidevtools/swagger-parser';
import { Validator } from '@seriousme/openapi-schema-validator';
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { SPEC_PATH, generateOpenApi, serialize } from '../scripts/openapi.js';

const spec = await generateOpenApi();

t.test('openapi/openapi.json is current (run `npm run openapi` after changing routes)', async (t) => {
  const committed = await readFile(SPEC_PATH, 'utf8');
  t.equal(committed, serialize(spec));
});

t.test('the spec is valid OpenAPI 3.1', async (t) => {
  t.equal(spec.openapi, '3.1.0');
  const result = await new Validator().validate(structuredClone(spec) as never);
  t.same(result.errors ?? [], [], 'openapi-schema-validator');
  t.ok(result.valid);
  await t.resolves(SwaggerParser.validate(structuredClone(spec) as never), 'swagger-parser');
});

t.test('every {param} in a path is declared, and no wildcard leaks as {*}', async (t) => {
  const paths = spec.paths as Record<string, Record<string, { parameters?: { in: string; name: string }[] }>>;
  t.ok(paths['/v1/kv/{key}'], 'the key route is published as /v1/kv/{key}');
  for (const [path, ops] of Object.entries(paths)) {
    t.notMatch(path, /\{\*\}|\*/, `${path} has no wildcard`);
    const names = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    for (const [method, op] of Object.entries(ops)) {
      const declared = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
      t.same(declared.sort(), [...names].sort(), `${method.toUpperCase()} ${path} declares its path parameters`);
    }
  }
});

t.test('components keep their names and every route has a tag and error schema', async (t) => {
  const schemas = (spec.components as { schemas: Record<string, unknown> }).schemas;
  for (const name of ['Problem', 'KeyValue', 'Listing', 'PutResult', 'DeleteResult']) t.ok(schemas[name], `component ${name}`);
  t.notOk(Object.keys(schemas).some((k) => /^def-\d+$/.test(k)), 'no anonymous def-N components');
  const paths = spec.paths as Record<string, Record<string, { tags?: string[]; responses: Record<string, unknown> }>>;
  for (const [path, ops] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(ops)) {
      t.ok(op.tags?.length, `${method.toUpperCase()} ${path} is tagged`);
      if (path.startsWith('/v1/')) t.ok(op.responses['400'] || op.responses['500'], `${method.toUpperCase()} ${path} documents errors`);
    }
  }
});

t.test('the running gateway serves the same spec and Swagger UI', async (t) => {
  const { buildApp } = await import('../src/app.js');
  const { loadConfig } = await import('../src/config.js');
  const app = await buildApp({ config: loadConfig({}), endpoints: ['http://127.0.0.1:1'], logging: false });
  t.teardown(() => app.close());
  const res = await app.inject({ url: '/openapi.json' });
  t.equal(res.statusCode, 200);
  t.same(res.json(), spec);
  const docs = await app.inject({ url: '/docs/' });
  t.equal(docs.statusCode, 200);
  t.match(docs.body, /swagger-ui/i);
});
