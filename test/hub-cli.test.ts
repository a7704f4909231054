// `qwen3 download REPO_ID` as a user runs it (compiled dist/cli.js), its progress on stderr, and
// the cache shared with Python's huggingface_hub both ways, against the fake Hub on 127.0.0.1.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { projectPython } from '../lib/addon/python.js';
import { hubProgressView } from '../lib/cli/hub-progress.js';
import { downloadModel } from '../lib/hub/model.js';
import { FakeHub, sha256 } from './support/fake-hub.js';
import { C1, C2, SHARD1, SHARDED, SHARDED_FILES, SINGLE, SINGLE_FILES, SINGLE_NEEDED, isolatedHfEnvironment, repoRoot, startFakeHub } from './support/hub-fixtures.js';

const CLI = path.join(__dirname, '..', 'dist', 'cli.js');

let hub: FakeHub;
let env: ReturnType<typeof isolatedHfEnvironment>;
let stopHub: () => Promise<void>;

beforeEach(async () => {
  ({ hub, env, stop: stopHub } = await startFakeHub());
});
afterEach(async () => {
  await stopHub();
  vi.restoreAllMocks();
});

interface Run { status: number | null; stdout: string; stderr: string }

function qwen3(args: string[], onSpawn: (child: ChildProcess) => void = () => {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    onSpawn(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d));
    child.stderr!.on('data', (d: Buffer) => (stderr += d));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const snapshot = (repoId: string, commit: string) => path.join(repoRoot(path.join(env.home, 'hub'), repoId), 'snapshots', commit);

describe('qwen3 download REPO_ID', { timeout: 60_000 }, () => {
  it('prints the snapshot folder on stdout and nothing on stderr without a terminal', async () => {
    const r = await qwen3(['download', SINGLE]);
    expect(r).toEqual({ status: 0, stdout: `${snapshot(SINGLE, C1)}\n`, stderr: '' });
    for (const name of SINGLE_NEEDED) expect(readFileSync(path.join(snapshot(SINGLE, C1), name)).equals(SINGLE_FILES[name]!)).toBe(true);
    const byRevision = await qwen3(['download', SINGLE, '--revision', C1]);
    expect(byRevision).toEqual({ status: 0, stdout: `${snapshot(SINGLE, C1)}\n`, stderr: '' });
  });

  it('refuses a bad repo id and flags that do not go with it, before any request', async () => {
    const bad = await qwen3(['download', '../etc/passwd']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^qwen3: Expected Hugging Face repo id "owner\/name" .* for repoId but received "\.\.\/etc\/passwd"\n$/);
    const mixed = await qwen3(['download', SINGLE, '--out-dir', env.home]);
    expect(mixed.status).toBe(1);
    expect(mixed.stderr).toContain("qwen3: --kind, --tokenizer-only and --out-dir apply to the book's download");
    const lone = await qwen3(['download', '--revision', 'main']);
    expect(lone.status).toBe(1);
    expect(lone.stderr).toBe('qwen3: --revision applies to a Hugging Face repo id: qwen3 download REPO_ID --revision R\n');
    expect(hub.log).toEqual([]);
  });

  it('Ctrl-C stops the download with exit code 130 and says how to resume', async () => {
    let release!: (then: 'send') => void;
    let child!: ChildProcess;
    hub.blobBehaviour.set(sha256(SHARDED_FILES[SHARD1]!), {
      hold: { after: 100_000, until: new Promise((resolve) => (release = resolve)), onHeld: () => child.kill('SIGINT') },
    });
    const r = await qwen3(['download', SHARDED], (c) => (child = c)).finally(() => release('send'));
    expect(r.status).toBe(130);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`qwen3: download of ${SHARDED} interrupted; run the same command again to resume\n`);
  });
});

describe('the progress shown on stderr', () => {
  it('one bar for the whole download, and a line while another process holds a file', () => {
    const lines: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => lines.push(String(chunk)) > 0);
    const view = hubProgressView(true);
    const base = { type: 'bytes', repoId: SHARDED, totalBytes: 3 * 2 ** 20 } as const;
    view.onProgress({ ...base, file: SHARD1, fileBytes: 0, fileSize: 2 ** 20, bytes: 0 });
    view.onProgress({ ...base, file: SHARD1, fileBytes: 2 ** 20, fileSize: 2 ** 20, bytes: 2 ** 20 });
    view.onProgress({ type: 'waiting', repoId: SHARDED, file: 'model-00002-of-00002.safetensors' });
    view.onProgress({ ...base, file: 'model-00002-of-00002.safetensors', fileBytes: 2 ** 21, fileSize: 2 ** 21, bytes: 3 * 2 ** 20 });
    view.stop();
    const text = lines.join('');
    expect(text).toContain(`${SHARDED}: waiting for another process that is downloading model-00002-of-00002.safetensors into the cache\n`);
    expect(text).toContain(`${SHARDED}: 100% (3.0 MiB / 3.0 MiB) model-00002-of-00002.safetensors`);
  });
});

/** Runs the project's Python with huggingface_hub on the same HF_HOME; resolves with its stdout parsed as JSON. */
function python(script: string, extraEnv: Record<string, string> = {}): Promise<unknown> {
  return new Promise((resolve, reject) => {
    execFile(projectPython(), ['-c', script], { env: { ...process.env, ...extraEnv }, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${projectPython()} failed: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout));
    });
  });
}

describe('one cache for Node and Python', { timeout: 120_000 }, () => {
  it("Python's huggingface_hub finds offline what qwen3-torch downloaded, and reads the cache without warnings", async () => {
    const got = await downloadModel(SINGLE);
    const found = await python(`
import json
from huggingface_hub import hf_hub_download, snapshot_download, scan_cache_dir
info = scan_cache_dir()
print(json.dumps({
  "snapshot": snapshot_download("${SINGLE}"),
  "weights": hf_hub_download("${SINGLE}", "model.safetensors"),
  "warnings": [str(w) for w in info.warnings],
  "repos": [[r.repo_id, [sorted(f.file_name for f in rev.files) for rev in r.revisions], sorted(r.refs)] for r in info.repos],
}))`, { HF_HUB_OFFLINE: '1' });
    expect(found).toEqual({
      snapshot: got.dir,
      weights: path.join(got.dir, 'model.safetensors'),
      warnings: [],
      repos: [[SINGLE, [[...SINGLE_NEEDED].sort()], ['main']]],
    });
  });

  it('qwen3-torch finds offline what Python downloaded from the same Hub', async () => {
    const files = ['config.json', 'tokenizer.json', 'model.safetensors.index.json', SHARD1, 'model-00002-of-00002.safetensors'];
    await python(`
import json
from huggingface_hub import hf_hub_download
print(json.dumps([hf_hub_download("${SHARDED}", f) for f in ${JSON.stringify(files)}]))`);
    process.env.HF_HUB_OFFLINE = '1';
    const got = await downloadModel(SHARDED);
    expect(got).toMatchObject({ dir: snapshot(SHARDED, C2), commit: C2, offline: true });
    for (const name of files) expect(readFileSync(path.join(got.dir, name)).equals(SHARDED_FILES[name]!)).toBe(true);
  });
});
