// Starting and stopping etcd server processes. Used by the embedded default
// (src/etcd/embedded.ts) and by the test suite's real 3-member cluster.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

export interface EtcdMemberSpec {
  name: string;
  dataDir: string;
  clientUrl: string; // http://127.0.0.1:PORT
  peerUrl: string; // http://127.0.0.1:PORT
  initialCluster: string; // name=peerUrl,...
  initialClusterState?: 'new' | 'existing';
  clusterToken?: string;
  extraArgs?: string[];
}

export interface EtcdProcess {
  readonly pid: number;
  readonly spec: EtcdMemberSpec;
  /** Resolves once etcd logs that it serves client traffic. */
  readonly ready: Promise<void>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<number | null>;
  /** The last lines etcd printed, for error messages. */
  tail(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export function etcdArgs(spec: EtcdMemberSpec): string[] {
  return [
    `--name=${spec.name}`,
    `--data-dir=${spec.dataDir}`,
    `--listen-client-urls=${spec.clientUrl}`,
    `--advertise-client-urls=${spec.clientUrl}`,
    `--listen-peer-urls=${spec.peerUrl}`,
    `--initial-advertise-peer-urls=${spec.peerUrl}`,
    `--initial-cluster=${spec.initialCluster}`,
    `--initial-cluster-state=${spec.initialClusterState ?? 'new'}`,
    `--initial-cluster-token=${spec.clusterToken ?? 'etcd-gateway'}`,
    '--logger=zap',
    ...(spec.extraArgs ?? []),
  ];
}

/**
 * Spawns one etcd member. Readiness is taken from etcd's own log line
 * rather than by polling, so callers wait
 * for an event instead of sleeping.
 */
export function spawnEtcd(spec: EtcdMemberSpec, binary = 'etcd'): EtcdProcess {
  const child: ChildProcess = spawn(binary, etcdArgs(spec), {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.env.ETCD_UNSUPPORTED_ARCH ?? '' },
  });
  const lines: string[] = [];
  let markReady!: () => void;
  let failReady!: (err: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  // A caller that never awaits `ready` must not produce an unhandled rejection.
  ready.catch(() => undefined);

  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      failReady(new Error(`etcd ${spec.name} exited (code ${code}) before it was ready:\n${lines.join('\n')}`));
      resolve(code);
    });
    child.once('error', (err) => {
      failReady(new Error(`cannot start etcd (${binary}): ${err.message}`));
      resolve(null);
    });
  });

  if (child.stderr) {
    createInterface({ input: child.stderr }).on('line', (line) => {
      lines.push(line);
      if (lines.length > 40) lines.shift();
      // etcd 3.4's zap logger says "serving client traffic ..." once it has
      // joined the cluster and serves; capnslog says "ready to serve client requests".
      if (line.includes('serving client traffic') || line.includes('ready to serve client requests')) markReady();
    });
  }

  return {
    get pid() {
      return child.pid ?? -1;
    },
    spec,
    ready,
    exited,
    tail: () => lines.join('\n'),
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = once(child, 'exit');
      child.kill(signal);
      // etcd stops within a second on SIGTERM; SIGKILL is the fallback so a
      // wedged member can never keep a test run or the gateway alive.
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      try {
        await done;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
