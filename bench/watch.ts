// Watch fan-out benchmark: N websocket subscribers on one prefix while a
// writer does W writes per second. Prints delivery latency (write sent →
// event received, p50/p99), the etcd watches the gateway used, and the
// gateway's resident memory per idle socket. Asserts nothing.
//
//   npm run build && npm run bench:watch
//   BENCH_SUBSCRIBERS=1000 BENCH_WRITES_PER_SECOND=100 BENCH_SECONDS=10 npm run bench:watch
import WebSocket from 'ws';
import { rssMiB, startBench } from './harness.js';

const SUBSCRIBERS = Number(process.env.BENCH_SUBSCRIBERS ?? 1000);
const RATE = Number(process.env.BENCH_WRITES_PER_SECOND ?? 100);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);

async function main(): Promise<void> {
  const bench = await startBench({ WATCH_MAX_SUBSCRIPTIONS: '10' });
  const { gateway } = bench;
  const base = `http://127.0.0.1:${bench.gatewayPort}`;
  const sockets: WebSocket[] = [];
  try {
    await fetch(`${base}/readyz`);
    const rssBefore = await rssMiB(gateway.pid!);

    const latencies: number[] = [];
    let received = 0;
    const ready: Promise<void>[] = [];
    for (let i = 0; i < SUBSCRIBERS; i++) {
      const ws = new WebSocket(`${base.replace('http', 'ws')}/v1/watch`);
      sockets.push(ws);
      ready.push(
        new Promise((resolve, reject) => {
          ws.on('error', reject);
          ws.on('open', () => ws.send(JSON.stringify({ type: 'subscribe', id: 's', key: '/bench/watch/', prefix: true })));
          ws.on('message', (data) => {
            const msg = JSON.parse(data.toString());
            if (msg.type === 'created') resolve();
            if (msg.type === 'events') {
              const now = Date.now();
              for (const ev of msg.events) latencies.push(now - Number(ev.kv.value));
              received++;
            }
          });
        }),
      );
    }
    await Promise.all(ready);
    await new Promise((r) => setTimeout(r, 500));
    const rssIdle = await rssMiB(gateway.pid!);
    const stats = (await (await fetch(`${base}/readyz`)).json()).watch;

    const total = RATE * SECONDS;
    const started = Date.now();
    for (let i = 0; i < total; i++) {
      const due = started + (i * 1000) / RATE;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      void fetch(`${base}/v1/kv//bench/watch/k${i % 100}`, { method: 'PUT', body: String(Date.now()) });
    }
    const deadline = Date.now() + 30_000;
    while (received < total * SUBSCRIBERS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const rssLoaded = await rssMiB(gateway.pid!);

    latencies.sort((a, b) => a - b);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? NaN;
    console.log(`\n${SUBSCRIBERS} websocket subscribers on one prefix, ${RATE} writes/s for ${SECONDS} s, one etcd member, loopback.\n`);
    console.log('| figure | value |');
    console.log('| --- | --- |');
    console.log(`| events delivered | ${latencies.length} of ${total * SUBSCRIBERS} |`);
    console.log(`| delivery latency p50 | ${pct(0.5)} ms |`);
    console.log(`| delivery latency p99 | ${pct(0.99)} ms |`);
    console.log(`| etcd watches used | ${stats.etcd_watches} |`);
    console.log(`| gateway RSS before sockets | ${rssBefore.toFixed(0)} MiB |`);
    console.log(`| gateway RSS with idle sockets | ${rssIdle.toFixed(0)} MiB (${(((rssIdle - rssBefore) * 1024) / SUBSCRIBERS).toFixed(1)} KiB per idle socket) |`);
    console.log(`| gateway RSS after the writes | ${rssLoaded.toFixed(0)} MiB |`);
  } finally {
    for (const ws of sockets) ws.terminate();
    await bench.stop();
  }
}

await main();
