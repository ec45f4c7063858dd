// Headless Debian Chromium driven by playwright-core (no browser download):
// a fresh profile per test, and the demo page's helpers.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

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

/** A browser with a profile of its own (localStorage survives reloads and closed tabs). */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'tranche-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 900, height: 720 },
    timeout: 30_000,
  });
  context.setDefaultTimeout(30_000);
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Opens the demo page and records every value its progress bars take
 * (`window.progressLog[name]`), to check that none goes backwards.
 */
export async function openDemo(context, url) {
  const page = await context.newPage();
  await page.addInitScript(() => {
    window.progressLog = {};
    window.statusLog = {};
    new MutationObserver((records) => {
      for (const r of records) {
        const name = r.target.closest?.('li')?.querySelector('.name')?.textContent;
        if (!name) continue;
        if (r.type === 'attributes') {
          (window.progressLog[name] ??= []).push(Number(r.target.getAttribute('aria-valuenow')));
        } else if (r.target.classList.contains('status')) {
          (window.statusLog[name] ??= []).push(r.target.textContent);
        }
      }
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['aria-valuenow'] });
  });
  await page.goto(url);
  return page;
}

export function row(page, name) {
  return page.locator('li.upload', { has: page.locator('.name', { hasText: name }) });
}

/** Waits until the row's bar shows at least `percent`. */
export async function waitForPercent(page, name, percent, timeout = 30_000) {
  await page.waitForFunction(
    ([n, p]) =>
      [...document.querySelectorAll('li.upload')].some(
        (li) => li.querySelector('.name').textContent === n && Number(li.querySelector('.bar').getAttribute('aria-valuenow')) >= p,
      ),
    [name, percent],
    { timeout, polling: 20 },
  );
}

export async function waitForState(page, name, state, timeout = 30_000) {
  await row(page, name).and(page.locator(`[data-state="${state}"]`)).waitFor({ timeout });
}

export async function progressLog(page, name) {
  return page.evaluate((n) => window.progressLog[n] ?? [], name);
}

/** Every status message the row showed, in order. */
export async function statusLog(page, name) {
  return page.evaluate((n) => window.statusLog[n] ?? [], name);
}
