// TypeScript declarations for tranche-upload.js, tranche's browser uploader
// (API v1, docs/API.md). Put this file beside the module and `import { Upload }
// from './tranche-upload.js'` gets completion and type errors. Checked by
// `tsc --noEmit` on tests/browser/types/example.ts (run by tests/browser.rs).

/** The completed file, as `start()` resolves and `onSuccess` receives it. */
export interface UploadedFile {
  /** The file's id (the upload's id). */
  id: string;
  /** Bytes. */
  size: number;
  /** The whole file's SHA-256, lowercase hex, as the server computed it. */
  sha256: string;
  /** Where to download it: always an http(s) URL. */
  url: string;
}

/** Where a worker's processing of the completed file stands. */
export type ProcessingState = 'queued' | 'processing' | 'completed' | 'failed';

/**
 * A worker's last report on the completed file (the upload object's
 * `processing`), as `onProcessing` receives it.
 */
export interface Processing {
  state: ProcessingState;
  /** From 0 to 1, if the worker can tell. */
  progress?: number;
  /** A line for a person. */
  message?: string;
  /** Whatever the worker wants the page to have (a thumbnail's URL...). */
  result?: unknown;
  /** RFC 3339, UTC. */
  updated_at: string;
  /** 1 for the first report, one more for each. */
  revision: number;
}

/** Where an upload stands. */
export type UploadState =
  | 'idle'
  | 'starting'
  | 'uploading'
  | 'paused'
  | 'completing'
  | 'completed'
  | 'failed'
  | 'aborted';

/**
 * The stable codes of tranche's error answers (`{error, message}`), plus the
 * uploader's own: `network_error` (no answer), `client_error` (a bug or a
 * browser failure), `aborted` (`abort()` was called), and `http_<status>`
 * for an answer without a JSON body (a proxy's, say).
 */
export type ErrorCode =
  | 'invalid_request'
  | 'body_incomplete'
  | 'chunk_out_of_range'
  | 'chunk_size_mismatch'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'upload_not_found'
  | 'file_not_found'
  | 'method_not_allowed'
  | 'request_timeout'
  | 'upload_incomplete'
  | 'upload_completed'
  | 'upload_assembling'
  | 'upload_failed'
  | 'chunk_in_progress'
  | 'chunk_conflict'
  | 'create_in_progress'
  | 'upload_expired'
  | 'upload_aborted'
  | 'file_too_large'
  | 'unsupported_content_type'
  | 'content_mismatch'
  | 'digest_mismatch'
  | 'idempotency_key_reused'
  | 'rate_limited'
  | 'internal_error'
  | 'store_unavailable'
  | 'insufficient_storage'
  | 'network_error'
  | 'client_error'
  | 'aborted'
  | `http_${number}`
  // Codes a newer server or a proxy may send; `(string & {})` keeps completion for the known ones.
  | (string & {});

/** A failure the uploader gave up on, with the server's code when it sent one. */
export class UploadError extends Error {
  constructor(
    message: string,
    details?: { status?: number; code?: ErrorCode; body?: unknown; retryAfter?: number | null },
  );
  name: 'UploadError';
  /** The HTTP status; 0 when no answer came. */
  status: number;
  code: ErrorCode;
  /** The server's JSON error body (`{error, message, ...}`), if it sent one. */
  body: ({ error: string; message: string } & Record<string, unknown>) | null;
  /** The server's Retry-After, in ms, if it sent one. */
  retryAfter: number | null;
}

/** Retry settings, per request (ms where a time). */
export interface RetryOptions {
  /** Attempts per request after the first one, for failures that are not an outage (default 8). */
  retries?: number;
  /** How long an outage (no answer, 408, 429, 502, 503, 504) is waited out (default Infinity). */
  maxElapsed?: number;
  /** First delay; each further one doubles, up to maxDelay (default 500). */
  baseDelay?: number;
  /** Default 20000. */
  maxDelay?: number;
  /** A longer Retry-After is cut to this (default 120000). */
  maxRetryAfter?: number;
}

/** The third argument of `onProgress`. */
export interface ProgressDetails {
  /** What the bar shows: saved bytes plus bytes in flight, never going backwards. */
  bytesShown: number;
  bytesInFlight: number;
  /** Bytes the server confirmed. */
  bytesSaved: number;
  /** bytesSaved / total, 0 to 1. */
  savedFraction: number;
  /** bytesShown / total, 0 to 1. */
  fraction: number;
  /** Bytes per second over the last 5 s (0 for the first second). */
  speed: number;
  /** Seconds left at that speed, or null while it is unknown. */
  eta: number | null;
}

/** What `onChunk` receives for each chunk the server confirmed. */
export interface ChunkInfo {
  index: number;
  size: number;
  /** Requests it took (1 without retries). */
  attempts: number;
  /** The chunk's SHA-256 (hex), when it was computed or the server sent it. */
  sha256?: string | null;
  receivedChunks: number;
  chunkCount: number;
}

/** What `onRetry` receives before each retry. */
export interface RetryInfo {
  /** The chunk's index, or null for a control request. */
  index: number | null;
  attempt: number;
  /** ms until the retry. */
  delay: number;
  error: UploadError;
}

/** A token, or a function (sync or async) asked for the current one each time. */
export type TokenSource = string | (() => string | null | undefined | Promise<string | null | undefined>);

/** Storage for resume entries; `localStorage` by default. */
export interface ResumeStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * Options of `new Upload`, all optional. `undefined` or `null` means the
 * default; a value that makes no sense throws a TypeError at `new Upload`.
 */
export interface UploadOptions {
  /** API v1's base URL (default `/api/v1`); another origin needs `[cors]` on the server. */
  endpoint?: string;
  /** A wish in bytes; the server answers with the size it uses. */
  chunkSize?: number | null;
  /** Chunks in flight at once, 1 to 16 (default 4). */
  parallel?: number | null;
  retry?: RetryOptions | null;
  /** Extra headers on every request. */
  headers?: Record<string, string> | null;
  /** Sent as `Authorization: Bearer`; the create answer's `upload_token` then takes over. */
  token?: TokenSource | null;
  /** Continue an upload your backend created (with its `upload_token` as `token`). */
  uploadId?: string | null;
  /** The upload's metadata, kept by the server. */
  metadata?: Record<string, unknown> | null;
  /** The upload's media type (default: the file's, else application/octet-stream). */
  contentType?: string | null;
  /** The whole file's SHA-256 (64 hex digits): the server refuses a file that does not match. */
  sha256?: string | null;
  /** Send each chunk's SHA-256 as Content-Digest (default true; needs WebCrypto). */
  contentDigest?: boolean | null;
  /** Remember the upload in localStorage to continue after a reload (default true). */
  resume?: boolean | null;
  storage?: ResumeStorage | null;
  /** ms per chunk request; 0 means no limit (default). */
  chunkTimeout?: number | null;
  /** ms to keep polling an upload the server is still assembling (default 1800000). */
  assembleTimeout?: number | null;
  onProgress?: ((bytesAcked: number, total: number, details: ProgressDetails) => void) | null;
  onChunk?: ((chunk: ChunkInfo, upload: Upload) => void) | null;
  onRetry?: ((retry: RetryInfo, upload: Upload) => void) | null;
  onStateChange?: ((state: UploadState, upload: Upload) => void) | null;
  onSuccess?: ((file: UploadedFile, upload: Upload) => void) | null;
  onError?: ((error: UploadError, upload: Upload) => void) | null;
  /** The create answer's `warnings`: one sentence per field the server ignored. */
  onWarnings?: ((warnings: string[], upload: Upload) => void) | null;
  /**
   * After completion, each report of a worker on the file, followed live
   * (Server-Sent Events, with the upload's token) until its state is
   * `completed` or `failed`, or until abort() or destroy().
   */
  onProcessing?: ((processing: Processing, upload: Upload) => void) | null;
}

/** The bytes an upload sends: a File (name, type, lastModified) or a Blob with those. */
export type UploadSource = Blob & { readonly name: string; readonly lastModified?: number };

/** One file's upload. */
export class Upload {
  constructor(file: UploadSource, options?: UploadOptions);
  readonly file: UploadSource;
  /** The options as normalized (defaults filled in). */
  readonly options: Readonly<Required<Omit<UploadOptions, 'retry'>>> & { retry: Required<RetryOptions> };
  readonly endpoint: string;
  readonly state: UploadState;
  /** The upload's id, once the server gave one (or `uploadId`). */
  readonly id: string | null;
  /** This upload's own credential (the create answer's `upload_token`). */
  readonly token: string | null;
  /** The chunk size the server uses, once known. */
  readonly chunkSize: number | null;
  readonly chunkCount: number | null;
  /** True when this upload continued one that an earlier page had started. */
  readonly resumed: boolean;
  /** The create answer's `warnings`. */
  readonly warnings: string[];
  /** The last failure, while `state` is `failed`. */
  readonly error?: UploadError | null;
  /** The completed file, once `state` is `completed`. */
  readonly result?: UploadedFile;
  /** A worker's last report on the file, with `onProcessing`. */
  readonly processing: Processing | null;
  /** Starts (or continues a remembered upload of the same file); resolves with the file. */
  start(): Promise<UploadedFile>;
  /** Stops sending; chunks in flight are sent again on resume. */
  pause(): void;
  /** Continues after pause(), or tries again after a failure. */
  resume(): Promise<UploadedFile>;
  /** Stops for good and deletes what the server holds of this upload (and stops following processing). */
  abort(): Promise<void>;
  /** Stops sending (as pause()) and following processing; the server keeps the upload. */
  destroy(): void;
}

/** Speed and time left as a page shows them, settled and smoothed. */
export class Estimate {
  constructor(options?: { now?: () => number; settle?: number; smoothing?: number });
  /** Sending (re)starts: forget the old figures. */
  restart(): void;
  /** The current speed (bytes/s) and bytes left; both null until they mean something. */
  update(speed: number, remaining: number): { speed: number | null; eta: number | null };
}

/** Whether trying the same file again later can succeed after this failure (docs/API.md's table). */
export function canRetryLater(status: number, code?: string | null): boolean;

/** 1536000 -> "1.5 MiB" (binary units). */
export function formatBytes(n: number): string;

/** 3725 -> "1 h 2 min"; null or not finite -> "–". */
export function formatDuration(seconds: number | null | undefined): string;
