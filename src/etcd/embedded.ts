// The embedded default: with ETCD_ENDPOINTS unset, the gateway runs a local
// single-member etcd as a child process so that `npm start` works out of the box.
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
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
  process: EtcdProcess;
  stop(): Promise<void>;
}

export async function startEmbeddedEtcd(opts: EmbeddedEtcdOptions): Promise<EmbeddedEtcd> {
  const dataDir = resolve(opts.dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
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
      extraArgs: ['--auto-compaction-mode=revision', '--auto-compaction-retention=10000'],
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
  return { endpoints: [clientUrl], process: proc, stop: () => proc.stop() };
}
