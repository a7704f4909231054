// A temperature barely above zero is sampling so cold that it must pick the most likely token
// every time: `--temperature 1e-40` gives the greedy tokens whatever the seed, never NaN or a
// random id. (Dividing logits by 1e-40 overflows float32; the native sampler has to handle it.)
import { describe, expect, it } from 'vitest';
import { loadFixture } from './support/fixtures.js';
import { runCli } from './support/run-cli.js';

const fx = loadFixture('tiny-gqa4');

function generate(args: string[]) {
  return runCli(['generate', '--model', fx.modelPath, '--config', fx.configPath, '--device', 'cpu', '--dtype', 'float32', ...args]);
}

describe('qwen3 generate --temperature 1e-40', () => {
  it('gives the greedy tokens for every seed', async () => {
    const greedy = fx.runs.float32.hf_greedy.slice(0, 20);
    for (const seed of [0, 1, 7, 42, 4294967295]) {
      const r = await generate(['--prompt-ids', fx.prompt.join(','), '--max-new-tokens', '20', '--temperature', '1e-40', '--seed', String(seed), '--json']);
      expect(r.stderr, `seed ${seed}`).toBe('');
      expect(r.status, `seed ${seed}`).toBe(0);
      expect(JSON.parse(r.stdout).ids, `seed ${seed}`).toEqual(greedy);
    }
  });
});
