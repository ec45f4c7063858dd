// Headless Debian Chromium driven by playwright-core (no browser download),
// and the static site the pages come from: the test pages next to the
// clients' published browser bundles, copied from node_modules.
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFile } from 'node:fs/promises';

import { chromium } from 'playwright-core';

import { MODULES } from './server.js';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const PAGES = join(dirname(fileURLToPath(import.meta.url)), '../pages');

// Without the background-networking flags Chromium dials out at start, which
// a closed CI network refuses.
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A browser with a profile of its own (localStorage outlives a closed tab). */
export async function launch(t) {
  const profile = mkdtempSync(join(tmpdir(), 'tranche-tus-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1000, height: 800 },
    timeout: 30_000,
  });
  context.setDefaultTimeout(30_000);
  t.after(async () => {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  });
  return context;
}

/**
 * A directory with the test pages and the bundles as published on npm:
 * tus-js-client's dist/tus.min.js and uppy's dist/uppy.min.{js,css}. Given
 * to tranche as its static_dir, the pages share the tus endpoint's origin.
 */
export function site(t) {
  const dir = mkdtempSync(join(tmpdir(), 'tranche-tus-site-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const page of readdirSync(PAGES)) copyFileSync(join(PAGES, page), join(dir, page));
  copyFileSync(join(MODULES, 'tus-js-client/dist/tus.min.js'), join(dir, 'tus.min.js'));
  copyFileSync(join(MODULES, 'uppy/dist/uppy.min.js'), join(dir, 'uppy.min.js'));
  copyFileSync(join(MODULES, 'uppy/dist/uppy.min.css'), join(dir, 'uppy.min.css'));
  return dir;
}

/** The same site from a server of its own: a page on another origin than tranche. */
export async function serveSite(t, dir) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
  const server = createServer(async (req, res) => {
    const name = new URL(req.url, 'http://x').pathname.slice(1);
    try {
      const body = await readFile(join(dir, name.replaceAll('/', '')));
      res.writeHead(200, { 'Content-Type': types[name.slice(name.lastIndexOf('.'))] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  // Chromium keeps its connections alive; close() alone would wait for them.
  t.after(() => new Promise((ok) => {
    server.close(ok);
    server.closeAllConnections();
  }));
  // Another loopback address than tranche's 127.0.0.1: a different origin
  // by host as well as by port.
  return `http://localhost:${server.address().port}`;
}
