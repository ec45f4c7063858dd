// The shipped nginx/tranche.conf run by a real nginx from a temp prefix, as
// tests/nginx.rs runs it: only the upstream addresses and the `# tls` lines
// (replaced by a plain-HTTP loopback listen) change.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { REPO, freePort } from './server.js';

const SHIPPED_UPSTREAMS = ['127.0.0.1:8081', '127.0.0.1:8082', '127.0.0.1:8083'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function binary() {
  for (const dir of (process.env.PATH ?? '').split(':').concat('/usr/sbin')) {
    if (dir && existsSync(join(dir, 'nginx'))) return join(dir, 'nginx');
  }
  throw new Error('nginx not found: apt-get install nginx (`bash .ci/run` installs it)');
}

/** The shipped config for three upstream addresses and a loopback port. */
function shippedConfig(upstreams, port) {
  const lines = [];
  let listen = false;
  for (const line of readFileSync(join(REPO, 'nginx/tranche.conf'), 'utf8').split('\n')) {
    if (line.trimEnd().endsWith('# tls')) {
      if (!listen) lines.push(`    listen 127.0.0.1:${port};`);
      listen = true;
      continue;
    }
    lines.push(line);
  }
  if (!listen) throw new Error('nginx/tranche.conf has no `# tls` lines');
  let conf = lines.join('\n');
  SHIPPED_UPSTREAMS.forEach((from, i) => {
    if (conf.split(`server ${from} `).length !== 2) throw new Error(`nginx/tranche.conf should name upstream ${from} once`);
    conf = conf.replace(`server ${from} `, `server ${upstreams[i]} `);
  });
  return conf;
}

export class Nginx {
  /** nginx in front of `upstreams` (three host:port, repeats allowed). */
  static async start(upstreams) {
    let last;
    for (let attempt = 0; attempt < 5; attempt++) {
      const nginx = new Nginx(await freePort(), upstreams);
      try {
        await nginx.#waitReady();
        return nginx;
      } catch (e) {
        last = e;
        await nginx.stop();
      }
    }
    throw last;
  }

  constructor(port, upstreams) {
    this.port = port;
    this.prefix = mkdtempSync(join(tmpdir(), 'tranche-tus-nginx-'));
    const p = this.prefix;
    writeFileSync(join(p, 'tranche.conf'), shippedConfig(upstreams, port));
    // As root, nginx's workers would otherwise run as `nobody`, which cannot
    // enter this 0700 temp directory.
    const user = process.getuid?.() === 0 ? 'user root;\n' : '';
    writeFileSync(
      join(p, 'nginx.conf'),
      `${user}worker_processes 1;\nerror_log ${p}/error.log info;\npid ${p}/nginx.pid;\n` +
        `events { worker_connections 256; }\nhttp {\n` +
        `    client_body_temp_path ${p}/client_body;\n    proxy_temp_path ${p}/proxy;\n` +
        `    fastcgi_temp_path ${p}/fastcgi;\n    uwsgi_temp_path ${p}/uwsgi;\n    scgi_temp_path ${p}/scgi;\n` +
        `    access_log ${p}/access.log;\n    include ${p}/tranche.conf;\n}\n`,
    );
    // In the test run's process group (not detached): when tests/tus_clients.rs
    // kills that group, an nginx left behind by a failed test goes with it.
    this.child = spawn(binary(), ['-p', p, '-c', join(p, 'nginx.conf'), '-g', 'daemon off;'], {
      stdio: 'ignore',
    });
    this.exited = new Promise((ok) => this.child.on('exit', ok));
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  async #waitReady() {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && this.child.exitCode == null) {
      try {
        const res = await fetch(`${this.origin}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error(`nginx did not come up on ${this.port}:\n${this.errorLog()}`);
  }

  errorLog() {
    try {
      return readFileSync(join(this.prefix, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Every request body nginx spooled to a temp file instead of streaming it. */
  spooledBodies() {
    const out = [];
    const walk = (dir) => {
      if (!existsSync(dir)) return;
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (statSync(path).isDirectory()) walk(path);
        else out.push(path);
      }
    };
    walk(join(this.prefix, 'client_body'));
    return out;
  }

  /**
   * SIGQUIT: the master tells its workers to finish and waits for them; if
   * that takes more than 5 s, SIGKILL (tests/tus_clients.rs kills the group,
   * workers included, when the run ends).
   */
  async stop() {
    if (this.child.exitCode == null && this.child.signalCode == null) {
      this.child.kill('SIGQUIT');
      const quit = await Promise.race([this.exited.then(() => true), sleep(5000).then(() => false)]);
      if (!quit) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    rmSync(this.prefix, { recursive: true, force: true });
  }
}
