// What the model-loading commands share: where downloads go and how flags become a loaded
// model and tokenizer.
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_BASE_URL, downloadQwen3Small } from './download.js';
import { Qwen3Model } from './model.js';
import { Qwen3Tokenizer } from './tokenizer.js';

/** Where downloaded weights live: $QWEN3_HOME, else ~/.cache/qwen3-torch. */
export function modelHome(): string {
  return process.env.QWEN3_HOME || join(homedir(), '.cache', 'qwen3-torch');
}

/** Download base URL: $QWEN3_BASE_URL (a mirror), else Hugging Face. */
export function baseUrl(): string {
  return process.env.QWEN3_BASE_URL || DEFAULT_BASE_URL;
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

/**
 * Loads the model and tokenizer the flags name; with no --model, the book's Qwen3-0.6B
 * checkpoint of `kind` is downloaded to modelHome() first (and its tokenizer file used).
 */
export async function loadFromFlags(flags: ModelFlags, kind: 'base' | 'reasoning'): Promise<{ model: Qwen3Model; tokenizer: Qwen3Tokenizer }> {
  if (flags.config && flags.size) throw new Error('Use either --config or --size, not both');
  let modelPath = flags.model;
  let tokenizerPath = flags.tokenizer;
  if (!modelPath) {
    const got = await downloadQwen3Small({ kind, outDir: modelHome(), baseUrl: baseUrl(), progress: 'auto' });
    modelPath = got.modelPath!;
    tokenizerPath ??= got.tokenizerPath;
  }
  const tokenizer = await Qwen3Tokenizer.load(tokenizerPath ? { tokenizerFilePath: tokenizerPath } : {});
  const model = await Qwen3Model.load(modelPath, {
    config: flags.config ?? flags.size ?? '0.6B',
    device: flags.device,
    dtype: flags.dtype,
    compile: flags.compile,
  });
  return { model, tokenizer };
}

