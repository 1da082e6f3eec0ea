// A real etcd cluster for one test file: N members on random free loopback
// ports with temp data dirs, flags like the seed document's, killed by PID in
// teardown. Readiness comes from etcd's own log line, never from sleeping.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { spawnEtcd, type EtcdMemberSpec, type EtcdProcess } from '../../src/etcd/process.js';

const exec = promisify(execFile);

export interface TestCluster {
  endpoints: string[];
  members: EtcdProcess[];
  /** Runs etcdctl against the cluster; resolves with its stdout. */
  etcdctl(...args: string[]): Promise<string>;
  stopMember(i: number): Promise<void>;
  startMember(i: number): Promise<void>;
  stop(): Promise<void>;
}

interface Teardownable {
  teardown(fn: () => unknown): void;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export async function startCluster(t: Teardownable, opts: { size?: number; extraArgs?: string[] } = {}): Promise<TestCluster> {
  const size = opts.size ?? 3;
  const dir = await mkdtemp(join(tmpdir(), 'etcd-gw-test-'));
  const ports: number[] = [];
  while (ports.length < size * 2) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  const token = `test-${process.pid}-${Date.now()}`;
  const specs: EtcdMemberSpec[] = Array.from({ length: size }, (_, i) => ({
    name: `m${i}`,
    dataDir: join(dir, `m${i}`),
    clientUrl: `http://127.0.0.1:${ports[2 * i]}`,
    peerUrl: `http://127.0.0.1:${ports[2 * i + 1]}`,
    initialCluster: '',
    clusterToken: token,
    // As in the seed's /etc/etcd/etcd.conf, scaled down for tests.
    extraArgs: [
      '--auto-compaction-mode=revision',
      '--auto-compaction-retention=100000',
      '--snapshot-count=10000',
      '--quota-backend-bytes=268435456',
      '--heartbeat-interval=50',
      '--election-timeout=500',
      ...(opts.extraArgs ?? []),
    ],
  }));
  const initialCluster = specs.map((s) => `${s.name}=${s.peerUrl}`).join(',');
  for (const s of specs) s.initialCluster = initialCluster;

  const members: EtcdProcess[] = specs.map((s) => spawnEtcd(s));
  const endpoints = specs.map((s) => s.clientUrl);

  const cluster: TestCluster = {
    endpoints,
    members,
    async etcdctl(...args: string[]) {
      const { stdout } = await exec('etcdctl', [`--endpoints=${endpoints.join(',')}`, ...args], {
        env: { ...process.env, ETCDCTL_API: '3' },
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
      });
      return stdout;
    },
    async stopMember(i: number) {
      await members[i]!.stop('SIGKILL');
    },
    async startMember(i: number) {
      members[i] = spawnEtcd({ ...specs[i]!, initialClusterState: 'existing' });
      await members[i]!.ready;
    },
    async stop() {
      await Promise.all(members.map((m) => m.stop('SIGKILL')));
    },
  };
  t.teardown(async () => {
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  });
  try {
    await Promise.all(members.map((m) => m.ready));
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
