// A tus client with no special settings (tus-js-client in Node, default
// options but the endpoint and, in one case, the chunk size) uploads through
// the shipped nginx/tranche.conf. On Redis, behind nginx run three tranche
// instances sharing the store and the data directory, so the PATCHes of one
// upload reach different instances; on the embedded store, one instance.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';

import * as tus from 'tus-js-client';

import { MiB, idOf, makeFile } from '../lib/files.js';
import { Nginx } from '../lib/nginx.js';
import { Tranche, sha256OfUrl, store } from '../lib/server.js';

async function behindNginx(t) {
  // nginx is the only proxy: tranche believes its X-Forwarded-* headers, so
  // the Location of a new upload names nginx, not the instance.
  const env = { TRANCHE_TRUSTED_PROXIES: '127.0.0.1' };
  const first = await Tranche.start({ env });
  t.after(() => first.stop());
  const instances = [first];
  if (store() === 'redis') {
    for (let i = 0; i < 2; i++) {
      const next = await Tranche.start({ env, dataDir: first.dataDir, redis: first.redis });
      t.after(() => next.stop());
      instances.push(next);
    }
  }
  const upstreams = [0, 1, 2].map((i) => `127.0.0.1:${instances[i % instances.length].port}`);
  const nginx = await Nginx.start(upstreams);
  t.after(() => nginx.stop());
  return { nginx, instances };
}

function upload(input, options) {
  return new Promise((resolve, reject) => {
    const patches = [];
    const u = new tus.Upload(input, {
      ...options,
      onAfterResponse: (req, res) => {
        if (req.getMethod() === 'PATCH') patches.push(res.getStatus());
      },
      onSuccess: () => resolve({ url: u.url, patches }),
      onError: reject,
    });
    u.start();
  });
}

async function assertThroughNginx(nginx, url, f) {
  assert.ok(url.startsWith(`${nginx.origin}/files/`), `the upload URL ${url} goes through nginx`);
  const id = idOf(url);
  let status;
  for (let i = 0; i < 300; i++) {
    status = await (await fetch(`${nginx.origin}/api/v1/uploads/${id}`)).json();
    if (status.status === 'completed') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(status.status, 'completed', JSON.stringify(status));
  assert.equal(status.file.sha256, f.sha256, "the server's SHA-256 is the file's");
  assert.equal(await sha256OfUrl(`${nginx.origin}/api/v1/files/${id}`), f.sha256, 'the download through nginx is the file');
}

test('tus-js-client with default options uploads a 12 MiB file through the shipped nginx config', { timeout: 90_000 }, async (t) => {
  const { nginx } = await behindNginx(t);
  const f = makeFile('whole.bin', 12 * MiB);
  t.after(() => f.remove());

  // tus-js-client's default chunkSize is unlimited: the whole file in one PATCH.
  const whole = await upload(createReadStream(f.path), { endpoint: `${nginx.origin}/files/` });
  assert.deepEqual(whole.patches, [204]);
  await assertThroughNginx(nginx, whole.url, f);

  // 5 MiB PATCHes: each far above the 1 MiB nginx allows control requests.
  const chunked = await upload(createReadStream(f.path), { endpoint: `${nginx.origin}/files/`, chunkSize: 5 * MiB });
  assert.deepEqual(chunked.patches, [204, 204, 204]);
  await assertThroughNginx(nginx, chunked.url, f);

  assert.deepEqual(nginx.spooledBodies(), [], 'nginx streamed the PATCH bodies instead of spooling them');
});
