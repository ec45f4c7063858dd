// The real tranche binary as a child process on a loopback port, on the state
// store the run asks for (TUS_TEST_STORE=embedded|redis; a Redis store gets a
// private redis-server), so that a test can kill -9 it and start it again on
// the same port, data directory and Redis.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '../../..');
export const MODULES = resolve(here, '../node_modules');

/**
 * The binary cargo built for this run (tests/tus_clients.rs passes it). Not
 * named TRANCHE_*: the server reads every such variable as a setting.
 */
export function trancheBin() {
  const bin = resolve(process.env.TUS_TRANCHE_BIN ?? join(REPO, 'target/debug/tranche'));
  if (!existsSync(bin)) {
    throw new Error(`no tranche binary at ${bin}: run through \`cargo test --test tus_clients\`, or set TUS_TRANCHE_BIN`);
  }
  return bin;
}

export function store() {
  const s = process.env.TUS_TEST_STORE ?? 'embedded';
  if (s !== 'embedded' && s !== 'redis') throw new Error(`TUS_TEST_STORE=${s}: embedded or redis`);
  return s;
}

/** The test's environment without settings meant for some other tranche. */
function inheritedEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TRANCHE_')));
}

export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A private redis-server: no persistence, loopback only, gone at stop(). */
export class Redis {
  static async start() {
    // Another process may take the free port before redis-server binds it.
    let last;
    for (let attempt = 0; attempt < 5; attempt++) {
      const r = new Redis(await freePort());
      try {
        await r.#spawn();
        return r;
      } catch (e) {
        last = e;
        r.stop();
      }
    }
    throw last;
  }

  constructor(port) {
    this.port = port;
    this.log = '';
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  async #spawn() {
    const args = ['--bind', '127.0.0.1', '--port', String(this.port), '--save', '', '--appendonly', 'no', '--daemonize', 'no'];
    this.child = spawn('redis-server', args, { cwd: tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (d) => (this.log += d));
    this.child.stderr.on('data', (d) => (this.log += d));
    this.child.on('error', (e) => (this.log += `cannot start redis-server: ${e.message}\n`));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && this.child.exitCode == null) {
      if (await this.#pong()) return;
      await sleep(50);
    }
    throw new Error(`redis-server did not answer PING on port ${this.port}:\n${this.log}`);
  }

  #pong() {
    return new Promise((ok) => {
      const sock = connect(this.port, '127.0.0.1');
      let got = '';
      sock.setTimeout(1000, () => sock.destroy());
      sock.on('connect', () => sock.write('PING\r\n'));
      sock.on('data', (d) => {
        got += d;
        if (got.includes('\r\n')) sock.end();
      });
      sock.on('close', () => ok(got.startsWith('+PONG')));
      sock.on('error', () => {});
    });
  }

  stop() {
    this.child?.kill('SIGKILL');
    this.child = null;
  }
}

export class Tranche {
  /**
   * Starts a server on the run's store. `env` adds TRANCHE_* settings;
   * `dataDir` and `redis` share those of another instance (behind nginx);
   * `apiKey` is what the test's own requests carry when auth is on.
   */
  static async start({ env = {}, dataDir, redis, apiKey } = {}) {
    const server = new Tranche(env, apiKey, dataDir);
    if (store() === 'redis') {
      server.redis = redis ?? (await Redis.start());
      server.ownsRedis = !redis;
      server.env.TRANCHE_STORE__TYPE = 'redis';
      server.env.TRANCHE_STORE__URL = server.redis.url;
    }
    let last;
    for (let attempt = 0; attempt < 3; attempt++) {
      server.port = await freePort();
      try {
        await server.#spawn();
        return server;
      } catch (e) {
        last = e;
      }
    }
    await server.stop();
    throw last;
  }

  constructor(env, apiKey, dataDir) {
    this.apiKey = apiKey;
    this.ownsDataDir = !dataDir;
    this.dataDir = dataDir ?? mkdtempSync(join(tmpdir(), 'tranche-tus-'));
    this.env = {
      TRANCHE_WORKERS: '2',
      TRANCHE_SHUTDOWN_TIMEOUT: '1s',
      // The tests' files are small; a nearly full disk should not fail them.
      TRANCHE_LIMITS__RESERVE_FREE_BYTES: '1MiB',
      TRANCHE_LOG__LEVEL: process.env.TEST_LOG ? 'info' : 'warn',
      ...env,
    };
    this.child = null;
    this.log = '';
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  url(path) {
    return `${this.origin}${path}`;
  }

  /** The tus creation URL (a trailing slash, as the docs and clients use it). */
  get endpoint() {
    return this.url(this.env.TRANCHE_TUS__PATH ?? '/files/');
  }

  async #spawn() {
    // cwd in the data directory: no stray ./config.toml is read.
    const child = spawn(trancheBin(), ['serve', '--bind', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir], {
      cwd: this.dataDir,
      env: { ...inheritedEnv(), ...this.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.on('error', (e) => (this.log += `cannot start ${trancheBin()}: ${e.message}\n`));
    child.stderr.on('data', (d) => {
      this.log += d;
      if (process.env.TEST_LOG) process.stderr.write(d);
    });
    this.child = child;
    this.exited = new Promise((ok) => child.on('exit', ok));
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && child.exitCode == null) {
      try {
        const res = await fetch(this.url('/healthz'), { signal: AbortSignal.timeout(1000) });
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    child.kill('SIGKILL');
    await this.exited;
    this.child = null;
    throw new Error(`tranche did not come up on port ${this.port}:\n${this.log}`);
  }

  /** SIGKILL: no graceful shutdown, as in a crash. */
  async kill() {
    if (!this.child) return;
    this.child.kill('SIGKILL');
    await this.exited;
    this.child = null;
  }

  /** Starts it again on the same port, data directory and store. */
  async restart() {
    await this.kill();
    await this.#spawn();
  }

  async stop() {
    await this.kill();
    if (this.ownsRedis) this.redis.stop();
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  get headers() {
    return this.apiKey ? { Authorization: `Bearer ${this.apiKey}` } : {};
  }

  /** `tranche token create <args>` with the server's settings: prints the JWT. */
  async mintToken(...args) {
    const { stdout } = await promisify(execFile)(trancheBin(), ['token', 'create', ...args], {
      cwd: this.dataDir,
      env: { ...inheritedEnv(), ...this.env },
      timeout: 10_000,
    });
    return stdout.trim();
  }

  async json(path) {
    const res = await fetch(this.url(path), { headers: this.headers, signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
    return res.json();
  }

  /**
   * The upload behind a tus URL once API v1 shows it completed. Assembly may
   * finish a little after the last PATCH's answer, so this polls, for at most
   * `within` ms.
   */
  async completed(id, within = 30_000) {
    const deadline = Date.now() + within;
    let upload;
    while (Date.now() < deadline) {
      upload = await this.json(`/api/v1/uploads/${id}`);
      if (upload.status === 'completed') return upload;
      if (upload.status === 'failed' || upload.status === 'aborted') break;
      await sleep(100);
    }
    throw new Error(`upload ${id} is not completed: ${JSON.stringify(upload)}`);
  }

  /** The SHA-256 of what GET /api/v1/files/{id} serves. */
  async downloadSha256(id) {
    return sha256OfUrl(this.url(`/api/v1/files/${id}`), this.headers);
  }
}

export async function sha256OfUrl(url, headers = {}) {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(60_000) });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  const hash = createHash('sha256');
  for await (const part of res.body) hash.update(part);
  return hash.digest('hex');
}
