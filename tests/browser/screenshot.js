// Takes docs/uploader.png: the demo page mid-upload, three files in three
// states. Not a test; run it after changing the page:
//   E2E_TRANCHE_BIN=target/debug/tranche node tests/browser/screenshot.js
import { join } from 'node:path';

import { launch, openDemo, row, waitForPercent, waitForState } from './lib/browser.js';
import { makeFile } from './lib/files.js';
import { Proxy } from './lib/proxy.js';
import { REPO, Tranche } from './lib/server.js';

const MiB = 1 << 20;
const server = await Tranche.start();
const proxy = await Proxy.start(server.origin, { chunkDelay: 400 });
const browser = await launch();
const files = [
  makeFile('lecture-01.mp4', 3 * MiB),
  makeFile('site-survey.zip', 24 * MiB),
  makeFile('cad-archive.tar', 40 * MiB),
];
try {
  const page = await openDemo(browser.context, `${proxy.origin}/?chunkSize=${256 * 1024}&parallel=3`);
  await page.setInputFiles('#file-input', files[0].path);
  await waitForState(page, files[0].name, 'completed', 60_000);
  await page.setInputFiles('#file-input', files[1].path);
  await waitForPercent(page, files[1].name, 8, 60_000);
  await row(page, files[1].name).locator('button.pause').click();
  await page.setInputFiles('#file-input', files[2].path);
  await waitForPercent(page, files[2].name, 6, 60_000);
  await page.waitForTimeout(1500); // let speed and ETA settle
  const out = join(REPO, 'docs/uploader.png');
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await proxy.stop();
  await server.stop();
  for (const f of files) f.remove();
}
