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
import { enableEtcdAuth, gatewayAuthConfig } from './helpers/etcd-auth.js';

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

t.test("etcd's /v3 websocket protocol from a page: one request per message, one answer per message", async (t) => {
  const page = await browser.newPage();
  await page.goto(`${base}/healthz`);
  await page.evaluate(() => {
    const w = window as unknown as { v3: unknown[] };
    w.v3 = [];
    const socket = new WebSocket(`ws://${location.host}/v3/watch`);
    socket.onopen = () => socket.send(JSON.stringify({ create_request: { key: btoa('/browser-v3/'), range_end: btoa('/browser-v30') } }));
    socket.onmessage = (m) => w.v3.push(JSON.parse(m.data).result);
  });
  await page.waitForFunction(() => (window as unknown as { v3: { created?: boolean }[] }).v3.some((r) => r.created));
  const revision = await put('/browser-v3/k', 'v');
  await page.waitForFunction(() => (window as unknown as { v3: { events?: unknown[] }[] }).v3.some((r) => r.events));
  const results = await page.evaluate(() => (window as unknown as { v3: { header: { revision: string }; events?: { kv: { key: string; value: string } }[] }[] }).v3);
  const event = results.find((r) => r.events)!;
  t.equal(event.header.revision, String(revision), 'revisions as strings, as etcd sends them');
  t.same([atob(event.events![0]!.kv.key), atob(event.events![0]!.kv.value)], ['/browser-v3/k', 'v'], 'base64 keys and values');
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

t.test('the web console (/ui): browse, edit with compare-and-swap, live updates, cluster view', async (t) => {
  const { etcdctl } = cluster;
  await etcdctl('put', '/console/app/db', 'v1');
  await etcdctl('put', '/console/top', 't');
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(err.message));
  // (Failed requests are logged too: a refused save is a 412 on purpose.)
  page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && problems.push(m.text()));
  page.on('dialog', (d) => void d.accept());

  const redirect = await fetch(`${base}/ui`, { redirect: 'manual' });
  t.equal(redirect.status, 301);
  t.equal(redirect.headers.get('location'), '/ui/');
  const index = await fetch(`${base}/ui/`);
  t.match(index.headers.get('content-security-policy'), /default-src 'self'/);
  t.match(index.headers.get('content-type'), /text\/html/);

  await page.goto(`${base}/ui/#${encodeURIComponent('/console/')}`);
  await page.locator('#live.on').waitFor();
  await page.locator('#status', { hasText: /^etcd 3\.\d+\.\d+ · revision \d+$/ }).waitFor();
  await page.locator('#listing li.dir a', { hasText: 'app/' }).waitFor();
  t.ok(await page.locator('#listing li.key a', { hasText: 'top' }).isVisible(), 'keys and sub-prefixes of /console/');

  await page.locator('#listing li.dir a', { hasText: 'app/' }).click();
  await page.locator('#listing li.key a', { hasText: 'db' }).click();
  await page.locator('#editor-key', { hasText: '/console/app/db' }).waitFor();
  t.equal(await page.locator('#editor-value').inputValue(), 'v1');

  // Save: a compare-and-swap on the revision that was read.
  await page.locator('#editor-value').fill('v2');
  await page.locator('#save').click();
  await page.locator('#editor-banner', { hasText: 'Saved at revision' }).waitFor();
  t.equal(await etcdctl('get', '/console/app/db', '--print-value-only'), 'v2\n');

  // Live: a key written elsewhere appears; the open key follows a change.
  await etcdctl('put', '/console/app/new', 'n');
  await page.locator('#listing li.key a', { hasText: 'new' }).waitFor();
  await etcdctl('put', '/console/app/db', 'v3');
  await page.waitForFunction(() => (document.getElementById('editor-value') as HTMLTextAreaElement).value === 'v3');

  // A change while editing: the save is refused, nothing is overwritten.
  await page.locator('#editor-value').fill('mine');
  await etcdctl('put', '/console/app/db', 'theirs');
  await page.locator('#editor-banner', { hasText: 'changed while you were editing' }).waitFor();
  await page.locator('#save').click();
  await page.locator('#editor-banner', { hasText: 'Not saved' }).waitFor();
  t.equal(await etcdctl('get', '/console/app/db', '--print-value-only'), 'theirs\n', 'the other write stands');

  // New key (created only if absent), then delete it.
  await page.locator('#new-key input').fill('fresh');
  await page.locator('#new-key button').click();
  await page.locator('#editor-key', { hasText: '/console/app/fresh' }).waitFor();
  t.equal(await etcdctl('get', '/console/app/fresh', '--keys-only'), '/console/app/fresh\n\n');
  await page.locator('#delete').click();
  await page.locator('#listing li.key a', { hasText: 'fresh' }).waitFor({ state: 'detached' });
  t.equal(await etcdctl('get', '/console/app/fresh'), '', 'deleted in etcd');

  // Cluster view: one row per endpoint, one per member.
  await page.locator('#tab-cluster').click();
  await page.waitForFunction(() => document.querySelectorAll('#endpoints tbody tr').length === 3);
  t.equal(await page.locator('#members tbody tr').count(), 3);
  t.same(problems, [], 'no script errors, no CSP violations');
});

t.test('the web console pages a large directory at the gateway\'s listing limit', async (t) => {
  const paged = await buildTestApp(t, cluster.endpoints, { LIST_MAX_KEYS: 3 });
  const pagedBase = await listen(paged);
  for (let i = 0; i < 7; i++) await cluster.etcdctl('put', `/paged/k${i}`, 'v');
  await cluster.etcdctl('put', '/paged/sub/deep', 'v');
  const page = await browser.newPage();
  await page.goto(`${pagedBase}/ui/#${encodeURIComponent('/paged/')}`);
  await page.waitForFunction(() => document.querySelectorAll('#listing li').length === 3);
  await page.locator('#listing-note button.more').click();
  await page.waitForFunction(() => document.querySelectorAll('#listing li').length === 6);
  await page.locator('#listing-note button.more').click();
  await page.waitForFunction(() => document.querySelectorAll('#listing li').length === 8);
  t.same(
    await page.locator('#listing li a').allTextContents(),
    ['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'sub/'],
    'every child once, in key order, across pages',
  );
  t.equal(await page.locator('#listing-note button.more').count(), 0, 'no more after the last page');
});

t.test('the web console with authentication on: sign in as an etcd user, whose roles decide what it shows', async (t) => {
  const { etcdctl } = cluster;
  await enableEtcdAuth(etcdctl, [{ user: 'alice', password: 'alicepw', role: 'console-rw', prefix: '/console/' }]);
  t.teardown(() => etcdctl('--user=root:rootpw', 'auth', 'disable'));
  const authed = await buildTestApp(t, cluster.endpoints, gatewayAuthConfig(cluster, { AUTH_JWT_SECRET: 'browser-test-secret-that-is-at-least-32-chars' }));
  const authedBase = await listen(authed);
  const page = await browser.newPage();
  await page.goto(`${authedBase}/ui/#${encodeURIComponent('/console/')}`);
  await page.locator('#sign-in').waitFor();
  await page.locator('#sign-in input[name=username]').fill('alice');
  await page.locator('#sign-in input[name=password]').fill('wrong');
  await page.locator('#sign-in button[type=submit]').click();
  await page.locator('#sign-in-error', { hasText: 'wrong username or password' }).waitFor();

  await page.locator('#sign-in input[name=password]').fill('alicepw');
  await page.locator('#sign-in button[type=submit]').click();
  await page.locator('#listing li.key a', { hasText: 'top' }).waitFor();
  await page.locator('#live.on').waitFor();
  t.ok(await page.evaluate(() => sessionStorage.getItem('etcd-gateway.token')?.split('.').length === 3), 'the token lives in sessionStorage');

  // Live updates run as alice too.
  await etcdctl('--user=root:rootpw', 'put', '/console/as-root', 'r');
  await page.locator('#listing li.key a', { hasText: 'as-root' }).waitFor();

  // A token from elsewhere (an identity provider's, here one signed with the shared secret) can be pasted instead.
  const pasted = await browser.newPage();
  await pasted.goto(`${authedBase}/ui/#${encodeURIComponent('/console/')}`);
  await pasted.locator('#token-sign-in summary').click();
  await pasted.locator('#sign-in input[name=token]').fill('not-a-jwt');
  await pasted.locator('#use-token').click();
  await pasted.locator('#sign-in-error', { hasText: 'refused' }).waitFor();
  await pasted.locator('#sign-in input[name=token]').fill(`Bearer ${authed.jwt.sign({ sub: 'alice' })}`);
  await pasted.locator('#use-token').click();
  await pasted.locator('#listing li.key a', { hasText: 'top' }).waitFor();

  // etcd decides: alice may not list the whole keyspace; the cluster views are admin routes, which need etcd's
  // root role (etcd itself would show status and members to any user): she is told so, and sees no member.
  await page.locator('#crumbs a', { hasText: '(all keys)' }).click();
  await page.locator('#listing-note', { hasText: 'permission denied' }).waitFor();
  await page.locator('#tab-cluster').click();
  await page.locator('#cluster-error', { hasText: "needs etcd's root role" }).waitFor();
  t.equal(await page.locator('#members tbody tr').count(), 0, 'no member is shown to a user without the root role');
});
