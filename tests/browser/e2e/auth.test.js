// The demo page with authentication on, in the presigned-URL flow: a create
// token minted by `tranche token create` lets the browser start an upload,
// whose chunks then go with the upload's own token (API.md "Authentication").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { launch, openDemo, row, waitForState } from '../lib/browser.js';
import { makeFile, sha256OfUrl } from '../lib/files.js';
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
