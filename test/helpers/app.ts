// Builds the gateway app exactly as src/server.ts does, against a test cluster.
import type { FastifyInstance } from 'fastify';
import { buildApp, type AppOptions } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';

interface Teardownable {
  teardown(fn: () => unknown): void;
}

export function testConfig(overrides: Partial<Config> = {}): Config {
  return { ...loadConfig({}), ...overrides };
}

export async function buildTestApp(
  t: Teardownable,
  endpoints: string[],
  overrides: Partial<Config> = {},
  logging: AppOptions['logging'] = false,
): Promise<FastifyInstance> {
  const app = await buildApp({ config: testConfig(overrides), endpoints, logging });
  t.teardown(() => app.close());
  await app.ready();
  return app;
}

/** Listens on a random loopback port; returns the base URL. */
export async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address() as { port: number };
  return `http://127.0.0.1:${addr.port}`;
}
