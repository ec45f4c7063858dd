// The demo page in headless Chromium against the real tranche binary: a big
// file end to end, pause and resume, a reload and a closed tab, a server
// killed mid-upload, chunks that fail, and a page on another origin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

import { launch, openDemo, progressLog, row, statusLog, waitForPercent, waitForState } from '../lib/browser.js';
import { makeFile, sha256OfUrl } from '../lib/files.js';
import { Proxy } from '../lib/proxy.js';
import { STATIC_DIR, Tranche } from '../lib/server.js';

const MiB = 1 << 20;
const RECEIVED = 'tranche_chunk_received_bytes_total';

/** Starts what a test needs and stops all of it afterwards, whatever happens. */
async function setup(t, { env, proxy } = {}) {
  const parts = { server: await Tranche.start(env) };
  t.after(() => parts.server.stop());
  if (proxy) {
    parts.proxy = await Proxy.start(parts.server.origin, proxy);
    t.after(() => parts.proxy.stop());
  }
  parts.browser = await launch();
  t.after(() => parts.browser.close());
  return parts;
}

function file(t, name, size) {
  const f = makeFile(name, size);
  t.after(() => f.remove());
  return f;
}

/** The completed upload behind a row, as the server sees it. */
async function completedUpload(page, server, name) {
  const id = await row(page, name).getAttribute('data-upload-id');
  assert.ok(id, 'the completed row names its upload');
  const upload = await server.json(`/api/v1/uploads/${id}`);
  assert.equal(upload.status, 'completed');
  return upload;
}

function assertNeverBackwards(log, label) {
  assert.ok(log.length > 0, `${label}: the bar moved`);
  for (let i = 1; i < log.length; i++) {
    assert.ok(log[i] >= log[i - 1], `${label}: the bar went back from ${log[i - 1]} to ${log[i]} (${log.join(' ')})`);
  }
  assert.equal(log.at(-1), 100, `${label}: the bar ends at 100`);
}

test('a 50 MiB file goes through the demo page and the server holds the same SHA-256', { timeout: 90_000 }, async (t) => {
  const { server, browser } = await setup(t);
  const f = file(t, 'video-50MiB.bin', 50 * MiB);
  const page = await openDemo(browser.context, `${server.origin}/?chunkSize=${4 * MiB}`);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'completed', 60_000);

  const upload = await completedUpload(page, server, f.name);
  assert.equal(upload.file.size, f.size);
  assert.equal(upload.file.sha256, f.sha256);
  assert.equal(upload.chunk_size, 4 * MiB);
  const href = await row(page, f.name).locator('a.link').getAttribute('href');
  assert.equal(await sha256OfUrl(href), f.sha256, 'the download link serves the same bytes');
  assert.equal(await server.metric(RECEIVED), f.size, 'every byte was stored once');
  assertNeverBackwards(await progressLog(page, f.name), f.name);
  const bar = row(page, f.name).locator('[role=progressbar]');
  assert.equal(await bar.getAttribute('aria-valuenow'), '100');
  assert.match(await row(page, f.name).locator('.status').textContent(), new RegExp(f.sha256));
});

test('several files chosen at once get a row each and all complete', { timeout: 60_000 }, async (t) => {
  const { server, browser } = await setup(t);
  const files = [file(t, 'a.bin', 300 * 1024), file(t, 'b.bin', 1), file(t, 'empty.bin', 0)];
  const page = await openDemo(browser.context, `${server.origin}/?chunkSize=${64 * 1024}`);
  await page.setInputFiles('#file-input', files.map((f) => f.path));
  assert.equal(await page.locator('li.upload').count(), 3);
  for (const f of files) {
    await waitForState(page, f.name, 'completed');
    const upload = await completedUpload(page, server, f.name);
    assert.equal(upload.file.size, f.size);
    assert.equal(upload.file.sha256, f.sha256);
    const bar = row(page, f.name).locator('[role=progressbar]');
    assert.equal(await bar.getAttribute('aria-label'), `Upload of ${f.name}`);
    assert.equal(await bar.getAttribute('aria-valuenow'), '100');
  }
});

test('pause stops sending, resume finishes, from the keyboard', { timeout: 60_000 }, async (t) => {
  const { server, proxy, browser } = await setup(t, { proxy: { chunkDelay: 150 } });
  const f = file(t, 'paused.bin', 2 * MiB);
  const page = await openDemo(browser.context, `${proxy.origin}/?chunkSize=${64 * 1024}&parallel=2`);
  await page.setInputFiles('#file-input', f.path);
  await waitForPercent(page, f.name, 20);

  const pause = row(page, f.name).locator('button.pause');
  await pause.focus();
  await page.keyboard.press('Enter');
  await waitForState(page, f.name, 'paused');
  assert.equal(await pause.textContent(), 'Resume');
  assert.match(await row(page, f.name).locator('.status').textContent(), /Paused/);
  const requestsAtPause = proxy.chunkRequests;
  await page.waitForTimeout(1000);
  assert.equal(proxy.chunkRequests, requestsAtPause, 'no chunk is sent while paused');
  const percentPaused = Number(await row(page, f.name).locator('.bar').getAttribute('aria-valuenow'));
  assert.ok(percentPaused >= 20 && percentPaused < 100, `paused at ${percentPaused} %`);

  await page.keyboard.press('Enter');
  await waitForState(page, f.name, 'completed');
  const upload = await completedUpload(page, server, f.name);
  assert.equal(upload.file.sha256, f.sha256);
  assertNeverBackwards(await progressLog(page, f.name), f.name);
});

test('after a reload and a closed tab, the same file continues where it stopped', { timeout: 60_000 }, async (t) => {
  const { server, proxy, browser } = await setup(t, { proxy: { chunkDelay: 120 } });
  const f = file(t, 'lecture.bin', 2 * MiB);
  const url = `${proxy.origin}/?chunkSize=${64 * 1024}&parallel=2`;

  let page = await openDemo(browser.context, url);
  await page.setInputFiles('#file-input', f.path);
  await waitForPercent(page, f.name, 25);
  const firstSession = proxy.chunkBytes;
  await page.reload();

  await page.setInputFiles('#file-input', f.path);
  await waitForPercent(page, f.name, 60);
  assert.match(await row(page, f.name).locator('.status').textContent(), /continuing/);
  const secondSession = proxy.chunkBytes - firstSession;
  const startedAfterReload = (await progressLog(page, f.name))[0];
  // The bar showed 25 % with up to two 64 KiB chunks (6 %) of it in flight.
  assert.ok(startedAfterReload >= 18, `after the reload the bar starts at ${startedAfterReload} %, not 0`);
  await page.close();

  page = await openDemo(browser.context, url);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'completed');
  const thirdSession = proxy.chunkBytes - firstSession - secondSession;
  const startedAfterClose = (await progressLog(page, f.name))[0];
  assert.ok(startedAfterClose >= 53, `in the new tab the bar starts at ${startedAfterClose} %`);

  const upload = await completedUpload(page, server, f.name);
  assert.equal(upload.file.sha256, f.sha256);
  // Each later page sent only what was missing, not the file again.
  assert.ok(secondSession > 0 && secondSession < f.size * 0.8, `after the reload: ${secondSession} bytes`);
  assert.ok(thirdSession > 0 && thirdSession < f.size * 0.5, `in the new tab: ${thirdSession} bytes`);
  // The server stored each byte once: chunks cut off by the reload were not counted.
  assert.equal(await server.metric(RECEIVED), f.size);
  assertNeverBackwards(await progressLog(page, f.name), f.name);
});

test('a remembered upload the server no longer has starts afresh', { timeout: 60_000 }, async (t) => {
  const { server, proxy, browser } = await setup(t, { proxy: { chunkDelay: 120 } });
  const f = file(t, 'forgotten.bin', 1 * MiB);
  const url = `${proxy.origin}/?chunkSize=${64 * 1024}&parallel=2`;
  let page = await openDemo(browser.context, url);
  await page.setInputFiles('#file-input', f.path);
  await waitForPercent(page, f.name, 20);
  const remembered = await page.evaluate(() => Object.values(localStorage).map((v) => JSON.parse(v).id));
  assert.equal(remembered.length, 1, 'the page remembers one upload');
  await page.close();
  // Gone on the server's side (as after expiry): DELETE answers 410 from now on.
  const del = await fetch(server.url(`/api/v1/uploads/${remembered[0]}`), { method: 'DELETE' });
  assert.equal(del.status, 204);

  page = await openDemo(browser.context, url);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'completed');
  const upload = await completedUpload(page, server, f.name);
  assert.notEqual(upload.id, remembered[0]);
  assert.equal(upload.file.sha256, f.sha256);
  assert.ok(!(await statusLog(page, f.name)).some((m) => /continuing/.test(m)), 'not shown as a resume');
  assert.deepEqual(await page.evaluate(() => Object.keys(localStorage)), [], 'a completed upload is forgotten');
});

test('a server killed mid-upload and started again: the upload goes on and completes', { timeout: 60_000 }, async (t) => {
  const { server, proxy, browser } = await setup(t, { proxy: { chunkDelay: 100 } });
  const f = file(t, 'restart.bin', 2 * MiB);
  const page = await openDemo(browser.context, `${proxy.origin}/?chunkSize=${64 * 1024}&parallel=2`);
  await page.setInputFiles('#file-input', f.path);
  await waitForPercent(page, f.name, 40);

  await server.kill();
  await page.waitForFunction(
    (n) => /could not be reached|not reachable/.test(
      [...document.querySelectorAll('li.upload')].find((li) => li.querySelector('.name').textContent === n)
        ?.querySelector('.status').textContent ?? ''),
    f.name,
    { timeout: 10_000 },
  );
  await server.restart();
  await waitForState(page, f.name, 'completed');

  const upload = await completedUpload(page, server, f.name);
  assert.equal(upload.file.sha256, f.sha256);
  const afterRestart = await server.metric(RECEIVED);
  // At least 34 % was stored before the kill; a chunk cut off by it is sent again.
  assert.ok(afterRestart > 0 && afterRestart < f.size * 0.75, `the restarted server received ${afterRestart} bytes`);
  assertNeverBackwards(await progressLog(page, f.name), f.name);
});

test('a chunk that fails twice is sent a third time and the upload completes', { timeout: 60_000 }, async (t) => {
  const FLAKY = 3;
  const { server, proxy, browser } = await setup(t, {
    proxy: { fault: (index, attempt) => (index === FLAKY ? { 1: '503', 2: 'drop' }[attempt] ?? null : null) },
  });
  const f = file(t, 'flaky.bin', 1 * MiB);
  const page = await openDemo(browser.context, `${proxy.origin}/?chunkSize=${64 * 1024}&parallel=3`);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'completed');

  assert.equal(proxy.attempts.get(FLAKY), 3, 'a 503, a dropped connection, then success');
  const retries = (await statusLog(page, f.name)).filter((m) => /Trying again/.test(m));
  assert.equal(retries.length, 2, `the uploader retried twice: ${retries.join(' | ')}`);
  assert.match(retries[0], /injected by the test proxy.*in 1 s/, 'the 503 is retried after its Retry-After: 1');
  assert.match(retries[1], /could not be reached/);
  for (const [index, n] of proxy.attempts) if (index !== FLAKY) assert.equal(n, 1, `chunk ${index}`);
  const upload = await completedUpload(page, server, f.name);
  assert.equal(upload.file.sha256, f.sha256);
  assertNeverBackwards(await progressLog(page, f.name), f.name);
});

test('a chunk damaged on the way fails its Content-Digest and is reported, not retried', { timeout: 60_000 }, async (t) => {
  const { proxy, browser } = await setup(t, {
    proxy: { fault: (index) => (index === 1 ? 'corrupt' : null) },
  });
  const f = file(t, 'damaged.bin', 512 * 1024);
  const page = await openDemo(browser.context, `${proxy.origin}/?chunkSize=${64 * 1024}&parallel=1`);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'failed');
  const status = await row(page, f.name).locator('.status').textContent();
  assert.match(status, /digest_mismatch/);
  assert.equal(proxy.attempts.get(1), 1, 'a 422 is not retried');
  assert.equal(await page.locator('#announcer').textContent(), `${f.name}: ${status}`);
});

/**
 * An application's page on an origin of its own (http://localhost:P), which
 * embeds the uploader module as the README shows: it serves the module's
 * files itself and exposes `window.tranche` to the test.
 */
async function startAppPage(t) {
  const app = createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.slice(1);
    if (['tranche-upload.js', 'tranche-core.js'].includes(name)) {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      return res.end(readFileSync(join(STATIC_DIR, name)));
    }
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end('<!doctype html><title>app</title><script type="module">window.tranche = await import("/tranche-upload.js");</script>');
  });
  await new Promise((ok) => app.listen(0, '127.0.0.1', ok));
  t.after(() => new Promise((ok) => app.close(ok)));
  return `http://localhost:${app.address().port}`;
}

test('a page on another origin uploads when [cors] allows that origin, and only then', { timeout: 60_000 }, async (t) => {
  const pageOrigin = await startAppPage(t);
  const { server, browser } = await setup(t, { env: { TRANCHE_CORS__ALLOWED_ORIGINS: `["${pageOrigin}"]` } });
  const page = await browser.context.newPage();
  await page.goto(`${pageOrigin}/`);
  await page.waitForFunction(() => window.tranche);
  const result = await page.evaluate(async (endpoint) => {
    const bytes = new Uint8Array(256 * 1024).map((_, i) => (i * 31) % 251);
    const upload = new window.tranche.Upload(new File([bytes], 'embedded.bin'), { endpoint, chunkSize: 64 * 1024 });
    const file = await upload.start();
    return { id: upload.id, url: file.url };
  }, `${server.origin}/api/v1`);
  const upload = await server.json(`/api/v1/uploads/${result.id}`);
  assert.equal(upload.status, 'completed');
  assert.equal(upload.chunk_count, 4);
  assert.equal(result.url, new URL(upload.file.url, server.origin).href, "the file's URL is on the server's origin");

  // The same call from an origin that is not on the list is refused by the browser.
  const stranger = await openDemo(browser.context, `${server.origin.replace('127.0.0.1', 'localhost')}/`);
  const outcome = await stranger.evaluate(
    (api) => fetch(`${api}/uploads`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"filename":"x","size":1}' })
      .then((r) => `answered ${r.status}`, () => 'blocked'),
    `${server.origin}/api/v1`,
  );
  assert.equal(outcome, 'blocked');
});

test('the demo page talks only to its own origin: ?endpoint= is ignored, and its CSP blocks other origins', { timeout: 60_000 }, async (t) => {
  const { server, browser } = await setup(t);
  // Another server that would accept the files (and answer with a
  // javascript: file URL): it must see no request at all.
  const other = await Tranche.start();
  t.after(() => other.stop());
  const f = file(t, 'private.bin', 100 * 1024);
  const page = await openDemo(browser.context, `${server.origin}/?endpoint=${encodeURIComponent(`${other.origin}/api/v1`)}&chunkSize=${64 * 1024}`);
  const origins = new Set();
  page.on('request', (req) => origins.add(new URL(req.url()).origin));
  const violations = [];
  page.on('console', (m) => m.type() === 'error' && violations.push(m.text()));
  assert.equal(await page.locator('#endpoint-hint').textContent(), `Sending to ${server.origin}/api/v1`);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'completed');
  const upload = await completedUpload(page, server, f.name);
  assert.equal(upload.file.sha256, f.sha256);
  assert.deepEqual([...origins], [server.origin], 'every request went to the page\'s own origin');
  assert.equal(await other.metric('tranche_uploads_total{event="created"}'), 0);
  assert.deepEqual(violations, [], 'no console errors (no CSP violation, no favicon 404)');

  // The stylesheet still applies under the CSP.
  const border = await page.locator('.drop-zone').evaluate((el) => getComputedStyle(el).borderStyle);
  assert.equal(border, 'dashed');
  // Even script in the page cannot reach another origin.
  const outcome = await page.evaluate(
    (api) => fetch(`${api}/healthz`).then((r) => `answered ${r.status}`, () => 'blocked'),
    other.origin,
  );
  assert.equal(outcome, 'blocked');
  assert.ok(violations.some((v) => /Content Security Policy/.test(v)), `the CSP refused it: ${violations.join(' | ')}`);
});

test('the same file chosen again while it uploads flashes its row instead of a second one; finished rows can be dismissed', { timeout: 60_000 }, async (t) => {
  const { server, proxy, browser } = await setup(t, { proxy: { chunkDelay: 150 } });
  const f = file(t, 'again.bin', 1 * MiB);
  const page = await openDemo(browser.context, `${proxy.origin}/?chunkSize=${64 * 1024}&parallel=2`);
  await page.setInputFiles('#file-input', f.path);
  await waitForPercent(page, f.name, 10);
  await page.setInputFiles('#file-input', f.path);
  assert.equal(await page.locator('li.upload').count(), 1, 'one row for the file');
  assert.match(await row(page, f.name).getAttribute('class'), /flash/);
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), f.name, 'its row has the focus');
  for (const [button, label] of [['pause', 'Pause'], ['cancel', 'Cancel']]) {
    assert.equal(await row(page, f.name).locator(`button.${button}`).getAttribute('aria-label'), `${label} ${f.name}`);
  }

  // Cancel from the keyboard: the button goes away, focus stays in the row.
  await row(page, f.name).locator('button.cancel').focus();
  await page.keyboard.press('Enter');
  await waitForState(page, f.name, 'aborted');
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label')), `Dismiss ${f.name}`);
  assert.equal(await row(page, f.name).locator('button:visible').count(), 1, 'only Dismiss is left: no dead buttons');
  const id = await row(page, f.name).evaluate((li) => li.upload.id);
  assert.equal((await fetch(server.url(`/api/v1/uploads/${id}`))).status, 410, 'cancel deleted it on the server');

  // Now the same file starts a new row; the old one can be dismissed.
  await page.setInputFiles('#file-input', f.path);
  assert.equal(await page.locator('li.upload').count(), 2);
  await page.locator('li.upload[data-state="aborted"] button.dismiss').click();
  assert.equal(await page.locator('li.upload').count(), 1);
  await waitForState(page, f.name, 'completed');
});

test('after Retry on a failed row, choosing the same file again flashes that row instead of racing it', { timeout: 60_000 }, async (t) => {
  // Chunk 0's first attempt: 507, which fails the upload (no retry by itself).
  const { server, proxy, browser } = await setup(t, {
    proxy: { chunkDelay: 100, fault: (index, attempt) => (index === 0 && attempt === 1 ? '507' : null) },
  });
  const f = file(t, 'retried.bin', 1 * MiB);
  const page = await openDemo(browser.context, `${proxy.origin}/?chunkSize=${64 * 1024}&parallel=1`);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'failed');
  await row(page, f.name).locator('button.retry').click();
  await page.setInputFiles('#file-input', f.path);
  assert.equal(await page.locator('li.upload').count(), 1, 'one row for the file');
  assert.match(await row(page, f.name).getAttribute('class'), /flash/);
  await waitForState(page, f.name, 'completed');
  const upload = await completedUpload(page, server, f.name);
  assert.equal(upload.file.sha256, f.sha256);
});

/** The bar's two shades as the page paints them: saved, and sent (saved or on its way). */
async function shades(page, name) {
  return row(page, name).evaluate((li) => {
    const bar = li.querySelector('.bar');
    return {
      saved: Number(bar.style.getPropertyValue('--saved')),
      sent: Number(bar.style.getPropertyValue('--fraction')),
      percent: Number(bar.getAttribute('aria-valuenow')),
      text: li.querySelector('.percent').textContent,
    };
  });
}

test('the bar shows what the server saved apart from what is on its way; Done offers a link to copy; warnings are shown', { timeout: 60_000 }, async (t) => {
  const CHUNK = 64 * 1024;
  // Chunks 4 and 5: the browser sends them whole, the server gets nothing.
  const { server, proxy, browser } = await setup(t, { proxy: { fault: (index, attempt) => (attempt === 1 && (index === 4 || index === 5) ? 'hold' : null) } });
  const f = file(t, 'two-shades.bin', 8 * CHUNK);
  const page = await openDemo(browser.context, `${proxy.origin}/?chunkSize=${CHUNK}&parallel=2`);
  await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: proxy.origin });
  // The create answer carries warnings, as for a field the server ignored.
  await page.route('**/api/v1/uploads', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    const response = await route.fetch();
    const json = { ...(await response.json()), warnings: ['unknown field sha_256 ignored'] };
    await route.fulfill({ response, json });
  });
  await page.setInputFiles('#file-input', f.path);
  await page.waitForFunction(
    (n) => {
      const li = [...document.querySelectorAll('li.upload')].find((l) => l.querySelector('.name').textContent === n);
      const bar = li?.querySelector('.bar');
      return bar && Number(bar.style.getPropertyValue('--fraction')) === 0.75 && Number(bar.style.getPropertyValue('--saved')) === 0.5;
    },
    f.name,
    { timeout: 20_000, polling: 20 },
  );
  const stalled = await shades(page, f.name);
  const id = await page.evaluate(() => Object.values(localStorage).map((v) => JSON.parse(v).id)[0]);
  const onServer = await server.json(`/api/v1/uploads/${id}`);
  assert.equal(onServer.bytes_received, 4 * CHUNK, 'the server holds four chunks');
  // The percentage is what the server holds, not what left the browser.
  assert.equal(stalled.percent, 50);
  assert.equal(stalled.text, '50 % saved');
  const label = await row(page, f.name).locator('.bar').getAttribute('aria-valuetext');
  assert.match(label, /^50 % saved: 256 KiB of 512 KiB, 128 KiB more on its way$/);
  // Painted (once the bar's transition ends): the full shade over half the
  // bar, the light one over three quarters.
  await page.waitForFunction(
    (n) => {
      const li = [...document.querySelectorAll('li.upload')].find((l) => l.querySelector('.name').textContent === n);
      const width = (sel) => li.querySelector(sel).getBoundingClientRect().width;
      const bar = width('.bar');
      return Math.abs(width('.fill') - bar * 0.5) < 2 && Math.abs(width('.sending') - bar * 0.75) < 2;
    },
    f.name,
    { timeout: 5_000, polling: 20 },
  );
  assert.equal(
    await row(page, f.name).locator('.warnings').textContent(),
    'The server warns: unknown field sha_256 ignored.',
  );

  proxy.release();
  await waitForState(page, f.name, 'completed');
  assert.equal((await shades(page, f.name)).text, '100 %');
  const copy = row(page, f.name).locator('button.copy');
  assert.equal(await copy.isVisible(), true, 'Done offers a copy button');
  await copy.click();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  const href = await row(page, f.name).locator('a.link').getAttribute('href');
  assert.equal(copied, new URL(href, proxy.origin).href);
  assert.match(copied, /^http:\/\/127\.0\.0\.1:\d+\/api\/v1\/files\//);
  assert.equal(await sha256OfUrl(copied), f.sha256, 'the copied link serves the file');
  assertNeverBackwards(await progressLog(page, f.name), f.name);
});

test('a resumed upload of which the server kept nothing says it starts from 0', { timeout: 60_000 }, async (t) => {
  const CHUNK = 64 * 1024;
  const { server, proxy, browser } = await setup(t, { proxy: { fault: (index, attempt) => (attempt === 1 && index < 2 ? 'hold' : null) } });
  const f = file(t, 'nothing-kept.bin', 4 * CHUNK);
  const url = `${proxy.origin}/?chunkSize=${CHUNK}&parallel=2`;
  let page = await openDemo(browser.context, url);
  await page.setInputFiles('#file-input', f.path);
  // Two chunks sent whole from the browser's side, none saved.
  await page.waitForFunction(
    (n) => {
      const li = [...document.querySelectorAll('li.upload')].find((l) => l.querySelector('.name').textContent === n);
      return Number(li?.querySelector('.bar').style.getPropertyValue('--fraction')) === 0.5;
    },
    f.name,
    { timeout: 20_000, polling: 20 },
  );
  assert.equal((await shades(page, f.name)).text, '0 % saved');
  // The held requests stay held (released, Chromium would silently send them
  // again on a new connection, and the server would have them after all).
  await page.close();

  page = await openDemo(browser.context, url);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'completed');
  const said = await statusLog(page, f.name);
  assert.ok(said.some((m) => /from the start/.test(m)), `said: ${said.join(' | ')}`);
  assert.ok(!said.some((m) => /continuing/.test(m)), `said: ${said.join(' | ')}`);
  const upload = await completedUpload(page, server, f.name);
  assert.equal(upload.file.sha256, f.sha256);
});
