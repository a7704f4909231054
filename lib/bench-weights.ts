// The weights `qwen3 bench` measures: the book's Qwen3-0.6B (real if downloaded, else a
// random-weight checkpoint made once by the Python reference), a checkpoint with its config, a
// Hugging Face folder or repo id, or random weights of a config's shape made on the device.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { projectPython } from './addon/index.js';
import { type Dtype, MODEL_SIZES, type Quantize, type Qwen3Config } from './config.js';
import { modelHome } from './home.js';
import { resolveModelDir } from './hub/model.js';
import { isRepoId } from './hub/settings.js';
import { isHuggingFaceDir, readHuggingFaceModel } from './model/huggingface.js';
import { type RandomWeights, resolveConfig } from './model/load.js';
import { Qwen3Model } from './model.js';
import { packageRoot } from './native.js';
import { InvalidOptionError } from './validate.js';

/** Without a model or config, the benchmark runs the Qwen3-0.6B shape. */
export const BENCH_CONFIG = MODEL_SIZES['0.6B'];

/** What the options say about the weights. */
export interface WeightsChoice {
  model: string | undefined;
  revision: string | undefined;
  config: Qwen3Config | string | undefined;
  dtype: Dtype;
  randomWeights: RandomWeights | undefined;
  baseline: 'transformers' | undefined;
  log: (line: string) => void;
}

/** The weights a run measures, and the architecture they have. */
export type BenchSource =
  | { kind: 'checkpoint'; path: string; config: Qwen3Config; description: string }
  | { kind: 'folder'; path: string; config: Qwen3Config; tied: boolean; description: string }
  | { kind: 'random'; config: Qwen3Config; tied: boolean; seed: number; description: string };

/** The shape that the options name, refusing combinations that make no sense, before anything is made or loaded. */
export function checkWeightsChoice(choice: WeightsChoice): void {
  if (choice.randomWeights && choice.model !== undefined) {
    throw new InvalidOptionError(`Random weights are made on the device: leave out model (${choice.model})`, 'randomWeights');
  }
  if (choice.revision !== undefined && (choice.model === undefined || !isRepoId(choice.model))) {
    throw new InvalidOptionError('revision goes with a Hub repo id for model', 'revision');
  }
  if (choice.config !== undefined && choice.model === undefined && !choice.randomWeights) {
    throw new InvalidOptionError("config goes with a checkpoint (model) or random weights; the default weights are Qwen3-0.6B's", 'config');
  }
  if (choice.baseline && (choice.randomWeights || choice.dtype !== 'bfloat16')) {
    throw new InvalidOptionError("The transformers baseline runs the book's Qwen3-0.6B checkpoint in bfloat16: it needs weights in a file and dtype bfloat16", 'baseline');
  }
}

/**
 * The weights to measure: a Hugging Face folder (a repo id is downloaded first), a checkpoint
 * with its config, random weights of the config's shape, or by default the book's Qwen3-0.6B
 * (real if downloaded, else a random-weight checkpoint made once).
 */
export async function benchSource(choice: WeightsChoice): Promise<BenchSource> {
  if (choice.randomWeights) {
    const { config, tied } = await resolveConfig(choice.config, choice.dtype);
    const seed = choice.randomWeights.seed ?? 0;
    const shape = choice.config === undefined ? '0.6B' : typeof choice.config === 'string' ? choice.config : 'the given config';
    return { kind: 'random', config, tied: choice.randomWeights.tieWordEmbeddings ?? tied, seed, description: `random weights of ${shape} (seed ${seed}, made on the device)` };
  }
  if (choice.model === undefined) {
    const weights = benchWeights(choice.log);
    return { kind: 'checkpoint', path: weights.path, config: BENCH_CONFIG, description: weights.kind };
  }
  const path = await resolveModelDir(choice.model, { revision: choice.revision });
  if (await isHuggingFaceDir(path)) {
    if (choice.config !== undefined) throw new InvalidOptionError(`A Hugging Face model folder brings its own config.json: leave config out for ${choice.model}`, 'config');
    const hf = await readHuggingFaceModel(path);
    return { kind: 'folder', path, config: hf.config, tied: hf.tieWordEmbeddings, description: `Hugging Face folder ${choice.model}${path !== choice.model ? ` (${path})` : ''}` };
  }
  return { kind: 'checkpoint', path, config: (await resolveConfig(choice.config, choice.dtype)).config, description: path };
}

/** Equal architectures, whatever dtype each config names. */
export const sameShape = (a: Qwen3Config, b: Qwen3Config) => (Object.keys(a) as (keyof Qwen3Config)[]).every((k) => k === 'dtype' || a[k] === b[k]);

/** Real 0.6B base weights if downloaded, else a random-weight 0.6B checkpoint made once by the Python reference. */
function benchWeights(log: (s: string) => void): { path: string; kind: string } {
  const real = join(modelHome(), 'qwen3-0.6B-base.pth');
  if (existsSync(real)) return { path: real, kind: `real Qwen3-0.6B base weights (${real})` };
  const dir = join(modelHome(), 'bench');
  const path = join(dir, 'qwen3-0.6b-random', 'model.pth');
  if (!existsSync(path)) {
    log('No downloaded weights: making a random-weight Qwen3-0.6B checkpoint with scripts/python/make_fixtures.py ...');
    // Its progress goes to stderr with the rest of the log: stdout belongs to the report (--json).
    execFileSync(projectPython(), [join(packageRoot, 'scripts', 'python', 'make_fixtures.py'), '--out', dir, '--full-size', '--only', 'qwen3-0.6b-random'], { stdio: ['ignore', 2, 'inherit'] });
  }
  return { path, kind: 'random weights of the Qwen3-0.6B shape (no real weights downloaded)' };
}

/** Loads the weights onto one device, or a tensor-parallel model onto "cuda:0,cuda:1". */
export function loadSource(source: BenchSource, device: string, dtype: Dtype, compile: boolean, quantize?: Quantize): Promise<Qwen3Model> {
  const where = { ...(device.includes(',') ? { devices: device.split(',') } : { device }), ...(quantize ? { quantize } : {}) };
  switch (source.kind) {
    case 'random':
      return Qwen3Model.load({ config: source.config, randomWeights: { seed: source.seed, tieWordEmbeddings: source.tied }, ...where, dtype, compile });
    case 'folder':
      return Qwen3Model.load(source.path, { ...where, dtype, compile });
    default:
      return Qwen3Model.load(source.path, { config: source.config, ...where, dtype, compile });
  }
}
