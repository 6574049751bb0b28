// The tree view: a lazily loaded, virtually scrolled tree on the left, the
// selected node on the right (data, stat, ACL), with editing, create,
// delete, export, import and copy. Committed changes arrive through the
// live stream and update both sides in place.

import {
  ApiError, attempt, b64ToBytes, bytes, bytesToB64, dialog, download, field, h, hex, join, parent, q, toast, when,
} from './lib.js';

const ROW = 24;
/** Children fetched per request while scrolling. */
const PAGE = 1000;
/** Rows rendered beyond the visible ones, above and below. */
const OVERSCAN = 12;
const MODES = ['persistent', 'persistent_sequential', 'ephemeral', 'ephemeral_sequential', 'container', 'ttl', 'ttl_sequential'];

const baseName = (p) => (p === '/' ? '/' : p.slice(p.lastIndexOf('/') + 1));

/**
 * What the tree knows: for each loaded node its stat, whether it is
 * expanded, and the children loaded so far (in name order, as the server
 * pages them, with a Set for membership); `rows` is the flattened list the
 * virtual list shows, rebuilt only when the structure changed (`dirty`).
 */
class TreeModel {
  constructor(api) {
    this.api = api;
    this.reset();
  }

  reset() {
    this.nodes = new Map();
    this.rows = [];
    this.dirty = true;
    this.entry('/', 0, null);
  }

  entry(path, depth, stat) {
    let n = this.nodes.get(path);
    if (!n) {
      n = { path, depth, stat, expanded: false, children: null, names: new Set(), next: null, total: 0, failed: null, deletedWhileLoading: null };
      this.nodes.set(path, n);
    } else if (stat) n.stat = stat;
    return n;
  }

  /**
   * Loads the next page of `n`'s children (the first if none yet). Changes
   * that arrive meanwhile are merged: a child deleted while the page was on
   * its way is not added back, and one created meanwhile is not doubled.
   */
  async loadPage(n, limit = PAGE) {
    if (n.loading) return n.loading;
    n.deletedWhileLoading = new Set();
    n.loading = (async () => {
      try {
        const after = n.children ? n.next : null;
        const page = await this.api.get(`/api/v1/children?${q({ path: n.path, after, limit, stat: true })}`);
        n.children ??= [];
        for (const c of page.children) {
          if (n.names.has(c.name) || n.deletedWhileLoading.has(c.name)) continue;
          this.entry(join(n.path, c.name), n.depth + 1, c.stat);
          n.children.push(c.name);
          n.names.add(c.name);
        }
        n.next = page.next;
        n.total = page.total;
        n.failed = null;
        this.dirty = true;
      } catch (e) {
        n.failed = e.message;
        this.dirty = true;
        throw e;
      } finally {
        n.loading = null;
        n.deletedWhileLoading = null;
      }
    })();
    return n.loading;
  }

  async expand(path) {
    const n = this.nodes.get(path);
    if (!n) return;
    if (!n.children) await this.loadPage(n);
    n.expanded = true;
    this.dirty = true;
  }

  collapse(path) {
    const n = this.nodes.get(path);
    if (n) n.expanded = false;
    this.dirty = true;
  }

  /** Expands every ancestor of `path` and loads pages until it is listed. */
  async reveal(path) {
    const names = path === '/' ? [] : path.slice(1).split('/');
    let cur = '/';
    for (const name of names) {
      const n = this.nodes.get(cur);
      if (!n) return false;
      if (!n.children) await this.loadPage(n);
      while (!n.names.has(name) && n.next !== null) await this.loadPage(n, 10_000);
      n.expanded = true;
      this.dirty = true;
      if (!n.names.has(name)) return false;
      cur = join(cur, name);
    }
    return true;
  }

  flatten() {
    if (!this.dirty) return;
    const rows = [];
    const walk = (n) => {
      rows.push({ path: n.path });
      if (!n.expanded || !n.children) return;
      for (const name of n.children) {
        const child = this.nodes.get(join(n.path, name));
        if (child) walk(child);
      }
      if (n.next !== null || n.failed) rows.push({ more: n.path, depth: n.depth + 1 });
    };
    walk(this.nodes.get('/'));
    this.rows = rows;
    this.dirty = false;
  }

  /** A committed change: keeps the loaded part of the tree true. */
  apply(ev) {
    const par = this.nodes.get(parent(ev.path));
    const name = baseName(ev.path);
    if (ev.type === 'created' && ev.path !== '/') {
      if (par?.stat) par.stat.num_children += 1;
      if (!par?.children) return;
      par.deletedWhileLoading?.delete(name);
      // Beyond the loaded pages it arrives with its page.
      if (!par.names.has(name) && (par.next === null || name < par.next)) {
        par.children.splice(sortedIndex(par.children, name), 0, name);
        par.names.add(name);
        this.entry(ev.path, par.depth + 1, { num_children: 0, ephemeral_owner: null, data_length: 0 });
        this.dirty = true;
      }
      par.total += 1;
    } else if (ev.type === 'deleted') {
      if (par?.stat) par.stat.num_children = Math.max(0, par.stat.num_children - 1);
      // ZooKeeper deletes leaves only: nothing under the node is loaded.
      this.nodes.delete(ev.path);
      if (!par?.children) return;
      par.deletedWhileLoading?.add(name);
      if (par.names.delete(name)) {
        par.children.splice(sortedIndex(par.children, name), 1);
        this.dirty = true;
      }
      par.total = Math.max(0, par.total - 1);
    }
  }

  /** After a gap in the stream: reload every expanded node's first page. */
  async reload() {
    if (this.reloading) return this.reloading;
    this.reloading = (async () => {
      const expanded = [...this.nodes.values()].filter((n) => n.expanded).map((n) => n.path).sort();
      this.reset();
      for (const p of expanded) {
        const n = this.nodes.get(p);
        if (!n) continue;
        await this.loadPage(n).catch(() => {});
        n.expanded = true;
      }
      this.dirty = true;
    })();
    try { await this.reloading; } finally { this.reloading = null; }
    return undefined;
  }
}

/** Where `name` is, or would go, in the sorted `names`. */
function sortedIndex(names, name) {
  let lo = 0;
  let hi = names.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (names[mid] < name) lo = mid + 1; else hi = mid;
  }
  return lo;
}

export function treeView(ctx, params, main) {
  const { api, live } = ctx;
  const model = new TreeModel(api);
  const flashed = new Map();
  let selected = params.get('path') || '/';
  let detail = null;

  // ---- left: search and the virtual list ----
  const searchBox = h('input', { type: 'text', id: 'search-prefix', placeholder: 'Search by path prefix, e.g. /services/pay' });
  const spacer = h('div', { class: 'spacer' });
  const rowsEl = h('div', { class: 'rows' });
  const list = h('div', { class: 'vlist', id: 'tree', role: 'tree' }, spacer, rowsEl);
  const results = h('div', { class: 'vlist', id: 'search-results', hidden: true });
  const note = h('p', { class: 'notice', id: 'live-note', hidden: true });
  const left = h('section', {},
    h('form', { class: 'toolbar', onsubmit: (ev) => { ev.preventDefault(); search(); } },
      searchBox, h('button', { type: 'submit' }, 'Search')),
    note, list, results);
  const right = h('section', {}, h('div', { class: 'detail', id: 'detail' }));
  main.append(h('div', { class: 'split' }, left, right));

  function render() {
    model.flatten();
    const rows = model.rows;
    spacer.style.height = `${rows.length * ROW}px`;
    const first = Math.max(0, Math.floor(list.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW) + OVERSCAN);
    rowsEl.style.transform = `translateY(${first * ROW}px)`;
    const now = Date.now();
    rowsEl.replaceChildren(...rows.slice(first, last).map((r) => (r.more ? moreRow(r) : nodeRow(r.path, now))).filter(Boolean));
    for (const [p, t] of flashed) if (t < now - 1200) flashed.delete(p);
  }

  function nodeRow(path, now) {
    const n = model.nodes.get(path);
    if (!n) return null;
    const kids = n.stat?.num_children ?? (path === '/' ? 1 : 0);
    const twisty = h('span', { class: 'twisty', onclick: (ev) => { ev.stopPropagation(); toggle(path); } },
      kids > 0 ? (n.expanded ? '▾' : '▸') : '');
    const flash = (flashed.get(path) || 0) > now - 1200;
    return h('div', {
      class: `row${path === selected ? ' selected' : ''}${flash ? ' flash' : ''}`,
      role: 'treeitem', dataset: { path }, style: `padding-left:${n.depth * 14}px`,
      onclick: () => select(path, true),
    }, twisty, baseName(path), kids > 0 ? h('span', { class: 'count' }, kids) : null,
    n.stat?.ephemeral_owner ? h('span', { class: 'eph', title: `ephemeral of ${n.stat.ephemeral_owner}` }, 'eph') : null);
  }

  function moreRow(r) {
    const n = model.nodes.get(r.more);
    if (!n) return null;
    const style = `padding-left:${r.depth * 14 + 16}px`;
    if (n.failed) {
      // Not retried by itself: a click does.
      return h('div', { class: 'row more error', style, onclick: () => { n.failed = null; model.loadPage(n).catch(() => {}).then(redraw); } },
        `could not load more: ${n.failed} (click to retry)`);
    }
    // Scrolled into view: fetch the next page.
    if (!n.loading) queueMicrotask(() => model.loadPage(n).catch(() => {}).then(redraw));
    return h('div', { class: 'row more', style }, `loading… (${n.children.length} of ${n.total})`);
  }

  function redraw() { render(); }

  async function toggle(path) {
    const n = model.nodes.get(path);
    if (n.expanded) model.collapse(path); else await attempt(() => model.expand(path));
    redraw();
  }

  async function select(path, expand = false) {
    selected = path;
    history.replaceState(null, '', `#/tree?path=${encodeURIComponent(path)}`);
    const n = model.nodes.get(path);
    if (expand && n && !n.expanded && (n.stat?.num_children ?? 0) > 0) await attempt(() => model.expand(path));
    redraw();
    await showDetail(path);
  }

  async function search() {
    const prefix = searchBox.value.trim();
    if (!prefix) { results.hidden = true; list.hidden = false; return; }
    const r = await attempt(() => api.get(`/api/v1/search?${q({ path: '/', prefix, limit: 500 })}`));
    if (!r) return;
    list.hidden = true;
    results.hidden = false;
    results.replaceChildren(
      h('div', { class: 'row more', onclick: () => { results.hidden = true; list.hidden = false; render(); } },
        `${r.matches.length}${r.truncated ? '+' : ''} matches · back to the tree`),
      ...r.matches.map((m) => h('div', {
        class: 'row', dataset: { path: m.path },
        onclick: async () => {
          results.hidden = true; list.hidden = false;
          await attempt(() => model.reveal(m.path));
          await select(m.path);
          list.scrollTop = Math.max(0, model.rows.findIndex((x) => x.path === m.path) * ROW - list.clientHeight / 2);
          render();
        },
      }, m.path, m.stat.num_children ? h('span', { class: 'count' }, m.stat.num_children) : null)));
  }

  // ---- right: the selected node ----
  let shown = 0;
  async function showDetail(path, notice) {
    const box = right.firstChild;
    const ticket = ++shown;
    let node;
    let acl;
    try {
      [node, acl] = await Promise.all([
        api.get(`/api/v1/node?${q({ path })}`),
        api.get(`/api/v1/acl?${q({ path })}`).catch((e) => ({ error: e.message })),
      ]);
    } catch (e) {
      if (ticket !== shown) return;
      box.replaceChildren(crumbs(path), h('p', { class: 'error' }, e.message));
      detail = null;
      return;
    }
    // A later request (another node clicked, another change) wins.
    if (ticket !== shown) return;
    detail = { path, node, acl, format: detect(node) };
    drawDetail(notice);
  }

  function crumbs(path) {
    const parts = path === '/' ? [] : path.slice(1).split('/');
    const out = [h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); select('/'); } }, '/')];
    let cur = '';
    parts.forEach((name, i) => {
      cur += `/${name}`;
      const target = cur;
      out.push(h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); select(target); } }, name));
      if (i < parts.length - 1) out.push('/');
    });
    return h('nav', { class: 'crumbs', id: 'crumbs' }, out);
  }

  function drawDetail(notice) {
    const { path, node, acl } = detail;
    const s = node.stat;
    const canWrite = ctx.can('write');
    const box = right.firstChild;
    box.replaceChildren(
      crumbs(path),
      h('div', { class: 'detail-head' }, h('h2', { id: 'detail-path' }, path),
        h('span', { class: 'muted', id: 'detail-version' }, `version ${s.version}`)),
      ...(notice ? [notice] : []),
      h('div', { class: 'actions' },
        h('button', { class: 'small', onclick: () => showDetail(path) }, 'Refresh'),
        canWrite ? h('button', { class: 'small', id: 'edit', onclick: startEdit }, 'Edit') : null,
        canWrite ? h('button', { class: 'small', id: 'create', onclick: createChild }, 'Create child') : null,
        canWrite && path !== '/' ? h('button', { class: 'small danger', id: 'delete', onclick: remove }, 'Delete…') : null,
        h('button', { class: 'small', id: 'export', onclick: exportTree }, 'Export'),
        canWrite ? h('button', { class: 'small', id: 'import', onclick: importTree }, 'Import…') : null,
        canWrite && path !== '/' ? h('button', { class: 'small', onclick: copyTree }, 'Copy to…') : null),
      h('h3', {}, 'Data'),
      h('div', { id: 'data-section' }, dataSection()),
      h('h3', {}, 'Stat'),
      statTable(s),
      h('h3', {}, 'ACL'),
      acl.error ? h('p', { class: 'muted' }, acl.error)
        : h('table', { id: 'acl' }, h('tr', {}, h('th', {}, 'scheme'), h('th', {}, 'id'), h('th', {}, 'perms')),
          acl.acl.map((a) => h('tr', {}, h('td', {}, a.scheme), h('td', { class: 'mono' }, a.id), h('td', { class: 'mono' }, a.perms)))));
  }

  function dataSection() {
    const { node, format } = detail;
    if (node.data_base64 === null) return h('p', { class: 'muted', id: 'data' }, 'null data');
    const raw = b64ToBytes(node.data_base64);
    const fmts = ['json', 'text', 'hex'].map((f) => h('button', {
      type: 'button', class: f === format ? 'on' : '', dataset: { format: f },
      onclick: () => { detail.format = f; drawDetail(); },
    }, f.toUpperCase()));
    let body;
    let problem = null;
    if (format === 'json') {
      try { body = JSON.stringify(JSON.parse(node.data_utf8 ?? ''), null, 2); } catch (e) { problem = `not valid JSON: ${e.message}`; body = node.data_utf8 ?? ''; }
    } else if (format === 'text') {
      body = node.data_utf8 ?? new TextDecoder().decode(raw);
    } else {
      body = hexDump(raw);
    }
    return h('div', {},
      h('div', { class: 'toolbar' }, h('span', { class: 'fmt' }, fmts),
        h('span', { class: 'muted', id: 'data-kind' }, `${detected(node)} · ${bytes(raw.length)}`)),
      problem ? h('p', { class: 'error' }, problem) : null,
      h('pre', { class: 'data', id: 'data' }, body));
  }

  function statTable(s) {
    const z = (n) => `${hex(n)} (${n})`;
    const owner = s.ephemeral_owner
      ? h('a', { href: `#/sessions?id=${s.ephemeral_owner}`, id: 'owner' }, s.ephemeral_owner) : 'none (persistent)';
    const rows = [
      ['czxid', z(s.czxid)], ['mzxid', z(s.mzxid)], ['pzxid', z(s.pzxid)],
      ['ctime', when(s.ctime)], ['mtime', when(s.mtime)],
      ['version', s.version], ['cversion', s.cversion], ['aversion', s.aversion],
      ['ephemeralOwner', owner], ['dataLength', s.data_length], ['numChildren', s.num_children],
    ];
    return h('table', { class: 'kv', id: 'stat' }, rows.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'mono' }, v))));
  }

  // ---- editing ----
  function startEdit() {
    const { node, format } = detail;
    // Data that is not UTF-8 can only be edited as hex; JSON is edited as
    // stored (re-serializing would change numbers such as 1.0 or 2^64).
    const mode = node.data_base64 === null ? 'text' : node.data_utf8 === null ? 'hex' : format;
    const raw = node.data_base64 === null ? new Uint8Array() : b64ToBytes(node.data_base64);
    const text = mode === 'hex' ? [...raw].map((b) => b.toString(16).padStart(2, '0')).join(' ') : node.data_utf8 ?? '';
    const area = h('textarea', { id: 'editor', spellcheck: 'false' });
    area.value = text;
    const base = node.stat.version;
    const err = h('p', { class: 'error', hidden: true });
    const save = async (version) => {
      let body;
      if (mode === 'json') {
        try { JSON.parse(area.value); } catch (e) { err.textContent = `Not saved: not valid JSON (${e.message}). Switch to TEXT to save it as text.`; err.hidden = false; return; }
        body = { data: area.value };
      } else if (mode === 'hex') {
        const digits = area.value.replace(/\s+/g, '');
        if (!/^([0-9a-fA-F]{2})*$/.test(digits)) { err.textContent = 'Not saved: hex needs pairs of digits 0-9a-f.'; err.hidden = false; return; }
        body = { data_base64: bytesToB64(Uint8Array.from(digits.match(/../g) || [], (x) => parseInt(x, 16))) };
      } else body = { data: area.value };
      try {
        const r = await api.req('PUT', '/api/v1/node', { path: detail.path, version, ...body });
        ownWrites.add(r.zxid);
        toast(`Saved ${detail.path}: version ${r.stat.version}`);
        await showDetail(detail.path);
      } catch (e) {
        if (e instanceof ApiError && e.code === 'bad_version') return conflict(area.value, save, version);
        err.textContent = e.message; err.hidden = false;
      }
    };
    right.firstChild.querySelector('#data-section').replaceChildren(h('div', { id: 'edit-box' },
      h('p', { class: 'muted' }, `Editing as ${mode.toUpperCase()} against version ${base}. Saving checks the version: a change by anyone else is shown, never overwritten.`),
      area, err,
      h('div', { class: 'actions' },
        h('button', { class: 'primary', id: 'save', onclick: () => save(base) }, 'Save'),
        h('button', { onclick: () => drawDetail() }, 'Cancel'))));
    area.focus();
  }

  async function conflict(mine, save, tried) {
    const theirs = await attempt(() => api.get(`/api/v1/node?${q({ path: detail.path })}`));
    if (!theirs) return;
    const box = right.firstChild.querySelector('#edit-box');
    const note = h('div', { class: 'notice conflict', id: 'conflict', role: 'alert' },
      h('strong', {}, 'Not saved: version conflict. '),
      `${detail.path} changed since you started editing (you edited version ${tried}; it is now version ${theirs.stat.version}, modified ${when(theirs.stat.mtime)}). Their data:`,
      h('pre', { class: 'data', id: 'theirs' }, theirs.data_utf8 ?? (theirs.data_base64 === null ? 'null data' : `${theirs.stat.data_length} bytes`)),
      h('div', { class: 'actions' },
        h('button', { class: 'danger', id: 'overwrite', onclick: () => save(theirs.stat.version) }, `Overwrite with mine (against version ${theirs.stat.version})`),
        h('button', { id: 'discard', onclick: () => showDetail(detail.path) }, 'Discard mine, show theirs')));
    box.querySelector('#conflict')?.remove();
    box.prepend(note);
    box.querySelector('#editor').value = mine;
  }

  async function createChild() {
    const name = h('input', { type: 'text', id: 'new-name', name: 'name', placeholder: 'name', required: true });
    const mode = h('select', { id: 'new-mode', name: 'mode' }, MODES.map((m) => h('option', { value: m }, m.replace('_', ' '))));
    const ttl = h('input', { type: 'number', id: 'new-ttl', name: 'ttl', min: 1, placeholder: 'TTL in ms (ttl modes)' });
    const data = h('textarea', { id: 'new-data', name: 'data', placeholder: 'data (text or JSON); leave empty for empty data' });
    const v = await dialog(`Create a child of ${detail.path}`, [
      ...field('Name', name), ...field('Mode', mode), ...field('TTL (ms)', ttl), ...field('Data', data),
      h('p', { class: 'muted' }, 'Ephemeral nodes belong to this console\'s session: they are deleted when you log out, reload or close the tab.'),
    ], {
      submit: 'Create',
      check: (x) => (!x.name || x.name.includes('/') ? 'A name without "/".' : x.mode.startsWith('ttl') && !(+x.ttl > 0) ? 'TTL modes need a TTL in ms.' : null),
    });
    if (!v) return;
    const body = { path: join(detail.path, v.name), data: v.data, mode: v.mode };
    if (v.mode.startsWith('ttl')) body.ttl_ms = +v.ttl;
    if (v.mode.startsWith('ephemeral')) body.session = ctx.session;
    const r = await attempt(() => api.req('POST', '/api/v1/node', body));
    if (!r) return;
    ownWrites.add(r.zxid);
    toast(`Created ${r.path}`);
    await attempt(() => model.reveal(r.path));
    await select(r.path);
  }

  async function remove() {
    const { path, node } = detail;
    const kids = node.stat.num_children;
    const confirm = h('input', { type: 'text', id: 'confirm-name', name: 'confirm', placeholder: baseName(path) });
    const fields = kids > 0
      ? [h('p', {}, `${path} has ${kids} children. Deleting it deletes the whole subtree, leaves first, in batches: it is not atomic, and it cannot be undone.`),
        ...field(`Type "${baseName(path)}" to confirm`, confirm)]
      : [h('p', {}, `Delete ${path} (version ${node.stat.version})? This cannot be undone.`)];
    const v = await dialog(`Delete ${path}`, fields, {
      submit: kids > 0 ? 'Delete subtree' : 'Delete', danger: true,
      check: (x) => (kids > 0 && x.confirm !== baseName(path) ? `Type ${baseName(path)} to confirm.` : null),
    });
    if (!v) return;
    const r = await attempt(() => api.req('DELETE', `/api/v1/node?${q({ path, version: kids > 0 ? undefined : node.stat.version, recursive: kids > 0 })}`));
    if (!r) return;
    toast(`Deleted ${r.deleted} node${r.deleted === 1 ? '' : 's'}`);
    await select(parent(path));
  }

  async function exportTree() {
    const r = await attempt(() => api.get(`/api/v1/export?${q({ path: detail.path })}`));
    if (!r) return;
    download(`corral${detail.path === '/' ? '' : detail.path.replaceAll('/', '_')}.json`, JSON.stringify(r, null, 2));
    toast(`Exported ${r.nodes.length} nodes at zxid ${hex(r.zxid)}${r.skipped_ephemerals.length ? `; ${r.skipped_ephemerals.length} ephemerals left out` : ''}`);
  }

  async function importTree() {
    const file = h('input', { type: 'file', id: 'import-file', name: 'file', accept: '.json,application/json' });
    const text = h('textarea', { id: 'import-json', name: 'json', placeholder: 'or paste an export here' });
    const dest = h('input', { type: 'text', id: 'import-dest', name: 'dest', value: detail.path });
    const v = await dialog('Import a subtree', [
      ...field('Export file', file), ...field('Export JSON', text), ...field('Import as (the export\'s root lands here)', dest),
      h('p', { class: 'muted' }, 'Existing nodes are never overwritten: the import stops at the first node that exists, and says how many it created.'),
    ], { submit: 'Import' });
    if (!v) return;
    const json = v.file ? await v.file.text() : v.json;
    let doc;
    try { doc = JSON.parse(json); } catch (e) { toast(`Not an export: ${e.message}`, 'error'); return; }
    const r = await attempt(() => importNodes(api, v.dest, doc.nodes));
    if (!r) return;
    toast(`Imported ${r.created} nodes under ${v.dest}`);
    await attempt(() => model.reveal(v.dest));
    await select(v.dest);
  }

  async function copyTree() {
    const dest = h('input', { type: 'text', id: 'copy-dest', name: 'dest', value: `${detail.path}-copy` });
    const v = await dialog(`Copy ${detail.path}`, [...field('Copy to', dest)], { submit: 'Copy' });
    if (!v) return;
    const doc = await attempt(() => api.get(`/api/v1/export?${q({ path: detail.path })}`));
    if (!doc) return;
    const r = await attempt(() => importNodes(api, v.dest, doc.nodes));
    if (!r) return;
    toast(`Copied ${r.created} nodes to ${v.dest}`);
    await attempt(() => model.reveal(v.dest));
    await select(v.dest);
  }

  // ---- live changes ----
  const ownWrites = new Set();
  let pending = false;
  const liveNote = () => {
    const scoped = live.scope !== '/';
    note.hidden = !live.paused && !scoped;
    note.textContent = live.paused
      ? 'Live changes are paused (Events view): the tree is not updating itself.'
      : `Live changes are watched under ${live.scope} only (Events view): the rest of the tree is not updating itself.`;
  };
  liveNote();
  const unsubscribe = live.subscribe(async (ev) => {
    if (ev.kind === 'state') { liveNote(); return; }
    if (ev.kind === 'gap' || ev.kind === 'scope') {
      liveNote();
      await model.reload();
      redraw();
      return;
    }
    model.apply(ev);
    flashed.set(ev.path, Date.now());
    if (ev.type !== 'children') flashed.set(parent(ev.path), Date.now());
    if (!pending) {
      // Many changes in one frame cost one redraw.
      pending = true;
      requestAnimationFrame(() => { pending = false; redraw(); });
    }
    if (detail && ev.path === detail.path) {
      if (ev.type === 'deleted') {
        right.firstChild.prepend(h('div', { class: 'notice', id: 'changed' }, `Deleted at zxid ${hex(ev.zxid)}.`));
      } else if (ev.type === 'data' && !ownWrites.has(ev.zxid)) {
        if (right.firstChild.querySelector('#edit-box')) {
          // Editing: keep the edit; the save will meet the conflict.
          right.firstChild.querySelector('#edit-box').prepend(h('div', { class: 'notice', id: 'changed' },
            `Someone else changed ${ev.path} at zxid ${hex(ev.zxid)}; saving will show the conflict.`));
        } else {
          showDetail(ev.path, h('div', { class: 'notice', id: 'changed' }, `Changed by another client at zxid ${hex(ev.zxid)}.`));
        }
      }
    }
  });

  list.addEventListener('scroll', () => requestAnimationFrame(render));
  const resize = new ResizeObserver(() => render());
  resize.observe(list);

  (async () => {
    await attempt(async () => {
      const root = await api.get(`/api/v1/node?${q({ path: '/' })}`);
      model.nodes.get('/').stat = root.stat;
      await model.expand('/');
      if (selected !== '/') await model.reveal(selected);
    });
    redraw();
    const at = model.rows.findIndex((r) => r.path === selected);
    if (at > 0) list.scrollTop = Math.max(0, at * ROW - list.clientHeight / 2);
    await showDetail(selected);
  })();

  return () => { unsubscribe(); resize.disconnect(); };
}

/** Nodes per import request, to stay under the server's body limit. */
const IMPORT_CHUNK = 5000;

/**
 * Imports an export's nodes under `dest`, a request per chunk (parents come
 * before their children, so each chunk's parents exist). Stops at the
 * first refusal, saying how many nodes were created before it.
 */
async function importNodes(api, dest, nodes) {
  let created = 0;
  for (let i = 0; i < Math.max(nodes.length, 1); i += IMPORT_CHUNK) {
    try {
      const r = await api.req('POST', '/api/v1/import', { path: dest, nodes: nodes.slice(i, i + IMPORT_CHUNK) });
      created += r.created;
    } catch (e) {
      if (created > 0) e.message = `${e.message} (after ${created} nodes imported by earlier requests)`;
      throw e;
    }
  }
  return { created };
}

/**
 * JSON when it parses as an object or array; text when it is UTF-8 without
 * control characters (other than tab and newlines); hex otherwise.
 */
function detect(node) {
  if (node.data_base64 === null) return 'text';
  if (node.data_utf8 === null || /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(node.data_utf8)) return 'hex';
  const t = node.data_utf8.trim();
  if ((t.startsWith('{') || t.startsWith('[')) && isJson(t)) return 'json';
  return 'text';
}

function detected(node) {
  const f = detect(node);
  return f === 'json' ? 'JSON (valid)' : f === 'text' ? 'UTF-8 text' : 'binary';
}

function isJson(t) { try { JSON.parse(t); return true; } catch { return false; } }

function hexDump(raw) {
  const lines = [];
  for (let i = 0; i < raw.length; i += 16) {
    const chunk = raw.subarray(i, i + 16);
    const hx = [...chunk].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const asc = [...chunk].map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${i.toString(16).padStart(8, '0')}  ${hx.padEnd(48)}  ${asc}`);
  }
  return lines.join('\n');
}
