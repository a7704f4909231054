// Where the package keeps the files it downloads or makes, and where downloads come from. The
// CLI and the benchmark both read these, so they live outside either.
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_BASE_URL } from './download.js';

/** Where downloaded weights live: $QWEN3_HOME, else ~/.cache/qwen3-torch. */
export function modelHome(): string {
  return process.env.QWEN3_HOME || join(homedir(), '.cache', 'qwen3-torch');
}

/** Download base URL: $QWEN3_BASE_URL (a mirror), else Hugging Face. */
export function baseUrl(): string {
  return process.env.QWEN3_BASE_URL || DEFAULT_BASE_URL;
}
