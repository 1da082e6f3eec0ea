// Writes openapi/openapi.json from the route schemas: `npm run openapi`.
// test/openapi.test.ts fails when the committed file drifts from the routes.
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';

export const SPEC_PATH = fileURLToPath(new URL('../openapi/openapi.json', import.meta.url));

/** The spec as the running gateway serves it. No etcd is contacted: connections are lazy. */
export async function generateOpenApi(): Promise<Record<string, unknown>> {
  const app = await buildApp({ config: loadConfig({}), endpoints: ['http://127.0.0.1:1'], logging: false });
  try {
    await app.ready();
    return app.swagger() as unknown as Record<string, unknown>;
  } finally {
    await app.close();
  }
}

export function serialize(spec: unknown): string {
  return `${JSON.stringify(spec, null, 2)}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const spec = await generateOpenApi();
  await mkdir(new URL('../openapi/', import.meta.url), { recursive: true });
  await writeFile(SPEC_PATH, serialize(spec));
  process.stdout.write(`wrote ${SPEC_PATH}\n`);
}
