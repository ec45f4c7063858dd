// Test files of random bytes on disk, and their SHA-256.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function makeFile(name, size) {
  const dir = mkdtempSync(join(tmpdir(), 'tranche-file-'));
  const path = join(dir, name);
  const bytes = randomBytes(size);
  writeFileSync(path, bytes);
  return {
    name,
    path,
    size,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export async function sha256OfUrl(url, headers = {}) {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(60_000) });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  const hash = createHash('sha256');
  for await (const part of res.body) hash.update(part);
  return hash.digest('hex');
}
