// The web console: a page on the gateway's own HTTP API (/v1), nothing else.
// Keys are browsed as directories (?separator=/), edited with compare-and-
// swap (If-Match on the mod revision), and kept live by one websocket watch
// on the prefix shown. With authentication on, the etcd user signs in
// through POST /v1/auth/token; the token lives in sessionStorage only.
// Data from etcd is only ever put in the page as text, never as markup.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'etcd-gateway.token';

const state = {
  prefix: '',
  /** The key open in the editor: {key, mod_revision} or null. */
  open: null,
  /** The editor holds changes not saved yet. */
  dirty: false,
  socket: null,
  revision: 0,
};

// ---------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? problem?.title ?? `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, init = {}) {
  const headers = new Headers(init.headers);
  const t = token();
  if (t) headers.set('authorization', `Bearer ${t}`);
  const res = await fetch(path, { ...init, headers });
  if (res.status === 401 && path !== '/v1/auth/token') {
    showSignIn();
    throw new ApiError(401, await res.json().catch(() => undefined));
  }
  return res;
}

async function json(path, init) {
  const res = await api(path, { ...init, headers: { accept: 'application/json', ...init?.headers } });
  const body = await res.json().catch(() => undefined);
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

/** A key as it goes in a /v1/kv path (every byte of it, slashes included). */
const kvPath = (key) => `/v1/kv/${encodeURIComponent(key)}`;

// ---------------------------------------------------------------------------
// Sign-in

function showSignIn() {
  const socket = state.socket;
  state.socket = null;
  socket?.close();
  // A token the gateway refused (expired, or not one it accepts) is dropped.
  if (token()) {
    sessionStorage.removeItem(TOKEN_KEY);
    $('sign-in-error').textContent = 'The token was refused or has expired: sign in again.';
  }
  $('sign-in').hidden = false;
  $('keys').hidden = true;
  $('cluster').hidden = true;
  setStatus('sign in to continue');
}

$('sign-in').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  $('sign-in-error').textContent = '';
  if (!form.get('username') || !form.get('password')) {
    $('sign-in-error').textContent = 'user and password, please';
    return;
  }
  const res = await fetch('/v1/auth/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: form.get('username'), password: form.get('password') }),
  });
  const body = await res.json().catch(() => undefined);
  if (!res.ok) {
    $('sign-in-error').textContent = body?.detail ?? `sign-in failed (${res.status})`;
    return;
  }
  signedIn(body.token);
});

// A JWT from an identity provider (AUTH_JWKS_URL, or any token the gateway
// accepts), for deployments where the gateway issues none itself.
$('use-token').addEventListener('click', () => {
  const value = $('sign-in').elements.token.value.trim();
  if (value) signedIn(value.replace(/^Bearer\s+/i, ''));
});

function signedIn(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
  $('sign-in').hidden = true;
  $('sign-out').hidden = false;
  $('sign-in-error').textContent = '';
  showTab('keys');
  start();
}

$('sign-out').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.socket?.close();
  location.reload();
});

// ---------------------------------------------------------------------------
// Header

function setStatus(text) {
  $('status').textContent = text;
}

async function refreshStatus() {
  try {
    const res = await fetch('/readyz');
    const ready = await res.json();
    setStatus(res.ok ? `etcd ${ready.etcd_version} · revision ${ready.revision}` : `etcd not ready: ${ready.detail ?? res.status}`);
  } catch {
    setStatus('gateway unreachable');
  }
}

function showTab(name) {
  for (const tab of ['keys', 'cluster']) {
    $(tab).hidden = tab !== name;
    $(`tab-${tab}`).classList.toggle('active', tab === name);
  }
  if (name === 'cluster') loadCluster();
}
$('tab-keys').addEventListener('click', () => showTab('keys'));
$('tab-cluster').addEventListener('click', () => showTab('cluster'));

// ---------------------------------------------------------------------------
// Key browser

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const c of children) node.append(c);
  return node;
}

function renderCrumbs() {
  const crumbs = $('crumbs');
  crumbs.replaceChildren();
  crumbs.append(el('a', { href: '#', textContent: '(all keys)', onclick: (e) => (e.preventDefault(), go('')) }));
  // "/app/db/" → "/", "/app/", "/app/db/"
  let at = 0;
  while (at < state.prefix.length) {
    const next = state.prefix.indexOf('/', at);
    const end = next < 0 ? state.prefix.length : next + 1;
    const prefix = state.prefix.slice(0, end);
    crumbs.append(' ', el('a', { href: '#', textContent: state.prefix.slice(at, end), onclick: (e) => (e.preventDefault(), go(prefix)) }));
    at = end;
  }
}

const utf8 = new TextEncoder();
/** etcd's key order: bytes, not UTF-16 code units. */
function byteOrder(a, b) {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** The list items of one page of a directory listing, sub-prefixes and keys together in key order (as pages come). */
function listItems(listing) {
  const entries = [];
  for (const p of listing.prefixes ?? []) {
    if (p.key === undefined) continue; // not UTF-8: not addressable from here
    entries.push([p.key, el('li', { className: 'dir' }, el('a', { href: '#', textContent: p.key.slice(state.prefix.length), onclick: (e) => (e.preventDefault(), go(p.key)) }))]);
  }
  for (const kv of listing.kvs) {
    if (kv.key === undefined) {
      entries.push(['', el('li', { className: 'binary', textContent: `(binary key ${kv.key_base64})` })]);
      continue;
    }
    const name = kv.key.slice(state.prefix.length) || kv.key;
    const link = el('a', { href: '#', textContent: name, onclick: (e) => (e.preventDefault(), openKey(kv.key)) });
    const li = el('li', { className: 'key' }, link, el('span', { className: 'rev', textContent: ` rev ${kv.mod_revision}` }));
    li.dataset.key = kv.key;
    if (state.open?.key === kv.key) li.classList.add('selected');
    entries.push([kv.key, li]);
  }
  return entries.sort((a, b) => byteOrder(a[0], b[0])).map(([, li]) => li);
}

/** Lists the prefix shown, one page (the gateway's LIST_MAX_KEYS) at a time. */
async function loadListing() {
  renderCrumbs();
  const list = $('listing');
  const note = $('listing-note');
  let listing;
  try {
    listing = await json(`${kvPath(state.prefix)}?separator=/`);
  } catch (err) {
    list.replaceChildren();
    note.replaceChildren(err.message);
    return;
  }
  state.revision = Math.max(state.revision, listing.revision);
  list.replaceChildren(...listItems(listing));
  const showMore = (page) => {
    note.replaceChildren();
    if (list.children.length === 0) note.append('no keys under this prefix');
    if (!page.more || !page.next) return;
    // Further pages continue at the first page's revision (the cursor says which).
    const more = el('button', { type: 'button', className: 'more', textContent: 'more…' });
    more.onclick = async () => {
      more.disabled = true;
      try {
        const next = await json(`${kvPath(state.prefix)}?separator=/&cursor=${encodeURIComponent(page.next)}`);
        list.append(...listItems(next));
        showMore(next);
      } catch (err) {
        note.replaceChildren(err.message);
      }
    };
    note.append(more);
  };
  showMore(listing);
}

function go(prefix) {
  state.prefix = prefix;
  location.hash = encodeURIComponent(prefix);
  watchPrefix();
  loadListing();
}

// ---------------------------------------------------------------------------
// Editor

function showMeta(kv) {
  const meta = $('editor-meta');
  meta.replaceChildren();
  const rows = [
    ['create revision', kv.create_revision],
    ['mod revision', kv.mod_revision],
    ['version', kv.version],
    ['lease', kv.lease ? `${kv.lease}${kv.ttl !== undefined ? ` (${kv.ttl} s left)` : ''}` : 'none'],
  ];
  for (const [k, v] of rows) meta.append(el('dt', { textContent: k }), el('dd', { textContent: String(v) }));
}

function banner(text) {
  $('editor-banner').textContent = text;
  $('editor-banner').hidden = !text;
}

async function openKey(key) {
  $('editor-error').textContent = '';
  banner('');
  let kv;
  try {
    kv = await json(kvPath(key));
  } catch (err) {
    if (err.status === 404) {
      state.open = null;
      $('editor').hidden = true;
      return;
    }
    $('editor-error').textContent = err.message;
    return;
  }
  state.open = { key, mod_revision: kv.mod_revision };
  state.dirty = false;
  $('editor').hidden = false;
  $('editor-key').textContent = key;
  showMeta(kv);
  const editor = $('editor-value');
  if (kv.value !== undefined) {
    editor.value = kv.value;
    editor.readOnly = false;
  } else {
    editor.value = `(binary value, base64)\n${kv.value_base64}`;
    editor.readOnly = true;
  }
  for (const li of $('listing').children) li.classList.toggle('selected', li.dataset.key === key);
}

$('editor-value').addEventListener('input', () => (state.dirty = true));
$('reload').addEventListener('click', () => state.open && openKey(state.open.key));

$('save').addEventListener('click', async () => {
  if (!state.open) return;
  $('editor-error').textContent = '';
  // Compare-and-swap: the save applies only if nobody changed the key since it was read.
  const res = await api(kvPath(state.open.key), {
    method: 'PUT',
    headers: { 'if-match': `"${state.open.mod_revision}"` },
    body: $('editor-value').value,
  });
  const body = await res.json().catch(() => undefined);
  if (res.status === 412) {
    banner(`Not saved: the key changed (now revision ${body?.current?.mod_revision ?? '?'}). Reload to see it.`);
    return;
  }
  if (!res.ok) {
    $('editor-error').textContent = body?.detail ?? `save failed (${res.status})`;
    return;
  }
  state.dirty = false;
  await openKey(state.open.key);
  banner(`Saved at revision ${body.revision}.`);
});

$('delete').addEventListener('click', async () => {
  if (!state.open || !confirm(`Delete ${state.open.key}?`)) return;
  const res = await api(kvPath(state.open.key), { method: 'DELETE', headers: { 'if-match': `"${state.open.mod_revision}"` } });
  const body = await res.json().catch(() => undefined);
  if (res.status === 412) {
    banner('Not deleted: the key changed since it was read. Reload to see it.');
    return;
  }
  if (!res.ok) {
    $('editor-error').textContent = body?.detail ?? `delete failed (${res.status})`;
    return;
  }
  state.open = null;
  $('editor').hidden = true;
  loadListing();
});

$('new-key').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = e.target.elements.key;
  const key = state.prefix + input.value;
  // If-None-Match: * creates only; an existing key is opened instead of overwritten.
  const res = await api(kvPath(key), { method: 'PUT', headers: { 'if-none-match': '*' }, body: '' });
  if (!res.ok && res.status !== 412) {
    const body = await res.json().catch(() => undefined);
    $('listing-note').textContent = body?.detail ?? `could not create ${key} (${res.status})`;
    return;
  }
  input.value = '';
  await loadListing();
  await openKey(key);
});

// ---------------------------------------------------------------------------
// Live updates: one websocket subscription on the prefix shown.

let refreshTimer;
function scheduleRefresh(events) {
  const open = state.open?.key;
  if (open && events.some((ev) => ev.kv.key === open)) {
    if (state.dirty) banner('This key changed while you were editing it. Save will refuse; reload to see the change.');
    else openKey(open);
  }
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(loadListing, 50);
}

function watchPrefix() {
  state.socket?.close();
  const protocols = ['etcd-gateway.v1'];
  if (token()) protocols.push(`bearer.${token()}`);
  const socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/watch`, protocols);
  state.socket = socket;
  const live = $('live');
  socket.onopen = () => socket.send(JSON.stringify({ type: 'subscribe', id: 'console', key: state.prefix, prefix: true }));
  socket.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === 'created') {
      live.textContent = '● live';
      live.classList.add('on');
    } else if (msg.type === 'events') {
      state.revision = msg.revision;
      scheduleRefresh(msg.events);
    } else if (msg.type === 'error') {
      live.title = msg.message;
    }
  };
  socket.onclose = () => {
    if (state.socket !== socket) return;
    live.textContent = '○ live';
    live.classList.remove('on');
    // Reconnect, then relist: whatever changed meanwhile shows.
    setTimeout(() => {
      if (state.socket === socket && $('sign-in').hidden) {
        watchPrefix();
        loadListing();
      }
    }, 1000);
  };
}

// ---------------------------------------------------------------------------
// Cluster

async function loadCluster() {
  $('cluster-error').textContent = '';
  try {
    const [status, members] = await Promise.all([json('/v1/cluster/status'), json('/v1/cluster/members')]);
    $('endpoints').tBodies[0].replaceChildren(
      ...status.endpoints.map((s) =>
        el(
          'tr',
          {},
          ...[
            s.endpoint,
            s.id ?? '',
            s.version ?? '',
            s.db_size !== undefined ? `${(s.db_size / 1024).toFixed(0)} KiB` : '',
            s.reachable ? (s.is_leader ? 'leader' : 'follower') : `unreachable: ${s.error ?? ''}`,
            s.raft_term ?? '',
            s.raft_index ?? '',
            (s.errors ?? []).join(', '),
          ].map((v) => el('td', { textContent: String(v) })),
        ),
      ),
    );
    $('members').tBodies[0].replaceChildren(
      ...members.members.map((m) =>
        el('tr', {}, ...[m.id, m.name, m.peer_urls.join(' '), m.client_urls.join(' '), m.is_learner ? 'yes' : 'no'].map((v) => el('td', { textContent: String(v) }))),
      ),
    );
  } catch (err) {
    $('cluster-error').textContent = err.message;
  }
}

// ---------------------------------------------------------------------------

let statusTimer;
function start() {
  state.prefix = decodeURIComponent(location.hash.slice(1));
  refreshStatus();
  statusTimer ??= setInterval(refreshStatus, 10_000);
  watchPrefix();
  loadListing();
}

if (token()) $('sign-out').hidden = false;
start();
