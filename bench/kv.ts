// Benchmark: the gateway against etcd's built-in JSON gateway (grpc-gateway,
// served by etcd itself on its client port), same etcd, same load generator.
// Prints throughput, latency percentiles and resident memory; asserts nothing.
//
//   npm run build && npm run bench            (defaults: 4000 requests per phase, 16 in flight)
//   BENCH_REQUESTS=20000 BENCH_CONCURRENCY=64 npm run bench
//
// Everything runs on loopback; the gateway runs as its own process (node dist/server.js).
import { Agent, request } from 'node:http';
import { rssMiB, startBench } from './harness.js';

// Targets (see bench/README.md): printed beside the figures, never asserted.
const TARGET_RATIO = 0.5; // at least half of etcd's own JSON gateway throughput
const TARGET_P99_FACTOR = 3; // p99 at most 3x etcd's own JSON gateway
const TARGET_RSS_MIB = 256;

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 4000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const VALUE = 'x'.repeat(256);

interface Call {
  method: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
}

function send(agent: Agent, port: number, call: Call): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { agent, host: '127.0.0.1', port, method: call.method, path: call.path, headers: call.headers },
      (res) => {
        res.resume();
        res.on('end', () => (res.statusCode! < 300 ? resolve(res.statusCode!) : reject(new Error(`${call.method} ${call.path}: ${res.statusCode}`))));
      },
    );
    req.on('error', reject);
    req.end(call.body);
  });
}

async function run(port: number, makeCall: (i: number) => Call): Promise<{ rps: number; p50: number; p99: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const latencies: number[] = [];
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) {
        const i = next++;
        const t0 = process.hrtime.bigint();
        await send(agent, port, makeCall(i));
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))]!;
  return { rps: REQUESTS / seconds, p50: pct(0.5), p99: pct(0.99) };
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

async function main(): Promise<void> {
  // The per-caller rate limit stays on, so its cost is measured, but out of
  // reach: the default (10,000 requests a second on average, one caller here)
  // could cut a run on a fast machine short.
  const bench = await startBench({ RATE_LIMIT_MAX: String(1_000_000_000) });
  const { gatewayPort, etcdPort: clientPort, gateway, etcd } = bench;
  try {
    const warm = new Agent({ keepAlive: true });
    for (let i = 0; i < 100; i++) {
      await send(warm, gatewayPort, { method: 'PUT', path: `/v1/kv//bench/list/${String(i).padStart(3, '0')}`, body: VALUE });
    }
    await send(warm, gatewayPort, { method: 'PUT', path: '/v1/kv//bench/key', body: VALUE });
    warm.destroy();

    const phases: [string, (i: number) => Call, (i: number) => Call][] = [
      [
        'get one key',
        () => ({ method: 'GET', path: '/v1/kv//bench/key' }),
        () => ({ method: 'POST', path: '/v3/kv/range', body: JSON.stringify({ key: b64('/bench/key') }) }),
      ],
      [
        'put one key',
        (i) => ({ method: 'PUT', path: `/v1/kv//bench/put/${i % 500}`, body: VALUE }),
        (i) => ({ method: 'POST', path: '/v3/kv/put', body: JSON.stringify({ key: b64(`/bench/put/${i % 500}`), value: b64(VALUE) }) }),
      ],
      // The same /v3 request to both: etcd JSON-gateway clients moving behind the gateway.
      [
        '/v3 kv/range, same request',
        () => ({ method: 'POST', path: '/v3/kv/range', body: JSON.stringify({ key: b64('/bench/key') }) }),
        () => ({ method: 'POST', path: '/v3/kv/range', body: JSON.stringify({ key: b64('/bench/key') }) }),
      ],
      [
        '/v3 kv/put, same request',
        (i) => ({ method: 'POST', path: '/v3/kv/put', body: JSON.stringify({ key: b64(`/bench/put/${i % 500}`), value: b64(VALUE) }) }),
        (i) => ({ method: 'POST', path: '/v3/kv/put', body: JSON.stringify({ key: b64(`/bench/put/${i % 500}`), value: b64(VALUE) }) }),
      ],
      [
        'list 100 keys',
        () => ({ method: 'GET', path: '/v1/kv//bench/list/?prefix' }),
        () => ({ method: 'POST', path: '/v3/kv/range', body: JSON.stringify({ key: b64('/bench/list/'), range_end: b64('/bench/list0') }) }),
      ],
    ];
    const rows: string[] = [];
    const verdicts: string[] = [];
    // Warm both sides first: the gateway's JIT needs a few thousand requests
    // to reach steady state, and the first measured phase would pay for it.
    for (const [, ours, theirs] of phases) {
      await run(gatewayPort, ours);
      await run(clientPort, theirs);
    }
    for (const [name, ours, theirs] of phases) {
      const a = await run(gatewayPort, ours);
      const b = await run(clientPort, theirs);
      const ratio = a.rps / b.rps;
      verdicts.push(
        `${name}: throughput ${(ratio * 100).toFixed(0)}% of etcd (target >= ${TARGET_RATIO * 100}%) ${ratio >= TARGET_RATIO ? 'met' : 'MISSED'}; ` +
          `p99 ${(a.p99 / b.p99).toFixed(1)}x etcd (target <= ${TARGET_P99_FACTOR}x) ${a.p99 <= TARGET_P99_FACTOR * b.p99 ? 'met' : 'MISSED'}`,
      );
      rows.push(
        `| ${name} | ${a.rps.toFixed(0)} | ${a.p50.toFixed(2)} | ${a.p99.toFixed(2)} | ${b.rps.toFixed(0)} | ${b.p50.toFixed(2)} | ${b.p99.toFixed(2)} | ${((a.rps / b.rps) * 100).toFixed(0)}% |`,
      );
    }
    const gatewayRss = await rssMiB(gateway.pid!);
    const etcdRss = await rssMiB(etcd.pid);
    console.log(`\n${REQUESTS} requests per phase after a warm-up round, ${CONCURRENCY} in flight, 256-byte values, one etcd member, loopback.\n`);
    console.log('| workload | gateway req/s | p50 ms | p99 ms | etcd JSON gateway req/s | p50 ms | p99 ms | gateway / etcd |');
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const row of rows) console.log(row);
    console.log(`\nresident memory after the run: gateway ${gatewayRss.toFixed(0)} MiB, etcd ${etcdRss.toFixed(0)} MiB`);
    console.log('\ntargets:');
    for (const v of verdicts) console.log(`- ${v}`);
    console.log(`- gateway memory ${gatewayRss.toFixed(0)} MiB (target <= ${TARGET_RSS_MIB} MiB) ${gatewayRss <= TARGET_RSS_MIB ? 'met' : 'MISSED'}`);
  } finally {
    await bench.stop();
  }
}

await main();
