// tus clients where most of them run: in a browser. tus-js-client's published
// bundle uploads a Blob made in the page (same origin, and from another origin
// through CORS), and Uppy's published bundle (Dashboard + Tus) uploads a file
// chosen in its Dashboard, pauses and resumes it, picks it up again in a new
// tab after the first was closed mid-upload, and uploads from another origin
// with a create token minted for it.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { launch, serveSite, site } from '../lib/browser.js';
import { KiB, MiB, headOffset, idOf, makeFile } from '../lib/files.js';
import { Tranche } from '../lib/server.js';

async function serve(t, env = {}) {
  const server = await Tranche.start({ env: { TRANCHE_STATIC_DIR: site(t), ...env } });
  t.after(() => server.stop());
  return server;
}

function file(t, name, size) {
  const f = makeFile(name, size);
  t.after(() => f.remove());
  return f;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function assertStored(server, uploadUrl, sha256, size) {
  const id = idOf(uploadUrl);
  const upload = await server.completed(id);
  assert.equal(upload.file.size, size);
  assert.equal(upload.file.sha256, sha256, "the server's SHA-256 is the page's");
  assert.equal(await server.downloadSha256(id), sha256, 'the download serves the same bytes');
  return upload;
}

test('tus-js-client in Chromium uploads a 5 MiB Blob in 512 KiB PATCHes', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const page = await (await launch(t)).newPage();
  await page.goto(server.url('/tus-js-client.html'));
  const got = await page.evaluate(([e, s]) => window.upload(e, s, { chunkSize: 512 * 1024 }), [server.endpoint, 5 * MiB]);
  assert.equal(got.patches, 10);
  await assertStored(server, got.url, got.sha256, 5 * MiB);
});

test('tus-js-client in Chromium from a page on another origin (CORS)', { timeout: 60_000 }, async (t) => {
  const dir = site(t);
  const pageOrigin = await serveSite(t, dir);
  const server = await serve(t, { TRANCHE_CORS__ALLOWED_ORIGINS: JSON.stringify([pageOrigin]) });
  const page = await (await launch(t)).newPage();
  await page.goto(`${pageOrigin}/tus-js-client.html`);
  const got = await page.evaluate(([e, s]) => window.upload(e, s, { chunkSize: 256 * 1024 }), [server.endpoint, 1 * MiB + 3]);
  assert.equal(got.patches, 5);
  await assertStored(server, got.url, got.sha256, 1 * MiB + 3);
});

/**
 * Opens the Uppy page (from tranche's origin unless `origin` says otherwise)
 * and adds `f` through the Dashboard's file input.
 */
async function uppyWith(context, server, f, chunkSize, { origin = server.origin, token } = {}) {
  const page = await context.newPage();
  const q = new URLSearchParams({ endpoint: server.endpoint, chunkSize: String(chunkSize), ...(token ? { token } : {}) });
  await page.goto(`${origin}/uppy.html?${q}`);
  await page.locator('.uppy-Dashboard-input').first().setInputFiles(f.path);
  await page.waitForFunction((n) => window.uppy.getFiles().some((x) => x.name === n), f.name);
  return page;
}

/**
 * The upload URLs tus-js-client (inside Uppy) keeps in localStorage, keyed by
 * the file's fingerprint (name, type, size, modification time, endpoint).
 */
function rememberedUploads(page) {
  return page.evaluate(() =>
    Object.keys(localStorage)
      .filter((k) => k.startsWith('tus::'))
      .map((k) => JSON.parse(localStorage.getItem(k)).uploadUrl),
  );
}

async function waitForEvent(page, type, timeout = 60_000) {
  await page.waitForFunction((ty) => window.events.some((e) => e.type === ty), type, { timeout, polling: 50 });
  return page.evaluate((ty) => window.events.find((e) => e.type === ty), type);
}

async function assertUppySucceeded(page, server, f) {
  const done = await waitForEvent(page, 'complete');
  const errors = await page.evaluate(() => window.events.filter((e) => e.type === 'error'));
  assert.deepEqual(errors, [], 'Uppy reported no error');
  assert.equal(done.ok, 1, 'Uppy counts the file as uploaded');
  const success = await waitForEvent(page, 'success');
  const upload = await assertStored(server, success.url, f.sha256, f.size);
  assert.equal(upload.filename, f.name, "Uppy's name metadata became the filename");
  return success.url;
}

test('Uppy (Dashboard + Tus) uploads a file chosen in the Dashboard', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'report.pdf', 3 * MiB + 100);
  const page = await uppyWith(await launch(t), server, f, 512 * KiB);
  // As a person would: the Dashboard's own Upload button, then its status bar.
  await page.locator('.uppy-StatusBar-actionBtn--upload').click();
  await page.locator('.uppy-StatusBar.is-complete').waitFor({ timeout: 60_000 });
  await assertUppySucceeded(page, server, f);
});

test('Uppy: paused mid-upload the server offset stays put, resumed it completes', { timeout: 90_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'video.bin', 8 * MiB);
  const page = await uppyWith(await launch(t), server, f, 256 * KiB);
  void page.evaluate(() => window.uppy.upload());
  await page.waitForFunction(() => window.progress >= 2 * 1024 * 1024, null, { polling: 10 });
  await page.evaluate(() => window.uppy.pauseAll());
  const [url] = await rememberedUploads(page);
  assert.ok(url, 'the upload URL is known');
  // The PATCH in flight when pausing may still land; after that, nothing moves.
  await sleep(1000);
  const paused = await headOffset(url);
  assert.ok(paused > 0 && paused < f.size, `paused at ${paused} of ${f.size}`);
  await sleep(1000);
  assert.equal(await headOffset(url), paused, 'no bytes arrive while paused');
  await page.evaluate(() => window.uppy.resumeAll());
  const finalUrl = await assertUppySucceeded(page, server, f);
  assert.equal(finalUrl, url, 'the paused upload was continued, not started again');
});

test('Uppy: a tab closed mid-upload, the same file added in a new tab resumes from the offset', { timeout: 90_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'archive.bin', 8 * MiB);
  const context = await launch(t);
  const first = await uppyWith(context, server, f, 256 * KiB);
  void first.evaluate(() => window.uppy.upload()).catch(() => {});
  await first.waitForFunction(() => window.progress >= 2 * 1024 * 1024, null, { polling: 10 });
  await first.close();

  const second = await context.newPage();
  const q = new URLSearchParams({ endpoint: server.endpoint, chunkSize: String(256 * KiB) });
  await second.goto(server.url(`/uppy.html?${q}`));
  const stored = await rememberedUploads(second);
  assert.equal(stored.length, 1, `one upload remembered: ${stored}`);
  const offset = await headOffset(stored[0]);
  assert.ok(offset > 0 && offset < f.size, `the server has part of it (${offset} bytes)`);

  const requests = [];
  second.on('request', (r) => requests.push({ method: r.method(), url: r.url(), offset: r.headers()['upload-offset'] }));
  await second.locator('.uppy-Dashboard-input').first().setInputFiles(f.path);
  await second.waitForFunction((n) => window.uppy.getFiles().some((x) => x.name === n), f.name);
  void second.evaluate(() => window.uppy.upload());
  const url = await assertUppySucceeded(second, server, f);
  assert.equal(url, stored[0], 'the same upload was continued');
  assert.ok(!requests.some((r) => r.method === 'POST'), 'no new upload was created');
  const firstPatch = requests.find((r) => r.method === 'PATCH');
  assert.ok(Number(firstPatch?.offset) >= offset, `the new tab's first PATCH starts at ${firstPatch?.offset}, not at 0`);
});

test('Uppy on another origin with a create token: CORS and the token on every tus request', { timeout: 60_000 }, async (t) => {
  const pageOrigin = await serveSite(t, site(t));
  const apiKey = 'uppy-test-key-0123456789abcdefghij';
  const server = await Tranche.start({
    env: {
      TRANCHE_AUTH__ENABLED: 'true',
      TRANCHE_AUTH__API_KEYS: JSON.stringify([apiKey]),
      TRANCHE_AUTH__JWT_SECRET: 'uppy-test-secret-0123456789-abcdefghij',
      TRANCHE_CORS__ALLOWED_ORIGINS: JSON.stringify([pageOrigin]),
    },
    apiKey,
  });
  t.after(() => server.stop());
  // What an app's backend hands the page: room for one upload of 4 MiB.
  const token = await server.mintToken('--max-size', '4MiB', '--max-uploads', '1');
  const context = await launch(t);

  const f = file(t, 'photo.bin', 3 * MiB);
  const page = await uppyWith(context, server, f, 512 * KiB, { origin: pageOrigin, token });
  void page.evaluate(() => window.uppy.upload());
  await assertUppySucceeded(page, server, f);

  const big = file(t, 'too-big.bin', 4 * MiB + 1);
  const refused = await uppyWith(context, server, big, 512 * KiB, { origin: pageOrigin, token });
  void refused.evaluate(() => window.uppy.upload());
  const error = await waitForEvent(refused, 'error');
  assert.equal(error.name, big.name, "Uppy reports the file past the token's max size as failed");
  assert.match(error.message, /response code: 4\d\d/, 'refused by tranche, not lost on the way');
});
