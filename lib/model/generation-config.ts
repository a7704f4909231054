// What a Hugging Face model folder says about generating: the tokens that end a reply and the
// sampling settings its authors chose (generation_config.json, else config.json for the end
// tokens), read the way transformers' generate() reads them.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

/** Sampling as the generation functions take it (GenerateOptions' names). */
export interface SamplingDefaults {
  temperature: number;
  topK: number;
  topP: number;
}

export interface GenerationConfig {
  /** Every id that ends a reply (generation_config.json, else config.json); empty when neither names one. */
  eosTokenIds: number[];
  /** The folder's sampling settings; null when it asks for greedy decoding (no `do_sample: true`). */
  sampling: SamplingDefaults | null;
}

// transformers' own defaults for fields a generation_config.json leaves out.
const TRANSFORMERS_DEFAULTS: SamplingDefaults = { temperature: 1, topK: 50, topP: 1 };

const tokenIds = z.union([z.number().int().min(0), z.array(z.number().int().min(0))]).nullable().optional();
const generationSchema = z.looseObject({
  eos_token_id: tokenIds,
  do_sample: z.boolean().optional(),
  temperature: z.number().min(0).nullable().optional(),
  top_k: z.number().int().min(0).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
});
const modelConfigSchema = z.looseObject({ eos_token_id: tokenIds });

/** The parsed JSON of `dir/name`, or undefined when the folder has no such file. */
export async function readOptionalJson(dir: string, name: string): Promise<unknown> {
  const path = join(dir, name);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`Cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function parse<S extends z.ZodType>(schema: S, json: unknown, path: string): z.output<S> {
  const parsed = schema.safeParse(json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new Error(`${path}: unexpected value for ${issue.path.join('.') || 'the file'} (${issue.message})`);
}

const asList = (ids: number | number[] | null | undefined): number[] => (ids === null || ids === undefined ? [] : [ids].flat());

/** Reads `dir`'s generation_config.json (and config.json for the end tokens when it names none). */
export async function readGenerationConfig(dir: string): Promise<GenerationConfig> {
  const generationJson = await readOptionalJson(dir, 'generation_config.json');
  const generation = generationJson === undefined ? {} : parse(generationSchema, generationJson, join(dir, 'generation_config.json'));
  let eosTokenIds = asList(generation.eos_token_id);
  if (eosTokenIds.length === 0) {
    const configJson = await readOptionalJson(dir, 'config.json');
    if (configJson !== undefined) eosTokenIds = asList(parse(modelConfigSchema, configJson, join(dir, 'config.json')).eos_token_id);
  }
  // generate() samples only with do_sample; otherwise it decodes greedily whatever the temperature says.
  const sampling = generation.do_sample !== true ? null : {
    temperature: generation.temperature ?? TRANSFORMERS_DEFAULTS.temperature,
    topK: generation.top_k ?? TRANSFORMERS_DEFAULTS.topK,
    topP: generation.top_p ?? TRANSFORMERS_DEFAULTS.topP,
  };
  return { eosTokenIds: [...new Set(eosTokenIds)], sampling };
}

/**
 * The sampling to use: each of temperature, topK and topP that the user gave, the folder's value
 * for the others (transformers merges generate()'s arguments over generation_config the same
 * way). With no folder settings, what the user gave is used as it is.
 */
export function withSamplingDefaults<T extends Partial<SamplingDefaults>>(user: T, defaults: SamplingDefaults | null): T {
  if (defaults === null) return user;
  return { ...user, temperature: user.temperature ?? defaults.temperature, topK: user.topK ?? defaults.topK, topP: user.topP ?? defaults.topP };
}
