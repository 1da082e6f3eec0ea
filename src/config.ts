// Configuration: one TypeBox schema over the environment, validated once at
// boot by env-schema. The rest of the code receives the typed result as
// options and never reads process.env itself.
import envSchema from 'env-schema';
import { Type, type Static } from 'typebox';

export const ConfigSchema = Type.Object({
  ETCD_ENDPOINTS: Type.Optional(
    Type.String({
      description: 'Comma-separated etcd client URLs. Unset: start an embedded single-member etcd under ./data/etcd.',
      pattern: '^\\s*https?://[^,\\s]+(\\s*,\\s*https?://[^,\\s]+)*\\s*$',
    }),
  ),
  HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  PORT: Type.Integer({ default: 8080, minimum: 0, maximum: 65535 }),
  LOG_LEVEL: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' }),
  BODY_LIMIT: Type.Integer({
    default: 1_572_864,
    minimum: 1024,
    description: 'Largest request body in bytes; etcd refuses requests over 1.5 MiB by default.',
  }),
  REQUEST_TIMEOUT_MS: Type.Integer({ default: 5000, minimum: 100, maximum: 600_000 }),
  LIST_MAX_KEYS: Type.Integer({
    default: 1000,
    minimum: 1,
    maximum: 100_000,
    description: 'Most keys one listing returns; a larger listing is paged with `more` and `next`.',
  }),
  ALLOW_INSECURE_PUBLIC: Type.Boolean({
    default: false,
    description: 'Allow listening on a non-loopback address while authentication is off.',
  }),
  ETCD_CA_FILE: Type.Optional(Type.String({ minLength: 1 })),
  ETCD_CERT_FILE: Type.Optional(Type.String({ minLength: 1 })),
  ETCD_KEY_FILE: Type.Optional(Type.String({ minLength: 1 })),
  EMBEDDED_ETCD_DATA_DIR: Type.String({ default: './data/etcd', minLength: 1 }),
  EMBEDDED_ETCD_CLIENT_PORT: Type.Integer({ default: 23790, minimum: 1, maximum: 65535 }),
  EMBEDDED_ETCD_PEER_PORT: Type.Integer({ default: 23800, minimum: 1, maximum: 65535 }),
  ETCD_BINARY: Type.String({ default: 'etcd', minLength: 1 }),
});

export type Config = Static<typeof ConfigSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

// Shell habits for switches (ALLOW_INSECURE_PUBLIC=1); ajv only coerces true/false.
const BOOLEAN_WORDS: Record<string, string> = { '1': 'true', yes: 'true', on: 'true', '0': 'false', no: 'false', off: 'false' };

interface AjvError {
  instancePath?: string;
  message?: string;
  params?: { missingProperty?: string; allowedValues?: unknown[] };
}

/**
 * Validates the environment. A bad value throws a ConfigError whose message is
 * one line naming the variable, e.g. `PORT: must be <= 65535 (got "70000")`.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const known = Object.keys(ConfigSchema.properties);
  // Only our variables are validated; the rest of the environment is not ours.
  // Empty strings count as unset, as shells make `FOO=` easy to leave behind.
  const data: Record<string, string> = {};
  for (const name of known) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    const isSwitch = (ConfigSchema.properties as Record<string, { type?: string }>)[name]?.type === 'boolean';
    data[name] = isSwitch ? (BOOLEAN_WORDS[value.toLowerCase()] ?? value) : value;
  }
  try {
    return envSchema<Config>({ schema: structuredClone(ConfigSchema), data, env: false, dotenv: false });
  } catch (err) {
    const first = ((err as { errors?: AjvError[] }).errors ?? [])[0];
    if (!first) throw new ConfigError(`invalid configuration: ${(err as Error).message}`);
    const name = first.instancePath?.replace(/^\//, '') || first.params?.missingProperty || 'configuration';
    const got = data[name] === undefined ? '' : ` (got ${JSON.stringify(data[name])})`;
    const message = name === 'LOG_LEVEL' ? 'must be one of fatal, error, warn, info, debug, trace, silent' : first.message;
    throw new ConfigError(`${name}: ${message}${got}`);
  }
}

export function parseEndpoints(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}
