// Watches from a real browser: headless Chromium (Debian's) driven by
// playwright-core opens an EventSource and a WebSocket from a page served by
// the gateway, as a web console would. When the gateway ends the streams
// (as on a shutdown), the browser's own EventSource reconnects with
// Last-Event-ID and the page resubscribes the websocket from its resume
// revision: the page must see every change exactly once.
import { chromium, type Browser } from 'playwright-core';
import t from 'tap';
import { buildTestApp, listen } from './helpers/app.js';
import { startCluster } from './helpers/cluster.js';

const cluster = await startCluster(t);
const app = await buildTestApp(t, cluster.endpoints);
const base = await listen(app);

const browser: Browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
t.teardown(() => browser.close());

const put = async (key: string, value: string) => (await (await fetch(`${base}/v1/kv/${encodeURIComponent(key)}`, { method: 'PUT', body: value })).json()).revision as number;

t.test('EventSource and WebSocket in Chromium see every change once, across a server-side disconnect', async (t) => {
  const page = await browser.newPage();
  // Same origin as the gateway, as a console served beside it would be.
  await page.goto(`${base}/healthz`);
  await page.evaluate(() => {
    const w = window as unknown as Record<string, unknown>;
    const sse: number[] = [];
    const ws: number[] = [];
    w.sse = sse;
    w.ws = ws;
    w.wsCloses = 0;
    const es = new EventSource('/v1/watch//browser/?prefix');
    es.onmessage = (m) => sse.push(JSON.parse(m.data).revision);
    let resume: number | undefined;
    const connect = () => {
      const socket = new WebSocket(`ws://${location.host}/v1/watch`);
      socket.onopen = () => socket.send(JSON.stringify({ type: 'subscribe', id: 'b', key: '/browser/', prefix: true, ...(resume ? { start_revision: resume } : {}) }));
      socket.onmessage = (m) => {
        const msg = JSON.parse(m.data);
        if (msg.type === 'created') w.wsCreated = true;
        if (msg.type === 'events') {
          ws.push(msg.revision);
          resume = msg.revision + 1;
        }
        if (msg.type === 'shutdown') resume = msg.resume.b;
      };
      socket.onclose = () => {
        w.wsCloses = (w.wsCloses as number) + 1;
        setTimeout(connect, 100);
      };
    };
    connect();
  });
  await page.waitForFunction(() => (window as unknown as { wsCreated?: boolean }).wsCreated === true);
  // The EventSource is open once the hub counts two subscribers.
  for (let i = 0; (await (await fetch(`${base}/readyz`)).json()).watch.subscribers < 2; i++) {
    if (i > 200) throw new Error('the browser did not subscribe');
    await new Promise((r) => setTimeout(r, 25));
  }

  const expected: number[] = [];
  for (let i = 0; i < 5; i++) expected.push(await put(`/browser/k${i}`, `v${i}`));
  await page.waitForFunction((n) => (window as unknown as { sse: number[]; ws: number[] }).sse.length >= n && (window as unknown as { ws: number[] }).ws.length >= n, 5);

  // The gateway ends every stream, as a shutdown or a cut-off slow consumer would.
  for (const client of app.watchClients) client.shutdown();
  for (let i = 5; i < 10; i++) expected.push(await put(`/browser/k${i}`, `v${i}`));
  await page.waitForFunction(
    (n) => (window as unknown as { sse: number[] }).sse.length >= n && (window as unknown as { ws: number[] }).ws.length >= n,
    10,
    { timeout: 20_000 },
  );
  const seen = await page.evaluate(() => ({
    sse: (window as unknown as { sse: number[] }).sse,
    ws: (window as unknown as { ws: number[] }).ws,
    wsCloses: (window as unknown as { wsCloses: number }).wsCloses,
  }));
  t.same(seen.sse, expected, 'EventSource: every revision once, in order, across its automatic reconnect');
  t.same(seen.ws, expected, 'WebSocket: every revision once, resubscribing from the resume revision');
  t.equal(seen.wsCloses, 1, 'the websocket was closed once by the gateway');
});

t.test('a page from another origin cannot open a websocket to the gateway', async (t) => {
  const page = await browser.newPage();
  // A data: URL page has an opaque origin ("null"), not the gateway's.
  await page.goto('data:text/html,<title>elsewhere</title>');
  const result = await page.evaluate(
    (url) =>
      new Promise<string>((resolve) => {
        const socket = new WebSocket(url);
        socket.onopen = () => resolve('open');
        socket.onerror = () => resolve('refused');
      }),
    `${base.replace('http', 'ws')}/v1/watch`,
  );
  t.equal(result, 'refused');
});
