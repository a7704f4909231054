// `qwen3 bench` checks every option before it makes or loads any weights, refuses work that
// cannot fit in memory with the numbers, keeps stdout for the report alone, and measures any
// model the library loads (a checkpoint, a Hugging Face folder or repo id, random weights). A stand-in for
// the project's Python (QWEN3_PYTHON) records (and fakes, cheaply) the random-weight checkpoint
// bench would make on a first run; every other Python call goes to the real one.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectPython } from '../lib/addon/python.js';
import { runBench } from '../lib/bench.js';
import { InvalidOptionError } from '../lib/index.js';
import { FakeHub } from './support/fake-hub.js';
import { isolatedHfEnvironment } from './support/hub-fixtures.js';
import { runCli } from './support/run-cli.js';

const NOISE = 'make_fixtures stand-in: a progress line on stdout';

let dir: string;
let home: string;
let fixtureLog: string;
let env: Record<string, string>;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'qwen3-bench-'));
  const project = projectPython();
  const realPython = isAbsolute(project) ? project : execFileSync('sh', ['-c', `command -v ${project}`], { encoding: 'utf8' }).trim();
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  fixtureLog = join(dir, 'make_fixtures.log');
  const wrapper = join(bin, 'python3');
  writeFileSync(
    wrapper,
    `#!/bin/sh
case "$1" in
  *make_fixtures.py)
    echo "${NOISE}"
    echo "$*" >> "${fixtureLog}"
    while [ $# -gt 0 ]; do if [ "$1" = --out ]; then out="$2"; fi; shift; done
    mkdir -p "$out/qwen3-0.6b-random" && : > "$out/qwen3-0.6b-random/model.pth"
    exit 0;;
esac
exec "${realPython}" "$@"
`,
  );
  chmodSync(wrapper, 0o755);
  home = join(dir, 'home');
  mkdirSync(home);
  env = { ...(process.env as Record<string, string>), QWEN3_PYTHON: wrapper, QWEN3_HOME: home };
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function bench(args: string[]) {
  return runCli(['bench', ...args], { env });
}

describe('qwen3 bench options', () => {
  it('every bad value is refused by name before any weights are made or loaded', async () => {
    const cases: [string[], RegExp][] = [
      [['--runs', '0'], /^qwen3: Expected integer between 1 and 1000 for runs but received 0\n$/],
      [['--new-tokens', '0'], /^qwen3: Expected integer between 1 and \d+ for newTokens but received 0\n$/],
      [['--new-tokens', '40960'], /^qwen3: Expected integer between 1 and 409\d\d for newTokens but received 40960\n$/],
      [['--prefill', '50000'], /^qwen3: Expected integer between 1 and 40960 for prefill\.0 but received 50000\n$/],
      [['--batches', '100000'], /^qwen3: Expected integer between 1 and 65536 for batches\.0 but received 100000\n$/],
      [['--rows', ','], /Expected comma-separated rows from Regular, Regular compiled, KV cache, KV cache compiled for --rows but received ","/],
      [['--rows', 'KV cache,'], /for --rows but received "KV cache,"/],
      [['--rows', 'Fast'], /for --rows but received "Fast"/],
      [['--device', 'tpu'], /^qwen3: Expected one of "auto", "cpu", "cuda", "cuda:N", "mps", "xpu" for devices but received "tpu"\n$/],
    ];
    for (const [args, message] of cases) {
      const r = await bench([...args, '--json']);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stdout, args.join(' ')).toBe('');
    }
    expect(existsSync(fixtureLog)).toBe(false);
    expect(existsSync(join(home, 'bench'))).toBe(false); // where the random-weight checkpoint would go
  });

  it('a batch that cannot fit in memory is refused with what it needs and what the machine has', async () => {
    const r = await bench(['--device', 'cpu', '--batches', '60000']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /^qwen3: Batch 60000 needs about [\d.]+ GB of memory \(KV cache [\d.]+ GB, logits [\d.]+ GB, activations [\d.]+ GB, weights 1\.5 GB\); this machine has [\d.]+ GB available of [\d.]+ GB\n$/,
    );
    expect(existsSync(fixtureLog)).toBe(false);
    expect(existsSync(join(home, 'bench'))).toBe(false); // where the random-weight checkpoint would go
  });

  it('runBench itself refuses the same values before it logs or loads anything', async () => {
    // Pointed at the stand-in too, so that a value let through costs an empty checkpoint, not a real one.
    const saved = { home: process.env.QWEN3_HOME, python: process.env.QWEN3_PYTHON };
    process.env.QWEN3_HOME = env.QWEN3_HOME;
    process.env.QWEN3_PYTHON = env.QWEN3_PYTHON;
    const lines: string[] = [];
    const log = (line: string) => lines.push(line);
    try {
      for (const options of [{ runs: 0 }, { rows: [''] as never }, { batches: [60_000] }, { newTokens: 1.5 }, { bogus: 1 } as never]) {
        const err = await runBench({ devices: ['cpu'], log, ...options }).catch((e: unknown) => e);
        expect(err, JSON.stringify(options)).toBeInstanceOf(InvalidOptionError);
      }
    } finally {
      for (const [key, value] of [['QWEN3_HOME', saved.home], ['QWEN3_PYTHON', saved.python]] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
    expect(lines).toEqual([]);
    expect(existsSync(fixtureLog)).toBe(false);
  });
});

describe('qwen3 bench --json', () => {
  it('keeps stdout for the report: the checkpoint maker of a first run writes its progress to stderr', async () => {
    // The stand-in's checkpoint is empty, so the run fails at loading it; up to there nothing
    // may have reached stdout.
    const r = await bench(['--device', 'cpu', '--rows', 'KV cache', '--batches', '', '--prefill', '', '--runs', '1', '--new-tokens', '2', '--json']);
    expect(existsSync(fixtureLog)).toBe(true);
    expect(r.stderr).toContain(NOISE);
    expect(r.stdout).toBe('');
    expect(r.status).toBe(1);
  });
});

describe('qwen3 bench with any model', () => {
  const folder = join(__dirname, '.fixtures', 'hf-tied-bf16-sharded');
  const tiny = join(__dirname, '.fixtures', 'tiny-gqa4');
  const small = ['--device', 'cpu', '--rows', 'KV cache', '--batches', '2', '--prefill', '8', '--runs', '1', '--new-tokens', '3', '--json'];

  async function report(args: string[], runEnv = env) {
    const r = await runCli(['bench', ...args, ...small], { env: runEnv });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { weights: string; dtype: string; rows: { row: string; tokensPerSecond: number }[]; prefill: { tokens: number }[]; batched: { batch: number }[] };
    expect(out.rows.map((x) => x.row)).toEqual(['KV cache']);
    expect(out.rows[0]!.tokensPerSecond).toBeGreaterThan(0);
    expect(out.prefill.map((p) => p.tokens)).toEqual([8]);
    expect(out.batched.map((b) => b.batch)).toEqual([2]);
    return out;
  }

  // What the default checkpoint's maker has been asked so far (earlier tests ask it once).
  const madeSoFar = () => (existsSync(fixtureLog) ? readFileSync(fixtureLog, 'utf8') : '');

  it('measures a Hugging Face folder, a checkpoint with its config, and random weights of a config', async () => {
    const made = madeSoFar();
    expect((await report(['--model', folder])).weights).toBe(`Hugging Face folder ${folder}`);
    const pth = await report(['--model', join(tiny, 'model.pth'), '--config', join(tiny, 'config.json'), '--dtype', 'float32']);
    expect(pth.weights).toBe(join(tiny, 'model.pth'));
    expect(pth.dtype).toBe('float32');
    const random = await report(['--random-weights', '4', '--config', join(folder, 'config.json')]);
    expect(random.weights).toBe(`random weights of ${join(folder, 'config.json')} (seed 4, made on the device)`);
    expect(madeSoFar()).toBe(made); // the default checkpoint was not asked for
  });

  it('measures decode after a long prompt, with the weights and keys and values each step reads', async () => {
    const r = await runCli(['bench', '--model', folder, '--device', 'cpu', '--rows', 'KV cache', '--batches', '', '--prefill', '', '--context', '40,64', '--runs', '1',
      '--new-tokens', '4', '--json'], { env });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { contextDecode: { contextTokens: number; decodeTokensPerSecond: number; bytesPerToken: number; fraction: number }[]; bandwidth: unknown[] };
    expect(out.contextDecode.map((x) => x.contextTokens)).toEqual([40, 64]);
    const c = JSON.parse(readFileSync(join(folder, 'config.json'), 'utf8')) as { num_hidden_layers: number; num_key_value_heads: number; head_dim: number };
    const kvPerToken = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2; // bfloat16
    const [short, long] = out.contextDecode;
    // The same weights, and the keys and values of the prompt and half the new tokens more.
    expect(long!.bytesPerToken - short!.bytesPerToken).toBe(kvPerToken * (64 - 40));
    for (const x of out.contextDecode) {
      expect(x.decodeTokensPerSecond).toBeGreaterThan(0);
      expect(x.fraction).toBeGreaterThan(0);
    }
    const tooLong = await runCli(['bench', '--model', folder, '--device', 'cpu', '--context', '95', '--new-tokens', '4', '--json'], { env });
    expect(tooLong.status).toBe(1);
    expect(tooLong.stderr).toMatch(/^qwen3: Expected integer between 1 and 92 for contexts\.0 but received 95\n$/);
  });

  it('measures a Hub repo id, downloaded into the Hugging Face cache first', async () => {
    const hfEnv = isolatedHfEnvironment();
    const hub = await new FakeHub().start();
    try {
      const files = Object.fromEntries(readdirSync(folder).filter((f) => f.endsWith('.json') || f.endsWith('.safetensors')).map((f) => [f, readFileSync(join(folder, f))]));
      hub.addRepo('Qwen/Qwen3-Bench-Tiny', randomBytes(20).toString('hex'), files);
      const clean = Object.fromEntries(Object.entries(env).filter(([k]) => !/^(HF_|HUGGING)/.test(k)));
      const out = await report(['--model', 'Qwen/Qwen3-Bench-Tiny'], { ...clean, HF_HOME: hfEnv.home, HF_ENDPOINT: hub.endpoint });
      expect(out.weights).toMatch(/^Hugging Face folder Qwen\/Qwen3-Bench-Tiny \(.*models--Qwen--Qwen3-Bench-Tiny.snapshots.*\)$/);
    } finally {
      await hub.stop();
      hfEnv.restore();
    }
  });

  it('refuses what does not fit the weights, by name, before measuring', async () => {
    const made = madeSoFar();
    const cases: [string[], string | RegExp][] = [
      [['--random-weights', '--model', folder], '--random-weights makes the weights on the device: leave out --model'],
      [['--size', '8B'], "config goes with a checkpoint (model) or random weights; the default weights are Qwen3-0.6B's"],
      [['--model', folder, '--size', '0.6B'], 'A Hugging Face model folder brings its own config.json'],
      [['--model', folder, '--new-tokens', '90'], /^qwen3: Expected integer between 1 and 86 for newTokens but received 90\n$/],
      [['--model', folder, '--prefill', '97'], /^qwen3: Expected integer between 1 and 96 for prefill\.0 but received 97\n$/],
      [['--model', folder, '--baseline', 'transformers'], "The transformers baseline runs the book's Qwen3-0.6B checkpoint in bfloat16 only, not this model"],
      [['--random-weights', '--baseline', 'transformers'], 'it needs weights in a file and dtype bfloat16'],
      [['--model', folder, '--revision', 'v1'], '--revision goes with a Hub repo id for --model'],
      [['--random-weights', '-3'], /Expected integer between 0 and 9007199254740991 for randomWeights\.seed but received -3/],
    ];
    for (const [args, message] of cases) {
      const r = await bench([...args, '--device', 'cpu', '--json']);
      expect(r.status, args.join(' ')).toBe(1);
      if (typeof message === 'string') expect(r.stderr, args.join(' ')).toContain(message);
      else expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stdout, args.join(' ')).toBe('');
    }
    expect(madeSoFar()).toBe(made);
  });
});
