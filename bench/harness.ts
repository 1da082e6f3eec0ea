// What both benchmarks need: one etcd member and the gateway as its own
// process (node dist/server.js), on loopback, and the resident memory of a process.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnEtcd, type EtcdProcess } from '../src/etcd/process.js';
import { freePort } from '../test/helpers/cluster.js';

export interface Bench {
  etcd: EtcdProcess;
  etcdPort: number;
  gateway: ChildProcess;
  gatewayPort: number;
  stop(): Promise<void>;
}

export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

export async function startBench(gatewayEnv: Record<string, string> = {}): Promise<Bench> {
  const dir = await mkdtemp(join(tmpdir(), 'etcd-gw-bench-'));
  const etcdPort = await freePort();
  const peerPort = await freePort();
  const etcd = spawnEtcd({
    name: 'bench',
    dataDir: join(dir, 'etcd'),
    clientUrl: `http://127.0.0.1:${etcdPort}`,
    peerUrl: `http://127.0.0.1:${peerPort}`,
    initialCluster: `bench=http://127.0.0.1:${peerPort}`,
  });
  await etcd.ready;
  const gatewayPort = await freePort();
  const gateway = spawn(process.execPath, ['dist/server.js'], {
    env: { ...process.env, ETCD_ENDPOINTS: `http://127.0.0.1:${etcdPort}`, PORT: String(gatewayPort), LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', ...gatewayEnv },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const stop = async () => {
    gateway.kill('SIGTERM');
    await etcd.stop();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // The gateway logs nothing at warn level once it listens: poll its liveness.
    for (let i = 0; ; i++) {
      const up = await fetch(`http://127.0.0.1:${gatewayPort}/healthz`).then((r) => r.ok, () => false);
      if (up) break;
      if (i > 100) throw new Error('the gateway did not start (npm run build first?)');
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { etcd, etcdPort, gateway, gatewayPort, stop };
}
