// The Hugging Face cache shared with others: two processes downloading one repo at once, and
// links planted in the cache that must never be written through or trusted.
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { downloadModel } from '../lib/hub/model.js';
import { FakeHub, sha256 } from './support/fake-hub.js';
import { C1, C2, SHARD1, SHARD2, SHARDED, SHARDED_FILES, SINGLE, SINGLE_FILES, etagOf, isolatedHfEnvironment, repoRoot, startFakeHub } from './support/hub-fixtures.js';

const DIST_HUB = path.join(__dirname, '..', 'dist', 'hub', 'model.js');

let hub: FakeHub;
let env: ReturnType<typeof isolatedHfEnvironment>;
let stopHub: () => Promise<void>;
let outside: string;

beforeEach(async () => {
  ({ hub, env, stop: stopHub } = await startFakeHub());
  outside = mkdtempSync(path.join(os.tmpdir(), 'qwen3-hf-outside-'));
});
afterEach(async () => {
  await stopHub();
  rmSync(outside, { recursive: true, force: true });
});

const root = (repoId = SINGLE) => repoRoot(path.join(env.home, 'hub'), repoId);

interface Run { code: number | null; stdout: string; stderr: string }

/** downloadModel in a separate Node process (the compiled package), printing `waiting` events to stderr. */
function downloader(repoId: string, onStderr: (all: string) => void = () => {}): Promise<Run> {
  const script = `require(${JSON.stringify(DIST_HUB)}).downloadModel(${JSON.stringify(repoId)}, {
      onProgress: (p) => { if (p.type === 'waiting') process.stderr.write('waiting for ' + p.file + '\\n'); },
    }).then((r) => console.log(r.dir), (e) => { console.error('FAILED: ' + e.message); process.exitCode = 1; });`;
  const child = spawn(process.execPath, ['-e', script], { env: { ...process.env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d;
    onStderr(stderr);
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('two processes downloading one repo at once', { timeout: 60_000 }, () => {
  it('both succeed with the right files; each blob is fetched once', async () => {
    const shard = SHARDED_FILES[SHARD1]!;
    let release!: (then: 'send') => void;
    const until = new Promise<'send'>((resolve) => (release = resolve));
    let second: Promise<Run> | undefined;
    // The first process's shard body stops part-way; the second starts then, so both are inside
    // the same download at once. The body goes on once the second waits for the first's lock, or
    // (were the lock broken) once the second asks the CDN for the same blob.
    const started = new Promise<void>((resolve) => {
      hub.blobBehaviour.set(sha256(shard), {
        hold: {
          after: 100_000,
          until,
          onHeld: () => {
            second = downloader(SHARDED, (stderr) => stderr.includes(`waiting for ${SHARD1}`) && release('send'));
            resolve();
          },
        },
      });
    });
    const secondAsksTheCdn = setInterval(() => hub.requests('cdn', 'GET').length > 1 && release('send'), 5);
    try {
      const first = downloader(SHARDED);
      await started;
      const [a, b] = await Promise.all([first, second!]);
      expect(a.code, a.stderr).toBe(0);
      expect(b.code, b.stderr).toBe(0);
      expect(b.stderr).toContain(`waiting for ${SHARD1}`);
      const dir = path.join(root(SHARDED), 'snapshots', C2);
      expect([a.stdout, b.stdout]).toEqual([`${dir}\n`, `${dir}\n`]);
    } finally {
      clearInterval(secondAsksTheCdn);
    }
    expect(hub.requests('cdn', 'GET').map((l) => l.path.replace(/\?.*/, '')).sort())
      .toEqual([`/cdn/${sha256(shard)}`, `/cdn/${sha256(SHARDED_FILES[SHARD2]!)}`].sort());
    for (const name of [SHARD1, SHARD2]) {
      expect(sha256(readFileSync(path.join(root(SHARDED), 'snapshots', C2, name)))).toBe(sha256(SHARDED_FILES[name]!));
    }
    expect(readdirSync(path.join(root(SHARDED), 'blobs')).filter((f) => !/^[0-9a-f]{40,64}$/.test(f))).toEqual([]);
    expect(readdirSync(path.join(env.home, 'hub', '.locks', path.basename(root(SHARDED))))).toEqual([]);
  });
});

describe('links planted in the cache', { timeout: 30_000 }, () => {
  const weights = SINGLE_FILES['model.safetensors']!;

  it('a link at a blob is refused, and its target left alone', async () => {
    const target = path.join(outside, 'victim');
    writeFileSync(target, 'precious');
    mkdirSync(path.join(root(), 'blobs'), { recursive: true });
    const blob = path.join(root(), 'blobs', sha256(weights));
    symlinkSync(target, blob);
    await expect(downloadModel(SINGLE)).rejects.toThrow(`Refusing to download to ${blob}: it is a symbolic link (to ${target}), which is never followed`);
    expect(readFileSync(target, 'utf8')).toBe('precious');
    expect(readlinkSync(blob)).toBe(target);
  });

  it('a folder of the cache that is a link is refused, and nothing is written where it leads', async () => {
    for (const folder of [path.join('snapshots', C1), 'blobs']) {
      rmSync(root(), { recursive: true, force: true });
      const where = path.join(root(), folder);
      mkdirSync(path.dirname(where), { recursive: true });
      symlinkSync(outside, where);
      await expect(downloadModel(SINGLE)).rejects.toThrow(`Refusing to use ${where} in the Hugging Face cache: it is a symbolic link (to ${outside}), which is never followed; remove it`);
      expect(readdirSync(outside)).toEqual([]);
    }
  });

  it('a link at the part file is removed, not written through', async () => {
    const target = path.join(outside, 'victim');
    writeFileSync(target, 'precious');
    mkdirSync(path.join(root(), 'blobs'), { recursive: true });
    const part = path.join(root(), 'blobs', `${sha256(weights)}.qwen3-torch.incomplete`);
    symlinkSync(target, part);
    const got = await downloadModel(SINGLE);
    expect(readFileSync(path.join(got.dir, 'model.safetensors')).equals(weights)).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('precious');
    expect(existsSync(part)).toBe(false);
  });

  it('a snapshot entry that leads out of the cache is not trusted: replaced online, missing offline', async () => {
    const config = SINGLE_FILES['config.json']!;
    const target = path.join(outside, 'config.json');
    writeFileSync(target, config); // even with the right content, it is not the cache's own
    const got = await downloadModel(SINGLE);
    const entry = path.join(got.dir, 'config.json');
    rmSync(entry);
    symlinkSync(target, entry);

    process.env.HF_HUB_OFFLINE = '1';
    await expect(downloadModel(SINGLE)).rejects.toThrow(`HF_HUB_OFFLINE is set and the cached snapshot of ${SINGLE} at revision main (${got.dir}) lacks config.json`);
    delete process.env.HF_HUB_OFFLINE;

    hub.log.length = 0;
    expect((await downloadModel(SINGLE)).downloaded).toEqual([]); // the blob is there: only the link is made again
    expect(readlinkSync(entry)).toBe(`../../blobs/${etagOf('config.json', config)}`);
    expect(lstatSync(target).isFile()).toBe(true);
    expect(hub.requests('hub', 'HEAD').map((l) => l.path)).toEqual([`/${SINGLE}/resolve/${C1}/config.json`]);
  });
});
