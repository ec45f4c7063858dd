// Test files of random bytes on disk, and their SHA-256.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const MiB = 1 << 20;
export const KiB = 1 << 10;

export function makeFile(name, size) {
  const dir = mkdtempSync(join(tmpdir(), 'tranche-tus-file-'));
  const path = join(dir, name);
  const bytes = randomBytes(size);
  writeFileSync(path, bytes);
  return {
    name,
    path,
    size,
    bytes,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The id of the upload behind a tus upload URL (its last path segment). */
export function idOf(uploadUrl) {
  return new URL(uploadUrl).pathname.split('/').filter(Boolean).at(-1);
}

/** The offset a HEAD on the upload URL answers, as any tus client would see it. */
export async function headOffset(uploadUrl, headers = {}) {
  const res = await fetch(uploadUrl, {
    method: 'HEAD',
    headers: { 'Tus-Resumable': '1.0.0', ...headers },
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status !== 200 && res.status !== 204) throw new Error(`HEAD ${uploadUrl}: ${res.status}`);
  return Number(res.headers.get('upload-offset'));
}
