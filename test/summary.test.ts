// formatModelSummary against what PyTorch prints for the reference Qwen3Model, built on the meta
// device (no memory for weights) in a single Python process for every config.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { projectPython } from '../lib/addon/python.js';
import { MODEL_SIZES, QWEN_CONFIG_06_B, type Qwen3Config } from '../lib/config.js';
import { formatModelSummary } from '../lib/summary.js';
import { Qwen3Model } from '../lib/model.js';
import { loadFixture } from './support/fixtures.js';

const SCRIPTS = path.resolve(__dirname, '..', 'scripts', 'python');

// Reads a JSON list of configs (dtype as a name) and prints the JSON list of repr(Qwen3Model(cfg)),
// followed by the repr for the reference's own QWEN_CONFIG_06_B.
const PROGRAM = `
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
from qwen3_reference import QWEN_CONFIG_06_B, Qwen3Model

def summary(cfg):
    with torch.device("meta"):
        return repr(Qwen3Model(cfg))

configs = json.load(sys.stdin)
out = [summary(dict(c, dtype=getattr(torch, c["dtype"]))) for c in configs]
out.append(summary(QWEN_CONFIG_06_B))
json.dump({"torch": torch.__version__, "summaries": out}, sys.stdout)
`;

const SMALL_ONE_LAYER: Qwen3Config = {
  vocab_size: 1000, context_length: 256, emb_dim: 64, n_heads: 4, n_layers: 1, hidden_dim: 160,
  head_dim: 16, qk_norm: true, n_kv_groups: 2, rope_base: 10_000, dtype: 'float32',
};
const SMALL_NO_QK_NORM: Qwen3Config = {
  vocab_size: 517, context_length: 128, emb_dim: 48, n_heads: 6, n_layers: 3, hidden_dim: 96,
  head_dim: 10, qk_norm: false, n_kv_groups: 3, rope_base: 500_000, dtype: 'float16',
};

const CASES: [string, Qwen3Config][] = [
  ['QWEN_CONFIG_06_B', QWEN_CONFIG_06_B],
  ['one layer', SMALL_ONE_LAYER],
  ['no qk_norm', SMALL_NO_QK_NORM],
  ['no qk_norm, one layer', { ...SMALL_NO_QK_NORM, n_layers: 1 }],
  ...Object.entries(MODEL_SIZES).filter(([size]) => size !== '0.6B').map(([size, c]): [string, Qwen3Config] => [size, c]),
];

let torchVersion: string;
let expected: Map<string, string>;
let referenceConfigSummary: string;

beforeAll(() => {
  const out = execFileSync(projectPython(), ['-c', PROGRAM, SCRIPTS], {
    input: JSON.stringify(CASES.map(([, c]) => c)),
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const parsed = JSON.parse(out) as { torch: string; summaries: string[] };
  torchVersion = parsed.torch;
  referenceConfigSummary = parsed.summaries.pop()!;
  expected = new Map(CASES.map(([name], i) => [name, parsed.summaries[i]!]));
});

describe('formatModelSummary', () => {
  it.each(CASES)('equals PyTorch print(model) for %s', (name, config) => {
    expect(formatModelSummary(config), `torch ${torchVersion}`).toBe(expected.get(name));
  });

  it('matches the summary of the reference script\'s own QWEN_CONFIG_06_B', () => {
    expect(formatModelSummary(QWEN_CONFIG_06_B)).toBe(referenceConfigSummary);
  });

  it('collapses the 28 identical blocks of Qwen3-0.6B and keeps QK-norm', () => {
    const s = formatModelSummary(QWEN_CONFIG_06_B);
    expect(s.startsWith('Qwen3Model(\n  (tok_emb): Embedding(151936, 1024)\n  (trf_blocks): ModuleList(\n    (0-27): 28 x TransformerBlock(\n')).toBe(true);
    expect(s).toContain('\n        (q_norm): RMSNorm()\n        (k_norm): RMSNorm()\n');
    expect(s.endsWith('\n  (final_norm): RMSNorm()\n  (out_head): Linear(in_features=1024, out_features=151936, bias=False)\n)')).toBe(true);
  });

  it('prints a single block as (0) and leaves out q_norm/k_norm without qk_norm', () => {
    expect(formatModelSummary(SMALL_ONE_LAYER)).toContain('\n    (0): TransformerBlock(\n');
    const s = formatModelSummary(SMALL_NO_QK_NORM);
    expect(s).toContain('\n    (0-2): 3 x TransformerBlock(\n');
    expect(s).not.toContain('q_norm');
    expect(s).not.toContain('k_norm');
  });

  it('validates the config', () => {
    expect(() => formatModelSummary({ ...QWEN_CONFIG_06_B, n_layers: 0 })).toThrow(
      'Expected integer between 1 and 1024 for config.n_layers but received 0',
    );
    expect(() => formatModelSummary({ ...QWEN_CONFIG_06_B, n_kv_groups: 3 })).toThrow('for config.n_kv_groups but received 3');
    expect(() => formatModelSummary(null as never)).toThrow('Expected config object for config but received null');
  });
});

describe('Qwen3Model.summary', () => {
  it('prints and returns the tree of the loaded model', async () => {
    const fx = loadFixture('tiny-gqa4');
    const model = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'cpu' });
    const writes: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => (writes.push(chunk), true)) as typeof process.stdout.write;
    try {
      const text = model.summary();
      expect(text).toBe(formatModelSummary(fx.config));
      expect(text).toContain('(0-3): 4 x TransformerBlock(');
      expect(writes.join('')).toBe(`${text}\n`);
    } finally {
      process.stdout.write = write;
      model.dispose();
    }
  });
});
