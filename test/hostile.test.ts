// Hostile checkpoints. A .pth file is a pickle, and unpickling can call any Python function the
// file names; loading one with Python's torch.load(weights_only=False) runs whatever it carries.
// The loader here reads the pickle with a small interpreter that knows only the globals a state
// dict needs. These files each try to run `touch $QWEN3_HOSTILE_MARKER` (os.system, eval, exec,
// subprocess.Popen, a getattr chain, a nested torch.load), hidden wherever a state dict has room.
// Each must be refused with an error that names what it asked for, and the marker must never
// appear. A positive control shows the same files do run their payload under an unsafe loader.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectPython } from '../lib/addon/python.js';
import { Qwen3Model, generateTextBasicCache } from '../lib/index.js';
import { loadFixture } from './support/fixtures.js';

const fx = loadFixture('tiny-gqa4');
const SCRIPT = join(__dirname, '..', 'scripts', 'python', 'make_hostile_checkpoints.py');
const CLI = join(__dirname, '..', 'dist', 'cli.js');
const load = (path: string, extra: object = {}) =>
  Qwen3Model.load(path, { config: fx.configPath, device: 'cpu', dtype: 'float32', ...extra });

let dir: string;
let marker: string;
let manifest: { file: string; needle: string }[];
const previousMarker = process.env.QWEN3_HOSTILE_MARKER;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'qwen3-hostile-'));
  execFileSync(projectPython(), [SCRIPT, 'hostile', fx.modelPath, dir]);
  manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  // Were any payload to run, in this process or a child of it, it would create this file.
  marker = join(dir, 'MARKER');
  process.env.QWEN3_HOSTILE_MARKER = marker;
});
afterAll(() => {
  if (previousMarker === undefined) delete process.env.QWEN3_HOSTILE_MARKER;
  else process.env.QWEN3_HOSTILE_MARKER = previousMarker;
  rmSync(dir, { recursive: true, force: true });
});

describe('checkpoints whose pickle calls code', () => {
  it('there is one file per attack, and the suite knows them all', () => {
    expect(manifest.map((e) => e.file).sort()).toEqual([
      'after-weights.pth', 'eval-p2.pth', 'eval-p3.pth', 'exec-p3.pth', 'getattr-chain.pth', 'in-metadata.pth',
      'in-tensor-args.pth', 'nested-load.pth', 'popen-p3.pth', 'protocol-0.pth', 'raw-pickle.pth', 'system-p2.pth', 'system-p4.pth',
    ]);
  });

  it('each is refused with an error naming the global it asked for, and nothing runs', async () => {
    for (const { file, needle } of manifest) {
      const path = join(dir, file);
      const err = await load(path).catch((e: unknown) => e);
      expect(err, file).toBeInstanceOf(Error);
      expect((err as Error).message, file).toContain(`${path}: `);
      expect((err as Error).message, file).toContain(needle);
    }
    // Popen would return before its child ran: give a payload that slipped through time to land.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(existsSync(marker)).toBe(false);
  });

  it('the globals are named exactly: os.system, eval, exec, Popen, getattr, a nested torch.load', () => {
    const named = manifest.map((e) => /disallowed global '([^']+)'/.exec(e.needle)?.[1]).filter(Boolean);
    expect(new Set(named)).toEqual(
      new Set(['posix.system', '__builtin__.eval', 'builtins.eval', 'builtins.exec', 'subprocess.Popen', 'builtins.getattr', 'torch.storage._load_from_bytes']),
    );
  });

  it('positive control: an unsafe loader (torch.load with weights_only=False) runs every payload', () => {
    const ran = JSON.parse(execFileSync(projectPython(), [SCRIPT, 'control', dir], { encoding: 'utf8' }));
    expect(Object.keys(ran).sort()).toEqual(manifest.map((e) => e.file).sort());
    for (const [file, didRun] of Object.entries(ran)) expect(didRun, file).toBe(true);
    expect(existsSync(marker)).toBe(false); // the control used markers of its own
  });

  it('the CLI refuses them too, with the same message and exit code 1', () => {
    const r = spawnSync(process.execPath, [CLI, 'generate', '--model', join(dir, 'popen-p3.pth'), '--config', fx.configPath, '--device', 'cpu', '--prompt-ids', '1,2'], {
      encoding: 'utf8',
      env: { ...process.env, QWEN3_HOSTILE_MARKER: marker },
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("checkpoint references disallowed global 'subprocess.Popen'");
    expect(existsSync(marker)).toBe(false);
  });
});

describe('safe loading is the only mode', () => {
  it('no option turns the restricted reader off', async () => {
    for (const option of ['weightsOnly', 'weights_only', 'unsafe', 'allowGlobals', 'pickle']) {
      await expect(load(join(dir, 'system-p2.pth'), { [option]: false })).rejects.toThrow(`Unknown option ${option}`);
    }
    expect(existsSync(marker)).toBe(false);
  });

  it('after every refusal the real checkpoint still loads and generates the reference tokens', async () => {
    const model = await load(fx.modelPath);
    try {
      expect(await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 5, eosTokenId: null })).toEqual(fx.runs.float32.hf_greedy.slice(0, 5));
    } finally {
      model.dispose();
    }
  });
});
