// What the `qwen3` commands share: flag parsers that turn strings into values (the library then
// checks ranges and names the option), the flags of every command that loads a model, and how
// those flags become a loaded model and tokenizer: a checkpoint file (the book's layout) with a
// tokenizer file, or a Hugging Face model folder (or Hub repo id) with its own tokenizer, chat
// template and generation settings.
import { stat } from 'node:fs/promises';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { MODEL_SIZES, QUANTIZE_KINDS, type Quantize } from '../config.js';
import { downloadQwen3Small } from '../download.js';
import { type GenerationConfig, readGenerationConfig } from '../model/generation-config.js';
import { baseUrl, modelHome } from '../home.js';
import { isHuggingFaceDir } from '../model/huggingface.js';
import { resolveModelDir } from '../hub/model.js';
import { isRepoId } from '../hub/settings.js';
import { hubProgressView } from './hub-progress.js';
import { EXIT_INTERRUPTED } from './output.js';
import { type LoadOptions, Qwen3Model } from '../model.js';
import { Qwen3Tokenizer, type TokenizerLoadOptions } from '../tokenizer.js';

export function intArg(name: string) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`Expected integer for ${name} but received "${value}"`);
    return Number(value);
  };
}

export function numberArg(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`Expected number for ${name} but received "${value}"`);
    return n;
  };
}

/** Comma-separated positive integers; empty entries are skipped, so "" is an empty list. */
export function intList(name: string) {
  return (value: string): number[] => {
    const parts = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < 1)) throw new InvalidArgumentError(`Expected comma-separated positive integers for ${name} but received "${value}"`);
    return parts.map(Number);
  };
}

export function idList(value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p))) {
    throw new InvalidArgumentError(`Expected comma-separated token ids for --prompt-ids but received "${value}"`);
  }
  return parts.map(Number);
}

export interface ModelFlags {
  model?: string;
  revision?: string;
  config?: string;
  size?: string;
  tokenizer?: string;
  device: string;
  /** --devices cuda:0,cuda:1: tensor parallelism over these. */
  devices?: string;
  /** --tensor-parallel N: over the first N devices of --device's kind. */
  tensorParallel?: number;
  /** --distributed: this process is one rank, as torchrun's variables say. */
  distributed?: boolean;
  /** Set by serve and chat: with --distributed, rank 0 alone makes the calls and the others follow them (forwardCalls). */
  followRankZero?: boolean;
  /** false with --no-warmup. */
  warmup?: boolean;
  dtype?: 'bfloat16' | 'float32' | 'float16';
  compile?: boolean;
  /** --quantize int8 (CPU) or fp8 (CUDA). */
  quantize?: Quantize;
  /** --random-weights [seed]: true without a seed. */
  randomWeights?: number | true;
}

/** Sampling flags of the commands that generate. */
export interface SamplingFlags {
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

/** --quantize, for every command that loads a model. */
export function quantizeOption(): Option {
  return new Option('--quantize <type>', 'weights quantized at load, per-row scales: int8 (CPU) or fp8 (CUDA)').choices(QUANTIZE_KINDS);
}

/** Where a loaded model runs and in what dtype: --device, --devices, --tensor-parallel, --dtype, --quantize. */
export function placementOptions(cmd: Command): Command {
  return cmd
    .option('--device <device>', 'auto, cpu, cuda, cuda:N, mps or xpu', 'auto')
    .option('--devices <list>', 'tensor parallelism: one share of the model on each of these devices, e.g. cuda:0,cuda:1')
    .option('--tensor-parallel <n>', 'tensor parallelism over the first n devices of --device\'s kind (cuda:0 .. cuda:n-1)', intArg('--tensor-parallel'))
    .addOption(new Option('--dtype <dtype>', "compute dtype (default: the config's)").choices(['bfloat16', 'float32', 'float16']))
    .addOption(quantizeOption())
    .option('--no-warmup', 'skip the warm-up at load (on CUDA: a prompt and a few steps that take first-use costs off the first request)');
}

/** Flags shared by every command that loads a model and generates with it. */
export function modelOptions(cmd: Command, kind: string): Command {
  return placementOptions(cmd
    .option('--model <path|id>', `a .pth checkpoint, a Hugging Face folder or a Hub repo id such as Qwen/Qwen3-0.6B (default: download the book's ${kind} Qwen3-0.6B)`)
    .option('--revision <rev>', 'branch, tag or commit of a Hub repo id (default: main)')
    .option('--config <file>', "model config JSON (the book's keys or a Hugging Face config.json); not for a model folder")
    .addOption(new Option('--size <size>', 'built-in model size').choices(Object.keys(MODEL_SIZES)))
    .option('--random-weights [seed]', 'random weights of the --config or --size shape (default 0.6B), made on the device: no file is read (seed default 0)', intArg('--random-weights'))
    .option('--tokenizer <path>', "tokenizer.json, or a model folder's tokenizer and chat template (default: the model folder's, the downloaded one, else the bundled Qwen3 tokenizer)"))
    .option('--compile', 'optimised execution (CUDA graphs, fused weights); same outputs')
    .option('--temperature <t>', 'sampling temperature (0: greedy)', numberArg('--temperature'))
    .option('--top-k <k>', 'sample from the k most likely tokens', intArg('--top-k'))
    .option('--top-p <p>', 'sample from the smallest set of tokens with probability p', numberArg('--top-p'))
    .option('--seed <s>', 'random seed for sampling', intArg('--seed'));
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isDirectory(), () => false);
}

/**
 * What --model names on this machine: a local file or folder as it is, or a Hub repo id
 * downloaded into the Hugging Face cache (or found there) with a progress bar on stderr.
 */
export async function resolveModelFlag(model: string, revision: string | undefined): Promise<string> {
  if (revision !== undefined && !isRepoId(model)) throw new Error('--revision goes with a Hub repo id for --model');
  if (!isRepoId(model)) return model;
  const view = hubProgressView();
  try {
    return await resolveModelDir(model, { revision, onProgress: view.onProgress });
  } finally {
    view.stop();
  }
}

/** A tokenizer flag's value: a model folder (tokenizer, chat template, end tokens) or a tokenizer.json file. */
export async function loadTokenizer(path: string, options: Omit<TokenizerLoadOptions, 'modelDir' | 'tokenizerFilePath'> = {}): Promise<Qwen3Tokenizer> {
  return Qwen3Tokenizer.load({ ...((await isDirectory(path)) ? { modelDir: path } : { tokenizerFilePath: path }), ...options });
}

export interface Loaded {
  model: Qwen3Model;
  tokenizer: Qwen3Tokenizer;
  /**
   * The generation settings of the model folder (--model), else of the folder --tokenizer names;
   * null when neither is a folder.
   */
  generation: GenerationConfig | null;
}

/**
 * Loads the model and tokenizer the flags name; with no --model, the book's Qwen3-0.6B
 * checkpoint of `kind` is downloaded to modelHome() first (and its tokenizer file used). A model
 * folder brings its tokenizer and config; --tokenizer still replaces the tokenizer.
 */
export async function loadFromFlags(flags: ModelFlags, kind: 'base' | 'reasoning'): Promise<Loaded> {
  if (flags.config && flags.size) throw new Error('Use either --config or --size, not both');
  if (flags.randomWeights !== undefined) return loadRandomFromFlags(flags);
  let modelPath = flags.model === undefined ? undefined : await resolveModelFlag(flags.model, flags.revision);
  const folder = modelPath !== undefined && (await isHuggingFaceDir(modelPath)) ? modelPath : null;
  if (folder !== null && (flags.config || flags.size)) {
    throw new Error(`--config and --size do not apply to a model folder: the config.json in ${folder} describes the model`);
  }
  let tokenizerPath = flags.tokenizer;
  if (modelPath === undefined) {
    const got = await downloadQwen3Small({ kind, outDir: modelHome(), baseUrl: baseUrl(), progress: 'auto' });
    modelPath = got.modelPath!;
    tokenizerPath ??= got.tokenizerPath;
  }
  let tokenizer: Qwen3Tokenizer;
  if (tokenizerPath) tokenizer = await loadTokenizer(tokenizerPath);
  else tokenizer = await Qwen3Tokenizer.load(folder !== null ? { modelDir: folder } : {});
  const settingsDir = folder ?? tokenizer.modelDir;
  const generation = settingsDir !== null ? await readGenerationConfig(settingsDir) : null;
  const model = folder !== null
    ? await Qwen3Model.load(folder, loadOptions(flags))
    : await Qwen3Model.load(modelPath, { config: flags.config ?? flags.size ?? '0.6B', ...loadOptions(flags) });
  return { model, tokenizer, generation };
}

/**
 * Qwen3Model.load's options from the flags every loading command shares: --device, --devices,
 * --tensor-parallel and --distributed (where the model goes), --dtype, --compile, --quantize and
 * --no-warmup.
 */
function loadOptions(flags: ModelFlags): LoadOptions {
  const rest = { dtype: flags.dtype, compile: flags.compile, quantize: flags.quantize, ...(flags.warmup === false ? { warmup: false } : {}) };
  if (flags.distributed) {
    if (flags.devices !== undefined || flags.tensorParallel !== undefined) {
      throw new Error('Use either --distributed (one rank per process) or --devices / --tensor-parallel (ranks as threads of one process), not both');
    }
    return { device: flags.device, processGroup: 'env', ...(flags.followRankZero ? { forwardCalls: true } : {}), ...rest };
  }
  if (flags.devices === undefined) return { device: flags.device, tensorParallel: flags.tensorParallel, ...rest };
  if (flags.device !== 'auto') throw new Error('Use either --device (one device) or --devices (tensor parallelism), not both');
  return { devices: flags.devices.split(',').map((d) => d.trim()), tensorParallel: flags.tensorParallel, ...rest };
}

/** --distributed for serve and chat, whose calls come from rank 0 alone. */
export const DISTRIBUTED_FOLLOW_HELP =
  'one rank of a model split over processes, as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; cuda means cuda:LOCAL_RANK); ' +
  "rank 0 runs the command, the others follow its calls (at MASTER_ADDR, port MASTER_PORT + 1 or $QWEN3_FORWARD_PORT)";

/**
 * After a load with --distributed for serve or chat: on a rank other than 0, follows rank 0's
 * calls until rank 0 is done, disposes the model and returns true (nothing more to do there).
 */
export async function followRankZero(model: Qwen3Model): Promise<boolean> {
  if (!model.forwardsCalls || model.processGroup?.rank === 0) return false;
  // A launcher's Ctrl-C reaches every rank; rank 0 decides when the calls end (a server drains
  // first, and needs every rank for that). A second signal stops this rank at once.
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) process.exit(EXIT_INTERRUPTED);
    process.stderr.write(`${signal}: rank ${model.processGroup!.rank} follows rank 0 until it stops (signal again to stop now)\n`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await model.followCalls();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    model.dispose();
  }
  return true;
}

/** The seed of --random-weights: the flag alone means seed 0. */
export function randomSeed(flag: number | true): number {
  return flag === true ? 0 : flag;
}

/**
 * --random-weights: a model of the --config or --size shape drawn on the device, with --tokenizer
 * or the bundled tokenizer; nothing is downloaded or read but the config.
 */
async function loadRandomFromFlags(flags: ModelFlags): Promise<Loaded> {
  if (flags.model !== undefined) throw new Error('--random-weights makes the weights on the device: leave out --model');
  if (flags.revision !== undefined) throw new Error('--revision goes with a Hub repo id for --model');
  const tokenizer = flags.tokenizer ? await loadTokenizer(flags.tokenizer) : await Qwen3Tokenizer.load();
  const generation = tokenizer.modelDir !== null ? await readGenerationConfig(tokenizer.modelDir) : null;
  const model = await Qwen3Model.load({
    config: flags.config ?? flags.size ?? '0.6B',
    randomWeights: { seed: randomSeed(flags.randomWeights!) },
    ...loadOptions(flags),
  });
  return { model, tokenizer, generation };
}
