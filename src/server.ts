// The process entry: configuration, the embedded etcd when no cluster is
// configured, listen, and graceful shutdown. Everything else is in buildApp.
import closeWithGrace from 'close-with-grace';
import { buildApp, FailClosedError } from './app.js';
import { assertSafeExposure } from './auth/exposure.js';
import { ConfigError, loadConfig, parseEndpoints } from './config.js';
import { startEmbeddedEtcd, type EmbeddedEtcd } from './etcd/embedded.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`etcd-gateway: invalid configuration: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  assertSafeExposure({
    host: config.HOST,
    authEnabled: Boolean(config.AUTH_JWT_SECRET || config.AUTH_JWT_PUBLIC_KEY_FILE || config.AUTH_JWKS_URL),
    allowInsecurePublic: config.ALLOW_INSECURE_PUBLIC,
  });

  let embedded: EmbeddedEtcd | undefined;
  let endpoints: string[];
  if (config.ETCD_ENDPOINTS) {
    endpoints = parseEndpoints(config.ETCD_ENDPOINTS);
  } else {
    process.stderr.write(
      `etcd-gateway: ETCD_ENDPOINTS is unset; starting an embedded etcd on 127.0.0.1:${config.EMBEDDED_ETCD_CLIENT_PORT} (data in ${config.EMBEDDED_ETCD_DATA_DIR})\n`,
    );
    embedded = await startEmbeddedEtcd({
      dataDir: config.EMBEDDED_ETCD_DATA_DIR,
      clientPort: config.EMBEDDED_ETCD_CLIENT_PORT,
      peerPort: config.EMBEDDED_ETCD_PEER_PORT,
      binary: config.ETCD_BINARY,
    });
    endpoints = embedded.endpoints;
    // With a service user configured, per-caller tokens are minted with the
    // embedded etcd's own key unless another is given.
    if (config.ETCD_USERNAME && !config.ETCD_TOKEN_SIGNING_KEY_FILE) config.ETCD_TOKEN_SIGNING_KEY_FILE = embedded.signingKeyFile;
  }

  try {
    const app = await buildApp({ config, endpoints, logging: { pretty: process.stdout.isTTY } });
    let shuttingDown = false;
    // If the embedded etcd dies, the gateway cannot serve: stop rather than answer 503 forever.
    void embedded?.process.exited.then((code) => {
      if (shuttingDown) return;
      app.log.fatal({ code, etcd: embedded?.process.tail() }, 'embedded etcd exited');
      process.exit(1);
    });
    closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
      shuttingDown = true;
      if (err) app.log.error({ err }, 'shutting down after an error');
      else app.log.info({ signal }, 'shutting down');
      await app.close();
      await embedded?.stop();
    });
    await app.listen({ host: config.HOST, port: config.PORT });
  } catch (err) {
    // The embedded etcd is our child: never leave it running behind a failed start.
    await embedded?.stop();
    throw err;
  }
}

main().catch((err) => {
  process.stderr.write(`etcd-gateway: ${err instanceof Error ? err.message : String(err)}\n`);
  // Refusing an unsafe start is a configuration error (2), like a bad variable.
  process.exit(err instanceof FailClosedError ? 2 : 1);
});
