// After an upload, a worker processes the file and the page follows it live:
// the uploader's `onProcessing` opens an EventSource on the upload's events
// (API.md "Live progress") with the upload's own token in the query, and the
// demo page shows each report under the bar. The test is the worker: it
// reports with the API key, as an application's worker would.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { launch, openDemo, row, waitForState } from '../lib/browser.js';
import { makeFile } from '../lib/files.js';
import { Tranche } from '../lib/server.js';

const MiB = 1 << 20;
const API_KEY = 'e2e-browser-api-key-0123456789';
const AUTH = {
  TRANCHE_AUTH__ENABLED: 'true',
  TRANCHE_AUTH__JWT_SECRET: 'e2e-browser-jwt-secret-0123456789abcdef',
  TRANCHE_AUTH__API_KEYS: JSON.stringify([API_KEY]),
};

test("the demo page shows a worker's processing reports in order, and stops following after the last", { timeout: 60_000 }, async (t) => {
  const server = await Tranche.start(AUTH, { apiKey: API_KEY });
  t.after(() => server.stop());
  const browser = await launch();
  t.after(() => browser.close());
  const f = makeFile('video.bin', 2 * MiB);
  t.after(() => f.remove());
  const createToken = await server.mintToken('--max-size', '10MiB', '--ttl', '10m');
  const page = await openDemo(
    browser.context,
    `${server.origin}/?token=${encodeURIComponent(createToken)}&chunkSize=${512 * 1024}&processing=on`,
  );
  const streams = [];
  page.on('request', (req) => {
    if (new URL(req.url()).pathname.endsWith('/events')) streams.push(new URL(req.url()));
  });
  await page.setInputFiles('#file-input', f.path);
  await waitForState(page, f.name, 'completed');
  const id = await row(page, f.name).getAttribute('data-upload-id');
  const line = row(page, f.name).locator('.processing');
  assert.equal(await line.isHidden(), true, 'no report yet, no line');

  // Every text the line shows, in order.
  await page.evaluate(() => {
    window.processingLog = [];
    const el = document.querySelector('li.upload .processing');
    new MutationObserver(() => window.processingLog.push(el.textContent)).observe(el, { childList: true });
  });
  const reports = [
    { state: 'queued' },
    { state: 'processing', progress: 0.5, message: 'transcoding' },
    { state: 'completed', message: 'ready to play', result: { poster: '/posters/1.jpg' } },
  ];
  for (const report of reports) {
    const res = await fetch(server.url(`/api/v1/uploads/${id}/processing`), {
      method: 'PUT',
      headers: { ...server.headers, 'Content-Type': 'application/json' },
      body: JSON.stringify(report),
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(res.status, 200, await res.text());
    // The page shows it before the next one is sent: each report in turn.
    await row(page, f.name).and(page.locator(`[data-processing="${report.state}"]`)).waitFor({ timeout: 10_000 });
  }
  assert.deepEqual(await page.evaluate(() => window.processingLog), [
    'Queued for processing.',
    'Processing 50 %: transcoding.',
    'Processed: ready to play.',
  ]);
  assert.equal(await line.isVisible(), true);

  // One stream, for this upload, with the upload's token in the query (the
  // create token never goes into a URL).
  assert.equal(streams.length, 1, streams.join(' '));
  assert.equal(streams[0].pathname, `/api/v1/uploads/${id}/events`);
  const token = streams[0].searchParams.get('access_token');
  assert.ok(token && token !== createToken, 'the upload token');
  // After the last report the page let go: a report sent now is not shown
  // (the stream is closed, so nothing reconnects either).
  const late = await fetch(server.url(`/api/v1/uploads/${id}/processing`), {
    method: 'PUT',
    headers: { ...server.headers, 'Content-Type': 'application/json' },
    body: JSON.stringify({ state: 'failed', message: 'reprocessed' }),
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(late.status, 200);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await row(page, f.name).getAttribute('data-processing'), 'completed');
  assert.equal(streams.length, 1, 'no reconnect after the end');
});
