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
  httpUrl,
  isOutage,
  normalizeOptions,
  parseRetryAfter,
  retryDelay,
  toHex,
} from './tranche-core.js';

export { Estimate, canRetryLater, formatBytes, formatDuration } from './tranche-core.js';

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
  /** Chunks in flight at once (1 to 16). */
  parallel: 4,
  retry: DEFAULT_RETRY,
  /** Extra headers on every request. */
  headers: {},
  /**
   * Sent as `Authorization: Bearer <token>` until the create answer's
   * upload_token takes over. A function (sync or async) is asked each time a
   * request needs it, for an application that refreshes its tokens.
   */
  token: undefined,
  /** An upload created by the application's backend (with its upload_token as `token`). */
  uploadId: undefined,
  metadata: undefined,
  contentType: undefined,
  /** The whole file's SHA-256 (hex), if the application knows it: the server checks it at complete. */
  sha256: undefined,
  /** Send each chunk's SHA-256 as Content-Digest (needs WebCrypto: https or localhost). */
  contentDigest: true,
  /** Remember the upload in localStorage so the same file continues after a reload. */
  resume: true,
  storage: undefined,
  /** Per chunk request, in ms; 0 = no limit. A timed-out request is retried. */
  chunkTimeout: 0,
  /** How long to poll an upload the server is still assembling (202), in ms. */
  assembleTimeout: 30 * 60_000,
  onProgress: undefined,
  onChunk: undefined,
  onRetry: undefined,
  onStateChange: undefined,
  onSuccess: undefined,
  onError: undefined,
  /** The create answer carried `warnings` (an array of strings). */
  onWarnings: undefined,
  /**
   * After completion, a worker's reports on the file (`processing`: state,
   * progress, message, result), followed live over Server-Sent Events until
   * the state is `completed` or `failed`, or until abort()/destroy().
   */
  onProcessing: undefined,
};

/** Processing states after which no report comes. */
const PROCESSING_DONE = ['completed', 'failed'];

// Why a drive's requests were cancelled: the user paused (or aborted), a
// chunk failed for good and the others must stop, or the server said the
// upload is complete or being assembled, so sending more is pointless.
const PAUSED = Symbol('paused');
const FAILED = Symbol('failed');
const FINISHING = Symbol('finishing');

/** Chunk answers meaning "no more chunks needed": go and complete (or poll). */
const FINISHED_CODES = ['upload_assembling', 'upload_completed'];

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
  /** While a create request is in flight: settles with its answer (abort and resume wait for it). */
  #creating = null;
  /** Callbacks that cut a retry's wait short (the browser came back online). */
  #wakers = new Set();
  #onOnline = () => {
    for (const wake of [...this.#wakers]) wake();
  };
  /** The EventSource following processing, while it is open. */
  #events = null;

  constructor(file, options = {}) {
    this.file = file;
    // Throws a TypeError for options that make no sense, before anything is sent.
    this.options = normalizeOptions(options, DEFAULTS);
    this.endpoint = this.options.endpoint.replace(/\/+$/, '');
    this.state = 'idle';
    this.id = this.options.uploadId ?? null;
    /** This upload's own credential (the create answer's upload_token); the `token` option stands in until then. */
    this.token = this.id && typeof this.options.token === 'string' ? this.options.token : null;
    this.chunkSize = null;
    this.chunkCount = null;
    /** True when this upload continued one that a previous page had started. */
    this.resumed = false;
    /** The create answer's `warnings` (strings), if it had any. */
    this.warnings = [];
    /** A worker's last report on the completed file (with `onProcessing`). */
    this.processing = null;
    this.progress = new Progress(file.size);
    this.storage = this.options.storage ?? safeLocalStorage();
    this.key = fingerprint(file, absoluteUrl(this.endpoint));
    this.#newPromise();
  }

  #newPromise() {
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

  /**
   * Continues after pause(), or tries again after a failure; returns the
   * promise of the file (a new one after a failure). Asks the server where
   * the upload stands first: one that expired meanwhile starts afresh.
   */
  resume() {
    if (this.state === 'failed') {
      this.#newPromise();
      this.error = null;
    } else if (this.state !== 'paused') {
      return this.#done;
    }
    this.chunkSize = null;
    this.#drive();
    return this.#done;
  }

  /** Stops for good and deletes what the server holds of this upload. */
  async abort() {
    this.#unfollow();
    if (['completed', 'aborted'].includes(this.state)) return;
    this.#ctrl?.abort(PAUSED);
    this.#setState('aborted');
    this.#reject(new UploadError('The upload was cancelled.', { code: 'aborted' }));
    // A create already sent may still name an upload: wait for its answer,
    // or the server keeps an upload nobody knows of until it expires.
    await this.#creating;
    this.#forget();
    if (this.id) {
      // Best effort: an upload left behind expires by itself.
      try {
        await fetch(this.#url(`/uploads/${this.id}`), { method: 'DELETE', headers: await this.#headers() });
      } catch {
        // The network is down; see above.
      }
    }
  }

  /**
   * Lets go of this upload in the page: stops sending (as pause() does) and
   * stops following processing. The server keeps the upload.
   */
  destroy() {
    this.#unfollow();
    this.pause();
  }

  async #drive() {
    const ctrl = new AbortController();
    this.#ctrl = ctrl;
    const { signal } = ctrl;
    globalThis.addEventListener?.('online', this.#onOnline);
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
    } finally {
      if (this.#ctrl === ctrl) globalThis.removeEventListener?.('online', this.#onOnline);
    }
  }

  /**
   * Continues this upload (or the remembered upload of this file) if the
   * server still has it and lets us in, else creates one.
   */
  async #open(signal) {
    // A create sent before a pause may still be on its way: its upload is
    // the one to continue, not a reason to create a second.
    if (this.#creating) {
      await this.#creating;
      if (signal.aborted) throw signal.reason;
    }
    let status = null;
    const explicit = this.options.uploadId != null;
    let fromStorage = false;
    if (!this.id && this.options.resume) {
      const saved = this.#recall();
      if (saved) {
        this.id = saved.id;
        this.token = saved.token ?? null;
        fromStorage = true;
      }
    }
    if (this.id) {
      try {
        status = (await this.#control('GET', `/uploads/${this.id}`, undefined, signal)).body;
        if (!['uploading', 'assembling', 'completed'].includes(status.status) || status.size !== this.file.size) {
          status = null;
        }
      } catch (err) {
        // Gone (expired, aborted), or our token for it expired (401) or is
        // not for it (403): nothing to continue, so start afresh with the
        // application's token. An upload the application named is its to
        // replace, not ours.
        const stale = classifyFailure(err.status, err.code) === 'gone' || err.status === 401 || err.status === 403;
        if (explicit || !stale) throw err;
      }
      if (status) {
        this.resumed ||= fromStorage;
      } else {
        this.#forget();
        this.id = null;
        this.token = null;
        this.resumed = false;
      }
    }
    status ??= await this.#create(signal);
    this.chunkSize = status.chunk_size;
    this.chunkCount = status.chunk_count;
    this.#remember();
    this.#setMissing(status.status === 'uploading' ? status.missing_chunks : []);
    this.#emitProgress();
    return status;
  }

  async #create(signal) {
    const body = {
      filename: this.file.name,
      size: this.file.size,
      content_type: this.options.contentType ?? (this.file.type || undefined),
      sha256: this.options.sha256?.toLowerCase(),
      chunk_size: this.options.chunkSize,
      metadata: this.options.metadata,
    };
    // A key per upload created, so that a retried create (its answer lost)
    // does not create a second one; a fresh upload after this one expired
    // needs a key of its own.
    const key = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
    // The request itself is not cancelled by pause or abort (the server may
    // have created the upload already): abort waits for its answer instead.
    const created = this.#control('POST', '/uploads', body, signal, { 'Idempotency-Key': key }, [], { cancellable: false }).then(
      ({ body: status }) => {
        // Recorded even when this drive was paused meanwhile: the next one
        // (and abort) must know the upload exists.
        this.id = status.id;
        this.token = status.upload_token ?? null;
        // What the server had to say about the request (a field it ignored, say).
        if (Array.isArray(status.warnings) && status.warnings.length > 0) {
          this.warnings = status.warnings.map(String);
          this.options.onWarnings?.(this.warnings, this);
        }
        return status;
      },
    );
    const settled = created.then(
      () => {},
      () => {},
    );
    this.#creating = settled;
    settled.then(() => {
      if (this.#creating === settled) this.#creating = null;
    });
    const status = await created;
    if (signal.aborted) throw signal.reason;
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

  async #sendAll(outer) {
    // The chunks' own controller: one chunk's answer can stop the others
    // (a failure, or the server saying the upload is already finishing).
    const ctrl = new AbortController();
    const relay = () => ctrl.abort(outer.reason);
    outer.addEventListener('abort', relay, { once: true });
    const { signal } = ctrl;
    const queue = chunkPlan(this.file.size, this.chunkSize, [...this.#todo].sort((a, b) => a - b));
    const worker = async () => {
      for (let range = queue.shift(); range; range = queue.shift()) {
        await this.#sendChunk(range, signal);
      }
    };
    const workers = Array.from({ length: this.options.parallel }, worker);
    try {
      await Promise.all(workers);
    } catch (err) {
      if (err?.status === 409 && FINISHED_CODES.includes(err.code) && !outer.aborted) {
        // Another tab or an earlier page sent the rest, and the server is
        // assembling the file or has it: complete (or poll) instead of failing.
        ctrl.abort(FINISHING);
        await Promise.allSettled(workers);
        return;
      }
      // One chunk failed for good: stop the others before reporting it.
      if (!signal.aborted) ctrl.abort(FAILED);
      throw err;
    } finally {
      outer.removeEventListener('abort', relay);
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
    let attempts = 0;
    const answer = await this.#withRetries(range.index, signal, async (attempt) => {
      attempts = attempt;
      try {
        return await this.#put(range.index, size, body, digest, signal);
      } catch (err) {
        this.progress.dropped(range.index);
        if (!signal.aborted && err.status === 401) {
          throw new UploadError(`The upload's token has expired or is not valid. (${err.message})`, {
            status: 401,
            code: err.code,
            body: err.body,
          });
        }
        throw err;
      }
    });
    this.#todo.delete(range.index);
    this.progress.acknowledged(range.index, size);
    this.options.onChunk?.(
      {
        index: range.index,
        size,
        attempts,
        sha256: answer.sha256 ?? (digest && toHex(digest)),
        receivedChunks: answer.received_chunks,
        chunkCount: answer.chunk_count,
      },
      this,
    );
    this.#emitProgress();
  }

  /**
   * The one retry loop of chunks and control requests alike: runs
   * `attempt(n)` (one request) until it succeeds, fails in a way the table of
   * docs/API.md does not retry, or the retries run out (`retry.retries`, or
   * `retry.maxElapsed` for an outage), waiting the backoff or the server's
   * Retry-After in between. `index` (the chunk's, or null) goes to onRetry.
   */
  async #withRetries(index, signal, attempt) {
    let firstFailure = null;
    for (let n = 1; ; n++) {
      let err;
      try {
        return await attempt(n);
      } catch (e) {
        if (signal.aborted) throw e;
        err = e;
      }
      if (classifyFailure(err.status, err.code) !== 'retry') throw err;
      firstFailure ??= Date.now();
      const delay = retryDelay(n, err.retryAfter, this.options.retry, Math.random, {
        outage: isOutage(err.status, err.code),
        elapsed: Date.now() - firstFailure,
      });
      if (delay == null) throw err;
      this.options.onRetry?.({ index, attempt: n, delay, error: err }, this);
      await this.#sleep(delay, signal);
    }
  }

  async #put(index, size, body, digest, signal) {
    const headers = await this.#headers();
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', this.#url(`/uploads/${this.id}/chunks/${index}`));
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
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

  /** POST complete, then poll while the server assembles (202), up to `assembleTimeout`. */
  async #complete(signal) {
    let answer = await this.#control('POST', `/uploads/${this.id}/complete`, undefined, signal, {}, [409]);
    const deadline = Date.now() + this.options.assembleTimeout;
    for (let wait = 250; answer.body.status === 'assembling'; wait = Math.min(wait * 2, 5000)) {
      if (Date.now() >= deadline) {
        throw new UploadError('The server is still assembling the file. Try again later to see the result.', {
          status: answer.status,
          code: 'assemble_timeout',
          body: answer.body,
        });
      }
      await this.#sleep(wait, signal);
      answer = await this.#control('GET', `/uploads/${this.id}`, undefined, signal);
    }
    const body = answer.body;
    if (answer.status === 409) {
      if (body.error !== 'upload_incomplete') throw errorFromAnswer(409, body, null);
      return { status: 'incomplete', missing: body.missing_chunks ?? [], message: body.message, code: body.error };
    }
    if (body.status !== 'completed') {
      // A failed upload carries its failure as `error: {error, message}`, the
      // shape of an error answer's body.
      const failure = typeof body.error === 'object' && body.error ? body.error : {};
      throw new UploadError(failure.message ?? `The upload ended as ${body.status}.`, {
        status: answer.status,
        code: failure.error ?? failure.code ?? `upload_${body.status}`,
        body,
      });
    }
    return body;
  }

  /**
   * A JSON request with the chunk's retry rules; `expected` lists non-2xx
   * statuses the caller handles. `cancellable: false` lets the request itself
   * run to its answer when `signal` fires (its retries still stop).
   */
  async #control(method, path, body, signal, extraHeaders = {}, expected = [], { cancellable = true } = {}) {
    return this.#withRetries(null, signal, async () => {
      let res;
      let parsed;
      try {
        if (signal.aborted) throw signal.reason;
        res = await fetch(this.#url(path), {
          method,
          signal: cancellable ? signal : undefined,
          headers: { ...(await this.#headers()), ...(body ? { 'Content-Type': 'application/json' } : {}), ...extraHeaders },
          body: body ? JSON.stringify(body) : undefined,
        });
        parsed = parseJson(await res.text());
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        throw e instanceof UploadError ? e : networkError();
      }
      if (res.ok || expected.includes(res.status)) return { status: res.status, body: parsed ?? {} };
      throw errorFromAnswer(res.status, parsed, res.headers.get('Retry-After'));
    });
  }

  #succeed(file) {
    this.#forget();
    this.progress.finish();
    this.#emitProgress();
    // The URL becomes a link in the page: only http(s), never `javascript:`.
    const base = absoluteUrl(this.endpoint);
    const url = httpUrl(file?.url, base) ?? (file?.id ? `${base}/files/${encodeURIComponent(file.id)}` : null);
    const result = { ...file, url };
    this.result = result;
    this.#setState('completed');
    this.options.onSuccess?.(result, this);
    this.#resolve(result);
    if (this.options.onProcessing) this.#follow();
  }

  /**
   * Follows the upload's events (`GET /uploads/{id}/events`) for its
   * processing reports. EventSource sends no header, so the upload's own
   * token goes in the query, the one place besides downloads where the
   * server takes it. It reconnects by itself (with Last-Event-ID: nothing is
   * repeated), and the server ends the stream after the last report.
   */
  #follow() {
    if (this.#events || typeof EventSource === 'undefined' || !this.id) return;
    let url = absoluteUrl(this.#url(`/uploads/${encodeURIComponent(this.id)}/events`));
    if (this.token) url += `?access_token=${encodeURIComponent(this.token)}`;
    const events = new EventSource(url);
    this.#events = events;
    events.addEventListener('upload.processing', (e) => {
      const processing = parseJson(e.data)?.processing;
      // A report seen already (a reconnect to another instance) is not news.
      if (!processing || (this.processing && processing.revision <= this.processing.revision)) return;
      this.processing = processing;
      if (PROCESSING_DONE.includes(processing.state)) this.#unfollow();
      this.options.onProcessing?.(processing, this);
    });
    // The file deleted, or no report will ever come: nothing to wait for.
    for (const name of ['upload.failed', 'upload.aborted', 'upload.expired']) {
      events.addEventListener(name, () => this.#unfollow());
    }
    // Refused (401, 404, 204 after the end): EventSource gives up by itself.
    events.addEventListener('error', () => {
      if (events.readyState === EventSource.CLOSED) this.#unfollow();
    });
  }

  #unfollow() {
    this.#events?.close();
    this.#events = null;
  }

  #emitProgress() {
    const p = this.progress;
    this.options.onProgress?.(p.acked, p.total, {
      bytesShown: p.shown,
      bytesInFlight: p.bytesInFlight,
      bytesSaved: p.acked,
      savedFraction: p.savedFraction,
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

  /** The upload's own token once it has one, else the application's (asked afresh when a function). */
  async #headers() {
    const h = { ...this.options.headers };
    let token = this.token;
    if (!token) {
      const given = this.options.token;
      token = typeof given === 'function' ? await given() : given;
    }
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  #url(path) {
    return `${this.endpoint}${path}`;
  }

  /** Waits `ms`, or less when the browser comes back online; rejects when `signal` fires. */
  #sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', cancel);
        this.#wakers.delete(done);
        resolve();
      };
      const cancel = () => {
        clearTimeout(timer);
        this.#wakers.delete(done);
        reject(signal.reason);
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', cancel, { once: true });
      this.#wakers.add(done);
    });
  }

  #recall() {
    try {
      const saved = JSON.parse(this.storage?.getItem(this.key) ?? 'null');
      return saved?.id ? saved : null;
    } catch {
      return null;
    }
  }

  /**
   * Remembers this upload for its file, unless the entry names another
   * upload of the same file (started at the same moment in another row or
   * tab): that one keeps it, and neither forgets the other's.
   */
  #remember() {
    if (!this.options.resume) return;
    const saved = this.#recall();
    if (saved && saved.id !== this.id) return;
    try {
      this.storage?.setItem(this.key, JSON.stringify({ id: this.id, token: this.token, savedAt: Date.now() }));
    } catch {
      // Storage full or forbidden (private mode): the upload works, only without resume.
    }
  }

  /**
   * Forgets the remembered upload of this file, if it is this one: another
   * Upload of the same file (another row, another tab) may have saved its own.
   */
  #forget() {
    const saved = this.#recall();
    if (!saved || saved.id !== this.id) return;
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
