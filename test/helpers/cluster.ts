// A real etcd cluster for one test file: N members on random free loopback
// ports with temp data dirs, flags like the seed document's, killed by PID in
// teardown. Readiness comes from etcd's own log line, never from sleeping.
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { spawnEtcd, type EtcdMemberSpec, type EtcdProcess } from '../../src/etcd/process.js';

const exec = promisify(execFile);

export interface TestCluster {
  endpoints: string[];
  /** etcd's JWT signing key (members run with --auth-token jwt), for the gateway to mint tokens. */
  signingKeyFile: string;
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
  // JWT auth tokens, as production etcd behind the gateway runs: the gateway
  // mints per-user tokens with this key once `etcdctl auth enable` is on.
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKeyFile = join(dir, 'jwt.key');
  const publicKeyFile = join(dir, 'jwt.pub');
  await writeFile(signingKeyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  await writeFile(publicKeyFile, publicKey.export({ type: 'spki', format: 'pem' }));
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
      `--auth-token=jwt,pub-key=${publicKeyFile},priv-key=${signingKeyFile},sign-method=RS256,ttl=10m`,
      ...(opts.extraArgs ?? []),
    ],
  }));
  const initialCluster = specs.map((s) => `${s.name}=${s.peerUrl}`).join(',');
  for (const s of specs) s.initialCluster = initialCluster;

  const members: EtcdProcess[] = specs.map((s) => spawnEtcd(s));
  const endpoints = specs.map((s) => s.clientUrl);

  const cluster: TestCluster = {
    endpoints,
    signingKeyFile,
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
  // If the test process is killed (a runner timeout), teardown never runs:
  // kill the members by PID on the way out so no etcd outlives its test.
  const killAll = () => {
    for (const m of members) {
      try {
        process.kill(m.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
  process.once('exit', killAll);
  process.once('SIGTERM', () => {
    killAll();
    process.exit(143);
  });
  t.teardown(async () => {
    process.removeListener('exit', killAll);
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
