// The embedded default: with ETCD_ENDPOINTS unset, the gateway runs a local
// single-member etcd as a child process so that `npm start` works out of the box.
import { generateKeyPairSync } from 'node:crypto';
import { access, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { spawnEtcd, type EtcdProcess } from './process.js';

export interface EmbeddedEtcdOptions {
  dataDir: string;
  clientPort: number;
  peerPort: number;
  binary: string;
  /** How long to wait for etcd to become ready. */
  startTimeoutMs?: number;
}

export interface EmbeddedEtcd {
  endpoints: string[];
  /** etcd's JWT signing key: the gateway mints per-caller tokens with it once auth is enabled. */
  signingKeyFile: string;
  process: EtcdProcess;
  stop(): Promise<void>;
}

export async function startEmbeddedEtcd(opts: EmbeddedEtcdOptions): Promise<EmbeddedEtcd> {
  const dataDir = resolve(opts.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const keys = await jwtKeys(join(dirname(dataDir), 'etcd-jwt'));
  // Loopback only: the embedded member is a convenience for one machine, never
  // something another host should reach.
  const clientUrl = `http://127.0.0.1:${opts.clientPort}`;
  const peerUrl = `http://127.0.0.1:${opts.peerPort}`;
  const proc = spawnEtcd(
    {
      name: 'embedded',
      dataDir,
      clientUrl,
      peerUrl,
      initialCluster: `embedded=${peerUrl}`,
      clusterToken: 'etcd-gateway-embedded',
      extraArgs: [
        '--auto-compaction-mode=revision',
        '--auto-compaction-retention=10000',
        // JWT auth tokens, so that `etcdctl auth enable` is all it takes to put
        // the gateway's per-caller authorization to work (see the README).
        `--auth-token=jwt,pub-key=${keys.publicKeyFile},priv-key=${keys.signingKeyFile},sign-method=RS256,ttl=10m`,
      ],
    },
    opts.binary,
  );
  const timeoutMs = opts.startTimeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      proc.ready,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`embedded etcd not ready after ${timeoutMs} ms:\n${proc.tail()}`)),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    await proc.stop('SIGKILL');
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { endpoints: [clientUrl], signingKeyFile: keys.signingKeyFile, process: proc, stop: () => proc.stop() };
}

/** The embedded etcd's JWT key pair, made once and kept beside its data. */
async function jwtKeys(dir: string): Promise<{ signingKeyFile: string; publicKeyFile: string }> {
  const signingKeyFile = join(dir, 'jwt.key');
  const publicKeyFile = join(dir, 'jwt.pub');
  const exists = await access(signingKeyFile).then(
    () => true,
    () => false,
  );
  if (!exists) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    await writeFile(signingKeyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    await writeFile(publicKeyFile, publicKey.export({ type: 'spki', format: 'pem' }));
  }
  return { signingKeyFile, publicKeyFile };
}
