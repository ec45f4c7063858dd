// tus-js-client (npm, Node build) against the real tranche: a multi-MiB file
// in many PATCHes, an aborted upload resumed by a new Upload from its stored
// fingerprint, data sent with the creation POST, termination, an empty file,
// a SHA-256 announced in metadata (right and wrong), a length
// deferred to the last PATCH, parallel parts joined by concatenation, a
// server killed with SIGKILL mid-PATCH and restarted, and authentication by
// bearer token. Every upload ends by comparing the server's SHA-256 (API v1)
// and the download with the file's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import * as tus from 'tus-js-client';

import { KiB, MiB, headOffset, idOf, makeFile } from '../lib/files.js';
import { Tranche } from '../lib/server.js';

async function serve(t, options) {
  const server = await Tranche.start(options);
  t.after(() => server.stop());
  return server;
}

function file(t, name, size) {
  const f = makeFile(name, size);
  t.after(() => f.remove());
  return f;
}

/** tus-js-client's own file-backed URL store, in a temp file of the test's. */
function urlStorage(t) {
  const dir = mkdtempSync(join(tmpdir(), 'tranche-tus-urls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return new tus.FileUrlStorage(join(dir, 'urls.json'));
}

/**
 * Runs an Upload to its end. `prepare(upload)` runs before start (to pick a
 * previous upload); `onChunk(upload, accepted)` sees every acknowledged PATCH
 * and may answer 'abort' (stop) or 'terminate' (stop and DELETE), which
 * resolves with `aborted`. Every request's tus headers (`log.sent`) and
 * every answer's status and Upload-Offset (`log.requests`) are recorded.
 */
function run(input, options, { onChunk, prepare } = {}) {
  return new Promise((resolve, reject) => {
    const log = { sent: [], requests: [], chunks: [] };
    let aborted = false;
    const upload = new tus.Upload(input, {
      // A test that wants retries says so; others fail at the first error.
      retryDelays: null,
      ...options,
      onBeforeRequest: (req) => {
        const h = (name) => req.getHeader(name) ?? null;
        log.sent.push({ method: req.getMethod(), length: h('Upload-Length'), defer: h('Upload-Defer-Length'), concat: h('Upload-Concat') });
      },
      onAfterResponse: (req, res) => {
        log.requests.push({ method: req.getMethod(), url: req.getURL(), status: res.getStatus(), offset: res.getHeader('Upload-Offset') });
      },
      onChunkComplete: (chunk, accepted, total) => {
        log.chunks.push({ chunk, accepted, total });
        options.onChunkComplete?.(chunk, accepted, total);
        const stop = aborted ? undefined : onChunk?.(upload, accepted);
        if (stop === 'abort' || stop === 'terminate') {
          aborted = true;
          // abort(true) is tus-js-client's termination: a DELETE.
          upload.abort(stop === 'terminate').then(() => resolve({ upload, log, aborted }), reject);
        }
      },
      onSuccess: () => resolve({ upload, log, aborted }),
      onError: (e) => (aborted ? null : reject(e)),
    });
    Promise.resolve(prepare?.(upload)).then(() => upload.start(), reject);
  });
}

async function assertStored(server, uploadUrl, f, { filename } = {}) {
  const id = idOf(uploadUrl);
  const upload = await server.completed(id);
  assert.equal(upload.id, id, 'the tus URL names the API v1 upload');
  assert.equal(upload.file.size, f.size);
  assert.equal(upload.file.sha256, f.sha256, "the server's SHA-256 is the file's");
  assert.equal(await server.downloadSha256(id), f.sha256, 'the download serves the same bytes');
  if (filename) assert.equal(upload.filename, filename);
  return upload;
}

test('a 6 MiB file in 256 KiB PATCHes arrives whole, with its metadata', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'lecture.bin', 6 * MiB);
  const { upload, log } = await run(createReadStream(f.path), {
    endpoint: server.endpoint,
    chunkSize: 256 * KiB,
    metadata: { filename: f.name, filetype: 'video/mp4', course: 'ma101' },
  });
  const patches = log.requests.filter((r) => r.method === 'PATCH');
  assert.equal(patches.length, 24, 'one PATCH per 256 KiB');
  assert.ok(patches.every((r) => r.status === 204), `every PATCH answered 204: ${patches.map((r) => r.status)}`);
  assert.equal(log.chunks.at(-1).accepted, f.size);
  const stored = await assertStored(server, upload.url, f, { filename: f.name });
  assert.equal(stored.content_type, 'video/mp4', 'filetype became the content type');
  assert.equal(stored.metadata?.course, 'ma101', 'other keys are kept as metadata');
});

test('an aborted upload is resumed by a new Upload from its fingerprint, from the offset', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'resume.bin', 4 * MiB);
  const storage = urlStorage(t);
  const options = { endpoint: server.endpoint, chunkSize: 256 * KiB, urlStorage: storage, storeFingerprintForResuming: true, removeFingerprintOnSuccess: true };

  const first = await run(createReadStream(f.path), options, {
    onChunk: (_, accepted) => (accepted >= 3 * 256 * KiB ? 'abort' : undefined),
  });
  assert.ok(first.aborted, 'the first upload stopped after three PATCHes');
  const offset = await headOffset(first.upload.url);
  assert.ok(offset >= 3 * 256 * KiB && offset < f.size, `the server kept the acknowledged bytes (offset ${offset})`);

  let previous;
  const second = await run(createReadStream(f.path), options, {
    prepare: async (upload) => {
      previous = await upload.findPreviousUploads();
      assert.equal(previous.length, 1, 'the aborted upload was remembered');
      upload.resumeFromPreviousUpload(previous[0]);
    },
  });
  assert.equal(second.upload.url, first.upload.url, 'the same upload continued');
  assert.equal(second.log.requests.filter((r) => r.method === 'POST').length, 0, 'no new upload was created');
  const head = second.log.requests.find((r) => r.method === 'HEAD');
  assert.equal(Number(head?.offset), offset, 'the resume asked the server for its offset');
  const firstChunk = second.log.chunks[0];
  assert.equal(firstChunk.accepted - firstChunk.chunk, offset, 'the first PATCH of the resume started at that offset');
  await assertStored(server, second.upload.url, f);
  // tus-js-client forgets the fingerprint on success without waiting for its
  // storage (a locked file here): give the removal a bounded moment to land.
  let remembered = await second.upload.findPreviousUploads();
  for (let i = 0; i < 40 && remembered.length > 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    remembered = await second.upload.findPreviousUploads();
  }
  assert.deepEqual(remembered, [], 'success forgot the fingerprint');
});

test('creation-with-upload: the first chunk rides on the POST', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'eager.bin', 1 * MiB + 99);
  const { upload, log } = await run(createReadStream(f.path), {
    endpoint: server.endpoint,
    chunkSize: 512 * KiB,
    uploadDataDuringCreation: true,
  });
  assert.equal(log.requests[0].method, 'POST');
  assert.equal(Number(log.requests[0].offset), 512 * KiB, 'the POST answered with the offset after its body');
  assert.equal(log.requests.filter((r) => r.method === 'PATCH').length, 2, 'the rest in two PATCHes');
  await assertStored(server, upload.url, f);
});

test('termination: abort(true) deletes the upload on the server', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'unwanted.bin', 2 * MiB);
  const { upload, log, aborted } = await run(createReadStream(f.path), { endpoint: server.endpoint, chunkSize: 256 * KiB }, {
    onChunk: (_, accepted) => (accepted >= 512 * KiB ? 'terminate' : undefined),
  });
  assert.ok(aborted);
  const deleted = log.requests.find((r) => r.method === 'DELETE');
  assert.equal(deleted?.status, 204, 'DELETE answered 204');
  const head = await fetch(upload.url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
  assert.ok([404, 410].includes(head.status), `HEAD after termination answers 404 or 410, not ${head.status}`);
});

test('an empty file: created, never PATCHed, completed with the SHA-256 of nothing', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'empty.txt', 0);
  const { upload, log } = await run(createReadStream(f.path), { endpoint: server.endpoint, metadata: { filename: f.name } });
  assert.deepEqual(log.requests.map((r) => `${r.method} ${r.status}`), ['POST 201']);
  await assertStored(server, upload.url, f, { filename: f.name });
});

test('a sha256 metadata key: the right one completes, a wrong one fails the last PATCH with 422', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'announced.bin', 1 * MiB + 5);
  const { upload } = await run(createReadStream(f.path), { endpoint: server.endpoint, chunkSize: 256 * KiB, metadata: { sha256: f.sha256 } });
  await assertStored(server, upload.url, f);

  const wrong = f.sha256.replace(/^./, (c) => (c === '0' ? '1' : '0'));
  const failure = await run(createReadStream(f.path), { endpoint: server.endpoint, chunkSize: 256 * KiB, metadata: { sha256: wrong } }).then(
    () => assert.fail('an upload announcing another SHA-256 succeeded'),
    (e) => e,
  );
  assert.equal(failure.originalRequest?.getMethod(), 'PATCH');
  assert.equal(failure.originalResponse?.getStatus(), 422, String(failure));
  assert.match(failure.originalResponse.getBody(), /digest_mismatch/);
  const id = idOf(failure.originalRequest.getURL());
  const record = await server.json(`/api/v1/uploads/${id}`);
  assert.notEqual(record.status, 'completed', 'the mismatched file is not published');
});

test('a stream of unknown length: Upload-Defer-Length, the length sent with the last PATCH', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'stream.bin', 3 * MiB + 12345);
  // A plain Readable, not a file: tus-js-client cannot know its size.
  const stream = Readable.from((function* () {
    for (let i = 0; i < f.size; i += 100_000) yield f.bytes.subarray(i, i + 100_000);
  })());
  const { upload, log } = await run(stream, { endpoint: server.endpoint, chunkSize: 512 * KiB, uploadLengthDeferred: true });
  assert.deepEqual(log.sent[0], { method: 'POST', length: null, defer: '1', concat: null });
  const patches = log.sent.filter((r) => r.method === 'PATCH');
  assert.ok(patches.length >= 7, `${patches.length} PATCHes`);
  assert.deepEqual(
    patches.filter((r) => r.length != null).map((r) => Number(r.length)),
    [f.size],
    'one PATCH, the last, told the length',
  );
  assert.equal(patches.at(-1).length, String(f.size));
  await assertStored(server, upload.url, f);
});

test('parallelUploads: 2 sends two partial uploads and concatenates them', { timeout: 60_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'parallel.bin', 5 * MiB + 7);
  const { upload, log } = await run(createReadStream(f.path), {
    endpoint: server.endpoint,
    chunkSize: 512 * KiB,
    parallelUploads: 2,
    metadata: { filename: f.name },
  });
  const posts = log.requests.filter((r) => r.method === 'POST');
  assert.equal(posts.length, 3, 'two partial uploads and the final one');
  assert.ok(posts.every((r) => r.status === 201), `every POST answered 201: ${posts.map((r) => r.status)}`);
  const concat = log.sent.filter((r) => r.method === 'POST').map((r) => r.concat?.split(';')[0]);
  assert.deepEqual(concat, ['partial', 'partial', 'final']);
  await assertStored(server, upload.url, f, { filename: f.name });
});

test('tranche killed with SIGKILL mid-PATCH: restarted, the client resumes and the file is right', { timeout: 90_000 }, async (t) => {
  const server = await serve(t);
  const f = file(t, 'crash.bin', 8 * MiB);
  const chunk = 512 * KiB;
  let acknowledged = 0;
  let killed;
  const failures = [];
  const { upload, log } = await run(createReadStream(f.path), {
    endpoint: server.endpoint,
    chunkSize: chunk,
    // About 20 s of retries: the server is back within a second or two.
    retryDelays: [200, 500, 1000, 1000, 2000, 2000, 3000, 3000, 3000, 3000],
    onShouldRetry: (err, attempt, options) => {
      failures.push(err.originalRequest?.getMethod());
      return tus.defaultOptions.onShouldRetry(err, attempt, options);
    },
    onProgress: (sent) => {
      // Mid-PATCH: past the third acknowledged chunk, bytes of the fourth on the wire.
      if (!killed && acknowledged >= 3 * chunk && sent > acknowledged + chunk / 4) {
        const acknowledgedAtKill = acknowledged;
        killed = server.kill().then(() => server.restart()).then(() => ({ acknowledgedAtKill }));
      }
    },
    onChunkComplete: (_, accepted) => {
      acknowledged = accepted;
    },
  });
  assert.ok(killed, 'the server was killed mid-upload');
  const { acknowledgedAtKill } = await killed;
  assert.equal(failures[0], 'PATCH', `the kill cut a PATCH off (failed requests: ${failures})`);
  // After the restart the client asked where to go on; that offset keeps
  // every acknowledged byte (a 204 means durable) and is not past the file.
  const heads = log.requests.filter((r) => r.method === 'HEAD');
  assert.ok(heads.length >= 1, `the client asked the restarted server for its offset: ${JSON.stringify(log.requests)}`);
  const resumedAt = Number(heads.at(-1).offset);
  assert.ok(resumedAt >= acknowledgedAtKill && resumedAt > 0, `resumed at ${resumedAt}, ${acknowledgedAtKill} were acknowledged before the kill`);
  await assertStored(server, upload.url, f);
});

test('with authentication on, the bearer token goes on every tus request', { timeout: 60_000 }, async (t) => {
  const apiKey = 'tus-client-test-key-0123456789abcdef';
  const server = await serve(t, {
    env: { TRANCHE_AUTH__ENABLED: 'true', TRANCHE_AUTH__API_KEYS: JSON.stringify([apiKey]), TRANCHE_AUTH__JWT_SECRET: 'tus-client-test-secret-0123456789-abcdef' },
    apiKey,
  });
  const f = file(t, 'secret.bin', 1 * MiB + 1);
  await assert.rejects(
    run(createReadStream(f.path), { endpoint: server.endpoint, chunkSize: 256 * KiB }),
    (e) => e.originalResponse?.getStatus() === 401,
    'without a token the creation is refused with 401',
  );
  const { upload } = await run(createReadStream(f.path), { endpoint: server.endpoint, chunkSize: 256 * KiB, headers: server.headers });
  await assertStored(server, upload.url, f);

  // A create token (the presigned-URL flow) works as well as an API key.
  const token = await server.mintToken('--max-size', '10MiB');
  const g = file(t, 'presigned.bin', 600 * KiB);
  const second = await run(createReadStream(g.path), { endpoint: server.endpoint, chunkSize: 256 * KiB, headers: { Authorization: `Bearer ${token}` } });
  await assertStored(server, second.upload.url, g);
});
