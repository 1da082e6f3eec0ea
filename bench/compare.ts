// The comparison of issue 14: this gateway against etcd's built-in JSON gateway
// (grpc-gateway, served by etcd on a member's client URL) in the same CPU budget.
// A 3-member etcd and the gateway under test share core 1; wrk drives the load
// from core 0. Runs of both gateways alternate (ours, etcd's, ours, ...) so each
// ratio is taken seconds apart, and the table gives the median ratio of the pairs
// with its spread. It asserts nothing: speed is measured here, never in a test.
//
//   flock /tmp/etcd-gateway-tests.lock npm run bench:compare
//   npm run bench:compare -- --pairs 5 --seconds 10 --concurrency 16,64 --scenario get,put --json
//   npm run bench:compare -- --naive      (adds the naive 50-line gateway of bench/naive-gateway.ts)
//
// Needs wrk (Debian's package; installed with apt-get if missing) and taskset.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { freePort, startCluster } from '../test/helpers/cluster.js';
import { rssMiB } from './harness.js';

const exec = promisify(execFile);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SERVER_CORE = '1';
const LOAD_CORE = '0';

const { values: opts } = parseArgs({
  options: {
    pairs: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '1,16,64' },
    scenario: { type: 'string', default: 'get,get-serializable,put,list' },
    naive: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const PAIRS = Number(opts.pairs);
const SECONDS = Number(opts.seconds);
const WARMUP = Number(opts.warmup);
const CONCURRENCY = opts.concurrency.split(',').map(Number);

const SCENARIOS: Record<string, string> = {
  get: 'GET one key, linearizable',
  'get-serializable': 'GET one key, ?serializable',
  put: 'PUT 100 B, random of 1000 keys',
  list: 'GET 100-key prefix listing',
};
const scenarios = opts.scenario.split(',');
for (const s of scenarios) if (!(s in SCENARIOS)) throw new Error(`unknown scenario ${s}; scenarios: ${Object.keys(SCENARIOS).join(', ')}`);

/** Progress goes to stderr so that --json leaves stdout to the result. */
const say = (line: string) => process.stderr.write(`${line}\n`);

async function ensureWrk(): Promise<void> {
  if (await exec('wrk', ['--version']).then(() => true, (err: { code?: unknown }) => err.code !== 'ENOENT')) return;
  say('wrk is missing: apt-get install -y wrk');
  await exec('apt-get', ['install', '-y', 'wrk']);
}

/**
 * Pins every thread of a running process to the server core. Threads the
 * process starts later inherit the mask of the thread that starts them.
 */
async function pin(pid: number): Promise<void> {
  await exec('taskset', ['-a', '-cp', SERVER_CORE, String(pid)]);
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const status = await readFile(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const cpus = /Cpus_allowed_list:\s*(\S+)/.exec(status)?.[1];
    if (cpus !== SERVER_CORE) throw new Error(`thread ${tid} of ${pid} runs on cpus ${cpus}, not ${SERVER_CORE}`);
  }
}

interface WrkResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

async function wrk(url: string, scenario: string, target: 'ours' | 'etcd', connections: number, seconds: number): Promise<WrkResult> {
  const { stdout } = await exec('taskset', [
    '-c', LOAD_CORE, 'wrk', '-t1', `-c${connections}`, `-d${seconds}s`,
    '-s', join(root, 'bench/wrk', `${scenario}.lua`), url, '--', target,
  ]);
  const line = stdout.split('\n').find((l) => l.startsWith('WRK_RESULT '));
  if (!line) throw new Error(`no result from wrk:\n${stdout}`);
  const r = JSON.parse(line.slice('WRK_RESULT '.length)) as {
    requests: number; duration_us: number; p50_us: number; p99_us: number; socket_errors: number; status_errors: number;
  };
  return { rps: r.requests / (r.duration_us / 1e6), p50Ms: r.p50_us / 1000, p99Ms: r.p99_us / 1000, errors: r.socket_errors + r.status_errors };
}

async function waitHealthy(url: string, what: string): Promise<void> {
  for (let i = 0; ; i++) {
    if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) return;
    if (i > 300) throw new Error(`${what} did not start`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A gateway under test as its own process, started on the server core. */
async function startPinned(args: string[], env: Record<string, string>, what: string): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const child = spawn('taskset', ['-c', SERVER_CORE, process.execPath, ...args], {
    cwd: root,
    env: { ...process.env, ...env, PORT: String(port) },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url, what);
  return { child, url };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Row {
  scenario: string;
  description: string;
  concurrency: number;
  ours: WrkResult[];
  etcd: WrkResult[];
  naive?: WrkResult[];
  ratios: number[];
  naiveRatios?: number[];
  gatewayRssMiB: number;
}

await ensureWrk();
// A Go program started pinned to one core runs with GOMAXPROCS=1; etcd is
// pinned after it starts, so it is told the same.
process.env.GOMAXPROCS = '1';
const teardowns: (() => unknown)[] = [];
const children: ChildProcess[] = [];
const rows: Row[] = [];
try {
  const cluster = await startCluster({ teardown: (fn) => teardowns.push(fn) });
  for (const m of cluster.members) await pin(m.pid);
  // etcd's gateway is served by member 0; ours reaches the cluster the way it
  // is deployed, through every member's client URL.
  const etcdUrl = cluster.endpoints[0]!;
  const endpoints = cluster.endpoints.join(',');
  const logLevel = process.env.LOG_LEVEL ?? 'warn';
  // The per-caller rate limit stays on, so its cost is measured, but out of reach.
  const ours = await startPinned(['--import', 'tsx', 'src/server.ts'], { ETCD_ENDPOINTS: endpoints, LOG_LEVEL: logLevel, RATE_LIMIT_MAX: '1000000000' }, 'the gateway');
  children.push(ours.child);
  const naive = opts.naive ? await startPinned(['--import', 'tsx', 'bench/naive-gateway.ts'], { ETCD_ENDPOINTS: endpoints }, 'the naive gateway') : undefined;
  if (naive) children.push(naive.child);

  const value = 'v'.repeat(100);
  await cluster.etcdctl('put', '/bench/one', value);
  for (let i = 0; i < 100; i++) await cluster.etcdctl('put', `/bench/list/${String(i).padStart(3, '0')}`, value);

  say(`${PAIRS} pairs of ${SECONDS} s runs per row after a ${WARMUP} s warm-up of each side per scenario; etcd members and gateways on core ${SERVER_CORE}, wrk on core ${LOAD_CORE}; gateway LOG_LEVEL=${logLevel}`);
  for (const scenario of scenarios) {
    for (const url of [ours.url, etcdUrl, ...(naive ? [naive.url] : [])]) {
      await wrk(url, scenario, url === etcdUrl ? 'etcd' : 'ours', 16, WARMUP);
    }
    for (const c of CONCURRENCY) {
      const row: Row = { scenario, description: SCENARIOS[scenario]!, concurrency: c, ours: [], etcd: [], ratios: [], gatewayRssMiB: 0 };
      if (naive) Object.assign(row, { naive: [], naiveRatios: [] });
      for (let p = 0; p < PAIRS; p++) {
        const a = await wrk(ours.url, scenario, 'ours', c, SECONDS);
        const b = await wrk(etcdUrl, scenario, 'etcd', c, SECONDS);
        row.ours.push(a);
        row.etcd.push(b);
        row.ratios.push(a.rps / b.rps);
        if (naive) {
          const n = await wrk(naive.url, scenario, 'ours', c, SECONDS);
          row.naive!.push(n);
          row.naiveRatios!.push(n.rps / b.rps);
        }
      }
      row.gatewayRssMiB = await rssMiB(ours.child.pid!);
      const errors = [...row.ours, ...row.etcd, ...(row.naive ?? [])].reduce((n, r) => n + r.errors, 0);
      if (errors > 0) say(`  warning: ${errors} failed requests (socket errors or non-2xx) in ${scenario} c=${c}`);
      say(`  ${scenario} c=${c}: ratio ${row.ratios.map((r) => r.toFixed(2)).join(', ')}`);
      rows.push(row);
    }
  }
} finally {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
  }
  for (const fn of teardowns.reverse()) await fn();
}

const fmt = (x: number, d = 0) => x.toFixed(d);
const spread = (xs: number[]) => `${fmt(Math.min(...xs), 2)}-${fmt(Math.max(...xs), 2)}`;
if (opts.json) {
  console.log(JSON.stringify({ date: new Date().toISOString(), pairs: PAIRS, seconds: SECONDS, rows }, null, 2));
} else {
  const naiveCols = opts.naive ? ' naive req/s | naive / etcd (min-max) |' : '';
  console.log(`\n| scenario | c | ours req/s | etcd req/s | ours / etcd median | min-max | p50 ms ours | p50 ms etcd | gateway RSS MiB |${naiveCols}`);
  console.log(`| --- | --- | --- | --- | --- | --- | --- | --- | --- |${opts.naive ? ' --- | --- |' : ''}`);
  for (const r of rows) {
    const naive = r.naive ? ` ${fmt(median(r.naive.map((x) => x.rps)))} | ${fmt(median(r.naiveRatios!), 2)} (${spread(r.naiveRatios!)}) |` : '';
    console.log(
      `| ${r.description} | ${r.concurrency} | ${fmt(median(r.ours.map((x) => x.rps)))} | ${fmt(median(r.etcd.map((x) => x.rps)))} | ` +
        `${fmt(median(r.ratios), 2)} | ${spread(r.ratios)} | ${fmt(median(r.ours.map((x) => x.p50Ms)), 2)} | ` +
        `${fmt(median(r.etcd.map((x) => x.p50Ms)), 2)} | ${fmt(r.gatewayRssMiB)} |${naive}`,
    );
  }
}
