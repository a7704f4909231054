// downloadModel and resolveModelDir against a fake Hub on 127.0.0.1: the Hugging Face cache
// layout, offline use, what a second call asks, resuming, the SHA-256 check, the HF_* variables.
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type HubProgress, downloadModel, resolveModelDir } from '../lib/hub/model.js';
import { InvalidOptionError } from '../lib/validate.js';
import { FakeHub, sha256 } from './support/fake-hub.js';
import {
  C1, C2, SHARD1, SHARD2, SHARDED, SHARDED_FILES, SHARDED_NEEDED, SINGLE, SINGLE_FILES, SINGLE_NEEDED,
  addRepos, etagOf, isolatedHfEnvironment, repoRoot, startFakeHub } from './support/hub-fixtures.js';

let hub: FakeHub;
let env: ReturnType<typeof isolatedHfEnvironment>;
let stopHub: () => Promise<void>;
const cache = () => path.join(env.home, 'hub');
const apiPath = (repoId: string, rev: string) => `/api/models/${repoId}/revision/${rev}`;

beforeEach(async () => {
  ({ hub, env, stop: stopHub } = await startFakeHub());
});
afterEach(async () => {
  await stopHub();
});

/** Every entry of the snapshot is a relative link to its blob, and the blob holds the file. */
function expectSnapshot(dir: string, files: Record<string, Buffer>, names: string[]): void {
  expect(readdirSync(dir).sort()).toEqual([...names].sort());
  for (const name of names) {
    const entry = path.join(dir, name);
    expect(lstatSync(entry).isSymbolicLink(), name).toBe(true);
    expect(readlinkSync(entry)).toBe(`../../blobs/${etagOf(name, files[name]!)}`);
    expect(readFileSync(entry).equals(files[name]!), name).toBe(true);
  }
}

/** A port where nothing listens: every connection is refused at once. */
async function closedPort(): Promise<number> {
  const server = http.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('downloadModel', { timeout: 30_000 }, () => {
  it('lays a repo out as the Hugging Face cache does, fetching only what the model needs; offline it is found with no request', async () => {
    const got = await downloadModel(SINGLE);
    const root = repoRoot(cache(), SINGLE);
    expect(got).toEqual({ dir: path.join(root, 'snapshots', C1), repoId: SINGLE, revision: 'main', commit: C1, downloaded: SINGLE_NEEDED, offline: false });
    expectSnapshot(got.dir, SINGLE_FILES, SINGLE_NEEDED);
    expect(readFileSync(path.join(root, 'refs', 'main'), 'utf8')).toBe(C1);
    // Nothing but the blobs themselves: no part file left over.
    expect(readdirSync(path.join(root, 'blobs')).sort()).toEqual(SINGLE_NEEDED.map((f) => etagOf(f, SINGLE_FILES[f]!)).sort());
    expect(hub.log.filter((l) => /README|original/.test(l.path))).toEqual([]);

    const asked = hub.log.length;
    process.env.HF_HUB_OFFLINE = '1';
    expect(await downloadModel(SINGLE)).toEqual({ ...got, downloaded: [], offline: true });
    expect(await resolveModelDir(SINGLE)).toBe(got.dir);
    expect(hub.log.length).toBe(asked);
  });

  it('fetches the shards an index names, records files the repo lacks, and reports bytes up to the total', async () => {
    const events: HubProgress[] = [];
    const got = await downloadModel(SHARDED, { onProgress: (p) => events.push(p) });
    const root = repoRoot(cache(), SHARDED);
    expect(got.dir).toBe(path.join(root, 'snapshots', C2));
    expectSnapshot(got.dir, SHARDED_FILES, SHARDED_NEEDED);
    // Python's marks for files asked for and absent, so that no later call asks again.
    expect(readdirSync(path.join(root, '.no_exist', C2)).sort()).toEqual(['generation_config.json', 'model.safetensors', 'tokenizer_config.json']);

    const bytes = events.filter((e) => e.type === 'bytes');
    const total = SHARDED_NEEDED.reduce((sum, f) => sum + SHARDED_FILES[f]!.length, 0);
    expect(bytes.map((e) => e.bytes)).toEqual([...bytes.map((e) => e.bytes)].sort((a, b) => a - b));
    expect(bytes.at(-1)).toMatchObject({ file: SHARD2, fileBytes: SHARDED_FILES[SHARD2]!.length, bytes: total, totalBytes: total });
  });

  it('a second call only resolves the revision: no HEAD, no data', async () => {
    for (const repoId of [SINGLE, SHARDED]) {
      const first = await downloadModel(repoId);
      hub.log.length = 0;
      expect(await downloadModel(repoId)).toEqual({ ...first, downloaded: [] });
      expect(hub.log.map((l) => `${l.server} ${l.method} ${l.path.replace(/\?.*/, '')}`)).toEqual([`hub GET ${apiPath(repoId, 'main')}`]);
    }
  });

  it('resumes an interrupted LFS download with a Range request and ends with the right SHA-256', async () => {
    const shard = SHARDED_FILES[SHARD1]!;
    const cut = 300_000;
    let release!: (then: 'drop') => void;
    hub.blobBehaviour.set(sha256(shard), { hold: { after: cut, until: new Promise((resolve) => (release = resolve)) } });
    // The connection drops once the first `cut` bytes are written to the part file.
    const onProgress = (p: HubProgress) => p.type === 'bytes' && p.file === SHARD1 && p.fileBytes >= cut && release('drop');
    await expect(downloadModel(SHARDED, { onProgress })).rejects.toThrow(
      new RegExp(`Connection lost while downloading ${SHARDED}/${SHARD1} from .* after ${cut} of ${shard.length} bytes .*run the download again to resume`),
    );
    const root = repoRoot(cache(), SHARDED);
    expect(statSync(path.join(root, 'blobs', `${sha256(shard)}.qwen3-torch.incomplete`)).size).toBe(cut);
    expect(existsSync(path.join(root, 'snapshots', C2, SHARD1))).toBe(false);

    hub.log.length = 0;
    const got = await downloadModel(SHARDED);
    expect(hub.requests('cdn', 'GET').map((l) => l.range)).toEqual([`bytes=${cut}-`, undefined]); // shard 1 resumed, shard 2 whole
    expect(got.downloaded).toEqual([SHARD1, SHARD2]);
    expect(sha256(readFileSync(path.join(got.dir, SHARD1)))).toBe(sha256(shard));
    expect(readdirSync(path.join(root, 'blobs')).filter((f) => f.endsWith('.incomplete'))).toEqual([]);
  });

  it('refuses content whose SHA-256 is not the announced X-Linked-Etag, leaving nothing under the final name', async () => {
    const weights = SINGLE_FILES['model.safetensors']!;
    const bad = Buffer.from(weights);
    bad[1000]! ^= 0xff;
    hub.blobBehaviour.set(sha256(weights), { replaceWith: bad });
    await expect(downloadModel(SINGLE)).rejects.toThrow(
      `Checksum mismatch for ${SINGLE}/model.safetensors from ${hub.endpoint}/${SINGLE}/resolve/${C1}/model.safetensors: `
      + `expected sha256 ${sha256(weights)} but got ${sha256(bad)}; the partial file was deleted`,
    );
    const root = repoRoot(cache(), SINGLE);
    expect(readdirSync(path.join(root, 'blobs')).filter((f) => f.startsWith(sha256(weights)))).toEqual([]);
    expect(() => lstatSync(path.join(root, 'snapshots', C1, 'model.safetensors'))).toThrow(/ENOENT/);
    expect(existsSync(path.join(root, 'refs', 'main'))).toBe(false);
  });

  it('asks HF_ENDPOINT (with its path) and sends HF_TOKEN to the Hub only, never to the CDN', async () => {
    await hub.stop();
    hub = new FakeHub();
    hub.prefix = '/mirror';
    hub.token = 'hf_secret';
    await hub.start();
    addRepos(hub);
    process.env.HF_ENDPOINT = hub.endpoint;
    await expect(downloadModel(SINGLE)).rejects.toThrow(
      `${SINGLE} at revision main was not found on ${hub.endpoint} or cannot be read (HTTP 401: Invalid credentials in Authorization header when resolving revision main of ${SINGLE}); if it is private or gated, set HF_TOKEN to a token that can read it`,
    );
    hub.log.length = 0;
    process.env.HF_TOKEN = 'hf_secret';
    const got = await downloadModel(SINGLE);
    expectSnapshot(got.dir, SINGLE_FILES, SINGLE_NEEDED);
    expect(hub.requests('hub').length).toBeGreaterThan(1);
    for (const l of hub.requests('hub')) expect(l).toMatchObject({ path: expect.stringMatching(/^\/mirror\//), authorization: 'Bearer hf_secret' });
    expect(hub.requests('cdn', 'GET').length).toBe(1);
    for (const l of hub.requests('cdn')) expect(l.authorization).toBeUndefined();
  });

  it('reads the token that `hf auth login` saved in HF_HOME when HF_TOKEN is not set', async () => {
    hub.token = 'hf_saved';
    writeFileSync(path.join(env.home, 'token'), 'hf_saved\n');
    await downloadModel(SINGLE);
    expect(hub.requests('hub').every((l) => l.authorization === 'Bearer hf_saved')).toBe(true);
  });

  it('HF_HUB_CACHE wins over HF_HOME', async () => {
    const hubCache = mkdtempSync(path.join(os.tmpdir(), 'qwen3-hf-cache-'));
    try {
      process.env.HF_HUB_CACHE = hubCache;
      const got = await downloadModel(SINGLE);
      expect(got.dir).toBe(path.join(repoRoot(hubCache, SINGLE), 'snapshots', C1));
      expectSnapshot(got.dir, SINGLE_FILES, SINGLE_NEEDED);
      expect(readdirSync(env.home)).toEqual([]);
    } finally {
      rmSync(hubCache, { recursive: true, force: true });
    }
  });

  it('refuses a bad repo id, revision or model name before any request', async () => {
    const ids = ['../etc', '/abs/path', 'Qwen/../x', 'Qwen/..', 'a/b/c', 'Qwen/Qwen3 8B', 'Qwen--x/y', 'Qwen/', 'Qwen', '', '.hidden/x', 'Qwen/x.', 'Qwen/x\0y', `Qwen/${'x'.repeat(95)}`];
    for (const id of ids) {
      const err = await downloadModel(id).catch((e: unknown) => e);
      expect(err, JSON.stringify(id)).toBeInstanceOf(InvalidOptionError);
      expect((err as Error).message).toMatch(/^Expected Hugging Face repo id "owner\/name" .* for repoId but received /);
    }
    for (const revision of ['../../etc', 'main/../x', '/main', 'main/', 'a//b', '.hidden', 'x y', 'refs/heads/main.lock']) {
      await expect(downloadModel(SINGLE, { revision }), revision).rejects.toThrow(/^Expected branch, tag or commit hash .* for revision but received /);
    }
    await expect(downloadModel(SINGLE, { revision: 'main', bogus: 1 } as never)).rejects.toThrow('Unknown option bogus');
    await expect(resolveModelDir('./no/such/model')).rejects.toThrow(
      'Model "./no/such/model" not found: it is neither a file or folder here nor a Hugging Face repo id (owner/name, such as Qwen/Qwen3-0.6B)',
    );
    await expect(resolveModelDir('Qwen/x\0y')).rejects.toThrow('Model "Qwen/x\\u0000y" not found');
    expect(hub.log).toEqual([]);
  });

  it('names the repo and the revision when the weights, a revision or the repo are missing', async () => {
    await expect(downloadModel('Qwen/NoWeights')).rejects.toThrow(
      `Qwen/NoWeights has no model.safetensors or model.safetensors.index.json at revision main (commit ${C1})`,
    );
    await expect(downloadModel(SINGLE, { revision: 'nope' })).rejects.toThrow(
      `${SINGLE} at revision nope was not found on ${hub.endpoint} or cannot be read (HTTP 404: Invalid rev id: nope when resolving revision nope of ${SINGLE})`,
    );
    await expect(downloadModel('Qwen/Nothing')).rejects.toThrow(/^Qwen\/Nothing at revision main was not found on .*HTTP 404: Repository not found/);
  });

  it('a commit hash needs no revision lookup; a tag is recorded under refs/', async () => {
    const byCommit = await downloadModel(SINGLE, { revision: C1 });
    expect(byCommit.dir).toBe(path.join(repoRoot(cache(), SINGLE), 'snapshots', C1));
    expect(hub.requests('hub', 'GET').filter((l) => l.path.startsWith('/api/'))).toEqual([]);
    expect(existsSync(path.join(repoRoot(cache(), SINGLE), 'refs', 'main'))).toBe(false);

    hub.addRepo(SINGLE, C1, SINGLE_FILES, { 'release/v1': C1 });
    const byTag = await downloadModel(SINGLE, { revision: 'release/v1' });
    expect(byTag).toMatchObject({ dir: byCommit.dir, commit: C1, downloaded: [] });
    expect(readFileSync(path.join(repoRoot(cache(), SINGLE), 'refs', 'release', 'v1'), 'utf8')).toBe(C1);
  });

  it('uses the cached snapshot when the Hub cannot be reached, and says what is missing when it is not cached', async () => {
    const got = await downloadModel(SINGLE);
    const port = await closedPort();
    process.env.HF_ENDPOINT = `http://127.0.0.1:${port}`;
    const events: HubProgress[] = [];
    expect(await downloadModel(SINGLE, { onProgress: (p) => events.push(p) })).toEqual({ ...got, downloaded: [], offline: true });
    expect(events).toEqual([{ type: 'cached', repoId: SINGLE, reason: expect.stringContaining(`Could not reach 127.0.0.1:${port} to resolve revision main of ${SINGLE}`) }]);
    await expect(downloadModel(SHARDED)).rejects.toThrow(
      new RegExp(`^Could not reach 127\\.0\\.0\\.1:${port} to resolve revision main of ${SHARDED} \\(.+\\) and ${SHARDED} at revision main is not in the cache at ${cache()}$`),
    );
  });

  it('a Hub that answers with a server error counts as unreachable: the cached snapshot stands in', async () => {
    const got = await downloadModel(SINGLE);
    hub.failWith = 503;
    const events: HubProgress[] = [];
    expect(await downloadModel(SINGLE, { onProgress: (p) => events.push(p) })).toEqual({ ...got, downloaded: [], offline: true });
    expect(events).toEqual([{ type: 'cached', repoId: SINGLE, reason: expect.stringContaining('answered HTTP 503: The Hub is down') }]);
    await expect(downloadModel(SHARDED)).rejects.toThrow(
      `The Hub at ${hub.endpoint} answered HTTP 503: The Hub is down when resolving revision main of ${SHARDED} and ${SHARDED} at revision main is not in the cache`,
    );
  });

  it('offline, names what the cache lacks', async () => {
    process.env.HF_HUB_OFFLINE = 'true';
    await expect(downloadModel(SINGLE)).rejects.toThrow(`HF_HUB_OFFLINE is set and ${SINGLE} at revision main is not in the cache at ${cache()}`);
    delete process.env.HF_HUB_OFFLINE;
    const got = await downloadModel(SHARDED);
    rmSync(path.join(got.dir, SHARD2));
    process.env.HF_HUB_OFFLINE = '1';
    await expect(resolveModelDir(SHARDED)).rejects.toThrow(`HF_HUB_OFFLINE is set and the cached snapshot of ${SHARDED} at revision main (${got.dir}) lacks ${SHARD2}`);
  });
});

describe('resolveModelDir', () => {
  it('returns an existing file or folder as it is, without asking the Hub', async () => {
    const file = path.join(env.home, 'model.pth');
    writeFileSync(file, 'x');
    expect(await resolveModelDir(env.home)).toBe(env.home);
    expect(await resolveModelDir(file)).toBe(file);
    expect(hub.log).toEqual([]);
  });

  it('downloads a repo id and returns its snapshot folder', async () => {
    expect(await resolveModelDir(SHARDED)).toBe(path.join(repoRoot(cache(), SHARDED), 'snapshots', C2));
  });
});
