// The console's entry point: log in, keep the console's own session alive,
// route between views, and show the live stream's state in the header.
//
// Every view is a function `(ctx, params) => cleanup`, where `ctx` holds
// the API client, what the token allows, the live stream and the console's
// session. Routes are URL hashes: `#/tree?path=/a/b`, `#/events`, ...

import { Api, ApiError, Live, toast } from './lib.js';
import { treeView } from './tree.js';
import { clusterView, eventsView, pluginsView, recordEvents, sessionsView } from './views.js';

const views = { tree: treeView, events: eventsView, sessions: sessionsView, cluster: clusterView, plugins: pluginsView };
const TOKEN_KEY = 'corral.token';
/** The console's own session: ephemerals it creates belong to it. */
const SESSION_TIMEOUT_MS = 30_000;

let ctx = null;
let cleanup = null;

async function login(token) {
  const api = new Api(token);
  const me = await api.get('/api/v1/whoami');
  const can = (scope) => me.allows.includes(scope);
  ctx = { api, me, can, live: new Live(api), session: null, renewer: null };
  sessionStorage.setItem(TOKEN_KEY, token);
  if (can('write')) await openSession();
  document.getElementById('who').textContent = `${me.token.name} · ${can('write') ? me.allows.join(', ') : 'read-only'}`;
  document.getElementById('login').hidden = true;
  document.getElementById('app').hidden = false;
  ctx.live.onstate = showLive;
  recordEvents(ctx);
  ctx.live.start();
  refreshNodeBadge();
  route();
}

/** Opens the console's session; a worker renews it at a third of its timeout. */
async function openSession() {
  const s = await ctx.api.req('POST', '/api/v1/sessions', { timeout_ms: SESSION_TIMEOUT_MS });
  ctx.session = s.id;
  ctx.renewer ??= new Worker('/console/renew.js');
  const mine = ctx;
  ctx.renewer.onmessage = async ({ data }) => {
    if (mine !== ctx || data.id !== ctx.session || data.body.code !== 'session_expired') return;
    toast('The console\'s session expired: its ephemeral nodes are gone. Opening a new one.', 'error');
    await openSession();
  };
  ctx.renewer.postMessage({ id: s.id, token: ctx.api.token, every: s.timeout_ms / 3 });
}

async function logout() {
  if (ctx) {
    ctx.renewer?.terminate();
    ctx.live.stop();
    if (ctx.session) await ctx.api.req('DELETE', `/api/v1/sessions/${ctx.session}`).catch(() => {});
  }
  cleanup?.();
  cleanup = null;
  ctx = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
}

function showLogin(message) {
  document.getElementById('app').hidden = true;
  document.getElementById('login').hidden = false;
  const err = document.getElementById('login-error');
  err.hidden = !message;
  err.textContent = message || '';
  document.getElementById('login-token').focus();
}

function showLive(state) {
  const b = document.getElementById('live-badge');
  const scope = ctx.live.scope === '/' ? '' : ` ${ctx.live.scope}`;
  b.textContent = state === 'live' ? `● live${scope}` : state === 'paused' ? `❚❚ paused${scope}` : `○ ${state}`;
  b.className = `badge${state === 'live' ? '' : ' off'}`;
}

async function refreshNodeBadge() {
  if (!ctx) return;
  const b = document.getElementById('node-badge');
  try {
    const c = await ctx.api.get('/api/v1/cluster');
    b.textContent = `node ${c.node_id} · ${c.state}${c.leader ? '' : ' · no leader'}`;
    b.className = `badge${c.leader ? '' : ' bad'}`;
  } catch {
    b.textContent = 'unreachable';
    b.className = 'badge bad';
  }
}

function route() {
  if (!ctx) return;
  const [, name = 'tree', query = ''] = location.hash.match(/^#\/(\w+)\??(.*)$/) || [];
  const view = views[name] || treeView;
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.view === name);
  cleanup?.();
  const main = document.getElementById('view');
  main.replaceChildren();
  cleanup = view(ctx, new URLSearchParams(query), main) || null;
}

window.addEventListener('hashchange', route);
window.addEventListener('pagehide', () => {
  // Best effort: close the console's session with the page, so its
  // ephemerals do not linger for a whole timeout.
  if (ctx?.session) {
    fetch(`/api/v1/sessions/${ctx.session}`, { method: 'DELETE', headers: ctx.api.headers(), keepalive: true });
  }
});

document.getElementById('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const token = document.getElementById('login-token').value.trim();
  try {
    await login(token);
  } catch (e) {
    showLogin(e.status === 401 ? 'That token is unknown or revoked.' : e.message);
  }
});
document.getElementById('logout').addEventListener('click', logout);
setInterval(refreshNodeBadge, 5000);

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) login(saved).catch(() => showLogin()); else showLogin();
