// Fault drills (issue 12): a 3-member etcd and the gateway as its own process
// on loopback; each drill in bench/drills/ hurts the cluster in one way, prints
// what it measured and checks it against the targets. The runner heals
// the cluster between drills and prints a PASS/FAIL table at the end; it exits
// 1 if any check failed.
//
//   npm run drills               every drill, in file-name order
//   npm run drills -- <name>...  only these
//
// The drills take minutes and load both cores: run them alone (hold the tests' lock).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { freePort, startCluster } from '../test/helpers/cluster.js';
import { freeze as freezePid } from '../test/helpers/etcd-waits.js';
import { sleep, until } from './drills/lib.js';
import type { Drill, DrillContext } from './drills/types.js';

const exec = promisify(execFile);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const NOT_DRILLS = new Set(['types.ts', 'lib.ts']);

async function loadDrills(): Promise<Drill[]> {
  const files = (await readdir(join(root, 'bench/drills'))).filter((f) => f.endsWith('.ts') && !NOT_DRILLS.has(f)).sort();
  const drills: Drill[] = [];
  for (const f of files) {
    const mod = (await import(pathToFileURL(join(root, 'bench/drills', f)).href)) as { default: Drill | Drill[] };
    drills.push(...[mod.default].flat());
  }
  return drills;
}

interface Row {
  drill: string;
  target: string;
  pass: boolean;
  measured: string;
}

const all = await loadDrills();
const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !all.some((d) => d.name === w));
if (unknown.length > 0) {
  console.error(`unknown drill(s): ${unknown.join(', ')}; drills: ${all.map((d) => d.name).join(', ')}`);
  process.exit(2);
}
const drills = wanted.length > 0 ? all.filter((d) => wanted.includes(d.name)) : all;

const teardowns: (() => unknown)[] = [];
const cluster = await startCluster({ teardown: (fn) => teardowns.push(fn) });
const memberPorts = cluster.endpoints.map((e) => new URL(e).port);
const gatewayPort = await freePort();
let gateway: ChildProcess;

/** Starts the gateway (TypeScript through tsx: no build step) and waits for /healthz. */
async function startGateway(): Promise<void> {
  gateway = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: root,
    env: {
      ...process.env,
      ETCD_ENDPOINTS: cluster.endpoints.join(','),
      PORT: String(gatewayPort),
      LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await until('the gateway to start', () => fetch(`http://127.0.0.1:${gatewayPort}/healthz`).then((r) => r.ok), 30_000);
}

async function stopGateway(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (gateway.exitCode !== null || gateway.signalCode !== null) return;
  const exited = once(gateway, 'exit');
  gateway.kill(signal);
  await exited;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function isStopped(pid: number): Promise<boolean> {
  return readFile(`/proc/${pid}/stat`, 'utf8').then(
    (stat) => stat.slice(stat.lastIndexOf(')') + 2).startsWith('T'),
    () => false,
  );
}

/** Every member running, thawed and healthy, and the gateway ready. */
async function heal(): Promise<void> {
  for (let i = 0; i < cluster.members.length; i++) {
    const pid = cluster.members[i]!.pid;
    if (!alive(pid)) await cluster.startMember(i);
    else if (await isStopped(pid)) process.kill(pid, 'SIGCONT');
  }
  await until('a healthy cluster', async () => {
    await cluster.etcdctl('endpoint', 'health');
    return true;
  }, 60_000);
  if (gateway.exitCode !== null || gateway.signalCode !== null) await startGateway();
  await until('the gateway ready', () => fetch(`http://127.0.0.1:${gatewayPort}/readyz`).then((r) => r.ok), 60_000);
}

const rows: Row[] = [];
let failed = false;
await startGateway();
try {
  for (const drill of drills) {
    await heal();
    console.log(`\n== ${drill.name}: ${drill.description}`);
    const mine: Row[] = [];
    const ctx: DrillContext = {
      cluster,
      gatewayUrl: `http://127.0.0.1:${gatewayPort}`,
      gatewayWsUrl: `ws://127.0.0.1:${gatewayPort}`,
      gateway: () => gateway,
      async restartGateway(signal = 'SIGKILL') {
        await stopGateway(signal);
        await startGateway();
      },
      async leaderIndex() {
        const status = JSON.parse(await cluster.etcdctl('endpoint', 'status', '--write-out=json')) as {
          Endpoint: string;
          Status: { header: { member_id: number | string }; leader: number | string };
        }[];
        const leader = status.find((s) => String(s.Status.header.member_id) === String(s.Status.leader));
        if (!leader) throw new Error('no leader');
        return cluster.endpoints.indexOf(leader.Endpoint);
      },
      async connectedMembers() {
        const { stdout } = await exec('ss', ['-Htnp', 'state', 'established']);
        const found = new Set<number>();
        for (const line of stdout.split('\n')) {
          if (!line.includes(`pid=${gateway.pid},`)) continue;
          const peerPort = line.trim().split(/\s+/)[3]?.split(':').pop();
          const i = memberPorts.indexOf(peerPort ?? '');
          if (i >= 0) found.add(i);
        }
        return [...found].sort();
      },
      freeze: (i) => freezePid(cluster.members[i]!.pid),
      thaw: (i) => process.kill(cluster.members[i]!.pid, 'SIGCONT'),
      log: (line) => console.log(`  ${drill.name}: ${line}`),
      check(target, pass, measured) {
        mine.push({ drill: drill.name, target, pass, measured });
        console.log(`  ${pass ? 'PASS' : 'FAIL'} ${target}: ${measured}`);
      },
      prefix: `drills/${drill.name}/${Date.now()}/`,
    };
    try {
      await drill.run(ctx);
    } catch (err) {
      mine.push({ drill: drill.name, target: 'the drill ran to its end', pass: false, measured: String((err as Error).stack ?? err) });
      console.log(`  FAIL ${drill.name} threw: ${(err as Error).stack ?? err}`);
    }
    rows.push(...mine);
    // Let the next drill start from a quiet cluster.
    await sleep(1000);
  }
} finally {
  await stopGateway('SIGTERM').catch(() => undefined);
  for (const fn of teardowns.reverse()) await fn();
}

console.log('\n| drill | target | result | measured |\n| --- | --- | --- | --- |');
for (const r of rows) {
  if (!r.pass) failed = true;
  console.log(`| ${r.drill} | ${r.target} | ${r.pass ? 'PASS' : 'FAIL'} | ${r.measured.split('\n')[0]} |`);
}
for (const d of drills) {
  const mine = rows.filter((r) => r.drill === d.name);
  console.log(`${mine.length > 0 && mine.every((r) => r.pass) ? 'PASS' : 'FAIL'} ${d.name}`);
}
process.exit(failed ? 1 : 0);
