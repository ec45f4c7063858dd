// The real tranche binary as a child process on a loopback port, with its own
// data directory, so that a test can kill it and start it again on the same
// port and data.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '../../..');
export const STATIC_DIR = join(REPO, 'static');

/**
 * The binary cargo built for this test run (tests/browser.rs passes it). Not
 * named TRANCHE_*: the server reads every such variable as a setting.
 */
export function trancheBin() {
  const bin = resolve(process.env.E2E_TRANCHE_BIN ?? join(REPO, 'target/debug/tranche'));
  if (!existsSync(bin)) {
    throw new Error(`no tranche binary at ${bin}: run through \`cargo test --test browser\`, or set E2E_TRANCHE_BIN`);
  }
  return bin;
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

export class Tranche {
  /**
   * Starts a server; `env` adds TRANCHE_* settings (small chunks are allowed
   * by default). `apiKey`: the credential the test's own requests carry
   * (json, metric) when `env` turns authentication on.
   */
  static async start(env = {}, { apiKey } = {}) {
    const server = new Tranche(env, apiKey);
    server.port = await freePort();
    await server.#spawn();
    return server;
  }

  constructor(env, apiKey) {
    this.apiKey = apiKey;
    this.dataDir = mkdtempSync(join(tmpdir(), 'tranche-e2e-'));
    this.env = {
      TRANCHE_STATIC_DIR: STATIC_DIR,
      TRANCHE_MIN_CHUNK_SIZE: '16KiB',
      TRANCHE_WORKERS: '2',
      TRANCHE_SHUTDOWN_TIMEOUT: '1s',
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

  async #spawn() {
    // cwd in the data directory: no stray ./config.toml is read.
    const child = spawn(trancheBin(), ['serve', '--bind', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir], {
      cwd: this.dataDir,
      env: { ...inheritedEnv(), ...this.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.on('error', (e) => {
      this.log += `cannot start ${trancheBin()}: ${e.message}\n`;
    });
    child.stderr.on('data', (d) => {
      this.log += d;
      if (process.env.TEST_LOG) process.stderr.write(d);
    });
    this.child = child;
    this.exited = new Promise((ok) => child.on('exit', ok));
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (child.exitCode != null) break;
      try {
        const res = await fetch(this.url('/healthz'), { signal: AbortSignal.timeout(1000) });
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    throw new Error(`tranche did not come up on port ${this.port}:\n${this.log}`);
  }

  /** SIGKILL: no graceful shutdown, as in a crash. */
  async kill() {
    if (!this.child) return;
    this.child.kill('SIGKILL');
    await this.exited;
    this.child = null;
  }

  /** Starts it again on the same port and data directory. */
  async restart() {
    await this.kill();
    await this.#spawn();
  }

  async stop() {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** `Authorization` for the test's own requests, when it has an API key. */
  get headers() {
    return this.apiKey ? { Authorization: `Bearer ${this.apiKey}` } : {};
  }

  /**
   * `tranche token create <args>` with the server's settings (its jwt_secret),
   * run in the data directory like the server: prints the JWT.
   */
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

  /** A counter or gauge from /metrics (0 when absent). */
  async metric(name) {
    const res = await fetch(this.url('/metrics'), { headers: this.headers, signal: AbortSignal.timeout(10_000) });
    // A refused request would read as "0" and make a test's check hollow.
    if (!res.ok) throw new Error(`GET /metrics: ${res.status} ${await res.text()}`);
    const text = await res.text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(' ')[1]) : 0;
  }
}
