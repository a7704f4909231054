// What the `qwen3` commands share: flag parsers that turn strings into values (the library then
// checks ranges and names the option), the flags of every command that loads a model, and how
// those flags become a loaded model and tokenizer.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { MODEL_SIZES } from '../config.js';
import { downloadQwen3Small } from '../download.js';
import { baseUrl, modelHome } from '../home.js';
import { isHuggingFaceDir } from '../hf-model.js';
import { Qwen3Model } from '../model.js';
import { Qwen3Tokenizer } from '../tokenizer.js';

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
    .option('--model <file>', `checkpoint written by torch.save(state_dict) (default: download the ${kind} Qwen3-0.6B)`)
    .option('--config <file>', 'model config JSON (reference key names)')
    .addOption(new Option('--size <size>', 'built-in model size').choices(Object.keys(MODEL_SIZES)))
    .option('--tokenizer <file>', 'tokenizer.json (default: the downloaded one, else the bundled Qwen3 tokenizer)')
    .option('--device <device>', 'auto, cpu, cuda, cuda:N, mps or xpu', 'auto')
    .addOption(new Option('--dtype <dtype>', "compute dtype (default: the config's)").choices(['bfloat16', 'float32', 'float16']))
    .option('--compile', 'optimised execution (CUDA graphs, fused weights); same outputs')
    .option('--temperature <t>', 'sampling temperature (0: greedy)', numberArg('--temperature'))
    .option('--top-k <k>', 'sample from the k most likely tokens', intArg('--top-k'))
    .option('--top-p <p>', 'sample from the smallest set of tokens with probability p', numberArg('--top-p'))
    .option('--seed <s>', 'random seed for sampling', intArg('--seed'));
}

/**
 * Loads the model and tokenizer the flags name; with no --model, the book's Qwen3-0.6B
 * checkpoint of `kind` is downloaded to modelHome() first (and its tokenizer file used).
 */
export async function loadFromFlags(flags: ModelFlags, kind: 'base' | 'reasoning'): Promise<{ model: Qwen3Model; tokenizer: Qwen3Tokenizer }> {
  if (flags.config && flags.size) throw new Error('Use either --config or --size, not both');
  let modelPath = flags.model;
  let tokenizerPath = flags.tokenizer;
  if (modelPath === undefined) {
    const got = await downloadQwen3Small({ kind, outDir: modelHome(), baseUrl: baseUrl(), progress: 'auto' });
    modelPath = got.modelPath!;
    tokenizerPath ??= got.tokenizerPath;
  }
  // A Hugging Face folder brings its config, and its tokenizer.json unless --tokenizer names one.
  const folder = await isHuggingFaceDir(modelPath);
  if (folder && existsSync(join(modelPath, 'tokenizer.json'))) tokenizerPath ??= join(modelPath, 'tokenizer.json');
  const tokenizer = await Qwen3Tokenizer.load(tokenizerPath ? { tokenizerFilePath: tokenizerPath } : {});
  const model = await Qwen3Model.load(modelPath, {
    config: folder ? flags.config ?? flags.size : flags.config ?? flags.size ?? '0.6B',
    device: flags.device,
    dtype: flags.dtype,
    compile: flags.compile,
  });
  return { model, tokenizer };
}
