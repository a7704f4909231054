// Repos for the fake Hub, and the HF_* environment set up and restored around each test.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FakeHub, gitOid, sha256 } from './fake-hub.js';

export const C1 = randomBytes(20).toString('hex');
export const C2 = randomBytes(20).toString('hex');

/** One model.safetensors, every small file, and files the downloader must leave alone. */
export const SINGLE = 'Qwen/Qwen3-Tiny';
export const SINGLE_FILES: Record<string, Buffer> = {
  'config.json': Buffer.from(JSON.stringify({ architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3' })),
  'generation_config.json': Buffer.from('{"do_sample": true}'),
  'tokenizer.json': Buffer.from(JSON.stringify({ model: { vocab: 'x'.repeat(50_000) } })),
  'tokenizer_config.json': Buffer.from('{"chat_template": "{{ messages }}"}'),
  'model.safetensors': randomBytes(1_500_000),
  'README.md': Buffer.from('# Tiny'),
  'original/consolidated.pth': randomBytes(700_000),
};
/** In the order they are fetched. */
export const SINGLE_NEEDED = ['config.json', 'tokenizer.json', 'generation_config.json', 'tokenizer_config.json', 'model.safetensors'];

/** Weights in two shards named by the index; no generation_config.json or tokenizer_config.json. */
export const SHARDED = 'Qwen/Qwen3-Sharded';
export const SHARD1 = 'model-00001-of-00002.safetensors';
export const SHARD2 = 'model-00002-of-00002.safetensors';
export const SHARDED_FILES: Record<string, Buffer> = {
  'config.json': Buffer.from('{"model_type": "qwen3"}'),
  'tokenizer.json': Buffer.from('{"model": {}}'),
  'model.safetensors.index.json': Buffer.from(JSON.stringify({ metadata: {}, weight_map: { 'a.weight': SHARD1, 'b.weight': SHARD2, 'c.weight': SHARD1 } })),
  [SHARD1]: randomBytes(1_200_000),
  [SHARD2]: randomBytes(800_000),
};
export const SHARDED_NEEDED = ['config.json', 'tokenizer.json', 'model.safetensors.index.json', SHARD1, SHARD2];

/** The name the cache gives a file's blob: the SHA-256 for LFS files, the git object id otherwise. */
export const etagOf = (file: string, data: Buffer) => (file.endsWith('.safetensors') || file.endsWith('.pth') ? sha256(data) : gitOid(data));

export function addRepos(hub: FakeHub): void {
  hub.addRepo(SINGLE, C1, SINGLE_FILES);
  hub.addRepo(SHARDED, C2, SHARDED_FILES);
  hub.addRepo('Qwen/NoWeights', C1, { 'config.json': Buffer.from('{}'), 'tokenizer.json': Buffer.from('{}') });
}

const HF_VARIABLES = [
  'HF_HOME', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HF_HUB_OFFLINE', 'XDG_CACHE_HOME',
];

/** Clears every HF_* variable, points HF_HOME at a fresh folder; `restore` puts the old values back. */
export function isolatedHfEnvironment(): { home: string; restore(): void } {
  const saved = Object.fromEntries(HF_VARIABLES.map((name) => [name, process.env[name]]));
  for (const name of HF_VARIABLES) delete process.env[name];
  const home = mkdtempSync(path.join(os.tmpdir(), 'qwen3-hf-home-'));
  process.env.HF_HOME = home;
  return {
    home,
    restore() {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      rmSync(home, { recursive: true, force: true });
    },
  };
}

/** The repo folder in the cache under `hubCache` (HF_HOME/hub unless HF_HUB_CACHE says otherwise). */
export const repoRoot = (hubCache: string, repoId: string) => path.join(hubCache, `models--${repoId.replace('/', '--')}`);

/** A fake Hub with the repos above, HF_ENDPOINT pointing at it and an isolated HF environment. */
export async function startFakeHub(): Promise<{ hub: FakeHub; env: ReturnType<typeof isolatedHfEnvironment>; stop(): Promise<void> }> {
  const env = isolatedHfEnvironment();
  const hub = await new FakeHub().start();
  addRepos(hub);
  process.env.HF_ENDPOINT = hub.endpoint;
  return {
    hub,
    env,
    async stop() {
      await hub.stop();
      env.restore();
    },
  };
}
