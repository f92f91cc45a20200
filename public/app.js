// tinysse dashboard: plain EventSource, no framework, nothing fetched from outside.
'use strict';

const $ = (sel) => document.querySelector(sel);
const TOPIC_RE = /^[A-Za-z0-9_\-.:/]{1,128}$/;

// ---------------------------------------------------------------------------
// Access token, for a server run with --jwt-secret (or --jwt-public-key):
// from the page's access_token query parameter or the field. The streams
// carry it as the tinysse_token cookie (EventSource cannot send headers, and
// a cookie keeps it out of URLs and logs); the publish form sends it as
// Authorization: Bearer. With no token, nothing is set or sent: a server
// without authorization sees the page exactly as before.
// ---------------------------------------------------------------------------
const TOKEN_COOKIE = 'tinysse_token';
const TOKEN_RE = /^[A-Za-z0-9_\-.]+$/; // a JWT: base64url parts and dots
let token = '';

function setToken(value) {
  const t = (value || '').trim();
  if (t && !TOKEN_RE.test(t)) {
    setBadge($('#token-state'), 'invalid');
    return false;
  }
  token = t;
  document.cookie = token
    ? `${TOKEN_COOKIE}=${token}; path=/; SameSite=Strict`
    : `${TOKEN_COOKIE}=; path=/; max-age=0; SameSite=Strict`;
  $('#token').value = token;
  setBadge($('#token-state'), token ? 'set' : 'none');
  return true;
}

{
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get('access_token');
  if (fromUrl !== null) {
    // Out of the address bar and the history once it is in the cookie.
    params.delete('access_token');
    const q = params.toString();
    history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
    setToken(fromUrl);
  } else {
    const m = document.cookie.match(/(?:^|;\s*)tinysse_token=([^;]*)/);
    if (m && m[1]) {
      token = m[1];
      $('#token').value = token;
      setBadge($('#token-state'), 'set');
    }
  }
}

// ---------------------------------------------------------------------------
// A resilient EventSource: the browser reconnects by itself (sending
// Last-Event-ID); if it gives up (readyState CLOSED, e.g. after a 503 or a
// refused connection), build a new one after a delay, passing the last id
// we saw as ?lastEventId= so the server replays what we missed.
// ---------------------------------------------------------------------------
function resilientSource(baseUrl, { onState, onMessage, onGap, label }) {
  let es = null;
  let lastId = '';
  let timer = null;
  let delay = 1000;
  let stopped = false;
  let isOpen = false;
  let waiters = [];

  function url() {
    if (!lastId) return baseUrl;
    return baseUrl + (baseUrl.includes('?') ? '&' : '?') + 'lastEventId=' + encodeURIComponent(lastId);
  }

  function connect() {
    timer = null;
    if (stopped) return;
    onState(lastId ? 'reconnecting' : 'connecting');
    es = new EventSource(url());
    es.onopen = () => {
      delay = 1000;
      isOpen = true;
      waiters.forEach((w) => w());
      waiters = [];
      console.log(`[${label}] open`);
      onState('open');
    };
    es.onmessage = (e) => {
      if (e.lastEventId) lastId = e.lastEventId;
      onMessage(e, lastId);
    };
    es.addEventListener('gap', (e) => {
      console.log(`[${label}] gap`, e.data);
      if (onGap) onGap(e);
    });
    es.onerror = () => {
      isOpen = false;
      if (stopped) return;
      if (es.readyState === EventSource.CLOSED) {
        console.log(`[${label}] closed; retrying in ${delay} ms`);
        onState('reconnecting');
        es.close();
        // EventSource does not say why; a HEAD on the same URL answers the
        // same status, so a refused token shows as such.
        fetch(url(), { method: 'HEAD', cache: 'no-store' }).then((r) => {
          if (!stopped && (r.status === 401 || r.status === 403)) {
            onState(r.status === 401 ? 'unauthorized' : 'forbidden');
          }
        }).catch(() => { /* the server is down: reconnecting says it */ });
        timer = setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      } else {
        console.log(`[${label}] connection lost; the browser is reconnecting`);
        onState('reconnecting');
      }
    };
  }

  connect();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (es) es.close();
    },
    get lastId() { return lastId; },
    // resolves once the stream is open (or after timeoutMs, whichever is first)
    whenOpen(timeoutMs) {
      if (isOpen) return Promise.resolve();
      return new Promise((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, timeoutMs);
      });
    },
  };
}

function setBadge(el, state) {
  el.dataset.state = state;
  el.textContent = state;
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------
function fmtBytes(n) {
  if (typeof n !== 'number' || !isFinite(n)) return String(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = Math.abs(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (n < 0 ? '-' : '') + (i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
}

function fmtNum(n, digits = 2) {
  if (typeof n !== 'number' || !isFinite(n)) return String(n);
  if (Number.isInteger(n)) return n.toLocaleString('en-US');
  return n.toLocaleString('en-US', { maximumFractionDigits: digits });
}

const FIELDS = {
  ts: { label: 'time', fmt: (v) => typeof v === 'number' ? new Date(v).toLocaleTimeString() : String(v) },
  cpu_pct: { fmt: (v) => fmtNum(v, 1) + ' %' },
  load1: { fmt: (v) => fmtNum(v) },
  load5: { fmt: (v) => fmtNum(v) },
  load15: { fmt: (v) => fmtNum(v) },
  mem_used_bytes: { fmt: fmtBytes },
  mem_total_bytes: { fmt: fmtBytes },
  net_rx_bytes: { fmt: fmtBytes },
  net_tx_bytes: { fmt: fmtBytes },
  streams_active: { fmt: (v) => fmtNum(v) },
  events_per_sec: { fmt: (v) => fmtNum(v, 1) },
};
const KNOWN_ORDER = Object.keys(FIELDS);

function fmtField(key, v) {
  const f = FIELDS[key];
  if (f && typeof v === 'number') return f.fmt(v);
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return fmtNum(v);
  return JSON.stringify(v);
}

// ---------------------------------------------------------------------------
// Charts: hand-drawn on <canvas>, one small chart per series.
// ---------------------------------------------------------------------------
const WINDOW_MS = 120_000; // the longest span shown
const MIN_WINDOW_MS = 30_000; // the span shown while there is little data
const MAX_POINTS = 120;

const SERIES = [
  { key: 'cpu', title: 'CPU', color: '--s-cpu', unit: '%', fixedMax: 100, value: (d) => d.cpu_pct },
  {
    key: 'mem', title: 'Memory', color: '--s-mem', unit: '%', fixedMax: 100,
    value: (d) => (typeof d.mem_used_bytes === 'number' && d.mem_total_bytes > 0)
      ? (d.mem_used_bytes / d.mem_total_bytes) * 100 : undefined,
  },
  { key: 'load', title: 'Load (1 min)', color: '--s-load', unit: '', value: (d) => d.load1 },
  { key: 'streams', title: 'Active streams', color: '--s-streams', unit: '', integer: true, value: (d) => d.streams_active },
];

const charts = SERIES.map((s) => {
  const box = document.createElement('div');
  box.className = 'chart';
  box.dataset.series = s.key;
  box.innerHTML = `<div class="chart-head"><span class="chart-title"></span><span class="chart-value">–</span></div><canvas></canvas>`;
  box.querySelector('.chart-title').textContent = s.title;
  box.style.setProperty('--series', `var(${s.color})`);
  $('#charts').appendChild(box);
  return { s, box, canvas: box.querySelector('canvas'), valueEl: box.querySelector('.chart-value'), points: [] };
});

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function spanLabel(ms) {
  const s = Math.round(ms / 1000);
  return s >= 120 && s % 60 === 0 ? `−${s / 60} min` : `−${s} s`;
}

function drawChart(c, now, span) {
  const { canvas, s, points } = c;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);

  const padL = 34, padR = 4, padT = 6, padB = 16;
  const pw = w - padL - padR, ph = h - padT - padB;
  let max = s.fixedMax;
  if (!max) max = niceMax(Math.max(0, ...points.map((p) => p.v)) * 1.15 || 1);
  if (s.integer) max = Math.max(4, Math.ceil(max / 4) * 4);
  const x = (t) => padL + pw * (1 - (now - t) / span);
  const y = (v) => padT + ph * (1 - Math.min(v, max) / max);

  // grid and axis labels
  ctx.font = '10px system-ui, sans-serif';
  ctx.fillStyle = cssVar('--muted');
  ctx.strokeStyle = cssVar('--grid');
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(padL, yy);
    ctx.lineTo(w - padR, yy);
    ctx.stroke();
    if (i % 2 === 0) ctx.fillText(fmtNum(v, v < 10 ? 1 : 0), padL - 6, yy);
  }
  ctx.textBaseline = 'alphabetic';
  ctx.textAlign = 'left';
  ctx.fillText(spanLabel(span), padL, h - 3);
  ctx.textAlign = 'right';
  ctx.fillText('now', w - padR, h - 3);

  if (points.length === 0) {
    ctx.textAlign = 'center';
    ctx.fillText('no data', padL + pw / 2, padT + ph / 2);
    return;
  }
  const color = cssVar(s.color);
  ctx.save();
  ctx.beginPath();
  ctx.rect(padL, 0, pw, h);
  ctx.clip();
  // area
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
  ctx.lineTo(x(points[points.length - 1].t), y(0));
  ctx.lineTo(x(points[0].t), y(0));
  ctx.closePath();
  ctx.globalAlpha = 0.12;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
  // line
  ctx.beginPath();
  points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.lineJoin = 'round';
  ctx.stroke();
  // last point
  const last = points[points.length - 1];
  ctx.beginPath();
  ctx.arc(x(last.t), y(last.v), 3, 0, Math.PI * 2);
  ctx.fillStyle = color;
  ctx.fill();
  ctx.restore();
}

let lastSampleAt = 0;
function drawAll() {
  const now = lastSampleAt || Date.now();
  // grow the time axis with the data, in 10 s steps, from 30 s up to 2 min
  const oldest = Math.min(now, ...charts.filter((c) => c.points.length).map((c) => c.points[0].t));
  const span = Math.min(WINDOW_MS, Math.max(MIN_WINDOW_MS, Math.ceil((now - oldest) / 10_000) * 10_000));
  for (const c of charts) drawChart(c, now, span);
}
new ResizeObserver(() => drawAll()).observe($('#charts'));
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', drawAll);

function addSample(data) {
  const t = typeof data.ts === 'number' && isFinite(data.ts) ? data.ts : Date.now();
  // keep the chart's clock monotonic even if the host clock steps back
  lastSampleAt = Math.max(t, lastSampleAt);
  for (const c of charts) {
    const v = c.s.value(data);
    if (typeof v === 'number' && isFinite(v)) {
      c.points.push({ t, v });
      c.valueEl.textContent = c.s.integer ? fmtNum(v) : fmtNum(v, 1) + (c.s.unit ? ' ' + c.s.unit : '');
    }
    while (c.points.length > MAX_POINTS || (c.points.length && c.points[0].t < lastSampleAt - WINDOW_MS - 5000)) {
      c.points.shift();
    }
  }
  drawAll();
}

// ---------------------------------------------------------------------------
// Latest values table
// ---------------------------------------------------------------------------
function renderLatest(data, id) {
  const table = $('#latest');
  const tbody = table.tBodies[0];
  const prev = new Map([...tbody.querySelectorAll('tr[data-key]')].map((tr) => [tr.dataset.key, tr.lastElementChild.dataset.raw]));
  const keys = [
    ...KNOWN_ORDER.filter((k) => k in data),
    ...Object.keys(data).filter((k) => !(k in FIELDS)).sort(),
  ];
  const frag = document.createDocumentFragment();
  for (const k of keys) {
    const tr = document.createElement('tr');
    tr.dataset.key = k;
    if (!(k in FIELDS)) tr.className = 'extra';
    const th = document.createElement('th');
    th.scope = 'row';
    th.textContent = FIELDS[k]?.label ?? k;
    th.title = k;
    const td = document.createElement('td');
    const raw = JSON.stringify(data[k]);
    td.dataset.raw = raw;
    td.textContent = fmtField(k, data[k]);
    if (typeof data[k] === 'number' && /bytes$/.test(k)) td.title = data[k].toLocaleString('en-US') + ' bytes';
    if (prev.has(k) && prev.get(k) !== raw) td.className = 'flash';
    tr.append(th, td);
    frag.appendChild(tr);
  }
  if (keys.length === 0) {
    const tr = document.createElement('tr');
    tr.className = 'empty';
    tr.innerHTML = '<td colspan="2">The last event had no fields.</td>';
    frag.appendChild(tr);
  }
  tbody.replaceChildren(frag);
  table.dataset.eventId = id || '';
}

// ---------------------------------------------------------------------------
// Dashboard stream: /events?topic=demo
// ---------------------------------------------------------------------------
let eventCount = 0;
const startDemo = () => resilientSource('/events?topic=demo', {
  label: 'demo',
  onState: (st) => setBadge($('#conn-state'), st),
  onMessage: (e, lastId) => {
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      data = { data: e.data };
    }
    if (data === null || typeof data !== 'object' || Array.isArray(data)) data = { value: data };
    eventCount++;
    $('#event-count').textContent = String(eventCount);
    $('#last-id').textContent = lastId || '–';
    renderLatest(data, e.lastEventId);
    showAge();
    addSample(data);
  },
  onGap: (e) => {
    let info = {};
    try { info = JSON.parse(e.data) || {}; } catch { /* keep empty */ }
    const el = $('#gap-notice');
    el.hidden = false;
    el.dataset.lastEventId = info.lastEventId ?? '';
    el.dataset.oldestId = info.oldestId ?? '';
    el.textContent = info.oldestId == null
      ? `Some events after id ${info.lastEventId ?? '?'} could not be replayed (server restarted or history trimmed); showing live data from now on.`
      : `Some events after id ${info.lastEventId ?? '?'} were lost; replay resumed at id ${info.oldestId}.`;
  },
});
let demoSource = startDemo();

function showAge() {
  const ts = Number(JSON.parse($('#latest').querySelector('tr[data-key="ts"] td')?.dataset.raw ?? 'null'));
  $('#latest-age').textContent = ts ? `updated ${Math.max(0, Math.round((Date.now() - ts) / 1000))} s ago` : '';
}
setInterval(showAge, 1000);

// ---------------------------------------------------------------------------
// The seed's /async demo
// ---------------------------------------------------------------------------
let asyncSource = null;
function runAsync() {
  if (asyncSource) asyncSource.close();
  const log = $('#async-log');
  const status = $('#async-status');
  log.replaceChildren();
  setBadge(status, 'connecting');
  const source = new EventSource('/async');
  asyncSource = source;
  source.onopen = () => {
    console.log('[async] open');
    setBadge(status, 'running');
  };
  source.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { msg = { raw: e.data }; }
    const li = document.createElement('li');
    if (msg && msg.msg === 'end') {
      source.close();
      li.className = 'end';
      li.dataset.end = 'true';
      li.textContent = 'ended';
      log.appendChild(li);
      setBadge(status, 'ended');
      return;
    }
    const val = msg && 'val' in msg ? msg.val : e.data;
    li.dataset.val = typeof val === 'string' ? val : JSON.stringify(val);
    li.innerHTML = '<span class="k">val</span><span class="v"></span>';
    li.querySelector('.v').textContent = li.dataset.val;
    log.appendChild(li);
  };
  source.onerror = () => {
    console.log('[async] error, readyState', source.readyState);
    if (source.readyState === EventSource.CLOSED) setBadge(status, 'closed');
    else setBadge(status, 'reconnecting');
  };
}
$('#async-run').addEventListener('click', runAsync);
runAsync();

// ---------------------------------------------------------------------------
// Publish form and its own subscription
// ---------------------------------------------------------------------------
let pubSub = null;
let pubTopic = '';
function subscribePub(topic) {
  if (topic === pubTopic) return;
  if (pubSub) pubSub.stop();
  pubSub = null;
  pubTopic = topic;
  $('#pub-topic-label').textContent = topic;
  $('#pub-log').replaceChildren();
  $('#pub-topic').classList.toggle('invalid', !TOPIC_RE.test(topic));
  if (!TOPIC_RE.test(topic)) {
    setBadge($('#pub-state'), 'invalid topic');
    return;
  }
  pubSub = resilientSource('/events?topic=' + encodeURIComponent(topic), {
    label: 'pub:' + topic,
    onState: (st) => setBadge($('#pub-state'), st),
    onMessage: (e) => {
      const log = $('#pub-log');
      const li = document.createElement('li');
      li.dataset.id = e.lastEventId;
      li.dataset.data = e.data;
      li.innerHTML = '<span class="k"></span><span class="v"></span>';
      li.querySelector('.k').textContent = new Date().toLocaleTimeString();
      li.querySelector('.v').textContent = e.data;
      li.title = 'id ' + e.lastEventId;
      log.prepend(li);
      while (log.children.length > 100) log.lastElementChild.remove();
    },
  });
}

let topicTimer = null;
$('#pub-topic').addEventListener('input', (e) => {
  clearTimeout(topicTimer);
  topicTimer = setTimeout(() => subscribePub(e.target.value.trim()), 400);
});

$('#pub-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const topic = $('#pub-topic').value.trim();
  const data = $('#pub-data').value;
  clearTimeout(topicTimer);
  subscribePub(topic);
  const result = $('#pub-result');
  const btn = $('#pub-send');
  btn.disabled = true;
  try {
    // a fresh subscription must be live first, or our own event would pass it by
    if (pubSub) await pubSub.whenOpen(3000);
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch('/publish', {
      method: 'POST',
      headers,
      body: JSON.stringify({ topic, data }),
    });
    const text = await res.text();
    if (res.ok) {
      let id = '';
      try { id = JSON.parse(text).id; } catch { /* show the raw text */ }
      result.dataset.ok = 'true';
      result.dataset.id = id ?? '';
      result.textContent = `${res.status} ${text.trim()}`;
      $('#pub-data').value = '';
    } else {
      result.dataset.ok = 'false';
      result.dataset.id = '';
      result.textContent = `${res.status} ${res.statusText}: ${text.trim()}`;
    }
  } catch (err) {
    result.dataset.ok = 'false';
    result.textContent = 'network error: ' + err.message;
  } finally {
    btn.disabled = false;
  }
});

subscribePub($('#pub-topic').value.trim());

// A new token: the streams start again at once with it (the browser would
// otherwise send it only at its next reconnect).
$('#token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (!setToken($('#token').value)) return;
  demoSource.stop();
  demoSource = startDemo();
  const topic = pubTopic;
  pubTopic = '';
  subscribePub(topic);
});
