// The uploader's pure logic: chunk arithmetic, when and how long to retry,
// resume keys, progress and speed. Nothing here touches the DOM, the network
// or storage, so Node's test runner checks it as it is (tests/browser/unit/).

/** Chunk `index` of a file of `size` bytes cut in `chunkSize` pieces (API v1). */
export function chunkRange(index, size, chunkSize) {
  const start = index * chunkSize;
  return { index, start, end: Math.min(start + chunkSize, size) };
}

/** How many chunks the server cuts a file into; a zero-byte file has one empty chunk. */
export function chunkCount(size, chunkSize) {
  return size === 0 ? 1 : Math.ceil(size / chunkSize);
}

/**
 * The chunks still to send, in order: all of them for a fresh upload, or the
 * server's `missing_chunks` after a resume.
 */
export function chunkPlan(size, chunkSize, missing) {
  const indices = missing ?? [...Array(chunkCount(size, chunkSize)).keys()];
  return indices.map((i) => chunkRange(i, size, chunkSize));
}

export const DEFAULT_RETRY = Object.freeze({
  /** Attempts per request after the first one, for failures that are not an outage. */
  retries: 8,
  /**
   * How long an outage (no answer at all, 408, 429, 502, 503, 504) is waited
   * out, in ms, counted from the request's first failure: by default as long
   * as the page is open, since nothing is lost by waiting and a laptop that
   * comes back online should just go on.
   */
  maxElapsed: Infinity,
  /** First delay; each further one doubles, up to maxDelay. */
  baseDelay: 500,
  maxDelay: 20_000,
  /** A Retry-After longer than this is cut short, so a page never waits for hours. */
  maxRetryAfter: 120_000,
});

/**
 * Exponential backoff with "equal jitter": half the delay is fixed, half is
 * random, so that many tabs that failed together do not come back together,
 * yet no retry is immediate. `attempt` counts from 1 (the first retry).
 */
export function backoffDelay(attempt, retry = DEFAULT_RETRY, random = Math.random) {
  const exp = Math.min(retry.maxDelay, retry.baseDelay * 2 ** (attempt - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}

/**
 * A `Retry-After` header (delay-seconds or an HTTP date) as milliseconds from
 * `now`, or null when absent or unreadable.
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null) return null;
  const text = String(value).trim();
  if (text === '') return null;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // An HTTP date names its day ("Sun, 22 Nov ..."); Date.parse alone would
  // read "-5" as a year.
  if (!/^[a-z]{3},/i.test(text)) return null;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - now);
}

/**
 * Which failures to retry: the table "Which failures to retry" in
 * docs/API.md, row for row (the unit tests read that table and compare).
 * Rows are read from the top; the first whose `status` and `code` match
 * decides. `status`: a list of statuses (0: no HTTP answer at all), `'5xx'`
 * for any other of that class, or null for any; `code`: a list, or null for
 * any. `retry`: `outage` (retried, waited out for `retry.maxElapsed`),
 * `yes` (retried up to `retry.retries` times), `no`, or `gone` (the upload
 * no longer exists: start afresh). `later`: whether trying the same file
 * again later (the page's Retry) can succeed.
 */
export const FAILURES = Object.freeze([
  { status: [0], code: null, retry: 'outage', later: true },
  { status: [408, 429, 502, 503, 504], code: null, retry: 'outage', later: true },
  { status: [409], code: ['chunk_in_progress', 'create_in_progress'], retry: 'yes', later: true },
  // 507 (disk full) and 501 will not heal within a retry.
  { status: [501, 507], code: null, retry: 'no', later: true },
  { status: [500, '5xx'], code: null, retry: 'yes', later: true },
  { status: [404, 410], code: null, retry: 'gone', later: true },
  {
    status: null,
    code: [
      'file_too_large',
      'unsupported_content_type',
      'content_mismatch',
      'forbidden',
      'invalid_request',
      'upload_failed',
      'chunk_conflict',
      'idempotency_key_reused',
    ],
    retry: 'no',
    later: false,
  },
  { status: null, code: null, retry: 'no', later: true },
].map(Object.freeze));

/** The row of `FAILURES` for a failure with HTTP `status` (0: no answer) and error `code`. */
export function failureRule(status, code) {
  const statusMatches = (list) =>
    list == null || list.some((s) => s === status || (typeof s === 'string' && Math.floor(status / 100) === Number(s[0])));
  return FAILURES.find((r) => statusMatches(r.status) && (r.code == null || r.code.includes(code)));
}

/**
 * What to do after a failed request: `retry` (the network, a server in
 * trouble, a lock held by another request), `gone` (the upload no longer
 * exists: start afresh) or `fatal` (sending the same request again cannot
 * succeed). `status` 0 means no HTTP answer at all.
 */
export function classifyFailure(status, code) {
  const { retry } = failureRule(status, code);
  return retry === 'outage' || retry === 'yes' ? 'retry' : retry === 'gone' ? 'gone' : 'fatal';
}

/**
 * Failures that say "not now" rather than "not this way": the network or a
 * proxy in front of the server is down, or the server asks to wait. They are
 * waited out for `retry.maxElapsed`, not counted against `retry.retries`.
 */
export function isOutage(status, code) {
  return failureRule(status, code).retry === 'outage';
}

/** Whether trying the same file again later (a Retry button) can succeed after this failure. */
export function canRetryLater(status, code) {
  return failureRule(status, code).later;
}

/**
 * How long to wait before retry number `attempt`: the backoff, or the
 * server's Retry-After (429, 503, 409 chunk_in_progress) when that is longer.
 * Never shorter than the backoff: a "1 s" repeated (a chunk lease left by a
 * server that died lapses only after 10 s) must not use up every retry in a
 * few seconds. Null when it is time to give up: after `retry.retries`
 * attempts, or for an outage (`outage`) once `elapsed` ms have gone by since
 * the first failure.
 */
export function retryDelay(attempt, retryAfterMs, retry = DEFAULT_RETRY, random = Math.random, { outage = false, elapsed = 0 } = {}) {
  if (outage ? elapsed >= (retry.maxElapsed ?? Infinity) : attempt > retry.retries) return null;
  const backoff = backoffDelay(attempt, retry, random);
  if (retryAfterMs == null) return backoff;
  return Math.max(backoff, Math.min(retryAfterMs, retry.maxRetryAfter));
}

/**
 * The key under which an upload is remembered for resuming: the same file
 * (name, size, last modification) sent to the same endpoint. Normalising the
 * endpoint keeps `/api/v1` and `/api/v1/` the same.
 */
export function fingerprint({ name, size, lastModified }, endpoint) {
  const base = String(endpoint).replace(/\/+$/, '');
  return `tranche:v1:${base}|${size}|${lastModified}|${encodeURIComponent(name)}`;
}

/** `sha-256=:<base64>:` (RFC 9530) from a digest's bytes. */
export function contentDigestHeader(bytes, toBase64 = defaultBase64) {
  return `sha-256=:${toBase64(bytes)}:`;
}

function defaultBase64(bytes) {
  let s = '';
  const view = new Uint8Array(bytes);
  for (let i = 0; i < view.length; i++) s += String.fromCharCode(view[i]);
  return btoa(s);
}

export function toHex(bytes) {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Progress of one upload. `acked` counts only bytes the server confirmed;
 * bytes in flight (what the network layer reports for chunks not yet
 * answered) make the bar move between confirmations. `shown` never goes
 * backwards: when a chunk in flight fails or is paused its bytes leave
 * `acked + inFlight`, and the bar waits for the resend to catch up instead of
 * jumping back.
 *
 * `acked` is what is saved on the server; `inFlight` what is on its way and
 * lost if the page closes now. A bar shows them apart (`savedFraction`,
 * `fraction`).
 *
 * Speed is the growth of the bytes moved (sent in chunk requests, counted
 * once each, resends too) over the last `window` ms, measured from the moment
 * sending (re)started. Not `shown`: after a pause the resent bytes catch up
 * with the bar before they move it, and would read as a stalled transfer.
 * Not an average of instant rates: the first progress events of a request
 * report what went into the socket's buffer, not onto the wire, and a rate
 * over a few milliseconds overstates the speed several times. So the speed
 * stays unknown (0, no ETA) for `warmup` ms, and a burst is averaged over the
 * whole window.
 */
export class Progress {
  constructor(total, { now = () => Date.now(), window = 5000, warmup = 1000 } = {}) {
    this.total = total;
    this.acked = 0;
    this.shown = 0;
    this.speed = 0;
    this.done = false;
    this.now = now;
    this.window = window;
    this.warmup = warmup;
    this.inFlight = new Map();
    /** Bytes moved by this page's requests, counted once each (a resend again). */
    this.moved = 0;
    /** `{t, bytes}` of `moved`, oldest first; the first one is at or before the window's start. */
    this.samples = [];
  }

  /** Bytes the server holds (saved), as a fraction of the file; see `fraction` for the bar with bytes in flight. */
  get savedFraction() {
    if (this.total === 0) return this.done ? 1 : 0;
    return Math.min(1, this.acked / this.total);
  }

  get bytesInFlight() {
    let sum = 0;
    for (const n of this.inFlight.values()) sum += n;
    return sum;
  }

  /** Bytes the server already holds when the upload (re)starts. */
  setAcked(bytes) {
    this.acked = bytes;
    this.shown = Math.max(this.shown, Math.min(bytes, this.total));
  }

  /** The network layer moved `loaded` bytes of chunk `index` so far. */
  sending(index, loaded) {
    this.moved += Math.max(0, loaded - (this.inFlight.get(index) ?? 0));
    this.inFlight.set(index, loaded);
    this.update();
  }

  /** The server confirmed chunk `index` of `size` bytes. */
  acknowledged(index, size) {
    this.moved += Math.max(0, size - (this.inFlight.get(index) ?? 0));
    this.inFlight.delete(index);
    this.acked += size;
    this.update();
  }

  /** Chunk `index` failed or was stopped: its bytes are no longer on their way. */
  dropped(index) {
    this.inFlight.delete(index);
    this.update();
  }

  /** The server holds the whole file (which matters for a zero-byte one). */
  finish() {
    this.done = true;
    this.setAcked(this.total);
  }

  /**
   * Sending starts or starts again (after a pause or a reconnect): the speed
   * is measured afresh from now, so that a pause does not read as a slow
   * transfer nor what the server already had as a fast one.
   */
  restartClock() {
    this.speed = 0;
    this.samples = [{ t: this.now(), bytes: this.moved }];
  }

  update() {
    const moved = this.acked + this.bytesInFlight;
    this.shown = Math.min(this.total, Math.max(this.shown, moved));
    const t = this.now();
    if (this.samples.length === 0) this.samples.push({ t, bytes: this.moved });
    const last = this.samples.at(-1);
    if (t > last.t) this.samples.push({ t, bytes: this.moved });
    else last.bytes = this.moved;
    // Keep one sample at or before the window's start, so the window is full.
    while (this.samples.length > 2 && this.samples[1].t <= t - this.window) this.samples.shift();
    const first = this.samples[0];
    const span = t - first.t;
    this.speed = span >= this.warmup ? ((this.moved - first.bytes) * 1000) / span : 0;
  }

  /** Seconds left at the current speed, or null while the speed is unknown. */
  get eta() {
    if (this.speed <= 0) return null;
    return (this.total - this.shown) / this.speed;
  }

  /** 0 to 1; a zero-byte file is at 0 until the server confirms it. */
  get fraction() {
    if (this.total === 0) return this.done ? 1 : 0;
    return this.shown / this.total;
  }
}

/**
 * Speed and time left as a page shows them: nothing until the speed has been
 * known for `settle` ms since sending (re)started (right after a resume the
 * first seconds measure connection set-up and socket buffers, not the
 * network), then the speed smoothed over about `smoothing` ms, so that the
 * figures do not jump with every chunk's answer.
 */
export class Estimate {
  constructor({ now = () => Date.now(), settle = 3000, smoothing = 3000 } = {}) {
    this.now = now;
    this.settle = settle;
    this.smoothing = smoothing;
    this.restart();
  }

  /** Sending starts or starts again (a resume, a reconnect): forget the old figures. */
  restart() {
    this.knownSince = null;
    this.smoothed = 0;
    this.last = null;
  }

  /**
   * Feeds the current `speed` (bytes/s, 0 while unknown) and the bytes still
   * to send; returns `{speed, eta}` to show, both null until they mean something.
   */
  update(speed, remaining) {
    const t = this.now();
    if (!(speed > 0)) {
      this.restart();
      return { speed: null, eta: null };
    }
    if (this.knownSince == null) {
      this.knownSince = t;
      this.smoothed = speed;
    } else {
      const alpha = 1 - Math.exp(-Math.max(0, t - this.last) / this.smoothing);
      this.smoothed += alpha * (speed - this.smoothed);
    }
    this.last = t;
    if (t - this.knownSince < this.settle) return { speed: null, eta: null };
    return { speed: this.smoothed, eta: Math.max(0, remaining) / this.smoothed };
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/**
 * 1536000 -> "1.5 MiB": binary units, as the server's messages, its
 * configuration and the command-line client write sizes.
 */
export function formatBytes(n) {
  let i = 0;
  let v = Math.max(0, Number(n) || 0);
  // 1023.6 B would read "1024 B": round first, then pick the unit.
  if (v < 1024) v = Math.round(v);
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? Math.round(v) : v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
}

/** 3725 -> "1 h 2 min"; 75 -> "1 min 15 s"; 9 -> "9 s". */
export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/**
 * `url` resolved against `base` if it is an http(s) URL, else null. A file URL
 * comes from the server's answer and ends up as a link's href: a
 * `javascript:` or `data:` one would run in the page's origin when clicked.
 */
export function httpUrl(url, base) {
  if (typeof url !== 'string' || url === '') return null;
  try {
    const u = new URL(url, base);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

/**
 * The options an `Upload` works with: `defaults` where an option is absent,
 * `undefined` or `null` (so `{parallel: config.parallel}` with nothing
 * configured means the default), numbers checked and clamped; a value that
 * makes no sense throws a TypeError at once instead of failing the upload later.
 */
export function normalizeOptions(options, defaults) {
  if (options != null && typeof options !== 'object') throw new TypeError('Upload options must be an object.');
  const given = (o) => Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v != null));
  const out = { ...defaults, ...given(options) };
  out.retry = { ...DEFAULT_RETRY, ...given(defaults.retry), ...given(options?.retry) };

  out.parallel = integerOption('parallel', out.parallel, 1, 16);
  if (out.chunkSize != null) out.chunkSize = integerOption('chunkSize', out.chunkSize, 1, Number.MAX_SAFE_INTEGER);
  out.chunkTimeout = integerOption('chunkTimeout', out.chunkTimeout, 0, Number.MAX_SAFE_INTEGER);
  if (out.processingWait != null) out.processingWait = integerOption('processingWait', out.processingWait, 0, 2 ** 31 - 1);
  if (out.assembleTimeout != null) out.assembleTimeout = integerOption('assembleTimeout', out.assembleTimeout, 0, Infinity);
  for (const name of ['retries', 'baseDelay', 'maxDelay', 'maxRetryAfter', 'maxElapsed']) {
    if (name in out.retry) out.retry[name] = integerOption(`retry.${name}`, out.retry[name], 0, Infinity);
  }
  if (typeof out.endpoint !== 'string' || out.endpoint === '') throw new TypeError('Upload option endpoint must be a URL string.');
  if (!['string', 'function', 'undefined'].includes(typeof out.token)) {
    throw new TypeError('Upload option token must be a string or a function returning one.');
  }
  if (out.sha256 != null && !/^[0-9a-f]{64}$/i.test(String(out.sha256))) {
    throw new TypeError('Upload option sha256 must be 64 hexadecimal digits.');
  }
  for (const [name, value] of Object.entries(out)) {
    if (/^on[A-Z]/.test(name) && value != null && typeof value !== 'function') {
      throw new TypeError(`Upload option ${name} must be a function.`);
    }
  }
  return out;
}

/** A whole number from a number or a numeric string, clamped to [min, max]. */
function integerOption(name, value, min, max) {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  if (typeof n !== 'number' || Number.isNaN(n)) {
    throw new TypeError(`Upload option ${name} must be a number, not ${JSON.stringify(value) ?? String(value)}.`);
  }
  return Math.min(max, Math.max(min, n === Infinity ? n : Math.floor(n)));
}
