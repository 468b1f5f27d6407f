/* lb dashboard: plain JavaScript over the admin API, no build step.
 *
 * Every string from the config, the reports or the audit log reaches the page
 * through textContent (el() below), never as HTML. The token lives in
 * sessionStorage only and goes out as "Authorization: Bearer"; an ro token
 * gets no write control at all (they are not rendered, not just hidden). */
'use strict';

const POLL_MS = 1500;
const DP_STALE_MS = 10000; /* a data plane silent this long is "not reporting" */
const TOKEN_KEY = 'lb-token';
const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

const state = {
  token: null,
  session: 0, /* bumped by every login and logout: answers to an older one are dropped */
  identity: '',
  rw: false,
  page: 'overview',
  timer: null,
  cpDownSince: 0,
  lastOk: 0,
  backends: null, /* GET /api/v1/backends */
  history: null, /* GET /api/v1/history?series=0: the "now" of each backend and data plane */
  traffic: null, /* GET /api/v1/history: with the 15-minute series */
  trafficAt: 0,
  dataplanes: null, /* GET /api/v1/dataplanes */
  config: null, /* GET /api/v1/config */
  versions: null, /* GET /api/v1/config/versions */
  activeVersion: 0,
  rollbackTarget: 0,
  rollouts: null, /* GET /api/v1/rollouts: newest first */
  rolloutSel: 0, /* the rollout the operator clicked; 0: the newest */
};

/* ---- DOM helpers: text only ------------------------------------------------- */

function $(id) {
  return document.getElementById(id);
}

/* el('td', {className: 'num'}, 'text', childNode, ...): strings become text nodes. */
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else e[k] = v;
    }
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function table(node, headers, rows) {
  clear(node);
  node.append(el('thead', null, el('tr', null, ...headers.map((h) => el('th', null, h)))));
  const body = el('tbody');
  for (const r of rows) body.append(r);
  node.append(body);
}

function fmtNum(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  return Number(v).toFixed(digits === undefined ? 1 : digits);
}

function fmtPct(v) {
  return v === null || v === undefined ? '–' : (v * 100).toFixed(1) + ' %';
}

function fmtTime(ms) {
  if (!ms) return 'never';
  return new Date(ms).toLocaleTimeString();
}

function fmtDateTime(ms) {
  if (!ms) return '–';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? s + ' s ago' : Math.round(s / 60) + ' min ago';
}

/* ---- the API ---------------------------------------------------------------- */

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, headers) {
  const h = Object.assign({Authorization: 'Bearer ' + state.token}, headers || {});
  const init = {method, headers: h, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer'};
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'the control plane does not answer (' + e.message + ')');
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {code: 'http_' + res.status, message: res.statusText};
    throw new ApiError(res.status, err.code, err.message);
  }
  return data;
}

/* ---- login ------------------------------------------------------------------ */

async function login(token) {
  stopPolling();
  const session = ++state.session;
  state.token = token;
  const me = await api('GET', '/api/v1/whoami');
  if (session !== state.session) return;
  state.identity = me.identity;
  state.rw = !!me.rw;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('who').textContent = me.identity + (me.rw ? ' (read-write)' : ' (read-only)');
  $('nav').hidden = false;
  $('logout').hidden = false;
  $('login').hidden = true;
  route();
  startPolling();
}

function logout(message) {
  state.session++;
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  stopPolling();
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('updated').textContent = '';
  for (const p of document.querySelectorAll('section.page')) p.hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  setBanner('');
}

function loginError(e) {
  if (e.status === 401) return 'Token refused: the control plane does not know this token (' + e.message + ').';
  if (e.status === 429) return 'Too many failed logins from this address: ' + e.message;
  if (e.status === 403) return 'Forbidden: ' + e.message;
  return 'Cannot log in: ' + e.message;
}

/* ---- polling and the banner ---------------------------------------------------- */

function setBanner(text) {
  const b = $('banner');
  b.textContent = text;
  b.hidden = !text;
}

function stopPolling() {
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
}

function startPolling() {
  stopPolling();
  poll();
}

async function poll() {
  state.timer = null;
  const session = state.session;
  try {
    await refresh();
    if (session !== state.session) return; /* logged out or in again meanwhile */
    state.lastOk = Date.now();
    state.cpDownSince = 0;
    $('updated').textContent = 'updated ' + fmtTime(state.lastOk);
    setBanner(dataplaneWarnings());
  } catch (e) {
    if (session !== state.session) return;
    if (e.status === 401) {
      logout('The control plane no longer accepts this token; log in again.');
      return;
    }
    if (!state.cpDownSince) state.cpDownSince = Date.now();
    setBanner('Control plane not answering since ' + fmtTime(state.cpDownSince) + ' (' + e.message +
      '); retrying every ' + POLL_MS / 1000 + ' s. Data shown is from ' + fmtTime(state.lastOk) + '.');
  }
  if (state.token && !state.timer) state.timer = setTimeout(poll, POLL_MS);
}

function dataplaneWarnings() {
  if (!state.dataplanes) return '';
  const lines = [];
  const now = Date.now();
  for (const d of state.dataplanes.dataplanes) {
    if (now - d.last_seen_ms > DP_STALE_MS)
      lines.push('Data plane ' + d.node_id + ' has not reported since ' + fmtDateTime(d.last_seen_ms) + ' (' + ago(d.last_seen_ms) + ').');
    else if (!d.in_sync)
      lines.push('Data plane ' + d.node_id + ' is not in sync (applied version ' + d.applied_version + ').');
  }
  if (state.dataplanes.dataplanes.length === 0) lines.push('No data plane has reported yet.');
  return lines.join('\n');
}

/* What the current page needs, fetched together; a page renders from state. */
async function refresh() {
  const page = state.page;
  const jobs = [api('GET', '/api/v1/dataplanes').then((d) => (state.dataplanes = d))];
  if (page === 'overview' || page === 'traffic' || page === 'rollouts')
    jobs.push(api('GET', '/api/v1/rollouts').then((d) => (state.rollouts = d)));
  if (page === 'overview' || page === 'backends' || page === 'rollouts')
    jobs.push(api('GET', '/api/v1/backends').then((d) => (state.backends = d)));
  if (page === 'overview' || page === 'dataplanes')
    jobs.push(api('GET', '/api/v1/history?series=0').then((d) => (state.history = d)));
  /* the series move in 5 s steps: fetching them more often shows nothing new */
  if (page === 'traffic' && (!state.traffic || Date.now() - state.trafficAt >= 5000))
    jobs.push(api('GET', '/api/v1/history').then((d) => {
      state.traffic = d;
      state.trafficAt = Date.now();
    }));
  if (page === 'overview' || page === 'traffic' || page === 'versions' || page === 'rollouts')
    jobs.push(api('GET', '/api/v1/config/versions?limit=200').then((d) => (state.versions = d)));
  await Promise.all(jobs);
  state.activeVersion = state.dataplanes.version;
  if (page === 'overview' && (!state.config || state.config.version !== state.activeVersion))
    state.config = await api('GET', '/api/v1/config');
  render();
}

function render() {
  if (state.page === 'overview') renderOverview();
  else if (state.page === 'traffic') renderTraffic();
  else if (state.page === 'versions') renderVersions();
  else if (state.page === 'backends') renderBackends();
  else if (state.page === 'dataplanes') renderDataplanes();
  else if (state.page === 'rollouts') renderRollouts();
}

/* ---- pages: routing --------------------------------------------------------- */

const PAGES = ['overview', 'traffic', 'versions', 'backends', 'rollouts', 'dataplanes', 'audit'];

function route() {
  if (!state.token) return;
  const want = location.hash.replace(/^#/, '');
  state.page = PAGES.includes(want) ? want : 'overview';
  for (const p of PAGES) $('page-' + p).hidden = p !== state.page;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === state.page);
  if (state.page === 'audit') loadAudit();
  else if (state.lastOk) render();
  startPolling();
}

/* ---- Overview ------------------------------------------------------------------ */

function healthClass(b) {
  if (b.state === 'disabled' || b.state === 'draining') return 'st-maint';
  if (b.health === 'up') return 'st-up';
  if (b.health === 'down') return 'st-down';
  return 'st-unknown';
}

function stateText(b) {
  const s = b.state === 'active' ? b.health : b.state + ' / ' + b.health;
  return b.ejected ? s + ' (ejected)' : s;
}

function healthCell(b) {
  /* rise/fall progress: consecutive passes towards rise, failures towards fall */
  const td = el('td', {className: 'health'});
  if (b.checks_rise !== undefined) {
    const falling = b.health !== 'down' && b.checks_fails > 0;
    const n = falling ? b.checks_fails : b.checks_passes;
    const of = falling ? b.checks_fall : b.checks_rise;
    const meter = el('span', {className: 'meter' + (falling ? ' falling' : '')}, el('span'));
    meter.firstChild.style.width = Math.min(100, (100 * n) / Math.max(1, of)) + '%';
    td.append(meter, (falling ? 'fail ' : 'pass ') + Math.min(n, of) + '/' + of + ' ');
  }
  td.append(el('span', {className: 'sub'}, 'checked ' + ago(b.last_check_ms)));
  if (b.last_error) td.append(el('div', {className: 'sub'}, b.last_error));
  return td;
}

function historyNow(id) {
  if (!state.history) return null;
  const h = state.history.backends.find((x) => x.id === id);
  return h ? h.now : null;
}

function breakerCell(breaker) {
  return el('td', {className: 'br-' + breaker}, breaker.replace('_', '-'));
}

function rateCells(r) {
  return [
    el('td', {className: 'num'}, r ? fmtNum(r.rps) : '–'),
    el('td', {className: 'num' + (r && r.err_rate > 0.05 ? ' bad' : '')}, r ? fmtPct(r.err_rate) : '–'),
    el('td', {className: 'num'}, r ? fmtNum(r.p50_ms) : '–'),
    el('td', {className: 'num'}, r ? fmtNum(r.p99_ms) : '–'),
  ];
}

function renderOverview() {
  const cfg = state.config ? state.config.config : null;
  $('ov-version').textContent = 'config version ' + state.activeVersion + ' · ' + (state.dataplanes ? state.dataplanes.dataplanes.length : 0) + ' data plane(s)';
  const fronts = cfg && cfg.frontends ? cfg.frontends : [];
  table($('ov-frontends'), ['Name', 'Address', 'Port', 'TLS', 'Served by'],
    fronts.map((f) => el('tr', null, el('td', null, f.name || ''), el('td', null, f.address || '0.0.0.0'),
      el('td', {className: 'num'}, f.port), el('td', null, f.tls ? 'yes' : 'no'),
      el('td', null, servedBy()))));
  renderRolloutBanner();
  const bes = state.backends ? state.backends.backends : [];
  table($('ov-backends'), ['Backend', 'URL', 'State', 'Health checks', 'Breaker', 'Weight', 'Effective', 'In flight', 'Upstream conns',
    'Req/s', '5xx rate', 'p50 ms', 'p99 ms'],
  bes.map((b) => {
    const now = historyNow(b.id);
    return el('tr', {className: healthClass(b), dataset: {backend: b.id}},
      el('td', {className: 'id'}, b.id), el('td', null, b.url), el('td', {className: 'state'}, stateText(b)),
      healthCell(b), breakerCell(b.breaker), el('td', {className: 'num weight'}, b.weight),
      el('td', {className: 'num'}, b.effective_weight),
      el('td', {className: 'num in-flight'}, now ? now.in_flight : 0),
      el('td', {className: 'num'}, b.connections + (b.queued ? ' +' + b.queued + ' queued' : '')),
      ...rateCells(now));
  }));
  renderPerDataplane();
}

function servedBy() {
  if (!state.dataplanes) return '';
  return state.dataplanes.dataplanes.map((d) => d.node_id).join(', ');
}

function renderPerDataplane() {
  const box = clear($('ov-dataplanes'));
  if (!state.history) return;
  for (const d of state.history.dataplanes) {
    const stale = Date.now() - d.last_ms > DP_STALE_MS;
    box.append(el('h2', null, 'Data plane ' + d.node_id + ' ', el('span', {className: 'sub'},
      'last report ' + ago(d.last_ms) + (stale ? ' — NOT REPORTING' : '') + ', rates over its last report interval')));
    const t = el('table', {className: 'per-dp'});
    table(t, ['Backend', 'Breaker', 'Effective weight', 'In flight', 'Connections', 'Queued', 'Ejected', 'Req/s', '5xx rate', 'p50 ms', 'p99 ms'],
      d.backends.map((b) => el('tr', null, el('td', null, b.id), breakerCell(b.breaker), el('td', {className: 'num'}, b.effective_weight),
        el('td', {className: 'num'}, b.in_flight), el('td', {className: 'num'}, b.connections), el('td', {className: 'num'}, b.queued),
        el('td', {className: b.ejected ? 'bad' : ''}, b.ejected ? 'yes' : 'no'), ...rateCells(b))));
    box.append(t);
  }
}

/* ---- Traffic ------------------------------------------------------------------- */

function renderTraffic() {
  const h = state.traffic;
  if (!h) return;
  const legend = clear($('tr-legend'));
  h.backends.forEach((b, i) => legend.append(el('span', null, el('span', {className: 'sw c' + (i % COLOURS.length)}), b.id)));
  if (h.backends.length === 0) legend.append(el('span', {className: 'sub'}, 'No traffic reported in the last 15 minutes.'));
  const markers = (state.versions ? state.versions.versions : [])
    .filter((v) => v.created_ms >= h.start_ms && v.created_ms <= h.now_ms)
    .map(versionMarker);
  renderMarkerList(markers);
  const pct = (a) => a.map((x) => (x === null ? null : x * 100));
  drawChart($('ch-rps'), h, markers, (b) => b.rps);
  drawChart($('ch-err'), h, markers, (b) => pct(b.err_rate));
  drawChart($('ch-p50'), h, markers, (b) => b.p50_ms);
  drawChart($('ch-p99'), h, markers, (b) => b.p99_ms);
}

function drawChart(canvas, h, markers, pick) {
  const ctx = canvas.getContext('2d');
  const W = canvas.width, H = canvas.height, L = 48, R = 8, T = 14, B = 22;
  ctx.clearRect(0, 0, W, H);
  const series = h.backends.map(pick);
  let max = 0;
  for (const s of series) for (const v of s) if (v !== null && v > max) max = v;
  max = max > 0 ? niceMax(max) : 1;
  const x = (i) => L + ((W - L - R) * i) / (h.slots - 1);
  const xt = (t) => L + ((W - L - R) * (t - h.start_ms)) / (h.step_ms * (h.slots - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  ctx.font = '11px sans-serif';
  ctx.strokeStyle = '#e1e4e8';
  ctx.fillStyle = '#586069';
  ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    ctx.beginPath();
    ctx.moveTo(L, y(v));
    ctx.lineTo(W - R, y(v));
    ctx.stroke();
    ctx.fillText(v >= 100 ? v.toFixed(0) : v.toFixed(1), 4, y(v) + 4);
  }
  for (let m = 15; m >= 0; m -= 5) {
    const t = h.now_ms - m * 60000;
    ctx.fillText(m ? '-' + m + ' min' : 'now', Math.min(W - 30, xt(t) - 12), H - 6);
  }
  markers.forEach((mk, i) => {
    ctx.setLineDash(mk.rollout ? [] : [4, 3]);
    ctx.strokeStyle = ctx.fillStyle = mk.rollout ? '#6f42c1' : '#6a737d';
    ctx.beginPath();
    ctx.moveTo(xt(mk.t), T);
    ctx.lineTo(xt(mk.t), H - B);
    ctx.stroke();
    /* rollout steps come in bursts: their labels go down in rows of four */
    ctx.fillText(mk.label, xt(mk.t) + 2, mk.rollout ? T + 10 + 12 * (i % 4) : T - 2);
  });
  ctx.setLineDash([]);
  ctx.lineWidth = 1.6;
  series.forEach((s, i) => {
    ctx.strokeStyle = COLOURS[i % COLOURS.length];
    ctx.beginPath();
    let pen = false;
    s.forEach((v, k) => {
      if (v === null) {
        pen = false;
        return;
      }
      if (pen) ctx.lineTo(x(k), y(v));
      else ctx.moveTo(x(k), y(v));
      pen = true;
    });
    ctx.stroke();
  });
}

function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/* ---- Versions: history, diff, rollback ------------------------------------------ */

function renderVersions() {
  const vs = state.versions ? state.versions.versions : [];
  fillSelect($('vd-from'), vs, vs.length > 1 ? vs[1].version : 0);
  fillSelect($('vd-to'), vs, vs.length ? vs[0].version : 0);
  const heads = ['Version', 'Created', 'Author', 'Comment', ''];
  table($('vs-table'), heads, vs.map((v) => {
    const actions = el('td');
    if (v.version > 1) actions.append(el('button', {type: 'button', className: 'diff-prev', on: {click: () => showDiff(v.version - 1, v.version)}}, 'Diff with v' + (v.version - 1)));
    if (state.rw && !v.active)
      actions.append(el('button', {type: 'button', className: 'rollback', dataset: {version: String(v.version)}, on: {click: () => confirmRollback(v.version)}}, 'Roll back to v' + v.version + '…'));
    if (v.active) actions.append(el('strong', null, 'active'));
    return el('tr', {className: v.active ? 'active-version' : '', dataset: {version: String(v.version)}},
      el('td', {className: 'num'}, v.version), el('td', null, fmtDateTime(v.created_ms)), el('td', {className: 'author'}, v.author),
      el('td', {className: 'comment'}, v.comment), actions);
  }));
}

/* Keeps the operator's choice across polls. */
function fillSelect(sel, vs, dflt) {
  const keep = sel.value;
  if (sel.options.length === vs.length && sel.options.length && Number(sel.options[0].value) === vs[0].version) return;
  clear(sel);
  for (const v of vs) sel.append(el('option', {value: String(v.version)}, 'v' + v.version));
  sel.value = keep && vs.some((v) => String(v.version) === keep) ? keep : String(dflt);
}

async function diffText(from, to) {
  const d = await api('GET', '/api/v1/config/diff?from=' + from + '&to=' + to);
  return d.text || '(no change)';
}

async function showDiff(from, to) {
  const pre = $('vd-diff');
  try {
    pre.textContent = 'v' + from + ' → v' + to + '\n' + (await diffText(from, to));
  } catch (e) {
    pre.textContent = 'diff failed: ' + e.message;
  }
}

async function confirmRollback(target) {
  const box = clear($('rb-confirm'));
  const active = state.activeVersion;
  state.rollbackTarget = target;
  let text;
  try {
    text = await diffText(active, target);
  } catch (e) {
    $('vs-msg').textContent = 'Cannot read the diff: ' + e.message;
    return;
  }
  box.append(el('p', null, 'Roll back from active version ' + active + ' to version ' + target +
    '? A new version is created with this change:'), el('pre', {id: 'rb-diff'}, text),
  el('label', null, 'Comment', el('input', {id: 'rb-comment', type: 'text', value: 'rollback to v' + target + ' from the dashboard'})),
  el('div', {className: 'row'},
    el('button', {type: 'button', id: 'rb-go', on: {click: () => doRollback(target, active)}}, 'Confirm rollback to v' + target),
    el('button', {type: 'button', id: 'rb-cancel', on: {click: () => (box.hidden = true)}}, 'Cancel')));
  box.hidden = false;
}

async function doRollback(target, expected) {
  const msg = $('vs-msg');
  try {
    const r = await api('POST', '/api/v1/config/rollback', {version: target, comment: $('rb-comment').value},
      {'If-Match': '"' + expected + '"'});
    msg.className = 'ok-msg';
    msg.textContent = 'Rolled back to v' + r.rolled_back_to + ': created version ' + r.version + '.';
    $('rb-confirm').hidden = true;
  } catch (e) {
    msg.className = 'error';
    msg.textContent = e.status === 409
      ? 'Conflict: the config changed since you read the diff (' + e.message + '). Review the new diff and try again.'
      : 'Rollback failed: ' + e.message;
  }
  startPolling();
}

/* ---- Backends: weight, drain, enable/disable (rw) -------------------------------- */

function renderBackends() {
  /* a poll does not pull the weight box from under the operator's typing */
  const focused = document.activeElement;
  if (focused && focused.tagName === 'INPUT' && $('be-table').contains(focused)) return;
  const bes = state.backends ? state.backends.backends : [];
  const heads = ['Backend', 'URL', 'State', 'Health', 'Weight', 'Effective', 'Breaker'];
  if (state.rw) heads.push('Change');
  table($('be-table'), heads, bes.map((b) => {
    const tr = el('tr', {className: healthClass(b), dataset: {backend: b.id}},
      el('td', {className: 'id'}, b.id), el('td', null, b.url), el('td', {className: 'state'}, b.state),
      el('td', null, b.health), el('td', {className: 'num weight'}, b.weight), el('td', {className: 'num'}, b.effective_weight),
      breakerCell(b.breaker));
    if (state.rw) tr.append(writeControls(b));
    return tr;
  }));
}

function writeControls(b) {
  const td = el('td', {className: 'write'});
  const input = el('input', {type: 'number', min: 1, max: 1000, className: 'weight', value: String(b.weight)});
  td.append(input,
    el('button', {type: 'button', className: 'set-weight', on: {click: () => backendWrite(b.id, 'PUT', '/api/v1/backends/' + encodeURIComponent(b.id), {weight: Number(input.value)}, 'weight ' + input.value)}}, 'Set weight'),
    b.state === 'draining' ? null : el('button', {type: 'button', className: 'drain', on: {click: () => backendWrite(b.id, 'POST', '/api/v1/backends/' + encodeURIComponent(b.id) + '/drain', {}, 'drain')}}, 'Drain'),
    b.state === 'disabled'
      ? el('button', {type: 'button', className: 'enable', on: {click: () => backendWrite(b.id, 'PUT', '/api/v1/backends/' + encodeURIComponent(b.id), {state: 'active'}, 'enable')}}, 'Enable')
      : el('button', {type: 'button', className: 'disable', on: {click: () => backendWrite(b.id, 'PUT', '/api/v1/backends/' + encodeURIComponent(b.id), {state: 'disabled'}, 'disable')}}, 'Disable'));
  return td;
}

async function backendWrite(id, method, path, body, what) {
  const msg = $('be-msg');
  body.comment = what + ' ' + id + ' from the dashboard';
  try {
    const r = await api(method, path, body, {'If-Match': '"' + state.activeVersion + '"'});
    msg.className = 'ok-msg';
    msg.textContent = id + ': ' + what + ' done, created config version ' + r.version + '.';
  } catch (e) {
    msg.className = 'error';
    msg.textContent = id + ': ' + what + ' failed: ' + (e.status === 409 ? 'conflict, the config changed meanwhile (' + e.message + '); look again and retry' : e.message);
  }
  startPolling();
}

/* ---- Rollouts: list, detail, pause/resume/abort/undo (rw), markers, banner ---------- */

/* how far into its step a phase is, for the progress bar */
const PHASE_PART = {add: 0.05, wait_healthy: 0.2, bake: 0.45, remove: 0.7, interval: 0.85, end: 0};
const PHASE_TEXT = {add: 'adding', wait_healthy: 'waiting for health checks', bake: 'baking', remove: 'removing',
  interval: 'waiting the interval', end: 'ended'};

function rolloutList() {
  return state.rollouts ? state.rollouts.rollouts : [];
}

function rolloutLive(r) {
  return r.status === 'running' || r.status === 'paused';
}

/* "step 2 of 4: baking, next in 12 s" */
function rolloutStepText(r) {
  const phase = r.status === 'paused' ? 'paused while ' + (PHASE_TEXT[r.phase] || r.phase) : PHASE_TEXT[r.phase] || r.phase;
  const next = r.status === 'running' && r.nextInMs > 0 ? ', next in ' + Math.ceil(r.nextInMs / 1000) + ' s' : '';
  return 'step ' + r.step + '/' + r.steps + ': ' + phase + next;
}

function renderRolloutBanner() {
  const a = $('ov-rollout');
  const r = rolloutList().find(rolloutLive);
  a.hidden = !r;
  if (r) a.textContent = 'rollout ' + r.id + ' ' + r.status + ', ' + rolloutStepText(r) + ' — open Rollouts';
}

/* A version made by rollout <r> carries the comment "rollout N step k/n: ..."
 * or "rollout N failed|aborted|undone: ...; back to version M" (the control
 * plane writes these, and nobody else may change the config while it runs):
 * both the number range and the comment must match. */
function rolloutOfVersion(v) {
  const m = /^rollout (\d+) /.exec(v.comment || '');
  if (!m) return null;
  const r = rolloutList().find((x) => String(x.id) === m[1]);
  if (!r) return null;
  const last = Math.max(r.lastVersion || 0, r.rollbackVersion || 0);
  return v.version > r.preVersion && v.version <= last ? r : null;
}

function versionMarker(v) {
  const r = rolloutOfVersion(v);
  if (!r) return {t: v.created_ms, label: 'v' + v.version, text: 'v' + v.version + ': ' + v.comment, rollout: 0};
  const step = /^rollout \d+ step (\d+\/\d+)/.exec(v.comment);
  const label = 'R' + r.id + (step ? ' s' + step[1] : ' ' + v.comment.split(' ')[2].replace(':', ''));
  return {t: v.created_ms, label, text: 'v' + v.version + ' ' + v.comment, rollout: r.id};
}

function renderMarkerList(markers) {
  const ul = clear($('tr-markers'));
  for (const mk of markers)
    ul.append(el('li', {className: mk.rollout ? 'mk-rollout' : 'mk-version', dataset: {rollout: String(mk.rollout)}},
      fmtTime(mk.t) + ' ' + mk.label + ' — ' + mk.text));
  const title = markers.map((mk) => mk.label + ': ' + mk.text).join('\n');
  for (const c of document.querySelectorAll('#page-traffic canvas')) c.title = title;
}

function renderRollouts() {
  const list = rolloutList();
  const sel = list.find((r) => r.id === state.rolloutSel) || list.find(rolloutLive) || list[0];
  table($('ro-table'), ['Rollout', 'State', 'Step', 'Started', 'By', 'Comment'], list.map((r) => el('tr', {
    className: sel && r.id === sel.id ? 'selected' : '', dataset: {rollout: String(r.id)},
    on: {click: () => {
      state.rolloutSel = r.id;
      renderRollouts();
    }}},
  el('td', {className: 'num'}, r.id), el('td', {className: 'rstate rs-' + r.status}, r.status),
  el('td', {className: 'step'}, r.status === 'succeeded' ? r.steps + '/' + r.steps : r.step + '/' + r.steps + ' (' + r.phase + ')'),
  el('td', null, fmtDateTime(r.startedMs)), el('td', {className: 'author'}, r.author), el('td', {className: 'comment'}, r.comment))));
  if (list.length === 0) $('ro-table').append(el('caption', null, 'No rollout yet: lbctl rollout start --add URL ...'));
  renderRolloutDetail(sel);
}

function renderRolloutDetail(r) {
  const box = clear($('ro-detail'));
  if (!r) return;
  const d = el('div', {className: 'rollout-detail', id: 'ro-current', dataset: {rollout: String(r.id), status: r.status}});
  const done = r.status === 'succeeded' ? r.steps : r.stepsDone;
  const bar = el('div', {className: 'progress'}, el('span'));
  const part = rolloutLive(r) ? PHASE_PART[r.phase] || 0 : 0;
  bar.firstChild.style.width = Math.min(100, (100 * (done + part)) / Math.max(1, r.steps)) + '%';
  d.append(el('h2', null, 'Rollout ' + r.id + ' ', el('span', {className: 'rstate-text rs-' + r.status}, r.status)),
    bar, el('p', {id: 'ro-progress'}, done + ' of ' + r.steps + ' step(s) done' + (rolloutLive(r) ? '; ' + rolloutStepText(r) : '')),
    el('p', {className: 'sub'}, 'adds ' + r.add.map((a) => a.id + ' (' + a.url + ')').join(', ') + '; removes ' +
      (r.remove.join(', ') || 'nothing') + '; batch ' + r.batchSize + ', bake ' + r.bakeMs / 1000 + ' s, interval ' +
      r.intervalMs / 1000 + ' s; started from version ' + r.preVersion + ' by ' + r.author));
  if (r.failedGate) d.append(el('p', {className: 'failure', id: 'ro-failure'}, 'Failed: gate ' + r.failedGate + ', backend ' +
    r.failedBackend + ', figure ' + gateFigure(r.failedGate, r.figure) + ' against the limit ' + gateFigure(r.failedGate, r.limit) +
    (r.reason ? ' — ' + r.reason : '') + (r.rollbackVersion ? '; rolled back as version ' + r.rollbackVersion : '')));
  else if (r.reason) d.append(el('p', {className: 'sub', id: 'ro-reason'}, r.reason));
  const gates = el('table', {id: 'ro-gates'});
  table(gates, ['Gate', 'Now', 'Limit', ''], r.gates.map((g) => gateRow(r, g)));
  d.append(el('h2', null, 'Gates'), gates, el('h2', null, 'Versions it made'), rolloutVersions(r));
  if (state.rw) d.append(rolloutControls(r));
  box.append(d);
}

function gateFigure(gate, v) {
  if (gate === 'error_rate') return fmtPct(v);
  if (gate === 'health') return fmtNum(v) + ' s';
  return fmtNum(v, 0);
}

function gateRow(r, g) {
  let now = '–', limit = '';
  const bes = state.backends ? state.backends.backends : [];
  if (g.gate === 'error_rate') {
    limit = fmtPct(g.limit !== undefined ? g.limit : g.maxErrorRate);
    if (g.figure !== undefined)
      now = 'new ' + (g.backend ? g.backend + ' ' : '') + fmtPct(g.figure) + (g.requests !== undefined ? ' (' + g.requests + ' requests)' : '') +
        (g.oldRate !== undefined ? ' vs old ' + fmtPct(g.oldRate) + ' (' + g.oldRequests + ' requests)' : '');
  } else if (g.gate === 'health') {
    limit = 'healthy within ' + fmtNum(g.limitSeconds) + ' s';
    now = (r.stepAdds || []).map((id) => {
      const b = bes.find((x) => x.id === id);
      return id + ': ' + (b ? b.health + (b.checks_rise !== undefined ? ' ' + Math.min(b.checks_passes, b.checks_rise) + '/' + b.checks_rise : '') : 'not in the config');
    }).join(', ') || '–';
  } else if (g.gate === 'capacity') {
    limit = '≥ ' + g.minHealthy + ' healthy old';
    const healthy = bes.filter((b) => b.state === 'active' && b.health === 'up').length;
    now = rolloutLive(r) ? healthy + ' healthy active backend(s)' : '–';
  }
  if (g.failed) now = 'FAILED: ' + gateFigure(g.gate, g.figure) + (g.backend ? ' (' + g.backend + ')' : '');
  return el('tr', {className: g.failed ? 'st-down' : '', dataset: {gate: g.gate}}, el('td', null, g.gate),
    el('td', {className: 'gate-now' + (g.failed ? ' bad' : '')}, now), el('td', {className: 'gate-limit'}, limit),
    el('td', {className: 'sub'}, r.status === 'running' && r.nextInMs > 0 && g === r.gates[0] ? 'next step in ' + Math.ceil(r.nextInMs / 1000) + ' s' : ''));
}

function rolloutVersions(r) {
  const vs = (state.versions ? state.versions.versions : []).filter((v) => rolloutOfVersion(v) === r);
  const ul = el('ul', {id: 'ro-versions'});
  for (const v of vs.slice().reverse())
    ul.append(el('li', null, el('a', {href: '#versions', className: 'ro-diff', dataset: {version: String(v.version)},
      on: {click: (ev) => {
        ev.preventDefault();
        location.hash = 'versions';
        showDiff(v.version - 1, v.version);
      }}}, 'v' + v.version), ' ' + v.comment));
  if (vs.length === 0) ul.append(el('li', {className: 'sub'}, 'none yet'));
  return ul;
}

function rolloutControls(r) {
  const row = el('div', {className: 'row ro-controls'});
  const op = (name, label, confirmText) => el('button', {type: 'button', className: 'ro-' + name,
    on: {click: () => (confirmText ? confirmRolloutOp(r, name, confirmText) : rolloutOp(r.id, name))}}, label);
  if (r.status === 'running') row.append(op('pause', 'Pause'));
  if (r.status === 'paused') row.append(op('resume', 'Resume'));
  if (rolloutLive(r))
    row.append(op('abort', 'Abort…', 'Abort rollout ' + r.id + '? Abort rolls back: the config of version ' + r.preVersion +
      ' (before the rollout) becomes active again as a new version, the new backends are removed and the old ones restored.'));
  if (r.status === 'succeeded')
    row.append(op('undo', 'Undo…', 'Undo rollout ' + r.id + '? The config of version ' + r.preVersion +
      ' (before the rollout) becomes active again as a new version: the old backends come back, the new ones go.'));
  return row;
}

function confirmRolloutOp(r, name, text) {
  const box = clear($('ro-confirm'));
  box.append(el('p', {id: 'ro-confirm-text'}, text), el('div', {className: 'row'},
    el('button', {type: 'button', id: 'ro-go', on: {click: () => {
      box.hidden = true;
      rolloutOp(r.id, name);
    }}}, 'Confirm ' + name + ' of rollout ' + r.id),
    el('button', {type: 'button', id: 'ro-cancel', on: {click: () => (box.hidden = true)}}, 'Cancel')));
  box.hidden = false;
}

async function rolloutOp(id, name) {
  const msg = $('ro-msg');
  try {
    const res = await api('POST', '/api/v1/rollouts/' + id + '/' + name);
    const r = res.rollout;
    msg.className = 'ok-msg';
    msg.textContent = 'Rollout ' + id + ' ' + name + ': now ' + r.status +
      (r.rollbackVersion && (name === 'abort' || name === 'undo') ? ', created config version ' + r.rollbackVersion + ' (the content of version ' + r.preVersion + ')' : '') + '.';
  } catch (e) {
    msg.className = 'error';
    msg.textContent = 'Rollout ' + id + ' ' + name + ' failed: ' + (e.status ? e.status + ' ' : '') + (e.code ? e.code + ': ' : '') + e.message;
  }
  startPolling();
}

/* ---- Data planes ---------------------------------------------------------------- */

function renderDataplanes() {
  const d = state.dataplanes;
  $('dp-gen').textContent = 'published: config version ' + d.version + ', generation ' + d.generation;
  const nodes = state.history ? state.history.dataplanes : [];
  table($('dp-table'), ['Node', 'Address', 'Applied version', 'Generation', 'In sync', 'Last report', 'PID', 'Started', 'Binary', 'Last rejected snapshot'],
    d.dataplanes.map((p) => {
      const h = nodes.find((n) => n.node_id === p.node_id) || {};
      const stale = Date.now() - p.last_seen_ms > DP_STALE_MS;
      const addr = [p.host, p.listeners].filter(Boolean).join(' ');
      return el('tr', {dataset: {node: p.node_id}}, el('td', null, p.node_id), el('td', null, addr || '–'),
        el('td', {className: 'num'}, p.applied_version),
        el('td', {className: 'num'}, p.applied_generation), el('td', {className: p.in_sync ? 'ok' : 'bad'}, p.in_sync ? 'yes' : 'no'),
        el('td', {className: stale ? 'bad' : ''}, fmtDateTime(p.last_seen_ms) + ' (' + ago(p.last_seen_ms) + ')'),
        el('td', {className: 'num'}, h.pid || '–'), el('td', null, h.started_ms ? fmtDateTime(h.started_ms) : '–'),
        el('td', null, h.binary_version || '–'),
        el('td', {className: p.rejection_reason ? 'bad' : ''}, p.rejection_reason ? 'generation ' + p.rejected_generation + ': ' + p.rejection_reason : 'none'));
    }));
}

/* ---- Audit ------------------------------------------------------------------------ */

async function loadAudit() {
  const q = new URLSearchParams();
  for (const k of ['who', 'action', 'since']) {
    const v = $('au-' + k).value.trim();
    if (v) q.set(k, v);
  }
  q.set('limit', '500');
  const msg = $('au-msg');
  try {
    const d = await api('GET', '/api/v1/audit?' + q.toString());
    msg.textContent = d.more ? 'Showing the newest 500 entries; narrow the filter to see older ones.' : '';
    const text = $('au-text').value.trim().toLowerCase();
    const rows = d.entries.filter((a) => !text || [a.who, a.action, a.detail, a.comment].join(' ').toLowerCase().includes(text));
    table($('au-table'), ['Time', 'Who', 'Action', 'From', 'To', 'Detail'], rows.map((a) => el('tr', null,
      el('td', null, a.time), el('td', null, a.who), el('td', null, a.action),
      el('td', {className: 'num'}, a.from_version === null ? '' : a.from_version), el('td', {className: 'num'}, a.to_version === null ? '' : a.to_version),
      el('td', {className: 'detail'}, a.detail === null ? '' : a.detail))));
  } catch (e) {
    msg.textContent = 'Audit query failed: ' + e.message;
  }
}

/* ---- start ---------------------------------------------------------------------- */

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    $('login-error').textContent = '';
    const session = state.session + 1;
    login(t).catch((e) => {
      if (state.session === session) logout(loginError(e));
    });
  });
  $('logout').addEventListener('click', () => logout(''));
  $('vd-show').addEventListener('click', () => showDiff($('vd-from').value, $('vd-to').value));
  $('au-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    loadAudit();
  });
  window.addEventListener('hashchange', route);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    /* a reload keeps the session; a control plane that is down is retried */
    login(saved).catch((e) => (e.status === 0 ? retryLogin(saved) : logout(loginError(e))));
  }
});

function retryLogin(token) {
  setBanner('Control plane not answering; retrying every ' + POLL_MS / 1000 + ' s.');
  setTimeout(() => login(token).catch((e) => (e.status === 0 ? retryLogin(token) : logout(loginError(e)))), POLL_MS);
}
