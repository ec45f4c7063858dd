// tranche's browser uploader: one `Upload` per file, speaking API v1
// (docs/API.md). Chunks go in parallel with XMLHttpRequest, whose upload
// progress events keep the bar moving between acknowledgements; control
// requests use fetch. No dependencies, no build step:
//
//   import { Upload } from '/tranche-upload.js';
//   const upload = new Upload(file, { endpoint: '/api/v1', onProgress, onSuccess, onError });
//   upload.start();
//
// The decisions worth testing without a browser live in tranche-core.js.

import {
  DEFAULT_RETRY,
  Progress,
  chunkPlan,
  chunkRange,
  classifyFailure,
  contentDigestHeader,
  fingerprint,
  parseRetryAfter,
  retryDelay,
  toHex,
} from './tranche-core.js';

export { formatBytes, formatDuration } from './tranche-core.js';

/** A failure the uploader gave up on, with the server's code when it sent one. */
export class UploadError extends Error {
  constructor(message, { status = 0, code = 'network_error', body = null, retryAfter = null } = {}) {
    super(message);
    this.name = 'UploadError';
    this.status = status;
    this.code = code;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

const DEFAULTS = {
  /** Base URL of API v1; relative to the page or absolute (another origin needs [cors]). */
  endpoint: '/api/v1',
  /** Chunk size to wish for; the server decides (it answers with the size it uses). */
  chunkSize: undefined,
  /** Chunks in flight at once. */
  parallel: 4,
  retry: DEFAULT_RETRY,
  /** Extra headers on every request. */
  headers: {},
  /** Sent as `Authorization: Bearer <token>`; replaced by the create answer's upload_token. */
  token: undefined,
  /** An upload created by the application's backend (with its upload_token as `token`). */
  uploadId: undefined,
  metadata: undefined,
  contentType: undefined,
  /** Send each chunk's SHA-256 as Content-Digest (needs WebCrypto: https or localhost). */
  contentDigest: true,
  /** Remember the upload in localStorage so the same file continues after a reload. */
  resume: true,
  storage: undefined,
  /** Per chunk request, in ms; 0 = no limit. A timed-out request is retried. */
  chunkTimeout: 0,
  onProgress: undefined,
  onChunk: undefined,
  onRetry: undefined,
  onStateChange: undefined,
  onSuccess: undefined,
  onError: undefined,
};

// Why a drive's requests were cancelled: the user paused (or aborted), or a
// chunk failed for good and the others must stop.
const PAUSED = Symbol('paused');
const FAILED = Symbol('failed');

/**
 * One file's upload. States: idle, starting, uploading, paused, completing,
 * completed, failed, aborted. `start()` returns a promise of the completed
 * file (`{id, size, sha256, url}`), also delivered to `onSuccess`.
 */
export class Upload {
  #ctrl = null;
  #todo = new Set();
  #done;
  #resolve;
  #reject;
  #idempotencyKey;

  constructor(file, options = {}) {
    this.file = file;
    this.options = { ...DEFAULTS, ...options, retry: { ...DEFAULT_RETRY, ...options.retry } };
    this.endpoint = String(this.options.endpoint).replace(/\/+$/, '');
    this.state = 'idle';
    this.id = this.options.uploadId ?? null;
    this.token = this.options.token ?? null;
    this.chunkSize = null;
    this.chunkCount = null;
    /** True when this upload continued one that a previous page had started. */
    this.resumed = false;
    this.progress = new Progress(file.size);
    this.storage = this.options.storage ?? safeLocalStorage();
    this.key = fingerprint(file, absoluteUrl(this.endpoint));
    this.#idempotencyKey = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
    this.#done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // The promise is for whoever awaits it; callbacks alone are enough too.
    this.#done.catch(() => {});
  }

  /** Starts (or continues a remembered upload of the same file). */
  start() {
    if (this.state === 'idle') this.#drive();
    return this.#done;
  }

  /** Stops sending; chunks in flight are cancelled and sent again on resume. */
  pause() {
    if (!['starting', 'uploading', 'completing'].includes(this.state)) return;
    this.#ctrl?.abort(PAUSED);
    this.progress.restartClock();
    this.#setState('paused');
  }

  /** Continues after pause(). After a failure, a new Upload of the same file resumes it. */
  resume() {
    if (this.state === 'paused') this.#drive();
  }

  /** Stops for good and deletes what the server holds of this upload. */
  async abort() {
    if (['completed', 'aborted'].includes(this.state)) return;
    this.#ctrl?.abort(PAUSED);
    this.#setState('aborted');
    this.#forget();
    this.#reject(new UploadError('The upload was cancelled.', { code: 'aborted' }));
    if (this.id) {
      // Best effort: an upload left behind expires by itself.
      await fetch(this.#url(`/uploads/${this.id}`), {
        method: 'DELETE',
        headers: this.#headers(),
      }).catch(() => {});
    }
  }

  async #drive() {
    const ctrl = new AbortController();
    this.#ctrl = ctrl;
    const { signal } = ctrl;
    try {
      if (this.chunkSize == null) {
        this.#setState('starting');
        const status = await this.#open(signal);
        if (status.status === 'completed') return this.#succeed(status.file);
      }
      this.#setState('uploading');
      this.progress.restartClock();
      for (let round = 0; ; round++) {
        await this.#sendAll(signal);
        this.#setState('completing');
        const answer = await this.#complete(signal);
        if (answer.status === 'completed') return this.#succeed(answer.file);
        // The server misses chunks it had acknowledged (a restored backup, a
        // Redis without persistence): send them again, a bounded number of times.
        if (round >= 3) throw new UploadError(answer.message, { status: 409, code: answer.code });
        this.#setMissing(answer.missing);
        this.#setState('uploading');
      }
    } catch (err) {
      if (signal.aborted && signal.reason === PAUSED) return;
      ctrl.abort(FAILED);
      const error = err instanceof UploadError ? err : new UploadError(String(err?.message ?? err), { code: 'client_error' });
      this.error = error;
      this.#setState('failed');
      this.options.onError?.(error, this);
      this.#reject(error);
    }
  }

  /** Continues the remembered upload of this file if the server still has it, else creates one. */
  async #open(signal) {
    let status = null;
    const saved = this.options.resume ? this.#recall() : null;
    if (this.id || saved) {
      this.id ??= saved.id;
      this.token = saved?.token ?? this.token;
      try {
        status = (await this.#control('GET', `/uploads/${this.id}`, undefined, signal)).body;
        if (!['uploading', 'assembling', 'completed'].includes(status.status) || status.size !== this.file.size) {
          status = null;
        }
      } catch (err) {
        if (this.options.uploadId || classifyFailure(err.status, err.code) !== 'gone') throw err;
      }
      if (status) {
        this.resumed = Boolean(saved);
      } else {
        this.#forget();
        this.id = null;
        this.token = this.options.token ?? null;
      }
    }
    if (!status) {
      const body = {
        filename: this.file.name,
        size: this.file.size,
        content_type: this.options.contentType ?? (this.file.type || undefined),
        chunk_size: this.options.chunkSize,
        metadata: this.options.metadata,
      };
      status = (
        await this.#control('POST', '/uploads', body, signal, { 'Idempotency-Key': this.#idempotencyKey })
      ).body;
      this.id = status.id;
      this.token = status.upload_token ?? this.token;
    }
    this.chunkSize = status.chunk_size;
    this.chunkCount = status.chunk_count;
    this.#remember();
    this.#setMissing(status.status === 'uploading' ? status.missing_chunks : []);
    this.#emitProgress();
    return status;
  }

  #setMissing(missing) {
    this.#todo = new Set(missing);
    let missingBytes = 0;
    for (const i of missing) {
      const { start, end } = chunkRange(i, this.file.size, this.chunkSize);
      missingBytes += end - start;
    }
    this.progress.setAcked(this.file.size - missingBytes);
  }

  async #sendAll(signal) {
    const queue = chunkPlan(this.file.size, this.chunkSize, [...this.#todo].sort((a, b) => a - b));
    const worker = async () => {
      for (let range = queue.shift(); range; range = queue.shift()) {
        await this.#sendChunk(range, signal);
      }
    };
    const workers = Array.from({ length: Math.max(1, this.options.parallel) }, worker);
    try {
      await Promise.all(workers);
    } catch (err) {
      // One chunk failed for good: stop the others before reporting it.
      if (!signal.aborted) this.#ctrl?.abort(FAILED);
      throw err;
    }
  }

  async #sendChunk(range, signal) {
    const size = range.end - range.start;
    // The body stays a Blob: Chromium sends a Blob about ten times faster
    // than the ArrayBuffer the digest is computed from (measured: 8 MiB in
    // ~80 ms against ~570 ms). Should the file change in between, the server's
    // digest check refuses the chunk.
    const body = this.file.slice(range.start, range.end);
    let digest = null;
    if (this.options.contentDigest && globalThis.crypto?.subtle) {
      digest = await crypto.subtle.digest('SHA-256', await body.arrayBuffer());
    }
    for (let attempt = 1; ; attempt++) {
      try {
        const answer = await this.#put(range.index, size, body, digest, signal);
        this.#todo.delete(range.index);
        this.progress.acknowledged(range.index, size);
        this.options.onChunk?.(
          {
            index: range.index,
            size,
            attempts: attempt,
            sha256: answer.sha256 ?? (digest && toHex(digest)),
            receivedChunks: answer.received_chunks,
            chunkCount: answer.chunk_count,
          },
          this,
        );
        this.#emitProgress();
        return;
      } catch (err) {
        this.progress.dropped(range.index);
        if (signal.aborted) throw err;
        if (classifyFailure(err.status, err.code) !== 'retry') throw err;
        const delay = retryDelay(attempt, err.retryAfter, this.options.retry);
        if (delay == null) throw err;
        this.options.onRetry?.({ index: range.index, attempt, delay, error: err }, this);
        await sleep(delay, signal);
      }
    }
  }

  #put(index, size, body, digest, signal) {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', this.#url(`/uploads/${this.id}/chunks/${index}`));
      for (const [name, value] of Object.entries(this.#headers())) xhr.setRequestHeader(name, value);
      if (digest) xhr.setRequestHeader('Content-Digest', contentDigestHeader(digest));
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.timeout = this.options.chunkTimeout;
      xhr.upload.onprogress = (e) => {
        this.progress.sending(index, Math.min(e.loaded, size));
        this.#emitProgress();
      };
      const stop = () => xhr.abort();
      signal.addEventListener('abort', stop, { once: true });
      xhr.onloadend = () => signal.removeEventListener('abort', stop);
      xhr.onload = () => {
        const parsed = parseJson(xhr.responseText);
        if (xhr.status >= 200 && xhr.status < 300) return resolve(parsed ?? {});
        reject(errorFromAnswer(xhr.status, parsed, xhr.getResponseHeader('Retry-After')));
      };
      xhr.onerror = () => reject(networkError());
      xhr.ontimeout = () => reject(new UploadError('The chunk request timed out.', { code: 'timeout' }));
      xhr.onabort = () => reject(signal.reason ?? networkError());
      xhr.send(body);
    });
  }

  /** POST complete, then poll while the server assembles (202). */
  async #complete(signal) {
    let answer = await this.#control('POST', `/uploads/${this.id}/complete`, undefined, signal, {}, [409]);
    for (let wait = 250; answer.body.status === 'assembling'; wait = Math.min(wait * 2, 5000)) {
      await sleep(wait, signal);
      answer = await this.#control('GET', `/uploads/${this.id}`, undefined, signal);
    }
    const body = answer.body;
    if (answer.status === 409) {
      if (body.error !== 'upload_incomplete') throw errorFromAnswer(409, body, null);
      return { status: 'incomplete', missing: body.missing_chunks ?? [], message: body.message, code: body.error };
    }
    if (body.status !== 'completed') {
      throw new UploadError(body.error?.message ?? `The upload ended as ${body.status}.`, {
        status: answer.status,
        code: body.error?.code ?? `upload_${body.status}`,
        body,
      });
    }
    return body;
  }

  /** A JSON request with the chunk's retry rules; `expected` lists non-2xx statuses the caller handles. */
  async #control(method, path, body, signal, extraHeaders = {}, expected = []) {
    for (let attempt = 1; ; attempt++) {
      let err;
      try {
        const res = await fetch(this.#url(path), {
          method,
          signal,
          headers: { ...this.#headers(), ...(body ? { 'Content-Type': 'application/json' } : {}), ...extraHeaders },
          body: body ? JSON.stringify(body) : undefined,
        });
        const parsed = parseJson(await res.text());
        if (res.ok || expected.includes(res.status)) return { status: res.status, body: parsed ?? {} };
        err = errorFromAnswer(res.status, parsed, res.headers.get('Retry-After'));
      } catch (e) {
        if (signal.aborted) throw e;
        err = e instanceof UploadError ? e : networkError();
      }
      if (classifyFailure(err.status, err.code) !== 'retry') throw err;
      const delay = retryDelay(attempt, err.retryAfter, this.options.retry);
      if (delay == null) throw err;
      this.options.onRetry?.({ index: null, attempt, delay, error: err }, this);
      await sleep(delay, signal);
    }
  }

  #succeed(file) {
    this.#forget();
    this.progress.setAcked(this.file.size);
    this.#emitProgress();
    const result = { ...file, url: new URL(file.url, absoluteUrl(this.endpoint)).href };
    this.result = result;
    this.#setState('completed');
    this.options.onSuccess?.(result, this);
    this.#resolve(result);
  }

  #emitProgress() {
    const p = this.progress;
    this.options.onProgress?.(p.acked, p.total, {
      bytesShown: p.shown,
      bytesInFlight: p.bytesInFlight,
      fraction: p.fraction,
      speed: p.speed,
      eta: p.eta,
    });
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.options.onStateChange?.(state, this);
  }

  #headers() {
    const h = { ...this.options.headers };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  #url(path) {
    return `${this.endpoint}${path}`;
  }

  #recall() {
    try {
      const saved = JSON.parse(this.storage?.getItem(this.key) ?? 'null');
      return saved?.id ? saved : null;
    } catch {
      return null;
    }
  }

  #remember() {
    if (!this.options.resume) return;
    try {
      this.storage?.setItem(this.key, JSON.stringify({ id: this.id, token: this.token, savedAt: Date.now() }));
    } catch {
      // Storage full or forbidden (private mode): the upload works, only without resume.
    }
  }

  #forget() {
    try {
      this.storage?.removeItem(this.key);
    } catch {
      // See #remember.
    }
  }
}

function errorFromAnswer(status, body, retryAfter) {
  const code = body?.error ?? `http_${status}`;
  const message = body?.message ?? `The server answered ${status}.`;
  return new UploadError(message, { status, code, body, retryAfter: parseRetryAfter(retryAfter) });
}

function networkError() {
  return new UploadError('The server could not be reached.', { status: 0, code: 'network_error' });
}

function parseJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', cancel);
      resolve();
    }, ms);
    const cancel = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener('abort', cancel, { once: true });
  });
}

function absoluteUrl(url) {
  return new URL(url, globalThis.location?.href ?? 'http://localhost/').href;
}

function safeLocalStorage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null;
  }
}
