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
  ALLOWED_HOSTS: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'Comma-separated host names (with an optional :port) that requests may name in their Host header; `*` allows any. Unset: localhost, 127.0.0.1, [::1], HOST and any IP address, on any port.',
    }),
  ),
  CORS_ORIGINS: Type.String({
    default: '',
    description: 'Comma-separated browser origins allowed to open websockets (besides the same origin).',
  }),
  WATCH_MAX_SUBSCRIPTIONS: Type.Integer({ default: 100, minimum: 1, description: 'Most subscriptions on one websocket.' }),
  WATCH_MAX_BUFFERED_BYTES: Type.Integer({
    default: 4 * 1024 * 1024,
    minimum: 1024,
    description: 'Unsent bytes a watch client may fall behind by before it is cut off with its resume revision.',
  }),
  WATCH_MAX_MESSAGE_BYTES: Type.Integer({ default: 64 * 1024, minimum: 256, description: 'Largest websocket message a client may send.' }),
  WATCH_HEARTBEAT_MS: Type.Integer({ default: 15_000, minimum: 100, description: 'Websocket ping and SSE heartbeat interval.' }),
  WATCH_BUFFER_BATCHES: Type.Integer({
    default: 1000,
    minimum: 0,
    description: 'Recent revisions each shared etcd watch keeps so late joiners can share it.',
  }),
  WATCH_BUFFER_TOTAL_BYTES: Type.Integer({
    default: 64 * 1024 * 1024,
    minimum: 0,
    description: 'Most bytes of recent events all shared etcd watches together keep for late joiners (each also keeps at most 8 MiB).',
  }),
  LONG_POLL_MAX_SECONDS: Type.Integer({ default: 300, minimum: 1, description: 'Longest ?wait long-poll.' }),
  // Limits against abuse (src/plugins/limits.ts). The defaults are far above
  // what one team's use of one gateway sends; they stop floods, not work.
  RATE_LIMIT_MAX: Type.Integer({
    default: 100_000,
    minimum: 0,
    description: 'Requests per RATE_LIMIT_WINDOW_MS per caller (the etcd user; the client address without authentication); 0: no limit.',
  }),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ default: 10_000, minimum: 100 }),
  AUTH_RATE_LIMIT_MAX: Type.Integer({
    default: 10,
    minimum: 0,
    description: 'Password checks (POST /v1/auth/token, /v3/auth/authenticate) per AUTH_RATE_LIMIT_WINDOW_MS, per client address and per user name; 0: no limit.',
  }),
  AUTH_RATE_LIMIT_WINDOW_MS: Type.Integer({ default: 60_000, minimum: 100 }),
  STREAMS_PER_SUBJECT: Type.Integer({
    default: 100,
    minimum: 0,
    description: 'Open websockets, SSE streams, /v3 streams, long-polls and lock or campaign waits per etcd user (with authentication on); 0: no limit.',
  }),
  WS_MAX_MESSAGES_PER_SECOND: Type.Integer({ default: 100, minimum: 0, description: 'Messages a client may send on one websocket per second (bursts up to as many); 0: no limit.' }),
  HEADERS_TIMEOUT_MS: Type.Integer({ default: 10_000, minimum: 500, maximum: 60_000, description: 'Time a client has to send a request\'s headers.' }),
  BODY_TIMEOUT_MS: Type.Integer({
    default: 30_000,
    minimum: 500,
    description: 'Time a client has to send a request\'s body (a /v3 stream\'s body, read while it is answered, is exempt).',
  }),
  MAX_CONNECTIONS: Type.Integer({ default: 10_000, minimum: 0, description: 'Most open client connections (websockets included); 0: no limit.' }),
  ALLOW_INSECURE_PUBLIC: Type.Boolean({
    default: false,
    description: 'Allow listening on a non-loopback address while authentication is off.',
  }),
  AUTH_JWT_SECRET: Type.Optional(Type.String({ minLength: 32, writeOnly: true, description: 'HS256 secret for callers\' JWTs (at least 32 characters). Turns authentication on.' })),
  AUTH_JWT_PUBLIC_KEY_FILE: Type.Optional(
    Type.String({ minLength: 1, description: 'PEM public key (RSA → RS256, EC P-256 → ES256) for callers\' JWTs. Turns authentication on.' }),
  ),
  AUTH_JWKS_URL: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        "An identity provider's JSON Web Key Set URL (its jwks_uri): callers' JWTs are verified with the key their kid names (RS/PS/ES/EdDSA). Turns authentication on. Add AUTH_JWT_SECRET for the gateway's own tokens and SSE tickets.",
    }),
  ),
  AUTH_JWT_PRIVATE_KEY_FILE: Type.Optional(
    Type.String({ minLength: 1, description: 'PEM private key matching AUTH_JWT_PUBLIC_KEY_FILE, so that POST /v1/auth/token can issue tokens.' }),
  ),
  AUTH_JWT_ISSUER: Type.String({ default: 'etcd-gateway', minLength: 1 }),
  AUTH_JWT_AUDIENCE: Type.String({ default: 'etcd-gateway', minLength: 1 }),
  AUTH_JWT_TYP: Type.Optional(
    Type.String({ minLength: 1, description: "Required `typ` header of callers' JWTs (e.g. at+jwt, RFC 9068); the gateway's own tokens carry it too. Unset: not checked." }),
  ),
  AUTH_USERNAME_CLAIM: Type.String({ default: 'sub', minLength: 1, description: 'The JWT claim that names the etcd user.' }),
  AUTH_ROLES_CLAIM: Type.Optional(
    Type.String({
      minLength: 1,
      description: 'Off by default. A claim (e.g. roles, groups) listing etcd role names: such callers act as a gateway-managed etcd user holding exactly those roles.',
    }),
  ),
  AUTH_TOKEN_TTL_SECONDS: Type.Integer({ default: 3600, minimum: 60, description: 'Lifetime of tokens from POST /v1/auth/token.' }),
  AUTH_ALLOW_ROOT: Type.Boolean({ default: false, description: "Allow callers whose JWT names etcd's root user or the gateway's own (ETCD_USERNAME)." }),
  ETCD_USERNAME: Type.Optional(Type.String({ minLength: 1, description: 'The gateway\'s own etcd user (when etcd auth is on).' })),
  ETCD_PASSWORD: Type.Optional(Type.String({ minLength: 1, writeOnly: true })),
  ETCD_TOKEN_SIGNING_KEY_FILE: Type.Optional(
    Type.String({ minLength: 1, description: 'etcd\'s JWT private key (--auth-token jwt,priv-key=...), to call etcd as each caller.' }),
  ),
  ETCD_TOKEN_SIGN_METHOD: Type.Enum(['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'], {
    default: 'RS256',
    description: 'etcd\'s --auth-token sign-method.',
  }),
  TLS_CERT_FILE: Type.Optional(
    Type.String({ minLength: 1, description: "PEM certificate (chain) for serving HTTPS and wss://; with TLS_KEY_FILE. Unset: plain HTTP." }),
  ),
  TLS_KEY_FILE: Type.Optional(Type.String({ minLength: 1, description: 'PEM private key of TLS_CERT_FILE.' })),
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
  let config: Config;
  try {
    config = envSchema<Config>({ schema: structuredClone(ConfigSchema), data, env: false, dotenv: false });
  } catch (err) {
    const first = ((err as { errors?: AjvError[] }).errors ?? [])[0];
    if (!first) throw new ConfigError(`invalid configuration: ${(err as Error).message}`);
    const name = first.instancePath?.replace(/^\//, '') || first.params?.missingProperty || 'configuration';
    // Secrets (writeOnly in the schema) are never repeated: this line goes to logs.
    const secret = (ConfigSchema.properties as Record<string, { writeOnly?: boolean }>)[name]?.writeOnly === true;
    const got = data[name] === undefined || secret ? '' : ` (got ${JSON.stringify(data[name])})`;
    const message = name === 'LOG_LEVEL' ? 'must be one of fatal, error, warn, info, debug, trace, silent' : first.message;
    throw new ConfigError(`${name}: ${message}${got}`);
  }
  if (Boolean(config.TLS_CERT_FILE) !== Boolean(config.TLS_KEY_FILE)) {
    throw new ConfigError(config.TLS_CERT_FILE ? 'TLS_KEY_FILE: required with TLS_CERT_FILE' : 'TLS_CERT_FILE: required with TLS_KEY_FILE');
  }
  return config;
}

export function parseEndpoints(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}
