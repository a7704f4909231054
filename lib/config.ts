// Qwen3 architecture configs with the reference implementation's key names, the built-in model
// sizes, and validation of user-supplied configs (objects or JSON files).
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { InvalidOptionError, boolean, integer, number, oneOf, parseOptions } from './validate.js';

export const DTYPES = ['bfloat16', 'float32', 'float16'] as const;
export type Dtype = (typeof DTYPES)[number];

/** Weight formats a model can be quantized to at load (LoadOptions.quantize). */
export const QUANTIZE_KINDS = ['int8', 'fp8'] as const;
export type Quantize = (typeof QUANTIZE_KINDS)[number];

export interface Qwen3Config {
  vocab_size: number;
  context_length: number;
  emb_dim: number;
  n_heads: number;
  n_layers: number;
  hidden_dim: number;
  head_dim: number;
  qk_norm: boolean;
  n_kv_groups: number;
  rope_base: number;
  /** The dtype the weights are meant to run in (the reference's cfg["dtype"]). */
  dtype: Dtype;
}

// Every released Qwen3 dense model shares these.
const QWEN3_COMMON = {
  vocab_size: 151_936,
  context_length: 40_960,
  head_dim: 128,
  qk_norm: true,
  n_kv_groups: 8,
  rope_base: 1_000_000,
  dtype: 'bfloat16',
} as const;

export const QWEN_CONFIG_06_B: Readonly<Qwen3Config> = Object.freeze({ ...QWEN3_COMMON, emb_dim: 1024, n_heads: 16, n_layers: 28, hidden_dim: 3072 });
export const QWEN_CONFIG_1_7_B: Readonly<Qwen3Config> = Object.freeze({ ...QWEN3_COMMON, emb_dim: 2048, n_heads: 16, n_layers: 28, hidden_dim: 6144 });
export const QWEN_CONFIG_4_B: Readonly<Qwen3Config> = Object.freeze({ ...QWEN3_COMMON, emb_dim: 2560, n_heads: 32, n_layers: 36, hidden_dim: 9728 });
export const QWEN_CONFIG_8_B: Readonly<Qwen3Config> = Object.freeze({ ...QWEN3_COMMON, emb_dim: 4096, n_heads: 32, n_layers: 36, hidden_dim: 12288 });
export const QWEN_CONFIG_14_B: Readonly<Qwen3Config> = Object.freeze({ ...QWEN3_COMMON, emb_dim: 5120, n_heads: 40, n_layers: 40, hidden_dim: 17408 });
export const QWEN_CONFIG_32_B: Readonly<Qwen3Config> = Object.freeze({ ...QWEN3_COMMON, emb_dim: 5120, n_heads: 64, n_layers: 64, hidden_dim: 25600 });

export const MODEL_SIZES = {
  '0.6B': QWEN_CONFIG_06_B,
  '1.7B': QWEN_CONFIG_1_7_B,
  '4B': QWEN_CONFIG_4_B,
  '8B': QWEN_CONFIG_8_B,
  '14B': QWEN_CONFIG_14_B,
  '32B': QWEN_CONFIG_32_B,
} as const;
export type ModelSize = keyof typeof MODEL_SIZES;

const dim = integer(1, 1 << 20);
const configSchema = z
  .object({
    vocab_size: integer(1, 1 << 24),
    context_length: integer(1, 1 << 24),
    emb_dim: dim,
    n_heads: integer(1, 1024),
    n_layers: integer(1, 1024),
    hidden_dim: dim,
    head_dim: integer(2, 4096),
    qk_norm: boolean(),
    n_kv_groups: integer(1, 1024),
    rope_base: number(0, 1e12, { exclusiveMin: true }),
    dtype: oneOf(DTYPES),
  }, { error: 'Expected config object' })
  .strict();

/** What may stand in for keys a config lacks. */
export interface ConfigDefaults {
  /**
   * The compute dtype asked for explicitly (Qwen3Model.load's `dtype`, the CLI's --dtype): a
   * config without a `dtype` key takes it; one with the key keeps its own.
   */
  dtype?: Dtype;
}

/** Validates a config object; cross-field rules (heads divisible by groups, even head_dim) included. */
export function parseConfig(value: unknown, defaults: ConfigDefaults = {}): Qwen3Config {
  const filled = defaults.dtype !== undefined && typeof value === 'object' && value !== null && !Array.isArray(value)
    && (value as { dtype?: unknown }).dtype === undefined
    ? { ...value, dtype: defaults.dtype }
    : value;
  const c = parseOptions(configSchema, filled, 'config.');
  if (c.n_heads % c.n_kv_groups !== 0) {
    throw new InvalidOptionError(
      `Expected n_heads to be a multiple of n_kv_groups for config.n_kv_groups but received ${c.n_kv_groups} (n_heads ${c.n_heads})`,
      'config.n_kv_groups',
    );
  }
  if (c.head_dim % 2 !== 0) {
    throw new InvalidOptionError(`Expected even integer for config.head_dim but received ${c.head_dim}`, 'config.head_dim');
  }
  return c;
}

/** The parsed JSON of a config file, with messages that name the file. */
export async function readConfigJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`Cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`Config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Reads and validates a config JSON file. */
export async function loadConfigFile(path: string, defaults: ConfigDefaults = {}): Promise<Qwen3Config> {
  return parseConfig(await readConfigJson(path), defaults);
}
