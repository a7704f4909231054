// What the `qwen3` commands share: flag parsers that turn strings into values (the library then
// checks ranges and names the option), the flags of every command that loads a model, and how
// those flags become a loaded model and tokenizer: a checkpoint file (the book's layout) with a
// tokenizer file, or a Hugging Face model folder with its own tokenizer, chat template and
// generation settings.
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { MODEL_SIZES } from '../config.js';
import { downloadQwen3Small } from '../download.js';
import { type GenerationConfig, readGenerationConfig } from '../generation-config.js';
import { baseUrl, modelHome } from '../home.js';
import { Qwen3Model } from '../model.js';
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
  config?: string;
  size?: string;
  tokenizer?: string;
  device: string;
  dtype?: 'bfloat16' | 'float32' | 'float16';
  compile?: boolean;
}

/** Sampling flags of the commands that generate. */
export interface SamplingFlags {
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

/** Flags shared by every command that loads a model and generates with it. */
export function modelOptions(cmd: Command, kind: string): Command {
  return cmd
    .option('--model <path>', `checkpoint written by torch.save(state_dict), or a Hugging Face model folder (default: download the ${kind} Qwen3-0.6B)`)
    .option('--config <file>', 'model config JSON (reference key names); not for a model folder')
    .addOption(new Option('--size <size>', 'built-in model size').choices(Object.keys(MODEL_SIZES)))
    .option('--tokenizer <path>', "tokenizer.json, or a model folder's tokenizer and chat template (default: the model folder's, the downloaded one, else the bundled Qwen3 tokenizer)")
    .option('--device <device>', 'auto, cpu, cuda, cuda:N, mps or xpu', 'auto')
    .addOption(new Option('--dtype <dtype>', "compute dtype (default: the config's)").choices(['bfloat16', 'float32', 'float16']))
    .option('--compile', 'optimised execution (CUDA graphs, fused weights); same outputs')
    .option('--temperature <t>', 'sampling temperature (0: greedy)', numberArg('--temperature'))
    .option('--top-k <k>', 'sample from the k most likely tokens', intArg('--top-k'))
    .option('--top-p <p>', 'sample from the smallest set of tokens with probability p', numberArg('--top-p'))
    .option('--seed <s>', 'random seed for sampling', intArg('--seed'));
}

// A Hugging Face repo id: owner/name, as the Hub spells them, and not a file name.
const REPO_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;
const CHECKPOINT_FILE = /\.(pth|pt|bin|safetensors|json)$/i;

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isDirectory(), () => false);
}

/** True when --model names a model folder, or what can only be a Hub repo id (no such file). */
async function namesFolder(path: string): Promise<boolean> {
  if (await isDirectory(path)) return true;
  const exists = await stat(path).then(() => true, () => false);
  return !exists && REPO_ID.test(path) && !CHECKPOINT_FILE.test(path);
}

/**
 * The local folder of a model given as a folder or a Hugging Face repo id ("Qwen/Qwen3-1.7B").
 * Only folders for now: resolving a repo id to a downloaded folder is the Hub download's job.
 */
export async function resolveModelDir(idOrDir: string): Promise<string> {
  if (await isDirectory(idOrDir)) return resolve(idOrDir);
  const exists = await stat(idOrDir).then(() => true, () => false);
  if (exists) throw new Error(`Expected a model folder for --model but ${idOrDir} is a file`);
  if (REPO_ID.test(idOrDir)) {
    throw new Error(`No folder ${idOrDir}; taking it as a Hugging Face repo id needs the Hub download support, which is not there yet: download the repo and pass its folder`);
  }
  throw new Error(`Model folder not found: ${idOrDir}`);
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
  const folder = flags.model !== undefined && (await namesFolder(flags.model)) ? await resolveModelDir(flags.model) : null;
  if (folder !== null && (flags.config || flags.size)) {
    throw new Error(`--config and --size do not apply to a model folder: the config.json in ${folder} describes the model`);
  }
  let modelPath = flags.model;
  let tokenizerPath = flags.tokenizer;
  if (!modelPath) {
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
    ? await Qwen3Model.load(folder, { device: flags.device, dtype: flags.dtype, compile: flags.compile })
    : await Qwen3Model.load(modelPath, {
      config: flags.config ?? flags.size ?? '0.6B',
      device: flags.device,
      dtype: flags.dtype,
      compile: flags.compile,
    });
  return { model, tokenizer, generation };
}
