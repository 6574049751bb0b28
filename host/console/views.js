// The views beside the tree: live events, sessions and connections, the
// cluster with its live charts, and plugins.

import { attempt, bytes, dialog, field, h, hex, q, toast, treeLink } from './lib.js';

/** Most events the events view keeps on screen. */
const MAX_EVENTS = 2000;

// ---- events ----

export function eventsView(ctx, _params, main) {
  const { live } = ctx;
  const scope = h('input', { type: 'text', id: 'events-scope', value: live.scope });
  const pause = h('button', { id: 'events-pause', type: 'button', onclick: () => { live.setPaused(!live.paused); label(); } });
  const counter = h('span', { class: 'muted', id: 'events-count' });
  const body = h('tbody', { id: 'events' });
  const label = () => { pause.textContent = live.paused ? 'Resume' : 'Pause'; };
  label();
  main.append(
    h('form', { class: 'toolbar', onsubmit: (ev) => { ev.preventDefault(); live.setScope(scope.value.trim() || '/'); } },
      h('strong', {}, 'Changes under'), scope, h('button', { type: 'submit' }, 'Watch this subtree'), pause,
      h('button', { type: 'button', onclick: () => { ctx.events = []; draw(); } }, 'Clear'), counter),
    h('p', { class: 'muted' }, 'Every committed change under the subtree, as it is applied: its zxid and kind. Pausing stops the stream (busy trees make it expensive); resuming replays what was missed as far as the server\'s history reaches.'),
    h('div', { class: 'table-wrap events-wrap' },
      h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'received'), h('th', {}, 'zxid'), h('th', {}, 'kind'), h('th', {}, 'path'))), body)));
  ctx.events ??= [];
  const draw = () => {
    counter.textContent = `${ctx.events.length} shown`;
    body.replaceChildren(...ctx.events.slice(0, 500).map((e) => e.gap
      ? h('tr', {}, h('td', {}, e.at), h('td', { colspan: 3, class: 'warn' }, `gap: ${e.reason}`))
      : h('tr', {}, h('td', { class: 'muted' }, e.at), h('td', { class: 'mono' }, hex(e.zxid)), h('td', {}, e.type), h('td', { class: 'mono' }, treeLink(e.path)))));
  };
  draw();
  let pending = false;
  const unsubscribe = live.subscribe((ev) => {
    if (ev.kind === 'scope') { scope.value = ev.scope; return; }
    if (ev.kind === 'state') { label(); return; }
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); }
  });
  return unsubscribe;
}

/** Keeps the newest events for the events view, whichever view is open. */
export function recordEvents(ctx) {
  ctx.events = [];
  ctx.live.subscribe((ev) => {
    if (ev.kind === 'state') return;
    if (ev.kind === 'scope') { ctx.events = []; return; }
    const at = new Date().toLocaleTimeString();
    ctx.events.unshift(ev.kind === 'gap' ? { gap: true, at, reason: ev.reason } : { at, zxid: ev.zxid, type: ev.type, path: ev.path });
    if (ctx.events.length > MAX_EVENTS) ctx.events.length = MAX_EVENTS;
  });
}

// ---- sessions and connections ----

export function sessionsView(ctx, params, main) {
  const focus = params.get('id');
  const sessions = h('tbody', { id: 'sessions' });
  const conns = h('tbody', { id: 'connections' });
  main.append(
    h('div', { class: 'toolbar' }, h('h2', { class: 'grow' }, 'Sessions'), h('button', { onclick: load }, 'Refresh')),
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['session', 'kind', 'owner node', 'timeout', 'watches here', 'ephemerals', ''].map((t) => h('th', {}, t)))), sessions)),
    h('h3', {}, 'ZooKeeper connections to this node'),
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['client', 'session', 'requests', 'responses'].map((t) => h('th', {}, t)))), conns)));
  async function load() {
    const [list, cs] = await Promise.all([
      attempt(() => ctx.api.get('/api/v1/sessions')), attempt(() => ctx.api.get('/api/v1/connections'))]);
    if (list) {
      sessions.replaceChildren(...list.map((s) => h('tr', { class: s.id === focus ? 'selected' : '', dataset: { session: s.id } },
        h('td', { class: 'mono' }, s.id, s.id === ctx.session ? h('span', { class: 'badge' }, 'this console') : null),
        h('td', {}, s.kind), h('td', { class: 'num' }, s.owner_node), h('td', { class: 'num' }, `${s.timeout_ms} ms`),
        h('td', { class: 'num' }, s.watches),
        h('td', { class: 'mono' }, s.ephemerals.length ? s.ephemerals.flatMap((p, i) => [i ? h('br') : null, treeLink(p)]) : '—'),
        h('td', {}, ctx.can('write') && s.kind === 'http'
          ? h('button', { class: 'small danger', onclick: () => closeSession(s.id) }, 'Close') : null))));
      if (!list.length) sessions.replaceChildren(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No sessions.')));
    }
    if (cs) {
      conns.replaceChildren(...cs.map((c) => h('tr', {},
        h('td', { class: 'mono' }, c.peer), h('td', { class: 'mono' }, c.session ?? 'handshake'),
        h('td', { class: 'num' }, c.received), h('td', { class: 'num' }, c.sent))));
      if (!cs.length) conns.replaceChildren(h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No ZooKeeper clients are connected to this node.')));
    }
  }
  async function closeSession(id) {
    const v = await dialog(`Close session ${id}?`, [h('p', {}, 'Its ephemeral nodes are deleted now.')], { submit: 'Close session', danger: true });
    if (!v) return;
    if (await attempt(() => ctx.api.req('DELETE', `/api/v1/sessions/${id}`)) !== undefined) { toast(`Closed ${id}`); load(); }
  }
  load();
  const timer = setInterval(load, 5000);
  return () => clearInterval(timer);
}

// ---- cluster ----

/** Sums of the Prometheus counters and histograms the charts need. */
function scrape(text) {
  const out = { t: Date.now(), requests: 0, latencySum: 0, latencyCount: 0, buckets: new Map(), applied: 0 };
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line) continue;
    const m = line.match(/^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN|\+Inf)$/);
    if (!m) continue;
    const [, name, labels = '', value] = m;
    const v = Number(value);
    if (name === 'corral_requests_total') out.requests += v;
    else if (name === 'corral_applied_entries_total') out.applied += v;
    else if (name === 'corral_request_seconds_sum') out.latencySum += v;
    else if (name === 'corral_request_seconds_count') out.latencyCount += v;
    else if (name === 'corral_request_seconds_bucket') {
      const le = labels.match(/le="([^"]+)"/)?.[1];
      if (le) out.buckets.set(le, (out.buckets.get(le) || 0) + v);
    }
  }
  return out;
}

/** The p99 of the requests between two scrapes, from bucket deltas. */
function p99(prev, cur) {
  const les = [...cur.buckets.keys()].sort((a, b) => Number(a) - Number(b));
  const total = cur.latencyCount - prev.latencyCount;
  if (total <= 0) return null;
  for (const le of les) {
    if ((cur.buckets.get(le) - (prev.buckets.get(le) || 0)) >= total * 0.99) return Number(le);
  }
  return null;
}

function chart(canvas, series, unit) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth * dpr;
  const ht = canvas.clientHeight * dpr;
  canvas.width = w;
  canvas.height = ht;
  const g = canvas.getContext('2d');
  const styles = getComputedStyle(document.body);
  const max = Math.max(1e-9, ...series.flatMap((s) => s.points.filter((p) => p !== null)));
  g.font = `${11 * dpr}px system-ui`;
  g.fillStyle = styles.color;
  g.fillText(`max ${fmt(max, unit)}`, 4 * dpr, 12 * dpr);
  series.forEach((s, si) => {
    g.strokeStyle = s.color;
    g.lineWidth = 1.5 * dpr;
    g.beginPath();
    s.points.forEach((p, i) => {
      if (p === null) return;
      const x = (i / 59) * w;
      const y = ht - (p / max) * (ht - 18 * dpr);
      if (i === 0 || s.points[i - 1] === null) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
    const last = s.points.filter((p) => p !== null).at(-1);
    s.label = `${s.name} ${last === undefined ? '—' : fmt(last, unit)}`;
    g.fillStyle = s.color;
    g.fillText(s.label, 4 * dpr, (26 + si * 12) * dpr);
  });
  // What the chart shows now, for screen readers.
  canvas.setAttribute('aria-label', series.map((s) => s.label).join(', '));
  canvas.setAttribute('role', 'img');
}

function fmt(v, unit) {
  if (unit === 's') return v < 0.001 ? `${(v * 1e6).toFixed(0)} µs` : v < 1 ? `${(v * 1000).toFixed(1)} ms` : `${v.toFixed(2)} s`;
  return `${v < 10 ? v.toFixed(1) : Math.round(v)}/s`;
}

export function clusterView(ctx, _params, main) {
  const cards = h('div', { class: 'cards', id: 'cluster-cards' });
  const members = h('tbody', { id: 'members' });
  const thr = h('canvas', { class: 'chart', id: 'chart-throughput' });
  const lat = h('canvas', { class: 'chart', id: 'chart-latency' });
  const metricsNote = h('p', { class: 'muted', hidden: true });
  main.append(
    h('h2', {}, 'Cluster'), cards,
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['member', 'role', 'raft address', 'ZooKeeper address', 'HTTP address', 'matched index', 'lag'].map((t) => h('th', {}, t)))), members)),
    h('h3', {}, 'This node, live (one point a second, last minute)'),
    h('div', { class: 'charts' }, h('div', { class: 'card' }, thr), h('div', { class: 'card' }, lat)), metricsNote);
  const hist = { req: [], applied: [], mean: [], p99: [] };
  let prev = null;
  const push = (k, v) => { hist[k].push(v); if (hist[k].length > 60) hist[k].shift(); };
  const pad = (a) => Array(60 - a.length).fill(null).concat(a);

  async function tick() {
    const c = await attempt(() => ctx.api.get('/api/v1/cluster'));
    if (c) {
      const card = (k, v, id, small) => h('div', { class: 'card stat-card', id }, h('div', { class: 'k' }, k), h('div', { class: small ? 'v small' : 'v' }, v));
      cards.replaceChildren(card('this node', c.node_id), card('state', c.state, 'cluster-state'),
        card('leader', c.leader ?? 'none', 'cluster-leader'), card('term', c.term),
        card('committed', c.committed_index), card('applied', c.applied_index), card('state digest', c.digest, 'cluster-digest', true));
      members.replaceChildren(...c.members.map((m) => h('tr', {},
        h('td', {}, m.id, m.id === c.leader ? h('span', { class: 'badge' }, 'leader') : null, m.id === c.node_id ? h('span', { class: 'badge off' }, 'this node') : null),
        h('td', {}, m.role), h('td', { class: 'mono' }, m.raft_addr), h('td', { class: 'mono' }, m.client_addr ?? '—'),
        h('td', { class: 'mono' }, m.http_addr ? h('a', { href: `http://${m.http_addr}/` }, m.http_addr) : '—'),
        h('td', { class: 'num' }, m.matched_index ?? '—'), h('td', { class: 'num' }, m.lag ?? (c.state === 'leader' ? 0 : 'ask the leader')))));
    }
    try {
      const cur = scrape(await ctx.api.req('GET', '/metrics'));
      if (prev) {
        const dt = (cur.t - prev.t) / 1000;
        const n = cur.latencyCount - prev.latencyCount;
        push('req', (cur.requests - prev.requests) / dt);
        push('applied', (cur.applied - prev.applied) / dt);
        push('mean', n > 0 ? (cur.latencySum - prev.latencySum) / n : null);
        push('p99', p99(prev, cur));
      }
      prev = cur;
      metricsNote.hidden = true;
    } catch (e) {
      metricsNote.hidden = false;
      metricsNote.textContent = `Metrics unavailable: ${e.message}`;
    }
    chart(thr, [{ name: 'requests', color: '#2f6f4f', points: pad(hist.req) }, { name: 'log entries applied', color: '#c77d12', points: pad(hist.applied) }], 'rate');
    chart(lat, [{ name: 'mean latency', color: '#2f6f4f', points: pad(hist.mean) }, { name: 'p99 (bucket bound)', color: '#b3261e', points: pad(hist.p99) }], 's');
  }
  tick();
  const timer = setInterval(tick, 1000);
  return () => clearInterval(timer);
}

// ---- plugins ----

export function pluginsView(ctx, params, main) {
  const can = ctx.can('plugin');
  const table = h('tbody', { id: 'plugins' });
  const info = h('div', { id: 'plugin-detail' });
  main.append(
    h('div', { class: 'toolbar' }, h('h2', { class: 'grow' }, 'Plugins'),
      can ? h('button', { class: 'primary', id: 'deploy', onclick: deploy }, 'Deploy .wasm…') : null,
      h('button', { onclick: load }, 'Refresh')),
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['name', 'kind', 'active', 'versions', 'bound to', 'calls', 'traps', 'fuel used', 'status']
        .map((t) => h('th', { class: ['calls', 'traps', 'fuel used', 'versions'].includes(t) ? 'num' : '' }, t)))), table)),
    info);
  let open = params.get('name');

  async function load() {
    const list = await attempt(() => ctx.api.get('/api/v1/plugins'));
    if (!list) return;
    table.replaceChildren(...list.map((p) => h('tr', { dataset: { plugin: p.name }, class: p.name === open ? 'selected' : '' },
      h('td', {}, h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); open = p.name; load(); } }, p.name)),
      h('td', {}, p.kind), h('td', { class: 'mono' }, p.active.slice(0, 12)), h('td', { class: 'num' }, p.versions.length),
      h('td', { class: 'mono' }, p.bindings.join(', ') || '—'), h('td', { class: 'num' }, p.calls), h('td', { class: 'num' }, p.traps),
      h('td', { class: 'num' }, p.fuel_used.toLocaleString()),
      h('td', { class: p.disabled ? 'error' : '' }, p.disabled ? 'disabled' : 'enabled'))));
    if (!list.length) table.replaceChildren(h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No plugins deployed.')));
    const p = list.find((x) => x.name === open);
    info.replaceChildren(p ? detail(p) : h('p', { class: 'muted' }, list.length ? 'Pick a plugin to see its versions and limits.' : ''));
  }

  function detail(p) {
    const activeAt = p.versions.findIndex((v) => v.sha256 === p.active);
    return h('div', { class: 'card', style: 'margin-top:12px' },
      h('div', { class: 'detail-head' }, h('h2', { id: 'plugin-name' }, `${p.name} (${p.kind})`),
        can ? h('button', { class: 'small', id: 'rollback', disabled: activeAt <= 0, onclick: () => act('rollback', p) }, 'Roll back') : null,
        can ? h('button', { class: 'small', id: 'toggle', onclick: () => act(p.disabled ? 'enable' : 'disable', p) }, p.disabled ? 'Enable' : 'Disable') : null,
        can ? h('button', { class: 'small danger', onclick: () => act('remove', p) }, 'Remove…') : null),
      h('h3', {}, 'Versions (oldest first; last 5 kept)'),
      h('table', { id: 'versions' }, h('tr', {}, ['', 'sha256', 'size', 'deployed at zxid', 'imports'].map((t) => h('th', {}, t))),
        p.versions.map((v, i) => h('tr', { class: i === activeAt ? 'selected' : '' },
          h('td', {}, i === activeAt ? h('span', { class: 'badge' }, 'active') : ''),
          h('td', { class: 'mono' }, v.sha256.slice(0, 16)), h('td', {}, bytes(v.size)), h('td', { class: 'mono' }, hex(v.deployed_zxid)),
          h('td', { class: 'mono' }, v.imports.join(', ') || '—')))),
      h('h3', {}, 'Limits (replicated: the same on every member)'),
      h('table', { class: 'kv' }, [
        ['fuel per call', p.fuel_limit.toLocaleString()], ['memory', bytes(p.memory_limit_bytes)], ['host calls', p.host_call_limit],
        ['read', bytes(p.read_limit_bytes)], ['write', bytes(p.write_limit_bytes)], ['output', bytes(p.output_limit_bytes)],
        ['breaker', p.breaker ? `${p.breaker} consecutive traps (now ${p.consecutive_traps})` : 'never'],
      ].map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, v)))));
  }

  async function act(what, p) {
    const warn = {
      remove: [`Remove ${p.name}?`, 'Its bindings go with it, on every member; its code is collected.', 'Remove'],
      disable: [`Disable ${p.name}?`, p.kind === 'validator'
        ? `A disabled validator vetoes every write under ${p.bindings.join(', ')} until it is enabled again.`
        : 'Calls to it fail on every member until it is enabled again.', 'Disable'],
    }[what];
    if (warn && !(await dialog(warn[0], [h('p', {}, warn[1])], { submit: warn[2], danger: true }))) return;
    const name = encodeURIComponent(p.name);
    const r = await attempt(() => (what === 'rollback' ? ctx.api.req('POST', `/api/v1/plugins/${name}/rollback`)
      : what === 'remove' ? ctx.api.req('DELETE', `/api/v1/plugins/${name}`)
        : ctx.api.req('PUT', `/api/v1/plugins/${name}/enabled`, { enabled: what === 'enable' })));
    if (r === undefined) return;
    toast(what === 'rollback' ? `Rolled back ${p.name} at zxid ${hex(r.zxid)}: ${r.plugin.active.slice(0, 12)} is active` : `${p.name}: ${what}d`);
    if (what === 'remove') open = null;
    load();
  }

  async function deploy() {
    const file = h('input', { type: 'file', id: 'deploy-file', name: 'file', accept: '.wasm', required: true });
    const name = h('input', { type: 'text', id: 'deploy-name', name: 'name', required: true, placeholder: 'e.g. lock' });
    const kind = h('select', { id: 'deploy-kind', name: 'kind' }, ['', 'recipe', 'query', 'validator', 'trigger'].map((k) => h('option', { value: k }, k || 'from its exports')));
    const bind = h('input', { type: 'text', id: 'deploy-bind', name: 'bind', placeholder: '/config, /services (validators and triggers)' });
    const v = await dialog('Deploy a plugin', [...field('Component (.wasm)', file), ...field('Name', name), ...field('Kind', kind), ...field('Bound to', bind),
      h('p', { class: 'muted' }, 'Deploying a name that exists adds a version; the previous one stays for a rollback.')],
    { submit: 'Deploy', check: (x) => (!x.file ? 'Choose a .wasm component.' : !x.name ? 'Give it a name.' : null) });
    if (!v) return;
    const code = new Uint8Array(await v.file.arrayBuffer());
    const r = await attempt(() => ctx.api.req('PUT', `/api/v1/plugins/${encodeURIComponent(v.name)}?${q({ kind: v.kind, bind: v.bind.replace(/\s+/g, '') })}`, code));
    if (!r) return;
    toast(`Deployed ${v.name} (${r.plugin.active.slice(0, 12)}) at zxid ${hex(r.zxid)} in ${r.took_ms} ms`);
    open = v.name;
    load();
  }

  load();
  const timer = setInterval(load, 5000);
  return () => clearInterval(timer);
}

