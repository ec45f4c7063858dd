// The demo page with authentication on, in the presigned-URL flow: a create
// token minted by `tranche token create` lets the browser start an upload,
// whose chunks then go with the upload's own token (API.md "Authentication").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { launch, openDemo, row, waitForPercent, waitForState } from '../lib/browser.js';
import { makeFile, sha256OfUrl } from '../lib/files.js';
import { Proxy } from '../lib/proxy.js';
import { Tranche } from '../lib/server.js';

const MiB = 1 << 20;
const API_KEY = 'e2e-browser-api-key-0123456789';
const AUTH = {
  TRANCHE_AUTH__ENABLED: 'true',
  TRANCHE_AUTH__JWT_SECRET: 'e2e-browser-jwt-secret-0123456789abcdef',
  TRANCHE_AUTH__API_KEYS: JSON.stringify([API_KEY]),
};
const CREATED = 'tranche_uploads_total{event="created"}';

async function setup(t) {
  const server = await Tranche.start(AUTH, { apiKey: API_KEY });
  t.after(() => server.stop());
  const browser = await launch();
  t.after(() => browser.close());
  return { server, browser };
}

function file(t, name, size) {
  const f = makeFile(name, size);
  t.after(() => f.remove());
  return f;
}

/**
 * Records the page's API requests with the Authorization each carried, as
 * Chromium sent them; the returned function gives the log so far.
 */
function recordApiRequests(page) {
  const log = [];
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (!url.pathname.startsWith('/api/v1/')) return;
    const isCreate = req.method() === 'POST' && url.pathname === '/api/v1/uploads';
    log.push(
      req.allHeaders().then((h) => ({
        method: req.method(),
        path: url.pathname,
        authorization: h.authorization ?? null,
        body: isCreate ? req.postDataJSON() : undefined,
      })),
    );
  });
  return () => Promise.all(log);
}

function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

test('with a create token from `tranche token create`, the demo page uploads and its chunks carry the upload token', { timeout: 60_000 }, async (t) => {
  const { server, browser } = await setup(t);
  // The demo page declares Chromium's type for a .bin file, application/octet-stream.
  const createToken = await server.mintToken('--max-size', '10MiB', '--content-type', 'application/*', '--ttl', '10m');
  const f = file(t, 'report.bin', 3 * MiB);
  const page = await openDemo(browser.context, `${server.origin}/?token=${encodeURIComponent(createToken)}&chunkSize=${512 * 1024}`);
  const requests = recordApiRequests(page);
  await page.setInputFiles('#file-input', f.path);
  // A refused credential fails the row at once: report it then, not at a timeout.
  const done = row(page, f.name).and(page.locator('[data-state="completed"], [data-state="failed"]'));
  await done.waitFor({ timeout: 30_000 });
  assert.equal(await done.getAttribute('data-state'), 'completed', await row(page, f.name).locator('.status').textContent());

  const id = await row(page, f.name).getAttribute('data-upload-id');
  const upload = await server.json(`/api/v1/uploads/${id}`);
  assert.equal(upload.status, 'completed');
  assert.equal(upload.file.size, f.size);
  assert.equal(upload.file.sha256, f.sha256);
  assert.equal(upload.chunk_count, 6);

  const log = await requests();
  const creates = log.filter((r) => r.method === 'POST' && r.path === '/api/v1/uploads');
  assert.equal(creates.length, 1);
  assert.equal(creates[0].authorization, `Bearer ${createToken}`, 'the create carried the create token');
  assert.equal(creates[0].body.content_type, 'application/octet-stream');
  const chunks = log.filter((r) => r.method === 'PUT');
  assert.equal(chunks.length, upload.chunk_count, 'each chunk once: none was refused and retried');
  const chunkAuth = new Set(chunks.map((r) => r.authorization));
  assert.equal(chunkAuth.size, 1, 'every chunk carried the same credential');
  const [authorization] = chunkAuth;
  assert.notEqual(authorization, `Bearer ${createToken}`, 'the chunks did not carry the create token');
  const uploadToken = authorization.replace(/^Bearer /, '');
  assert.equal(claims(uploadToken).upload_id, upload.id, "the chunks carried this upload's token");
  const completes = log.filter((r) => r.path === `/api/v1/uploads/${upload.id}/complete`);
  assert.deepEqual(completes.map((r) => r.authorization), [authorization]);

  // The page's download link carries the upload's token, so it works when a
  // browser follows it, with no header at all...
  const href = await row(page, f.name).locator('a.link').getAttribute('href');
  const fileUrl = new URL(upload.file.url, server.origin).href;
  assert.equal(href, `${fileUrl}?access_token=${encodeURIComponent(uploadToken)}`);
  const download = await fetch(href, { signal: AbortSignal.timeout(10_000) });
  assert.equal(download.status, 200);
  assert.ok(Buffer.from(await download.arrayBuffer()).equals(readFileSync(f.path)), 'downloaded bytes equal the file');
  assert.equal(await sha256OfUrl(fileUrl, { Authorization: authorization }), f.sha256);
  assert.equal(await sha256OfUrl(fileUrl, server.headers), f.sha256);
  // ...while the bare file URL needs credentials (public_downloads is off),
  // and the create token does not cover it.
  assert.equal((await fetch(fileUrl, { signal: AbortSignal.timeout(10_000) })).status, 401);
  const withCreateToken = await fetch(fileUrl, { headers: { Authorization: `Bearer ${createToken}` }, signal: AbortSignal.timeout(10_000) });
  assert.equal(withCreateToken.status, 403);

  assert.equal(await server.metric(CREATED), 1);
  assert.deepEqual(await page.evaluate(() => Object.keys(localStorage)), [], 'a completed upload is forgotten');
});

test("without a token the demo page shows the server's unauthorized message and nothing is created", { timeout: 60_000 }, async (t) => {
  const { server, browser } = await setup(t);
  const refusal = await fetch(server.url('/api/v1/uploads'), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ filename: 'probe.bin', size: 1 }),
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(refusal.status, 401);
  const { error, message } = await refusal.json();
  assert.equal(error, 'unauthorized');

  const f = file(t, 'anonymous.bin', 256 * 1024);
  const page = await openDemo(browser.context, `${server.origin}/`);
  const requests = recordApiRequests(page);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'failed', 10_000);

  const status = await row(page, f.name).locator('.status').textContent();
  assert.ok(status.includes(`${message} (unauthorized)`), `the row says why: ${status}`);
  assert.equal(await page.locator('#announcer').textContent(), `${f.name}: ${status}`);
  const log = await requests();
  assert.deepEqual(
    log.map((r) => `${r.method} ${r.path} ${r.authorization}`),
    ['POST /api/v1/uploads null'],
    'one create without credentials, not retried, and no chunk',
  );
  assert.equal(await server.metric(CREATED), 0);
  assert.deepEqual(await page.evaluate(() => Object.keys(localStorage)), [], 'nothing to resume');
});

/** A server whose upload tokens live 3 s, behind a proxy that slows chunks down. */
async function setupShortTokens(t, chunkDelay) {
  const server = await Tranche.start(
    { ...AUTH, TRANCHE_AUTH__UPLOAD_TOKEN_TTL: '3s', TRANCHE_AUTH__CLOCK_LEEWAY: '0s' },
    { apiKey: API_KEY },
  );
  t.after(() => server.stop());
  const proxy = await Proxy.start(server.origin, { chunkDelay });
  t.after(() => proxy.stop());
  const browser = await launch();
  t.after(() => browser.close());
  const createToken = await server.mintToken('--ttl', '10m');
  const url = `${proxy.origin}/?token=${encodeURIComponent(createToken)}&chunkSize=${64 * 1024}&parallel=2`;
  return { server, proxy, browser, url };
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

test("an upload token that expired (saved for a reload, or while paused) is dropped, and the page's token starts afresh", { timeout: 60_000 }, async (t) => {
  const { server, browser, url } = await setupShortTokens(t, 150);
  const f = file(t, 'expiring.bin', 1 * MiB);

  // Paused past the upload token's life, then resumed.
  let page = await openDemo(browser.context, url);
  await page.setInputFiles('#file-input', f.path);
  await waitForPercent(page, f.name, 20);
  await row(page, f.name).locator('button.pause').click();
  await waitForState(page, f.name, 'paused');
  await sleep(4000);
  await row(page, f.name).locator('button.pause').click();
  await waitForState(page, f.name, 'completed');
  let upload = await server.json(`/api/v1/uploads/${await row(page, f.name).getAttribute('data-upload-id')}`);
  assert.equal(upload.file.sha256, f.sha256);
  assert.equal(await server.metric(CREATED), 2, 'a second upload replaced the one its token no longer reaches');

  // Remembered across a closed tab past the token's life.
  const g = file(t, 'expiring-2.bin', 1 * MiB);
  await page.setInputFiles('#file-input', g.path);
  await waitForPercent(page, g.name, 20);
  const saved = await page.evaluate(() => Object.values(localStorage).map((v) => JSON.parse(v)));
  assert.equal(saved.length, 1);
  assert.ok(saved[0].token, 'the upload token is remembered');
  await page.close();
  await sleep(4000);
  page = await openDemo(browser.context, url);
  await page.setInputFiles('#file-input', g.path);
  await waitForState(page, g.name, 'completed', 20_000);
  const id = await row(page, g.name).getAttribute('data-upload-id');
  assert.notEqual(id, saved[0].id);
  upload = await server.json(`/api/v1/uploads/${id}`);
  assert.equal(upload.file.sha256, g.sha256);
  assert.deepEqual(await page.evaluate(() => Object.keys(localStorage)), [], 'the expired entry is gone');
});

test('a chunk refused because the upload token expired says so, and the Retry button starts afresh', { timeout: 60_000 }, async (t) => {
  const { server, proxy, browser, url } = await setupShortTokens(t, 1200);
  const f = file(t, 'slow.bin', 1 * MiB);
  const page = await openDemo(browser.context, url);
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'failed', 30_000);
  const status = await row(page, f.name).locator('.status').textContent();
  assert.match(status, /token has expired or is not valid/);
  assert.match(status, /\(unauthorized\)/);
  const retry = row(page, f.name).locator('button.retry');
  assert.equal(await retry.getAttribute('aria-label'), `Retry ${f.name}`);
  assert.equal(await row(page, f.name).locator('button.pause').isVisible(), false, 'no dead Pause button on a failed row');

  proxy.chunkDelay = 0;
  await retry.focus();
  await page.keyboard.press('Enter');
  await waitForState(page, f.name, 'completed', 20_000);
  const upload = await server.json(`/api/v1/uploads/${await row(page, f.name).getAttribute('data-upload-id')}`);
  assert.equal(upload.file.sha256, f.sha256);
  const focused = await page.evaluate(() => document.activeElement.getAttribute('aria-label'));
  assert.equal(focused, `Download ${f.name}`, 'focus stays in the row, on its Download link');
});

test('an upload created by the backend uses the token given with uploadId, not a saved one; a token function is asked', { timeout: 60_000 }, async (t) => {
  const { server, browser } = await setup(t);
  const createToken = await server.mintToken('--ttl', '10m');
  const page = await openDemo(browser.context, `${server.origin}/`);
  const size = 100_000;
  const created = await (await fetch(server.url('/api/v1/uploads'), {
    method: 'POST',
    headers: { ...server.headers, 'Content-Type': 'application/json' },
    body: JSON.stringify({ filename: 'backend.bin', size, chunk_size: 16384 }),
  })).json();
  const out = await page.evaluate(async ({ id, token, createToken, size }) => {
    const M = await import('/tranche-upload.js');
    const f = new File([new Uint8Array(size)], 'backend.bin', { lastModified: 1 });
    // An older page saved this upload with a token that no longer works.
    const key = `tranche:v1:${location.origin}/api/v1|${size}|1|backend.bin`;
    localStorage.setItem(key, JSON.stringify({ id, token: 'expired.or.garbage' }));
    const first = await new M.Upload(f, { uploadId: id, token }).start().then((x) => x.size, (e) => `${e.status} ${e.code}`);
    let asked = 0;
    const g = new File([new Uint8Array(1000)], 'fn.bin');
    const second = await new M.Upload(g, { token: async () => { asked++; return createToken; } }).start().then((x) => x.size, (e) => `${e.status} ${e.code}`);
    return { first, second, asked };
  }, { id: created.id, token: created.upload_token, createToken, size });
  assert.equal(out.first, size);
  assert.equal(out.second, 1000);
  assert.ok(out.asked >= 1, 'the token function was asked');
});
