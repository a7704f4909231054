// What Qwen3Model.load says about a model path that is not a checkpoint, before any native code
// reads it (the CLI's --model goes through the same check), and configs without a dtype when
// the caller names one.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Qwen3Model, generateTextBasicCache } from '../lib/index.js';
import { native } from '../lib/native.js';
import { loadFixture } from './support/fixtures.js';

const fx = loadFixture('tiny-gqa4');
const greedy = fx.runs.float32.hf_greedy;
const CLI = join(__dirname, '..', 'dist', 'cli.js');
const dir = mkdtempSync(join(tmpdir(), 'qwen3-paths-'));

beforeAll(() => {
  mkdirSync(join(dir, 'folder.pth'));
  writeFileSync(join(dir, 'notes.txt'), 'These are notes, not weights.\n');
  const header = Buffer.from(JSON.stringify({ 'tok_emb.weight': { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(header.length));
  writeFileSync(join(dir, 'model.safetensors'), Buffer.concat([length, header, Buffer.alloc(4)]));
  writeFileSync(join(dir, 'empty.pth'), '');
  symlinkSync(join(dir, 'folder.pth'), join(dir, 'link-to-folder.pth'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

const load = (path: string, extra: object = {}) => Qwen3Model.load(path, { config: fx.configPath, device: 'cpu', dtype: 'float32', ...extra });

describe('model paths', () => {
  const cases: [string, () => string, string][] = [
    ['an empty string', () => '', 'Expected non-empty string for path but received ""'],
    ['a missing file', () => join(dir, 'nope.pth'), `Model file not found: ${join(dir, 'nope.pth')}`],
    ['a directory', () => join(dir, 'folder.pth'), `Model path ${join(dir, 'folder.pth')} is a directory without a config.json; expected a Hugging Face model folder or a checkpoint file`],
    ['a link to a directory', () => join(dir, 'link-to-folder.pth'), `Model path ${join(dir, 'link-to-folder.pth')} is a directory`],
    ['a text file', () => join(dir, 'notes.txt'), `Model file ${join(dir, 'notes.txt')} is not a PyTorch checkpoint: its format is not recognised (it looks like a text file)`],
    ['a safetensors file', () => join(dir, 'model.safetensors'), 'its format is not recognised (it looks like a safetensors file)'],
    ['an empty file', () => join(dir, 'empty.pth'), `Model file ${join(dir, 'empty.pth')} is empty`],
  ];
  it.each(cases)('%s is refused with a message that says so, before any native call', async (_label, path, message) => {
    const spy = vi.spyOn(native(), 'loadModel');
    await expect(load(path())).rejects.toThrow(message);
    expect(spy).not.toHaveBeenCalled();
  });

  it('a real checkpoint still loads', async () => {
    const model = await load(fx.modelPath);
    try {
      expect(await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 3, eosTokenId: null })).toEqual(greedy.slice(0, 3));
    } finally {
      model.dispose();
    }
  });

  it('the CLI refuses --model "" instead of downloading the default model', () => {
    const home = mkdtempSync(join(tmpdir(), 'qwen3-home-'));
    try {
      const r = spawnSync(process.execPath, [CLI, 'generate', '--model', '', '--prompt-ids', '1,2'], { encoding: 'utf8', env: { ...process.env, QWEN3_HOME: home } });
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toContain('Expected non-empty string for path but received ""');
      expect(readdirSync(home).filter((f) => f !== 'load-checks')).toEqual([]);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('the CLI reports a directory and an unrecognised file with exit code 1', () => {
    for (const [file, message] of [['folder.pth', 'is a directory'], ['notes.txt', 'its format is not recognised']] as const) {
      const r = spawnSync(process.execPath, [CLI, 'generate', '--model', join(dir, file), '--config', fx.configPath, '--device', 'cpu', '--prompt-ids', '1,2'], {
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toContain(`qwen3: Model `);
      expect(r.stderr).toContain(message);
      expect(r.stderr).not.toContain('read of');
    }
  });
});

describe('configs without a dtype', () => {
  let noDtype: string;
  beforeAll(() => {
    const { dtype: _dtype, ...rest } = fx.config;
    noDtype = join(dir, 'no-dtype.json');
    writeFileSync(noDtype, JSON.stringify(rest));
  });

  it('an explicit dtype stands in for the missing key, for a file and for an object', async () => {
    const fromFile = await load(fx.modelPath, { config: noDtype, dtype: 'float32' });
    try {
      expect(fromFile.dtype).toBe('float32');
      expect(fromFile.config.dtype).toBe('float32');
      expect(await generateTextBasicCache(fromFile, fx.prompt, { maxNewTokens: 3, eosTokenId: null })).toEqual(greedy.slice(0, 3));
    } finally {
      fromFile.dispose();
    }
    const { dtype: _dtype, ...rest } = fx.config;
    const fromObject = await load(fx.modelPath, { config: rest, dtype: 'float32' });
    expect(fromObject.config.dtype).toBe('float32');
    fromObject.dispose();
  });

  it('without an explicit dtype the missing key is still an error naming it; a config that has one keeps it', async () => {
    await expect(Qwen3Model.load(fx.modelPath, { config: noDtype, device: 'cpu' })).rejects.toThrow(
      'Expected one of "bfloat16", "float32", "float16" for config.dtype but received undefined',
    );
    const model = await load(fx.modelPath, { config: fx.configPath, dtype: 'float32' });
    expect(model.config.dtype).toBe(fx.config.dtype);
    expect(model.dtype).toBe('float32');
    model.dispose();
  });

  it('the CLI takes --dtype for a config file without one', () => {
    const args = ['generate', '--model', fx.modelPath, '--config', noDtype, '--device', 'cpu', '--prompt-ids', fx.prompt.join(','), '--max-new-tokens', '3', '--json'];
    const ok = spawnSync(process.execPath, [CLI, ...args, '--dtype', 'float32'], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).ids).toEqual(greedy.slice(0, 3));
    const refused = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain('for config.dtype but received undefined');
  });
});
