// The `Upload` module itself, driven from a page's script in headless
// Chromium against the real server: options, races with another uploader of
// the same file, outages, and aborting before the server has answered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { launch, openDemo } from '../lib/browser.js';
import { Proxy } from '../lib/proxy.js';
import { Tranche } from '../lib/server.js';

const CREATED = 'tranche_uploads_total{event="created"}';
const ABORTED = 'tranche_uploads_total{event="aborted"}';

async function setup(t, { proxy } = {}) {
  const parts = { server: await Tranche.start() };
  t.after(() => parts.server.stop());
  if (proxy) {
    parts.proxy = await Proxy.start(parts.server.origin, proxy);
    t.after(() => parts.proxy.stop());
  }
  parts.browser = await launch();
  t.after(() => parts.browser.close());
  const origin = parts.proxy?.origin ?? parts.server.origin;
  parts.page = await openDemo(parts.browser.context, `${origin}/`);
  // The page's script: the module, and files of known bytes (byte i is i*7 % 251).
  await parts.page.evaluate(async () => {
    window.M = await import('/tranche-upload.js');
    window.makeFile = (name, size) =>
      new File([new Uint8Array(size).map((_, i) => (i * 7) % 251)], name, { lastModified: 1_700_000_000_000 + size });
  });
  return parts;
}

function bytes(size) {
  return Buffer.from(new Uint8Array(size).map((_, i) => (i * 7) % 251));
}

test('options left undefined take their defaults; nonsense is a TypeError at construction', { timeout: 60_000 }, async (t) => {
  const { page } = await setup(t);
  const out = await page.evaluate(async () => {
    const f = makeFile('defaults.bin', 100_000);
    const upload = new M.Upload(f, { chunkSize: 16384, parallel: undefined, retry: { retries: undefined }, chunkTimeout: undefined });
    const file = await upload.start();
    const thrown = [];
    for (const options of [{ parallel: 'abc' }, { chunkSize: 'big' }, { token: 42 }, { onProgress: 'x' }]) {
      try {
        new M.Upload(f, options);
        thrown.push('no error');
      } catch (e) {
        thrown.push(`${e.name}: ${e.message}`);
      }
    }
    return { size: file.size, parallel: upload.options.parallel, thrown };
  });
  assert.equal(out.size, 100_000);
  assert.equal(out.parallel, 4);
  assert.equal(out.thrown.length, 4);
  for (const e of out.thrown) assert.match(e, /^TypeError: Upload option \w+ must be/);
});

test('the whole-file sha256 option is sent at create and checked by the server', { timeout: 60_000 }, async (t) => {
  const { server, page } = await setup(t);
  const sha = createHash('sha256').update(bytes(70_000)).digest('hex');
  const out = await page.evaluate(async (sha) => {
    const good = new M.Upload(makeFile('good.bin', 70_000), { chunkSize: 16384, sha256: sha });
    const file = await good.start();
    const bad = new M.Upload(makeFile('bad.bin', 70_001), { chunkSize: 16384, sha256: '0'.repeat(64) });
    const error = await bad.start().then(() => null, (e) => ({ code: e.code, status: e.status }));
    return { id: good.id, sha: file.sha256, error };
  }, sha);
  assert.equal(out.sha, sha);
  assert.equal((await server.json(`/api/v1/uploads/${out.id}`)).sha256, sha, 'the upload was created with it');
  assert.deepEqual(out.error, { code: 'digest_mismatch', status: 422 });
});

test('with the sha256 option, a file the server stored already completes at create with no chunk sent', { timeout: 60_000 }, async (t) => {
  const { server, page } = await setup(t);
  const sha = createHash('sha256').update(bytes(50_000)).digest('hex');
  const out = await page.evaluate(async (sha) => {
    const first = new M.Upload(makeFile('one.bin', 50_000), { chunkSize: 16384, sha256: sha });
    await first.start();
    const chunks = [];
    const again = new M.Upload(makeFile('two.bin', 50_000), { chunkSize: 16384, sha256: sha, onChunk: (c) => chunks.push(c.index) });
    const file = await again.start();
    return { first: first.id, id: again.id, file, chunks, state: again.state };
  }, sha);
  assert.equal(out.state, 'completed');
  assert.deepEqual(out.chunks, [], 'no chunk sent');
  assert.notEqual(out.id, out.first, 'an upload of its own');
  assert.equal(out.file.id, out.id);
  assert.equal(out.file.sha256, sha);
  assert.equal(await server.metric('tranche_uploads_total{event="deduplicated"}'), 1);
});

test('a chunk answered 409 upload_completed (someone else finished the upload) completes instead of failing', { timeout: 60_000 }, async (t) => {
  const { server, proxy, page } = await setup(t, { proxy: { chunkDelay: 300 } });
  const SIZE = 16 * 16384;
  await page.evaluate((size) => {
    window.events = [];
    window.upload = new M.Upload(makeFile('raced.bin', size), {
      chunkSize: 16384,
      parallel: 1,
      onChunk: (c) => events.push(`chunk ${c.index}`),
      onError: (e) => events.push(`error ${e.code}`),
    });
    window.result = upload.start().then((f) => ({ sha256: f.sha256 }), (e) => ({ error: e.code }));
  }, SIZE);
  await page.waitForFunction(() => window.events.length >= 2);
  // Another client (another tab, the CLI) sends every chunk and completes.
  const id = await page.evaluate(() => upload.id);
  const data = bytes(SIZE);
  for (let i = 0; i < 16; i++) {
    const res = await fetch(server.url(`/api/v1/uploads/${id}/chunks/${i}`), { method: 'PUT', body: data.subarray(i * 16384, (i + 1) * 16384) });
    assert.equal(res.status, 200);
  }
  const done = await fetch(server.url(`/api/v1/uploads/${id}/complete`), { method: 'POST' });
  assert.equal(done.status, 200);
  const result = await page.evaluate(() => window.result);
  assert.deepEqual(result, { sha256: createHash('sha256').update(data).digest('hex') });
  assert.ok(!(await page.evaluate(() => window.events)).some((e) => e.startsWith('error')));
  assert.ok(proxy.chunkRequests < 16, `the page stopped sending: ${proxy.chunkRequests} chunk requests`);
});

test("two Uploads of the same file at once: finishing one does not forget the other's saved entry", { timeout: 60_000 }, async (t) => {
  const { page } = await setup(t, { proxy: { chunkDelay: 200 } });
  const out = await page.evaluate(async () => {
    const f = makeFile('twice.bin', 8 * 16384);
    const states = (u) => new Promise((ok) => { u.options.onStateChange = (s) => s === 'uploading' && ok(); });
    const a = new M.Upload(f, { chunkSize: 16384, parallel: 1 });
    const b = new M.Upload(f, { chunkSize: 16384, parallel: 1 });
    const running = [states(a), states(b)];
    const done = [a.start(), b.start()];
    await Promise.all(running);
    a.pause();
    b.pause();
    const saved = () => JSON.parse(Object.values(localStorage)[0] ?? 'null')?.id ?? null;
    const owner = saved();
    const [first, second] = owner === a.id ? [b, a] : [a, b];
    first.resume();
    await done[first === a ? 0 : 1];
    const afterFirst = saved();
    second.resume();
    await done[second === a ? 0 : 1];
    return { ids: [a.id, b.id], owner, afterFirst, afterBoth: saved() };
  });
  assert.notEqual(out.ids[0], out.ids[1], 'two uploads');
  assert.ok(out.ids.includes(out.owner));
  assert.equal(out.afterFirst, out.owner, 'the other upload is still remembered');
  assert.equal(out.afterBoth, null, 'and forgotten once it completes');
});

test('an unreachable server is waited out beyond the retry count, and coming back online retries at once', { timeout: 60_000 }, async (t) => {
  const { server, page, browser } = await setup(t);
  // Part 1: the server is down for longer than `retries` attempts take.
  await page.evaluate(() => {
    window.retries = [];
    window.upload = new M.Upload(makeFile('outage.bin', 40 * 16384), {
      chunkSize: 16384,
      parallel: 2,
      retry: { retries: 1, baseDelay: 100, maxDelay: 300 },
      onRetry: (r) => retries.push(r.error.code),
    });
    window.result = upload.start().then((f) => f.size, (e) => `failed: ${e.code}`);
  });
  await page.waitForFunction(() => upload.progress.acked > 0);
  await server.kill();
  await page.waitForFunction(() => window.retries.length >= 8, null, { timeout: 20_000 });
  assert.equal(await page.evaluate(() => upload.state), 'uploading', 'still trying after 8 retries of a 1-retry budget');
  await server.restart();
  assert.equal(await page.evaluate(() => window.result), 40 * 16384);

  // Part 2: offline, with a long backoff; the `online` event cuts it short.
  await browser.context.setOffline(true);
  const started = Date.now();
  await page.evaluate(() => {
    window.retries = [];
    window.upload = new M.Upload(makeFile('offline.bin', 4 * 16384), {
      chunkSize: 16384,
      retry: { baseDelay: 60_000, maxDelay: 60_000 },
      onRetry: (r) => retries.push(r.delay),
    });
    window.result = upload.start().then((f) => f.size, (e) => `failed: ${e.code}`);
  });
  await page.waitForFunction(() => window.retries.length >= 1);
  assert.ok((await page.evaluate(() => window.retries[0])) >= 30_000, 'the next try is half a minute away');
  await browser.context.setOffline(false);
  assert.equal(await page.evaluate(() => window.result), 4 * 16384);
  assert.ok(Date.now() - started < 20_000, 'it went on as soon as the browser was back online');
});

test('abort before the create answer arrives still deletes the upload on the server', { timeout: 60_000 }, async (t) => {
  const { server, page } = await setup(t);
  const out = await page.evaluate(async () => {
    const early = new M.Upload(makeFile('early-abort.bin', 1000));
    early.start();
    await early.abort();
    const paused = new M.Upload(makeFile('pause-abort.bin', 1001));
    paused.start();
    paused.pause();
    await paused.abort();
    return { ids: [early.id, paused.id], states: [early.state, paused.state], ls: Object.keys(localStorage) };
  });
  assert.deepEqual(out.states, ['aborted', 'aborted']);
  assert.deepEqual(out.ls, []);
  for (const id of out.ids) {
    assert.ok(id, 'the create was answered and its id kept');
    const res = await fetch(server.url(`/api/v1/uploads/${id}`));
    assert.equal(res.status, 410, `upload ${id} was deleted`);
  }
  assert.equal(await server.metric(CREATED), 2);
  assert.equal(await server.metric(ABORTED), 2);
});

test('pause and resume before the create answer arrives continue that upload, not a second one', { timeout: 60_000 }, async (t) => {
  const { server, page } = await setup(t);
  // A slow create: the server has made the upload long before the page hears of it.
  await page.route('**/api/v1/uploads', async (route) => {
    if (route.request().method() === 'POST') await new Promise((r) => setTimeout(r, 800));
    await route.continue();
  });
  const out = await page.evaluate(async () => {
    const u = new M.Upload(makeFile('slow-create.bin', 5000));
    const done = u.start();
    await new Promise((r) => setTimeout(r, 100));
    u.pause();
    await new Promise((r) => setTimeout(r, 50));
    const file = await u.resume();
    return { state: u.state, id: u.id, file };
  });
  assert.equal(out.state, 'completed');
  assert.equal(out.file.sha256, createHash('sha256').update(bytes(5000)).digest('hex'));
  assert.equal(await server.metric(CREATED), 1, 'one create, one upload');
  const res = await fetch(server.url(`/api/v1/uploads/${out.id}`));
  assert.equal((await res.json()).status, 'completed');
});
