// The uploader's pure logic (static/tranche-core.js), under Node's test runner.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import {
  DEFAULT_RETRY,
  Estimate,
  FAILURES,
  Progress,
  backoffDelay,
  canRetryLater,
  chunkCount,
  chunkPlan,
  classifyFailure,
  contentDigestHeader,
  fingerprint,
  formatBytes,
  formatDuration,
  httpUrl,
  isOutage,
  normalizeOptions,
  parseRetryAfter,
  retryDelay,
} from '../../../static/tranche-core.js';

test('the chunk plan covers the file exactly once, in order, as API v1 cuts it', () => {
  for (const [size, chunk] of [[0, 4], [1, 4], [4, 4], [5, 4], [10, 3], [8 << 20, 1 << 20]]) {
    const plan = chunkPlan(size, chunk);
    assert.equal(plan.length, chunkCount(size, chunk), `${size}/${chunk}`);
    let next = 0;
    plan.forEach((c, i) => {
      assert.equal(c.index, i);
      assert.equal(c.start, next);
      assert.ok(c.end - c.start <= chunk);
      next = c.end;
    });
    assert.equal(next, size);
  }
  assert.deepEqual(chunkPlan(0, 4), [{ index: 0, start: 0, end: 0 }]);
});

test('a resumed plan holds only the missing chunks, last one short', () => {
  assert.deepEqual(chunkPlan(10, 4, [0, 2]), [
    { index: 0, start: 0, end: 4 },
    { index: 2, start: 8, end: 10 },
  ]);
  assert.deepEqual(chunkPlan(10, 4, []), []);
});

test('backoff doubles from the base up to the cap, with half of it random', () => {
  const retry = { ...DEFAULT_RETRY, baseDelay: 100, maxDelay: 1000 };
  const low = [1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, retry, () => 0));
  const high = [1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, retry, () => 0.999999));
  assert.deepEqual(low, [50, 100, 200, 400, 500, 500]);
  assert.deepEqual(high, [100, 200, 400, 800, 1000, 1000]);
  for (let a = 1; a < 20; a++) {
    const d = backoffDelay(a, retry);
    assert.ok(d >= Math.min(1000, 100 * 2 ** (a - 1)) / 2 && d <= 1000, `attempt ${a}: ${d}`);
  }
});

test('the retry schedule stops after the configured retries and honours Retry-After up to a cap', () => {
  const retry = { retries: 3, baseDelay: 100, maxDelay: 1000, maxRetryAfter: 60_000 };
  const half = () => 0.5;
  assert.deepEqual([1, 2, 3, 4].map((a) => retryDelay(a, null, retry, half)), [75, 150, 300, null]);
  assert.equal(retryDelay(1, 7000, retry, half), 7000);
  // Retry-After lengthens the backoff, never shortens it.
  assert.equal(retryDelay(1, 0, retry, half), 75);
  assert.equal(retryDelay(3, 100, retry, half), 300);
  assert.equal(retryDelay(2, 3_600_000, retry, half), 60_000);
  assert.equal(retryDelay(4, 1000, retry, half), null);
});

test('an outage is waited out for maxElapsed, not counted against retries', () => {
  const retry = { retries: 3, baseDelay: 100, maxDelay: 1000, maxRetryAfter: 60_000, maxElapsed: 600_000 };
  const half = () => 0.5;
  for (const status of [0, 408, 429, 502, 503, 504]) assert.ok(isOutage(status), String(status));
  for (const status of [500, 409, 401]) assert.ok(!isOutage(status), String(status));
  // The 50th attempt of a network failure, 5 minutes in: still waiting, at the capped backoff.
  assert.equal(retryDelay(50, null, retry, half, { outage: true, elapsed: 300_000 }), 750);
  assert.equal(retryDelay(50, 2000, retry, half, { outage: true, elapsed: 300_000 }), 2000);
  assert.equal(retryDelay(50, null, retry, half, { outage: true, elapsed: 600_000 }), null);
  // A 500 is a server bug more than an outage: it has its count.
  assert.equal(retryDelay(4, null, retry, half, { outage: false, elapsed: 1000 }), null);
  // By default an outage is waited out as long as the page is open.
  assert.equal(DEFAULT_RETRY.maxElapsed, Infinity);
  assert.ok(retryDelay(10_000, null, DEFAULT_RETRY, half, { outage: true, elapsed: 86_400_000 }) > 0);
});

test('Retry-After is read as seconds or as an HTTP date', () => {
  const now = Date.parse('2026-11-22T10:00:00Z');
  assert.equal(parseRetryAfter('1', now), 1000);
  assert.equal(parseRetryAfter(' 120 ', now), 120_000);
  assert.equal(parseRetryAfter('Sun, 22 Nov 2026 10:00:30 GMT', now), 30_000);
  assert.equal(parseRetryAfter('Sun, 22 Nov 2026 09:00:00 GMT', now), 0);
  for (const junk of [null, undefined, '', 'soon', '-5', '1.5']) {
    assert.equal(parseRetryAfter(junk, now), null, String(junk));
  }
});

test('only failures that can heal are retried', () => {
  for (const [status, code] of [[0], [408], [429, 'rate_limited'], [500], [502], [503, 'store_unavailable'], [504], [409, 'chunk_in_progress']]) {
    assert.equal(classifyFailure(status, code), 'retry', `${status} ${code}`);
  }
  for (const [status, code] of [[400, 'invalid_request'], [401, 'unauthorized'], [403, 'forbidden'], [409, 'upload_completed'], [409, 'upload_assembling'], [413, 'file_too_large'], [415], [422, 'digest_mismatch'], [501], [507, 'insufficient_storage']]) {
    assert.equal(classifyFailure(status, code), 'fatal', `${status} ${code}`);
  }
  assert.equal(classifyFailure(404, 'upload_not_found'), 'gone');
  assert.equal(classifyFailure(410, 'upload_expired'), 'gone');
});

test('the fingerprint tells files and endpoints apart and ignores a trailing slash', () => {
  const file = { name: 'lecture 01.mp4', size: 524288000, lastModified: 1763800000000 };
  const key = fingerprint(file, 'https://u.example/api/v1');
  assert.equal(key, fingerprint({ ...file }, 'https://u.example/api/v1/'));
  const variants = [
    fingerprint({ ...file, name: 'lecture 02.mp4' }, 'https://u.example/api/v1'),
    fingerprint({ ...file, size: file.size + 1 }, 'https://u.example/api/v1'),
    fingerprint({ ...file, lastModified: file.lastModified + 1 }, 'https://u.example/api/v1'),
    fingerprint(file, 'https://other.example/api/v1'),
  ];
  assert.equal(new Set([key, ...variants]).size, 5);
  // A name that contains the separator cannot pass for another file.
  assert.notEqual(
    fingerprint({ name: 'a|1', size: 2, lastModified: 3 }, 'e'),
    fingerprint({ name: 'a', size: 1, lastModified: 3 }, 'e|2'),
  );
});

test('Content-Digest is RFC 9530 sha-256 in base64', () => {
  const digest = createHash('sha256').update('hello').digest();
  assert.equal(contentDigestHeader(digest), 'sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:');
});

test('progress counts confirmed bytes, moves with bytes in flight and never goes back', () => {
  let t = 0;
  const p = new Progress(1000, { now: () => t });
  p.setAcked(200);
  assert.equal(p.shown, 200);
  t = 1000;
  p.sending(2, 150);
  p.sending(3, 50);
  assert.equal(p.acked, 200);
  assert.equal(p.bytesInFlight, 200);
  assert.equal(p.shown, 400);
  p.dropped(3); // a chunk failed: its 50 bytes are no longer on their way...
  assert.equal(p.shown, 400); // ...but the bar does not jump back
  t = 2000;
  p.acknowledged(2, 300);
  assert.equal(p.acked, 500);
  assert.equal(p.shown, 500);
  p.acknowledged(3, 500);
  assert.equal(p.shown, 1000);
  assert.equal(p.fraction, 1);
  assert.equal(p.eta, 0);
});

test('speed follows the transfer rate and gives an ETA, and a pause restarts the clock', () => {
  let t = 0;
  const p = new Progress(10_000, { now: () => t });
  p.restartClock();
  for (let i = 1; i <= 10; i++) {
    t = i * 100;
    p.sending(0, i * 100); // 100 bytes per 100 ms
  }
  assert.ok(Math.abs(p.speed - 1000) < 1, `speed ${p.speed}`);
  assert.ok(Math.abs(p.eta - 9) < 0.01, `eta ${p.eta}`);
  p.restartClock(); // paused
  assert.equal(p.eta, null);
  t = 60_000; // a long pause is not a slow transfer
  p.restartClock(); // resumed
  for (let i = 1; i <= 12; i++) {
    t = 60_000 + i * 100;
    p.sending(0, 1000 + i * 100);
  }
  assert.ok(Math.abs(p.speed - 1000) < 1, `speed after pause ${p.speed}`);
});

test('a steady 2 MB/s reads about 2 MB/s within 2 s, and neither the first burst nor bursty acks spike it', () => {
  const MB = 1_000_000;
  let t = 0;
  const p = new Progress(100 * MB, { now: () => t });
  p.restartClock();
  // The first progress events report what went into the socket's buffer:
  // 1 MB "sent" within 10 ms.
  t = 10;
  p.sending(0, 1 * MB);
  assert.equal(p.speed, 0, 'no speed from a 10 ms sample');
  assert.equal(p.eta, null);
  // Then the wire's real pace, 2 MB/s, in events every 50 ms (the buffer's
  // megabyte is already counted, so the network layer reports nothing new
  // for the first half second).
  let sent = 1 * MB;
  const readings = [];
  for (let ms = 60; ms <= 8000; ms += 50) {
    t = ms;
    if (ms >= 500) sent = Math.min(100 * MB, 1 * MB + (ms - 500) * 2000);
    p.sending(0, sent);
    if (p.speed > 0) readings.push([ms, p.speed]);
  }
  for (const [ms, speed] of readings) {
    assert.ok(speed < 3 * MB, `at ${ms} ms the speed reads ${speed}: the first burst spiked it`);
    if (ms >= 2000) assert.ok(Math.abs(speed - 2 * MB) < 0.4 * MB, `at ${ms} ms the speed reads ${speed}`);
  }
  assert.ok(readings.some(([ms]) => ms <= 1100), 'a speed is shown after about a second');

  // Chunks whose progress arrives only with their answers: 4 MB every 2 s is
  // still 2 MB/s, not 4 MB per 50 ms.
  const q = new Progress(100 * MB, { now: () => t });
  t = 0;
  q.restartClock();
  for (let i = 1; i <= 10; i++) {
    for (let ms = 50; ms < 2000; ms += 50) {
      t = (i - 1) * 2000 + ms;
      q.update();
    }
    t = i * 2000;
    q.acknowledged(i, 4 * MB);
    // A 5 s window holds two or three of these steps: 1.6 to 2.4 MB/s.
    assert.ok(q.speed <= 2.5 * MB && q.speed >= 1.5 * MB, `after ack ${i}: ${q.speed}`);
  }
});

test('a zero-byte upload shows 0 % until the server confirms it', () => {
  const p = new Progress(0);
  assert.equal(p.fraction, 0);
  p.finish();
  assert.equal(p.fraction, 1);
});

test('only http(s) file URLs are accepted, resolved against the endpoint', () => {
  const base = 'https://u.example/api/v1';
  assert.equal(httpUrl('/api/v1/files/abc', base), 'https://u.example/api/v1/files/abc');
  assert.equal(httpUrl('http://cdn.example/f/abc', base), 'http://cdn.example/f/abc');
  for (const bad of ['javascript:alert(1)//', ' JavaScript:alert(1)', 'data:text/html,<script>1</script>', 'vbscript:x', 'blob:https://u.example/x', '', null, undefined, 42, {}]) {
    assert.equal(httpUrl(bad, base), null, String(bad));
  }
});

test('options: undefined and null mean the default, numbers are clamped, nonsense is a TypeError', () => {
  const defaults = { endpoint: '/api/v1', parallel: 4, chunkSize: undefined, chunkTimeout: 0, retry: DEFAULT_RETRY, token: undefined };
  const o = normalizeOptions({ parallel: undefined, chunkSize: null, retry: { retries: undefined, baseDelay: 100 } }, defaults);
  assert.equal(o.parallel, 4);
  assert.equal(o.chunkSize, undefined);
  assert.equal(o.retry.retries, DEFAULT_RETRY.retries);
  assert.equal(o.retry.baseDelay, 100);
  assert.equal(o.retry.maxElapsed, Infinity);
  assert.equal(normalizeOptions(undefined, defaults).parallel, 4);
  assert.equal(normalizeOptions({ parallel: '2' }, defaults).parallel, 2);
  assert.equal(normalizeOptions({ parallel: 0 }, defaults).parallel, 1);
  assert.equal(normalizeOptions({ parallel: 2.7 }, defaults).parallel, 2);
  assert.equal(normalizeOptions({ parallel: 1000 }, defaults).parallel, 16);
  assert.equal(normalizeOptions({ chunkSize: -5 }, defaults).chunkSize, 1);
  const token = async () => 't';
  assert.equal(normalizeOptions({ token }, defaults).token, token);
  for (const bad of [{ parallel: 'abc' }, { parallel: NaN }, { parallel: true }, { chunkSize: 'big' }, { retry: { retries: 'x' } },
    { endpoint: 42 }, { token: 42 }, { sha256: 'abc' }, { onProgress: 'yes' }]) {
    assert.throws(() => normalizeOptions(bad, defaults), TypeError, JSON.stringify(bad));
  }
  assert.throws(() => normalizeOptions('fast', defaults), TypeError);
  assert.equal(normalizeOptions({ sha256: 'A'.repeat(64) }, defaults).sha256, 'A'.repeat(64));
});

test('sizes and durations read well', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(999), '999 B');
  // Binary units, as the server's messages and the command-line client write them.
  assert.equal(formatBytes(1536000), '1.5 MiB');
  assert.equal(formatBytes(52428800), '50 MiB');
  assert.equal(formatBytes(104857600), '100 MiB');
  assert.equal(formatBytes(2 ** 40), '1.0 TiB');
  assert.equal(formatBytes(512.3456), '512 B', 'a speed in bytes per second is rounded');
  assert.equal(formatBytes(999.6), '1.0 KiB');
  assert.equal(formatDuration(9.4), '9 s');
  assert.equal(formatDuration(75), '1 min 15 s');
  assert.equal(formatDuration(3725), '1 h 2 min');
  assert.equal(formatDuration(null), '–');
});

/** docs/API.md's table "Which failures to retry", as rows of cells. */
function apiRetryTable() {
  const doc = readFileSync(new URL('../../../docs/API.md', import.meta.url), 'utf8');
  const section = doc.split('### Which failures to retry')[1];
  assert.ok(section, 'docs/API.md has the retry table');
  const lines = section.split('\n');
  const start = lines.findIndex((l) => l.startsWith('| status'));
  const rows = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.replace(/^\||\|$/g, '').split('|').map((c) => c.trim()));
  }
  return rows.map(([status, code, retry, retryAfter, later]) => ({
    status:
      status === 'any' || status === 'anything else'
        ? null
        : status.split(', ').map((s) => (s.startsWith('none') ? 0 : s.startsWith('other ') ? s.slice(6) : Number(s))),
    code: code === 'any' ? null : code.split(', ').map((c) => c.replaceAll('`', '')),
    retry: retry.replaceAll('`', ''),
    retryAfter: retryAfter === 'yes',
    later: later === 'yes',
  }));
}

test('the retry table in docs/API.md is the one the uploader uses', () => {
  const table = apiRetryTable();
  assert.deepEqual(
    FAILURES.map(({ status, code, retry, later }) => ({ status, code, retry, later })),
    table.map(({ status, code, retry, later }) => ({ status, code, retry, later })),
  );
  // Retry-After is honoured on every retried answer (retryDelay), never
  // without an answer; the table says so row by row.
  for (const row of table) {
    const retried = row.retry === 'outage' || row.retry === 'yes';
    assert.equal(row.retryAfter, retried && !(row.status?.length === 1 && row.status[0] === 0), JSON.stringify(row));
  }
  assert.equal(classifyFailure(505, 'x'), 'retry');
  assert.equal(isOutage(503), true);
  assert.equal(isOutage(500), false);
  assert.equal(canRetryLater(413, 'file_too_large'), false);
  assert.equal(canRetryLater(200, 'upload_failed'), false);
  assert.equal(canRetryLater(507, 'insufficient_storage'), true);
  assert.equal(canRetryLater(401, 'unauthorized'), true);
});

test('saved and in-flight bytes are told apart, and resent bytes after a pause count as speed', () => {
  let t = 0;
  const p = new Progress(1000, { now: () => t });
  p.setAcked(100);
  p.restartClock();
  t = 500;
  p.sending(1, 200);
  p.sending(2, 200);
  assert.equal(p.savedFraction, 0.1);
  assert.equal(p.fraction, 0.5);
  // Paused: both chunks are dropped; nothing more is saved.
  p.dropped(1);
  p.dropped(2);
  p.restartClock();
  assert.equal(p.savedFraction, 0.1);
  // Resumed: the resends move 100 bytes per 100 ms while the bar's high-water
  // mark (500) is not yet passed; the speed says so all the same.
  for (let i = 1; i <= 12; i++) {
    t = 10_000 + i * 100;
    p.sending(1, Math.min(200, i * 50));
    p.sending(2, Math.min(200, i * 50));
  }
  assert.ok(p.speed > 0, `speed after a resume: ${p.speed}`);
});

test('the estimate shows nothing until the speed has settled, then smooths it', () => {
  let t = 0;
  const e = new Estimate({ now: () => t, settle: 3000, smoothing: 3000 });
  assert.deepEqual(e.update(0, 1000), { speed: null, eta: null });
  t = 1000;
  assert.deepEqual(e.update(5000, 100_000), { speed: null, eta: null }, 'a first reading is not shown');
  const shown = [];
  for (t = 1500; t <= 10_000; t += 500) {
    // The first seconds after a resume overstate the speed (socket buffers).
    const speed = t < 3000 ? 5000 : 1000;
    shown.push(e.update(speed, 20_000).eta);
  }
  assert.ok(shown.slice(0, 3).every((eta) => eta === null), `nothing for 3 s: ${shown}`);
  const last = shown.at(-1);
  assert.ok(last > 15 && last < 25, `settles near 20 s left: ${last}`);
  e.restart();
  t += 100;
  assert.deepEqual(e.update(1000, 1000), { speed: null, eta: null }, 'a restart hides the figures again');
});
