// Real-browser tests of the tinysse dashboard (public/index.html) in headless
// Debian Chromium, driven by playwright-core (which never downloads a browser).
//
//   node test.mjs            # uses ${CARGO_TARGET_DIR:-<repo>/target}/release/tinysse
//   TINYSSE_BIN=/path/to/tinysse node test.mjs
//   TEST_PUBLIC_DIR=/other/public node test.mjs   # serve another copy of the page
//   CHROMIUM=/path/to/chromium node test.mjs      # default /usr/bin/chromium
//
// The script starts the server itself on a free port, restarts it once on the
// same port, and always stops it (SIGTERM) at the end; the CSRF tests start a
// second, token-less server and a page server of their own, and stop both; the
// authorization tests start a server with --jwt-secret-file (tokens minted here)
// and a page server on another origin, and stop both; the cluster test
// starts a redis-server, two servers on it and a failover proxy, and stops
// them all. Prints
// "N passed, M failed" and exits non-zero on any failure.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const PUBLIC_DIR = process.env.TEST_PUBLIC_DIR || path.join(REPO, 'public');
const ARTIFACTS = path.join(HERE, 'artifacts');
const TARGET = process.env.CARGO_TARGET_DIR
  ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
  : path.join(REPO, 'target');
const BIN = process.env.TINYSSE_BIN || path.join(TARGET, 'release', 'tinysse');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OVERALL_TIMEOUT_MS = 180_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// GET a URL from node; resolves to { status, body }.
function fetchText(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`${url}: timeout`)));
  });
}

async function publishedTotal(srv) {
  const { body } = await fetchText(`${srv.url}/metrics`);
  const m = /^tinysse_events_published_total (\d+)$/m.exec(body);
  if (!m) throw new Error(`no tinysse_events_published_total in /metrics:\n${body}`);
  return Number(m[1]);
}

// --------------------------------------------------------------------------
// server process handling
// --------------------------------------------------------------------------
const servers = new Set();

function startServer(addr, extraArgs = [], publicDir = PUBLIC_DIR) {
  return new Promise((resolve, reject) => {
    const args = ['--addr', addr, '--public', publicDir, ...extraArgs];
    // a .mjs "binary" is a development mock, run with node
    const [cmd, argv] = BIN.endsWith('.mjs') ? [process.execPath, [BIN, ...args]] : [BIN, args];
    const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const srv = { proc, stderr: '', exited: null, exitCode: undefined };
    servers.add(srv);
    srv.exited = new Promise((res) => proc.on('exit', (code, sig) => {
      srv.exitCode = code ?? sig;
      servers.delete(srv);
      res(srv.exitCode);
    }));
    proc.stderr.on('data', (d) => { srv.stderr = (srv.stderr + d).slice(-4000); });
    let out = '';
    let done = false;
    const timer = setTimeout(() => finish(new Error(`no "listening on" line within 15 s; stderr:\n${srv.stderr}`)), 15_000);
    function finish(err, val) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) { proc.kill('SIGKILL'); reject(err); } else resolve(val);
    }
    proc.on('error', (e) => finish(new Error(`cannot start ${BIN}: ${e.message}`)));
    proc.on('exit', (code) => finish(new Error(`server exited (${code}) before listening; stderr:\n${srv.stderr}`)));
    proc.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const first = out.slice(0, nl).replace(/\r$/, '');
      const m = /^listening on http:\/\/(.+):(\d+)$/.exec(first);
      if (!m) return finish(new Error(`first stdout line is not "listening on http://HOST:PORT": ${JSON.stringify(first)}`));
      srv.host = m[1];
      srv.port = Number(m[2]);
      srv.url = `http://${m[1]}:${m[2]}`;
      proc.stdout.resume();
      finish(null, srv);
    });
  });
}

// SIGTERM, then wait; SIGKILL if it does not exit within `ms`.
async function stopServer(srv, ms = 3000) {
  if (srv.exitCode !== undefined) return { code: srv.exitCode, ms: 0, killed: false };
  const t0 = Date.now();
  srv.proc.kill('SIGTERM');
  const code = await Promise.race([srv.exited, sleep(ms).then(() => 'timeout')]);
  if (code !== 'timeout') return { code, ms: Date.now() - t0, killed: false };
  srv.proc.kill('SIGKILL');
  await Promise.race([srv.exited, sleep(2000)]);
  return { code: 'timeout', ms: Date.now() - t0, killed: true };
}

process.on('exit', () => { for (const s of servers) try { s.proc.kill('SIGKILL'); } catch { /* gone */ } });

// --------------------------------------------------------------------------
// a tiny independent SSE client in node, to cross-check what the page shows
// --------------------------------------------------------------------------
function sseCollect(url) {
  const events = new Map();
  let req;
  const ready = new Promise((resolve, reject) => {
    req = http.get(url, { headers: { Accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`${url}: status ${res.statusCode}`));
      resolve();
      res.setEncoding('utf8');
      let buf = '';
      let ev = { id: '', data: [], type: '' };
      res.on('data', (chunk) => {
        buf += chunk;
        let m;
        while ((m = /\r\n|\r|\n/.exec(buf))) {
          const line = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          if (line === '') {
            if (ev.data.length && (ev.type === '' || ev.type === 'message') && ev.id) events.set(ev.id, ev.data.join('\n'));
            ev = { id: '', data: [], type: '' };
            continue;
          }
          if (line.startsWith(':')) continue;
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          let value = i < 0 ? '' : line.slice(i + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'data') ev.data.push(value);
          else if (field === 'id') ev.id = value;
          else if (field === 'event') ev.type = value;
        }
      });
      res.on('error', () => {});
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('connect timeout')));
  });
  return { events, ready, close: () => req.destroy() };
}

// --------------------------------------------------------------------------
// tiny test runner
// --------------------------------------------------------------------------
const results = [];
async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok   - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL - ${name} (${Date.now() - t0} ms)\n       ${String(e && e.stack || e).split('\n').join('\n       ')}`);
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }

// page helpers
const text = (page, sel) => page.$eval(sel, (el) => el.textContent.trim());
const waitText = (page, sel, want, timeout) => page.waitForFunction(
  ([s, w]) => document.querySelector(s)?.textContent.trim() === w, [sel, want], { timeout, polling: 50 },
).catch(async (e) => { throw new Error(`${sel} did not become ${JSON.stringify(want)} within ${timeout} ms (is ${JSON.stringify(await text(page, sel).catch(() => '?'))}): ${e.message.split('\n')[0]}`); });

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  let srv = await startServer('127.0.0.1:0');
  const port = srv.port;
  console.log(`# server ${BIN} at ${srv.url}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    const consoleErrors = [];
    const badResponses = [];
    const asyncRequests = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`console.error: ${m.text()}`); });
    page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
    page.on('response', (r) => { if (r.status() >= 400) badResponses.push(`${r.status()} ${r.url()}`); });
    page.on('request', (r) => { if (new URL(r.url()).pathname === '/async') asyncRequests.push(Date.now()); });

    // the node-side cross-check subscriber, live before the page loads
    const demo = sseCollect(`${srv.url}/events?topic=demo`);
    await demo.ready;

    await test('page loads without console errors', async () => {
      const resp = await page.goto(srv.url + '/', { waitUntil: 'load', timeout: 15_000 });
      assert(resp && resp.status() === 200, `GET / answered ${resp && resp.status()}`);
      await waitText(page, '#conn-state', 'open', 10_000);
      await waitText(page, '#pub-state', 'open', 10_000);
      // the stylesheet really applied (a wrong Content-Type makes Chromium drop it)
      const radius = await page.$eval('.card', (el) => getComputedStyle(el).borderTopLeftRadius);
      assert(radius === '12px', `style.css not applied (card radius ${radius})`);
      await sleep(300);
      assert(consoleErrors.length === 0, `console errors:\n${consoleErrors.join('\n')}`);
      assert(badResponses.length === 0, `failed responses:\n${badResponses.join('\n')}`);
    });

    await test('/async panel shows 42, then 100, then ended (and nothing more)', async () => {
      const items = () => page.$$eval('#async-log li', (lis) => lis.map((li) => (li.dataset.end ? 'ended' : li.dataset.val)));
      const waitEnded = () => page.waitForFunction(() => document.querySelector('#async-log li[data-end]'), null, { timeout: 8000, polling: 50 });
      const checkEnded = async () => {
        const all = await items();
        assert(JSON.stringify(all) === '["42","100","ended"]', `/async log should be 42,100,ended; got ${JSON.stringify(all)}`);
        assert(await text(page, '#async-status') === 'ended', `status is ${await text(page, '#async-status')}`);
      };
      // the run started by the page load
      await waitEnded();
      await checkEnded();
      assert(asyncRequests.length === 1, `expected one /async request after load, saw ${asyncRequests.length}`);
      // "Run again" starts a fresh run: 42 alone first, 100 about a second later, then ended
      await page.click('#async-run');
      await page.waitForFunction(() => document.querySelectorAll('#async-log li').length >= 1, null, { timeout: 8000, polling: 20 });
      const first = await items();
      assert(JSON.stringify(first) === '["42"]', `first /async state should be ["42"], got ${JSON.stringify(first)}`);
      await waitEnded();
      await checkEnded();
      assert(asyncRequests.length === 2, `"Run again" should make exactly one new /async request, saw ${asyncRequests.length - 1}`);
      // nothing more: the source was closed, so no reconnect (retry is 2 s) and no new values
      await sleep(3000);
      await checkEnded();
      assert(asyncRequests.length === 2, `the page requested /async again after "end" (${asyncRequests.length - 2} times)`);
    });

    await test('demo events update the last id, table and charts', async () => {
      const snap = () => page.evaluate(() => ({
        lastId: document.querySelector('#last-id').textContent.trim(),
        tableId: document.querySelector('#latest').dataset.eventId,
        rows: Object.fromEntries([...document.querySelectorAll('#latest tr[data-key]')]
          .map((tr) => [tr.dataset.key, tr.querySelector('td').dataset.raw])),
        charts: [...document.querySelectorAll('#charts canvas')].map((c) => c.toDataURL()).join('|'),
        values: [...document.querySelectorAll('#charts .chart-value')].map((e) => e.textContent.trim()),
      }));
      const waitNewId = (prev) => page.waitForFunction((p) => {
        const t = document.querySelector('#last-id').textContent.trim();
        return /^\d+$/.test(t) && t !== p;
      }, prev, { timeout: 6000, polling: 50 });
      await waitNewId('');
      const a = await snap();
      await waitNewId(a.lastId);
      const b = await snap();
      assert(a.lastId !== b.lastId, 'last id did not change');
      assert(BigInt(b.lastId) > BigInt(a.lastId), `ids should grow: ${a.lastId} then ${b.lastId}`);
      assert(b.tableId === b.lastId, `table shows event ${b.tableId}, header shows ${b.lastId}`);
      assert(a.charts !== b.charts, 'the charts did not change between two events');
      assert(b.values.some((v) => v !== '–'), `no chart has a value: ${JSON.stringify(b.values)}`);
      // the table holds exactly the fields of that event, as the server sent them
      const deadline = Date.now() + 3000;
      while (!demo.events.has(b.lastId) && Date.now() < deadline) await sleep(50);
      assert(demo.events.has(b.lastId), `event ${b.lastId} was not seen by an independent subscriber (saw ${[...demo.events.keys()].join(',')})`);
      const sent = JSON.parse(demo.events.get(b.lastId));
      const want = Object.fromEntries(Object.entries(sent).map(([k, v]) => [k, JSON.stringify(v)]));
      assert(Object.keys(want).length > 0, 'demo event has no fields');
      assert(JSON.stringify(Object.entries(b.rows).sort()) === JSON.stringify(Object.entries(want).sort()),
        `table does not match event ${b.lastId}:\n  table ${JSON.stringify(b.rows)}\n  event ${JSON.stringify(want)}`);
    });
    demo.close();

    await test('a value published through the form appears in #pub-log', async () => {
      const value = `hello from chromium ${Math.random().toString(36).slice(2, 10)}`;
      assert(await page.inputValue('#pub-topic') === 'chat', 'default topic should be "chat"');
      await page.fill('#pub-data', value);
      await page.click('#pub-send');
      await page.waitForFunction(() => document.querySelector('#pub-result')?.dataset.ok, null, { timeout: 5000, polling: 50 });
      const res = await page.$eval('#pub-result', (el) => ({ ok: el.dataset.ok, id: el.dataset.id, text: el.textContent }));
      assert(res.ok === 'true' && /^\d+$/.test(res.id), `publish answer: ${JSON.stringify(res)}`);
      await page.waitForFunction((v) => [...document.querySelectorAll('#pub-log li')].some((li) => li.dataset.data === v), value, { timeout: 5000, polling: 50 })
        .catch(() => { throw new Error(`"${value}" did not appear in #pub-log`); });
      const li = await page.$eval('#pub-log li', (el) => ({ id: el.dataset.id, data: el.dataset.data }));
      assert(li.data === value && li.id === res.id, `#pub-log head ${JSON.stringify(li)} should be id ${res.id}`);
      assert(consoleErrors.length === 0, `console errors:\n${consoleErrors.join('\n')}`);
      // an error answer is shown as status + body text (Chromium logs the 400 itself)
      await page.fill('#pub-topic', 'no spaces allowed!');
      await page.click('#pub-send');
      await page.waitForFunction(() => document.querySelector('#pub-result')?.dataset.ok === 'false', null, { timeout: 5000, polling: 50 });
      const err = await text(page, '#pub-result');
      assert(/^400\b/.test(err), `invalid topic should show a 400 answer, shows ${JSON.stringify(err)}`);
      const unexpected = consoleErrors.filter((m) => !/status of 400/.test(m));
      assert(unexpected.length === 0, `console errors:\n${unexpected.join('\n')}`);
      consoleErrors.length = 0;
      // back to a valid topic: the page re-subscribes, and sees its own message again
      const again = `${value} (again)`;
      await page.fill('#pub-topic', 'chat');
      await page.fill('#pub-data', again);
      await page.click('#pub-send');
      await page.waitForFunction(() => document.querySelector('#pub-result')?.dataset.ok === 'true', null, { timeout: 5000, polling: 50 });
      await waitText(page, '#pub-state', 'open', 5000);
      await page.waitForFunction((v) => document.querySelector('#pub-log li')?.dataset.data === v, again, { timeout: 5000, polling: 50 })
        .catch(() => { throw new Error(`"${again}" did not appear in #pub-log after re-subscribing to chat`); });
      assert(consoleErrors.length === 0, `console errors:\n${consoleErrors.join('\n')}`);
    });

    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });

    let restarted = false;
    await test('after a server restart on the same port the page reconnects by itself', async () => {
      const before = await page.evaluate(() => ({
        lastId: document.querySelector('#last-id').textContent.trim(),
        count: Number(document.querySelector('#event-count').textContent),
      }));
      const stop = await stopServer(srv);
      assert(!stop.killed, `server did not exit within 3 s of SIGTERM; stderr:\n${srv.stderr}`);
      assert(stop.code === 0, `server exited with ${stop.code} on SIGTERM`);
      await page.waitForFunction(() => document.querySelector('#conn-state').textContent.trim() !== 'open', null, { timeout: 5000, polling: 50 })
        .catch(() => { throw new Error('the page still says "open" 5 s after the server stopped'); });
      // stay down long enough for the browser's own reconnect (retry: 2000 ms) to fail once
      await sleep(3500);
      srv = await startServer(`127.0.0.1:${port}`);
      restarted = true;
      assert(srv.port === port, `restarted on port ${srv.port}, wanted ${port}`);
      await waitText(page, '#conn-state', 'open', 20_000);
      await page.waitForFunction((b) => {
        const id = document.querySelector('#last-id').textContent.trim();
        return Number(document.querySelector('#event-count').textContent) > b.count && /^\d+$/.test(id) && BigInt(id) > BigInt(b.lastId);
      }, before, { timeout: 10_000, polling: 100 }).catch(() => { throw new Error('no new demo event after the restart'); });
      await waitText(page, '#pub-state', 'open', 10_000);
    });

    await test('the page shows a gap notice after the restart', async () => {
      assert(restarted, 'the server was not restarted');
      await page.waitForSelector('#gap-notice:not([hidden])', { timeout: 5000 })
        .catch(() => { throw new Error('no gap notice: the new server sent no `gap` event for ids from before it started'); });
      const g = await page.$eval('#gap-notice', (el) => ({ last: el.dataset.lastEventId, text: el.textContent }));
      assert(/^\d+$/.test(g.last), `gap notice without the asked id: ${JSON.stringify(g)}`);
    });

    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    await csrfTests(browser);
    await authTests(browser);
    await clusterTests(browser);
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(srv.url + '/', { waitUntil: 'load' });
    await phone.waitForFunction(() => document.querySelectorAll('#latest tr[data-key]').length > 0, null, { timeout: 5000 }).catch(() => {});
    await phone.waitForFunction(() => document.querySelector('#async-log li[data-end]'), null, { timeout: 5000 }).catch(() => {});
    await phone.screenshot({ path: path.join(ARTIFACTS, 'dashboard-phone.png'), fullPage: true });
    await phone.close();
  } finally {
    await browser.close().catch(() => {});
    const stop = await stopServer(srv);
    if (stop.killed) console.log('# warning: the server needed SIGKILL at the end');
  }
}

// --------------------------------------------------------------------------
// CSRF: a page on another origin must not publish to a token-less local
// server by auto-submitting a form (Chromium sends Origin and
// Sec-Fetch-Site, the server refuses them); the same page on the server's
// own origin may, so the test can tell a refusal from a broken form.
// --------------------------------------------------------------------------
async function csrfTests(browser) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tinysse-csrf-'));
  let target = null;
  let other = null;
  const context = await browser.newContext();
  try {
    target = await startServer('127.0.0.1:0', ['--no-demo'], dir);
    const form = (data) => `<!doctype html><meta charset="utf-8"><title>form</title>
<form method="POST" action="${target.url}/publish" enctype="application/x-www-form-urlencoded">
<input name="topic" value="csrf"><input name="data" value="${data}"></form>
<script>document.forms[0].submit();</script>`;
    fs.writeFileSync(path.join(dir, 'own.html'), form('from the own origin'));
    // The other origin: a tiny page server of the test's own.
    other = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(form('from another origin'));
    });
    await new Promise((r) => other.listen(0, '127.0.0.1', r));
    const otherPort = other.address().port;
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);

    // Submits the page at `url`'s form and returns the /publish answer.
    const submit = async (url) => {
      const answer = page.waitForResponse((r) => r.url() === `${target.url}/publish`, { timeout: 10_000 });
      await page.goto(url, { waitUntil: 'commit' });
      const r = await answer;
      return { status: r.status(), text: (await r.text()).trim(), headers: await r.request().allHeaders() };
    };

    await test('a cross-origin form POST cannot publish without a token (CSRF)', async () => {
      assert(await publishedTotal(target) === 0, 'something was published before the test');
      // Same site (127.0.0.1), another port: another origin.
      const a = await submit(`http://127.0.0.1:${otherPort}/`);
      assert(a.headers.origin === `http://127.0.0.1:${otherPort}`, `Chromium sent Origin ${a.headers.origin}`);
      assert(a.status === 403, `same-site, cross-origin form: ${a.status} ${a.text}`);
      // Another site (localhost is not 127.0.0.1): Sec-Fetch-Site says cross-site.
      const b = await submit(`http://localhost:${otherPort}/`);
      assert(b.headers['sec-fetch-site'] === 'cross-site', `Chromium sent Sec-Fetch-Site ${b.headers['sec-fetch-site']}`);
      assert(b.status === 403, `cross-site form: ${b.status} ${b.text}`);
      const n = await publishedTotal(target);
      assert(n === 0, `a cross-origin form published ${n} event(s)`);
    });

    await test('the same form on the server\'s own origin publishes', async () => {
      const before = await publishedTotal(target);
      const own = await submit(`${target.url}/own.html`);
      assert(own.status === 200 && /^\{"id":"\d+"\}$/.test(own.text), `own-origin form: ${own.status} ${own.text}`);
      const n = await publishedTotal(target) - before;
      assert(n === 1, `the own-origin form published ${n} event(s), want 1`);
    });
  } finally {
    await context.close().catch(() => {});
    if (other) other.close();
    if (target) await stopServer(target);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// --------------------------------------------------------------------------
// Authorization (--jwt-secret-file): the dashboard takes a token from
// ?access_token= or its field; a plain EventSource carries the
// tinysse_token cookie same-origin, and cross-origin with
// {withCredentials: true} (the page on another port of 127.0.0.1: another
// origin, the same site, so the cookie goes along).
// --------------------------------------------------------------------------

// An HS256 JWT, as docs/auth.md mints one.
function mint(key, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${input}.${crypto.createHmac('sha256', key).update(input).digest('base64url')}`;
}

// POST /publish with a JSON body and, if given, a Bearer token.
function publishAs(srv, token, topic, data) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ topic, data });
    const headers = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) };
    if (token) headers.Authorization = `Bearer ${token}`;
    const req = http.request(`${srv.url}/publish`, { method: 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: text.trim() }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('publish: timeout')));
    req.end(body);
  });
}

// In the page: opens an EventSource and resolves once it is open, or
// rejects with its readyState when it fails; messages go to window.got.
function openSource([url, init]) {
  return new Promise((resolve, reject) => {
    const es = new EventSource(url, init);
    window.got = [];
    window.es = es;
    es.onmessage = (e) => window.got.push(e.data);
    es.onopen = () => resolve('open');
    es.onerror = () => {
      const st = es.readyState;
      es.close();
      reject(new Error(`EventSource failed (readyState ${st})`));
    };
  });
}

async function authTests(browser) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tinysse-auth-'));
  const key = crypto.randomBytes(32).toString('hex');
  const keyFile = path.join(dir, 'jwt.key');
  fs.writeFileSync(keyFile, key + '\n', { mode: 0o600 });
  const exp = Math.floor(Date.now() / 1000) + 900;
  const reader = mint(key, { exp, tinysse: { subscribe: ['demo', 'chat', 'private/*'], publish: ['chat'] } });
  const backend = mint(key, { exp, tinysse: { publish: ['*'] } });
  let hub = null;
  let app = null;
  const contexts = [];
  const newPage = async () => {
    const c = await browser.newContext();
    contexts.push(c);
    const p = await c.newPage();
    p.setDefaultTimeout(10_000);
    return [c, p];
  };
  try {
    // The application's page, on another origin.
    app = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><meta charset="utf-8"><title>app</title><p>app</p>');
    });
    await new Promise((r) => app.listen(0, '127.0.0.1', r));
    const appOrigin = `http://127.0.0.1:${app.address().port}`;
    hub = await startServer('127.0.0.1:0', ['--jwt-secret-file', keyFile, '--cors-origin', appOrigin]);

    await test('with --jwt-secret-file the dashboard takes its token from ?access_token=', async () => {
      const [context, page] = await newPage();
      await page.goto(`${hub.url}/?access_token=${reader}`, { waitUntil: 'load' });
      await waitText(page, '#conn-state', 'open', 10_000);
      await waitText(page, '#pub-state', 'open', 10_000);
      assert(!page.url().includes('access_token'), `the token stayed in the address bar: ${page.url()}`);
      const cookies = await context.cookies(hub.url);
      assert(cookies.some((c) => c.name === 'tinysse_token' && c.value === reader), 'no tinysse_token cookie');
      // demo events arrive, and the publish form works with the token
      await page.waitForFunction(() => /^\d+$/.test(document.querySelector('#last-id').textContent.trim()), null, { timeout: 8000, polling: 50 });
      const value = `authorized ${Math.random().toString(36).slice(2, 8)}`;
      await page.fill('#pub-data', value);
      await page.click('#pub-send');
      await page.waitForFunction(() => document.querySelector('#pub-result')?.dataset.ok, null, { timeout: 5000, polling: 50 });
      const res = await page.$eval('#pub-result', (el) => ({ ok: el.dataset.ok, text: el.textContent }));
      assert(res.ok === 'true', `publish with the token: ${res.text}`);
      await page.waitForFunction((v) => document.querySelector('#pub-log li')?.dataset.data === v, value, { timeout: 5000, polling: 50 });
      // a topic the token may not publish to: 403, shown
      await page.fill('#pub-topic', 'private/x');
      await page.fill('#pub-data', 'no');
      await page.click('#pub-send');
      await page.waitForFunction(() => document.querySelector('#pub-result')?.dataset.ok === 'false', null, { timeout: 5000, polling: 50 });
      const err = await text(page, '#pub-result');
      assert(/^403\b/.test(err), `a topic outside the token should show 403, shows ${JSON.stringify(err)}`);
    });

    await test('without a token the dashboard says unauthorized, and the token field fixes it', async () => {
      const [, page] = await newPage();
      await page.goto(`${hub.url}/`, { waitUntil: 'load' });
      await waitText(page, '#conn-state', 'unauthorized', 10_000);
      await page.fill('#pub-data', 'anonymous');
      await page.click('#pub-send');
      await page.waitForFunction(() => document.querySelector('#pub-result')?.dataset.ok === 'false', null, { timeout: 8000, polling: 50 });
      const err = await text(page, '#pub-result');
      assert(/^401\b/.test(err), `publishing without a token should show 401, shows ${JSON.stringify(err)}`);
      await page.fill('#token', reader);
      await page.click('#token-use');
      await waitText(page, '#token-state', 'set', 2000);
      await waitText(page, '#conn-state', 'open', 10_000);
      await waitText(page, '#pub-state', 'open', 10_000);
      await page.fill('#pub-data', 'with the field');
      await page.click('#pub-send');
      await page.waitForFunction(() => document.querySelector('#pub-result')?.dataset.ok === 'true', null, { timeout: 5000, polling: 50 });
      await page.waitForFunction(() => document.querySelector('#pub-log li')?.dataset.data === 'with the field', null, { timeout: 5000, polling: 50 });
    });

    await test('EventSource with the tinysse_token cookie, same-origin', async () => {
      const [context, page] = await newPage();
      await context.addCookies([{ name: 'tinysse_token', value: reader, url: hub.url, sameSite: 'Strict' }]);
      await page.goto(`${hub.url}/healthz`);
      const seen = [];
      page.on('request', (r) => { if (r.url().includes('/events?')) seen.push(r); });
      await page.evaluate(openSource, ['/events?topic=private/1', undefined]);
      assert(/tinysse_token=/.test(await seen[0].headerValue('cookie') || ''), 'the cookie was not sent');
      const p = await publishAs(hub, backend, 'private/1', 'secret one');
      assert(p.status === 200, `publish: ${p.status} ${p.body}`);
      await page.waitForFunction(() => window.got.includes('secret one'), null, { timeout: 5000, polling: 50 });
      // The same page without the cookie is refused.
      const [, bare] = await newPage();
      await bare.goto(`${hub.url}/healthz`);
      const refused = await bare.evaluate(openSource, ['/events?topic=private/1', undefined]).then(() => 'open', (e) => e.message);
      assert(/readyState 2/.test(refused), `without the cookie: ${refused}`);
    });

    await test('EventSource cross-origin with credentials (withCredentials: true)', async () => {
      const [context, page] = await newPage();
      await context.addCookies([{ name: 'tinysse_token', value: reader, url: hub.url, sameSite: 'Lax' }]);
      await page.goto(`${appOrigin}/`);
      const responses = [];
      page.on('response', (r) => { if (r.url().includes('/events?')) responses.push(r); });
      const url = `${hub.url}/events?topic=private/2`;
      await page.evaluate(openSource, [url, { withCredentials: true }]);
      const h = await responses[0].allHeaders();
      assert(h['access-control-allow-origin'] === appOrigin, `Access-Control-Allow-Origin: ${h['access-control-allow-origin']}`);
      assert(h['access-control-allow-credentials'] === 'true', `Access-Control-Allow-Credentials: ${h['access-control-allow-credentials']}`);
      const p = await publishAs(hub, backend, 'private/2', 'cross-origin secret');
      assert(p.status === 200, `publish: ${p.status} ${p.body}`);
      await page.waitForFunction(() => window.got.includes('cross-origin secret'), null, { timeout: 5000, polling: 50 });
      // Without withCredentials the browser sends no cookie: refused.
      const refused = await page.evaluate(openSource, [url, undefined]).then(() => 'open', (e) => e.message);
      assert(/readyState 2/.test(refused), `cross-origin without credentials: ${refused}`);
    });
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    if (app) app.close();
    if (hub) await stopServer(hub);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// --------------------------------------------------------------------------
// Two instances on one Redis behind a failover proxy (what a load balancer
// does): a real EventSource on instance A, A killed, the browser reconnects
// on its own with Last-Event-ID, lands on B, and gets exactly what it
// missed, once, in order, then live events.
// --------------------------------------------------------------------------
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// Each connection goes to the first of `targets` that accepts it.
function failoverProxy(targets) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    client.pause();
    const attempt = (i) => {
      if (i >= targets.length) { client.destroy(); return; }
      const up = net.connect(targets[i], '127.0.0.1');
      up.once('error', () => attempt(i + 1));
      up.once('connect', () => {
        sockets.add(up);
        up.on('close', () => { sockets.delete(up); client.destroy(); });
        up.on('error', () => {});
        client.on('close', () => up.destroy());
        client.pipe(up);
        up.pipe(client);
        client.resume();
      });
    };
    attempt(0);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => { for (const s of sockets) s.destroy(); server.close(); },
  })));
}

async function startRedis(dir) {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'],
  { stdio: ['ignore', 'ignore', 'ignore'] });
  const exited = new Promise((res) => proc.on('exit', res));
  proc.on('error', () => {});
  // Up once it accepts a connection (bounded: 10 s).
  for (let i = 0; i < 200; i++) {
    const up = await new Promise((res) => {
      const c = net.connect(port, '127.0.0.1');
      c.once('connect', () => { c.destroy(); res(true); });
      c.once('error', () => res(false));
    });
    if (up) return { url: `redis://127.0.0.1:${port}/`, stop: async () => { proc.kill('SIGTERM'); await Promise.race([exited, sleep(5000)]); proc.kill('SIGKILL'); } };
    await sleep(50);
  }
  proc.kill('SIGKILL');
  throw new Error('redis-server did not start within 10 s');
}

function hasRedis() {
  return (process.env.PATH || '').split(':').some((d) => d && fs.existsSync(path.join(d, 'redis-server')));
}

async function clusterTests(browser) {
  if (!hasRedis()) {
    if (process.env.CI) {
      await test('failover between two instances on one Redis', async () => { throw new Error('redis-server not found (apt-get install -y redis-server)'); });
    } else {
      console.log('# SKIPPED failover between two instances on one Redis: redis-server not found (install: apt-get install -y redis-server)');
    }
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tinysse-cluster-'));
  let redis = null;
  let a = null;
  let b = null;
  let proxy = null;
  const context = await browser.newContext();
  try {
    redis = await startRedis(dir);
    a = await startServer('127.0.0.1:0', ['--no-demo', '--redis', redis.url]);
    b = await startServer('127.0.0.1:0', ['--no-demo', '--redis', redis.url]);
    proxy = await failoverProxy([a.port, b.port]);
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);

    await test('failover between two instances on one Redis: exactly once, in order', async () => {
      await page.goto(`${proxy.url}/`, { waitUntil: 'load' });
      await page.evaluate(() => {
        window.got = [];
        window.opens = 0;
        const es = new EventSource('/events?topic=fo');
        window.es = es;
        es.onopen = () => { window.opens += 1; };
        es.onmessage = (e) => window.got.push(`${e.lastEventId} ${e.data}`);
      });
      await page.waitForFunction(() => window.opens === 1, null, { timeout: 5000, polling: 20 });
      const ids = [];
      const pub = async (srv, data) => {
        const r = await publishAs(srv, null, 'fo', data);
        assert(r.status === 200, `publish ${data}: ${r.status} ${r.body}`);
        ids.push(`${JSON.parse(r.body).id} ${data}`);
      };
      for (const d of ['a1', 'b1', 'a2']) await pub(d[0] === 'a' ? a : b, d);
      await page.waitForFunction((n) => window.got.length >= n, ids.length, { timeout: 5000, polling: 20 });
      // A dies; what is published meanwhile goes through B.
      a.proc.kill('SIGKILL');
      await a.exited;
      for (const d of ['b2', 'b3', 'b4']) await pub(b, d);
      // The browser reconnects by itself (retry: 2000 ms), through the proxy, to B.
      await page.waitForFunction(() => window.opens >= 2, null, { timeout: 10_000, polling: 50 });
      await pub(b, 'live');
      await page.waitForFunction((n) => window.got.length >= n, ids.length, { timeout: 5000, polling: 20 });
      await sleep(300); // a duplicate would arrive right behind
      const got = await page.evaluate(() => window.got);
      assert(JSON.stringify(got) === JSON.stringify(ids), `got ${JSON.stringify(got)}, want ${JSON.stringify(ids)}`);
    });
  } finally {
    await context.close().catch(() => {});
    if (proxy) proxy.close();
    for (const s of [a, b]) if (s) await stopServer(s);
    if (redis) await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const overall = setTimeout(() => {
  console.log(`FAIL - the whole run took over ${OVERALL_TIMEOUT_MS / 1000} s`);
  for (const s of servers) try { s.proc.kill('SIGKILL'); } catch { /* gone */ }
  const passed = results.filter((r) => r.ok).length;
  console.log(`${passed} passed, ${results.length - passed + 1} failed`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

let setupError = null;
try {
  await main();
} catch (e) {
  setupError = e;
  console.log(`FAIL - setup: ${e && e.stack || e}`);
}
clearTimeout(overall);
const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed + (setupError ? 1 : 0);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
