// What every view shares: the admin API client, the live change stream,
// DOM building, dialogs, toasts and formatting.

/** An error reply of the admin API: `{code, message, details}`. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The admin API, with the token the user logged in with. */
export class Api {
  constructor(token) { this.token = token; }

  headers(extra = {}) { return { Authorization: `Bearer ${this.token}`, ...extra }; }

  /** Sends a request; JSON bodies for objects, raw bytes for binary. */
  async req(method, url, body, { raw = false } = {}) {
    const init = { method, headers: this.headers() };
    if (body instanceof ArrayBuffer || body instanceof Uint8Array || body instanceof Blob) {
      init.headers['content-type'] = 'application/octet-stream';
      init.body = body;
    } else if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(url, init);
    } catch (e) {
      throw new ApiError(0, 'unreachable', `the server did not answer: ${e.message}`);
    }
    if (!r.ok) {
      let e = {};
      try { e = await r.json(); } catch { e = { code: 'http', message: `${r.status} ${r.statusText}` }; }
      throw new ApiError(r.status, e.code, e.message || `${r.status}`, e.details);
    }
    if (r.status === 204) return null;
    if (raw) return new Uint8Array(await r.arrayBuffer());
    const type = r.headers.get('content-type') || '';
    return type.includes('json') ? r.json() : r.text();
  }

  get(url) { return this.req('GET', url); }
}

/** `q({path: '/a'})` → `path=%2Fa`. */
export const q = (params) => new URLSearchParams(
  Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '')).toString();

/** Builds an element: `h('a', {href: '#', onclick}, 'text', child)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    // Through the CSSOM: the CSP allows no inline style attributes.
    else if (k === 'style') el.style.cssText = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function toast(message, kind = 'info') {
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  document.getElementById('toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

/** Runs `f`, showing its error as a toast; returns its value or undefined. */
export async function attempt(f) {
  try { return await f(); } catch (e) { toast(e.message, 'error'); return undefined; }
}

/**
 * A modal form. `fields` build the body; resolves to the form's values by
 * name when `submit` is pressed, or null on cancel. `check(values)` may
 * return an error message that keeps the dialog open.
 */
export function dialog(title, fields, { submit = 'OK', danger = false, check } = {}) {
  const dlg = document.getElementById('dialog');
  const form = document.getElementById('dialog-form');
  const err = h('p', { class: 'error', hidden: true });
  const ok = h('button', { type: 'submit', value: 'ok', class: danger ? 'danger' : 'primary', id: 'dialog-ok' }, submit);
  form.replaceChildren(h('h2', {}, title), ...fields, err,
    h('div', { class: 'buttons' }, h('button', { type: 'submit', value: 'cancel', formnovalidate: true }, 'Cancel'), ok));
  return new Promise((resolve) => {
    const values = () => Object.fromEntries([...form.elements].filter((e) => e.name)
      .map((e) => [e.name, e.type === 'checkbox' ? e.checked : e.type === 'file' ? e.files[0] : e.value]));
    form.onsubmit = (ev) => {
      if (ev.submitter?.value !== 'ok') return;
      const v = values();
      const problem = check?.(v);
      if (problem) { ev.preventDefault(); err.textContent = problem; err.hidden = false; }
    };
    dlg.onclose = () => resolve(dlg.returnValue === 'ok' ? values() : null);
    dlg.returnValue = '';
    dlg.showModal();
    form.querySelector('input, textarea, select')?.focus();
  });
}

/** A link that opens `path` in the tree view. */
export const treeLink = (path, text = path) => h('a', { href: `#/tree?path=${encodeURIComponent(path)}` }, text);

export const field = (label, input) => [h('label', { for: input.id }, label), input];

// ---- formatting ----

export const hex = (n) => `0x${BigInt(n).toString(16)}`;

export function when(ms) {
  if (!ms) return '—';
  const d = new Date(ms);
  const ago = (Date.now() - ms) / 1000;
  const rel = ago < 0 ? 'in the future'
    : ago < 60 ? `${Math.round(ago)} s ago`
      : ago < 3600 ? `${Math.round(ago / 60)} min ago`
        : ago < 86400 ? `${(ago / 3600).toFixed(1)} h ago` : `${(ago / 86400).toFixed(1)} days ago`;
  return `${d.toISOString().replace('T', ' ').replace('Z', ' UTC')} (${rel})`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

export const parent = (p) => (p.lastIndexOf('/') <= 0 ? '/' : p.slice(0, p.lastIndexOf('/')));
export const join = (p, name) => (p === '/' ? `/${name}` : `${p}/${name}`);
export const under = (root, p) => root === '/' || p === root || p.startsWith(`${root}/`);

export function b64ToBytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function bytesToB64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Starts a download of `text` as a file. */
export function download(name, text, type = 'application/json') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * The live stream of committed changes under a scope (`/api/v1/events`).
 * Server-sent events read with fetch, so that the token travels in the
 * Authorization header rather than in a URL. It reconnects from the last
 * zxid it saw, so nothing between is missed while history reaches; a `gap`
 * tells listeners to reload what they show.
 */
export class Live {
  constructor(api) {
    this.api = api;
    this.scope = '/';
    this.paused = false;
    this.lastZxid = null;
    /** Events of `lastZxid` delivered, and how many a replay must skip. */
    this.seenAtLast = 0;
    this.skip = 0;
    this.listeners = new Set();
    this.state = 'connecting';
    this.onstate = () => {};
    this.abort = null;
    this.retry = 500;
  }

  subscribe(f) { this.listeners.add(f); return () => this.listeners.delete(f); }

  emit(ev) { for (const f of this.listeners) f(ev); }

  start() { if (!this.paused) this.connect(); }

  stop() { this.abort?.abort(); this.abort = null; }

  setScope(scope) {
    this.scope = scope;
    this.lastZxid = null;
    this.seenAtLast = 0;
    this.stop();
    this.emit({ kind: 'scope', scope });
    this.start();
  }

  setPaused(paused) {
    this.paused = paused;
    if (paused) { this.stop(); this.setState('paused'); } else this.connect();
  }

  setState(s) {
    this.state = s;
    this.onstate(s);
    this.emit({ kind: 'state', state: s });
  }

  async connect() {
    this.stop();
    const abort = new AbortController();
    this.abort = abort;
    // Resume with the last zxid seen again: a drop may have cut its events
    // short. The ones already delivered are skipped.
    this.skip = this.seenAtLast;
    const from = this.lastZxid === null ? undefined : this.lastZxid - 1;
    const url = `/api/v1/events?${q({ path: this.scope, from_zxid: from })}`;
    try {
      const r = await fetch(url, { headers: this.api.headers(), signal: abort.signal });
      if (!r.ok) throw new Error(`${r.status}`);
      this.setState('live');
      this.retry = 500;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          this.dispatch(buf.slice(0, end));
          buf = buf.slice(end + 2);
        }
      }
      throw new Error('the stream ended');
    } catch (e) {
      if (abort.signal.aborted) return;
      this.setState('reconnecting');
      setTimeout(() => { if (this.abort === abort) this.connect(); }, this.retry);
      this.retry = Math.min(this.retry * 2, 10_000);
    }
  }

  dispatch(block) {
    let event = 'message';
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data += line.slice(5).trim();
    }
    if (!data) return;
    const body = JSON.parse(data);
    if (event === 'start') {
      // Where a fresh stream starts: a reconnect resumes from here.
      this.lastZxid ??= body.zxid + 1;
      this.seenAtLast ??= 0;
    } else if (event === 'change') {
      if (body.zxid === this.lastZxid) {
        if (this.skip > 0) { this.skip -= 1; return; }
        this.seenAtLast += 1;
      } else {
        this.lastZxid = body.zxid;
        this.seenAtLast = 1;
        this.skip = 0;
      }
      this.emit({ kind: 'change', ...body });
    } else if (event === 'gap') {
      this.emit({ kind: 'gap', ...body });
    }
  }
}
