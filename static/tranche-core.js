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
  /** Attempts per chunk request after the first one. */
  retries: 8,
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
 * What to do after a failed request: `retry` (the network, a server in
 * trouble, a lock held by another request), `gone` (the upload no longer
 * exists: start afresh) or `fatal` (sending the same request again cannot
 * succeed). `status` 0 means no HTTP answer at all.
 */
export function classifyFailure(status, code) {
  if (status === 0 || status === 408 || status === 429) return 'retry';
  if (status === 409 && code === 'chunk_in_progress') return 'retry';
  if (status === 404 || status === 410) return 'gone';
  // 507 (disk full) and 501 will not heal by themselves within a retry.
  if (status >= 500 && status !== 501 && status !== 507) return 'retry';
  return 'fatal';
}

/**
 * How long to wait before retry number `attempt`: the server's Retry-After
 * when it gave one (429, 503, 409 chunk_in_progress), else backoff; null when
 * the retries are used up.
 */
export function retryDelay(attempt, retryAfterMs, retry = DEFAULT_RETRY, random = Math.random) {
  if (attempt > retry.retries) return null;
  if (retryAfterMs != null) return Math.min(retryAfterMs, retry.maxRetryAfter);
  return backoffDelay(attempt, retry, random);
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
 * jumping back. Speed is an exponentially weighted average of bytes moved per
 * second; ETA is what is left at that speed.
 */
export class Progress {
  constructor(total, { now = () => Date.now(), halfLife = 3000 } = {}) {
    this.total = total;
    this.acked = 0;
    this.shown = 0;
    this.speed = 0;
    this.now = now;
    this.halfLife = halfLife;
    this.inFlight = new Map();
    this.lastMoved = null;
    this.lastTime = null;
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
    this.lastMoved = null;
  }

  /** The network layer moved `loaded` bytes of chunk `index` so far. */
  sending(index, loaded) {
    this.inFlight.set(index, loaded);
    this.update();
  }

  /** The server confirmed chunk `index` of `size` bytes. */
  acknowledged(index, size) {
    this.inFlight.delete(index);
    this.acked += size;
    this.update();
  }

  /** Chunk `index` failed or was stopped: its bytes are no longer on their way. */
  dropped(index) {
    this.inFlight.delete(index);
    this.update();
  }

  /** After a pause: the next sample must not count the pause as slow transfer. */
  restartClock() {
    this.lastMoved = null;
    this.speed = 0;
  }

  update() {
    const moved = this.acked + this.bytesInFlight;
    this.shown = Math.min(this.total, Math.max(this.shown, moved));
    const t = this.now();
    if (this.lastMoved != null && t > this.lastTime) {
      const delta = Math.max(0, moved - this.lastMoved);
      const rate = (delta * 1000) / (t - this.lastTime);
      const weight = 1 - 0.5 ** ((t - this.lastTime) / this.halfLife);
      this.speed = this.speed === 0 ? rate : this.speed + weight * (rate - this.speed);
    }
    if (this.lastMoved == null || t > this.lastTime) {
      this.lastMoved = moved;
      this.lastTime = t;
    }
  }

  /** Seconds left at the current speed, or null while the speed is unknown. */
  get eta() {
    if (this.speed <= 0) return null;
    return (this.total - this.shown) / this.speed;
  }

  get fraction() {
    return this.total === 0 ? 1 : this.shown / this.total;
  }
}

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

/** 1536000 -> "1.5 MB" (decimal units, as file managers show sizes). */
export function formatBytes(n) {
  let i = 0;
  let v = n;
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
}

/** 3725 -> "1 h 2 min"; 75 -> "1 min 15 s"; 9 -> "9 s". */
export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
