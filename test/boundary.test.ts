// Bad arguments at every public boundary: wrong types, NaN, negative, fractional and huge values,
// out-of-vocabulary ids and prompts past the context. Each is refused with an error that names
// the argument; errors raised in TypeScript are InvalidOptionErrors thrown before any native
// call. The raw addon checks its own arguments too (a caller can require the .node file), and
// the CLI turns every bad flag into one "qwen3: ..." or commander line and exit code 1.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  InvalidOptionError,
  Qwen3Model,
  Qwen3Tokenizer,
  downloadQwen3Small,
  formatChat,
  formatStats,
  generateBatchCache,
  generateStats,
  generateTextBasic,
  generateTextBasicCache,
  generateTextBasicStreamCache,
  getDevice,
  memoryStats,
  parseConfig,
  resetPeakMemory,
  resolveDevice,
  setTensorCores,
} from '../lib/index.js';
import { type NativeModel, type NativeStepRequest, native } from '../lib/native.js';
import { loadFixture } from './support/fixtures.js';

const fx = loadFixture('tiny-gqa4'); // vocab 512, context 96
const greedy = fx.runs.float32.hf_greedy;
const CLI = join(__dirname, '..', 'dist', 'cli.js');
let model: Qwen3Model;
let dir: string;

beforeAll(async () => {
  model = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'cpu', dtype: 'float32' });
  dir = mkdtempSync(join(tmpdir(), 'qwen3-boundary-'));
});
afterAll(() => {
  model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** The model still produces the reference tokens: nothing above left it in a bad state. */
async function stillWorks(): Promise<void> {
  expect(await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 4, eosTokenId: null })).toEqual(greedy.slice(0, 4));
}

async function rejectsBeforeNative(promise: Promise<unknown>, message: string | RegExp): Promise<void> {
  const err = await promise.then(() => null, (e: unknown) => e);
  expect(err, `expected a rejection matching ${message}`).toBeInstanceOf(InvalidOptionError);
  if (typeof message === 'string') expect((err as Error).message).toBe(message);
  else expect((err as Error).message).toMatch(message);
}

describe('Qwen3Model.load', () => {
  const cfg = fx.config;
  const cases: [string, unknown, unknown, string | RegExp][] = [
    ['path of the wrong type', 5, {}, 'Expected non-empty string for path but received 5'],
    ['empty path', '', {}, 'Expected non-empty string for path but received ""'],
    ['options of the wrong type', fx.modelPath, 'cpu', /for options but received "cpu"/],
    ['unknown option', fx.modelPath, { config: fx.configPath, devcie: 'cpu' }, 'Unknown option devcie'],
    ['config of the wrong type', fx.modelPath, { config: 5 }, 'Expected config object, JSON file path or size for config but received 5'],
    ['unknown size', fx.modelPath, { config: '7B' }, /Expected one of 0\.6B, 1\.7B, 4B, 8B, 14B, 32B or a \.json file for config but received "7B"/],
    ['NaN in the config', fx.modelPath, { config: { ...cfg, vocab_size: Number.NaN } }, 'Expected integer between 1 and 16777216 for config.vocab_size but received NaN'],
    ['negative dimension', fx.modelPath, { config: { ...cfg, emb_dim: -128 } }, 'Expected integer between 1 and 1048576 for config.emb_dim but received -128'],
    ['fractional dimension', fx.modelPath, { config: { ...cfg, n_layers: 2.5 } }, 'Expected integer between 1 and 1024 for config.n_layers but received 2.5'],
    ['huge dimension', fx.modelPath, { config: { ...cfg, context_length: 1e12 } }, 'Expected integer between 1 and 16777216 for config.context_length but received 1000000000000'],
    ['zero key/value groups', fx.modelPath, { config: { ...cfg, n_kv_groups: 0 } }, 'Expected integer between 1 and 1024 for config.n_kv_groups but received 0'],
    ['infinite rope base', fx.modelPath, { config: { ...cfg, rope_base: Infinity } }, /for config\.rope_base but received Infinity/],
    ['unknown device', fx.modelPath, { config: fx.configPath, device: 'gpu' }, /for device but received "gpu"/],
    ['negative device index', fx.modelPath, { config: fx.configPath, device: 'cuda:-1' }, /for device but received "cuda:-1"/],
    ['unknown dtype', fx.modelPath, { config: fx.configPath, dtype: 'int8' }, 'Expected one of "bfloat16", "float32", "float16" for dtype but received "int8"'],
    ['compile of the wrong type', fx.modelPath, { config: fx.configPath, compile: 1 }, 'Expected boolean for compile but received 1'],
    ['signal of the wrong type', fx.modelPath, { config: fx.configPath, signal: {} }, 'Expected AbortSignal for signal but received object {}'],
  ];
  it.each(cases)('refuses %s before reading anything', async (_label, path, options, message) => {
    const spy = vi.spyOn(native(), 'loadModel');
    try {
      await rejectsBeforeNative(Qwen3Model.load(path as string, options as never), message);
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
    }
  });

  it('a missing file or a NUL in the path is "not found", never a different file', async () => {
    await expect(Qwen3Model.load(join(dir, 'nope.pth'), { config: fx.configPath })).rejects.toThrow(`Model file not found: ${join(dir, 'nope.pth')}`);
    await expect(Qwen3Model.load(`${fx.modelPath}\0.txt`, { config: fx.configPath })).rejects.toThrow('Model file not found');
  });
});

describe('model steps', () => {
  const cases: [string, () => Promise<unknown>, string | RegExp][] = [
    ['ids of the wrong type', () => model.forward('1,2' as never), 'Expected array of token ids for ids but received "1,2"'],
    ['a Float32Array', () => model.forward(new Float32Array([1, 2]) as never), 'Expected array of token ids for ids but received Float32Array of length 2'],
    ['NaN', () => model.forward([1, Number.NaN]), 'Expected integer between 0 and 511 for token id at position 1 but received NaN'],
    ['Infinity', () => model.prefill([Infinity]), 'Expected integer between 0 and 511 for token id at position 0 but received Infinity'],
    ['a negative id', () => model.forward(Int32Array.from([3, -5])), 'Expected integer between 0 and 511 for token id at position 1 but received -5'],
    ['a fractional id', () => model.forward([1.5]), 'Expected integer between 0 and 511 for token id at position 0 but received 1.5'],
    ['an id past the vocabulary', () => model.forward([511, 512]), 'Expected integer between 0 and 511 for token id at position 1 but received 512'],
    ['a huge id', () => model.forward([2 ** 31]), 'Expected integer between 0 and 511 for token id at position 0 but received 2147483648'],
    ['a hole in the array', () => model.prefill([1, , 3] as number[]), /at position 1 but received undefined/], // a sparse array: the hole reads as undefined
    ['a string id', () => model.forward(['7'] as never), /at position 0 but received "7"/],
    ['rows of different lengths', () => model.forward([[1, 2], [3]]), 'Expected every row to have 2 tokens for ids[1] but received 1'],
    ['a row that is not an array', () => model.forward([[1, 2], 3] as never), 'Expected array of token ids for ids[1] but received 3'],
    ['an empty prompt', () => model.forward([]), 'Expected at least one token for ids but received an empty prompt'],
    ['a prompt past the context', () => model.forward(new Array(97).fill(1)), 'Expected at most 96 tokens (context_length 96, 0 cached) for ids but received 97'],
    ['decode with two tokens', () => model.decode([1, 2]), 'Expected one token per row for ids but received 2'],
    ['an unknown logits mode', () => model.forward([1], { logits: 'some' as never }), 'Expected one of "none", "last", "all" for logits but received "some"'],
    ['an unknown step option', () => model.prefill([1], { logit: 'all' } as never), 'Unknown option logit'],
    ['resetCache release of the wrong type', () => model.resetCache({ release: 'yes' as never }), 'Expected boolean for release but received "yes"'],
    ['decodeSteps with 0 steps', () => model.decodeSteps([1], { steps: 0 }), 'Expected integer between 1 and 2147483647 for steps but received 0'],
    ['decodeSteps with fractional steps', () => model.decodeSteps([1], { steps: 2.5 }), 'Expected integer between 1 and 2147483647 for steps but received 2.5'],
    ['decodeSteps with a negative stopId', () => model.decodeSteps([1], { steps: 2, stopId: -1 }), 'Expected integer between 0 and 2147483647 for stopId but received -1'],
    ['decodeSteps without options', () => model.decodeSteps([1], undefined as never), /for options but received undefined/],
    ['decodeSteps with two tokens', () => model.decodeSteps([1, 2], { steps: 2 }), 'Expected one token per row for ids but received 2'],
  ];
  it.each(cases)('refuses %s in TypeScript', async (_label, call, message) => {
    await rejectsBeforeNative(call(), message);
  });

  it('refuses a prompt that does not fit after what the cache holds', async () => {
    await model.exclusive(async (s) => {
      s.resetCache();
      await s.prefill(new Array(90).fill(7));
      await expect(s.prefill(new Array(7).fill(7))).rejects.toThrow('Expected at most 6 tokens (context_length 96, 90 cached) for ids but received 7');
    });
    await stillWorks();
  });
});

describe('generation options', () => {
  const gen = (options: object, ids: unknown = fx.prompt) => generateTextBasicCache(model, ids as number[], options);
  const cases: [string, () => Promise<unknown>, string | RegExp][] = [
    ['promptIds of the wrong type', () => gen({}, 'hello'), 'Expected array of token ids for promptIds but received "hello"'],
    ['promptIds as a typed array', () => gen({}, Int32Array.from([1, 2])), 'Expected array of token ids for promptIds but received Int32Array of length 2'],
    ['an out-of-vocabulary prompt id', () => gen({ maxNewTokens: 2 }, [3, 99_999]), /for token id at position 1 but received 99999/],
    ['a NaN prompt id', () => gen({ maxNewTokens: 2 }, [Number.NaN]), /for token id at position 0 but received NaN/],
    ['an empty prompt', () => gen({}, []), 'Expected at least one token for ids but received an empty prompt'],
    ['maxNewTokens 0', () => gen({ maxNewTokens: 0 }), 'Expected integer between 1 and 96 for maxNewTokens but received 0'],
    ['maxNewTokens negative', () => gen({ maxNewTokens: -1 }), 'Expected integer between 1 and 96 for maxNewTokens but received -1'],
    ['maxNewTokens fractional', () => gen({ maxNewTokens: 1.5 }), 'Expected integer between 1 and 96 for maxNewTokens but received 1.5'],
    ['maxNewTokens huge', () => gen({ maxNewTokens: 1e12 }), 'Expected integer between 1 and 96 for maxNewTokens but received 1000000000000'],
    ['maxNewTokens NaN', () => gen({ maxNewTokens: Number.NaN }), 'Expected integer between 1 and 96 for maxNewTokens but received NaN'],
    ['maxNewTokens as a string', () => gen({ maxNewTokens: '5' }), 'Expected integer between 1 and 96 for maxNewTokens but received "5"'],
    ['temperature NaN', () => gen({ temperature: Number.NaN }), 'Expected number between 0 and 100 for temperature but received NaN'],
    ['temperature Infinity', () => gen({ temperature: Infinity }), 'Expected number between 0 and 100 for temperature but received Infinity'],
    ['temperature negative', () => gen({ temperature: -0.5 }), 'Expected number between 0 and 100 for temperature but received -0.5'],
    ['topK fractional', () => gen({ topK: 2.5 }), 'Expected integer between 0 and 512 for topK but received 2.5'],
    ['topK huge', () => gen({ topK: 1e9 }), 'Expected integer between 0 and 512 for topK but received 1000000000'],
    ['topP NaN', () => gen({ topP: Number.NaN }), 'Expected number greater than 0 and at most 1 for topP but received NaN'],
    ['topP above 1', () => gen({ topP: 1.01 }), 'Expected number greater than 0 and at most 1 for topP but received 1.01'],
    ['seed negative', () => gen({ seed: -3 }), 'Expected integer between 0 and 4294967295 for seed but received -3'],
    ['seed past 32 bits', () => gen({ seed: 2 ** 32 }), 'Expected integer between 0 and 4294967295 for seed but received 4294967296'],
    ['seed fractional', () => gen({ seed: 0.5 }), 'Expected integer between 0 and 4294967295 for seed but received 0.5'],
    ['eosTokenId negative', () => gen({ eosTokenId: -1 }), 'Expected integer between 0 and 2147483647 for eosTokenId but received -1'],
    ['eosTokenId NaN', () => gen({ eosTokenId: Number.NaN }), 'Expected integer between 0 and 2147483647 for eosTokenId but received NaN'],
    ['ignoreEos of the wrong type', () => gen({ ignoreEos: 'yes' }), 'Expected boolean for ignoreEos but received "yes"'],
    ['signal of the wrong type', () => gen({ signal: 'stop' }), 'Expected AbortSignal for signal but received "stop"'],
    ['an unknown option', () => gen({ max_new_tokens: 5 }), 'Unknown option max_new_tokens'],
    ['uncached, huge', () => generateTextBasic(model, fx.prompt, { maxNewTokens: 2 ** 40 }), /for maxNewTokens but received 1099511627776/],
    ['stats, NaN', () => generateStats(model, fx.prompt, { temperature: Number.NaN }), /for temperature but received NaN/],
  ];
  it.each(cases)('refuses %s', async (_label, call, message) => {
    await rejectsBeforeNative(call(), message);
  });

  it('refuses a prompt plus maxNewTokens past the context, streamed or not', async () => {
    const message = 'Expected prompt plus maxNewTokens to fit the context_length of 96 but received 90 + 10';
    await expect(gen({ maxNewTokens: 10 }, new Array(90).fill(1))).rejects.toThrow(message);
    const stream = generateTextBasicStreamCache(model, new Array(90).fill(1), { maxNewTokens: 10 });
    await expect(stream.next()).rejects.toThrow(message);
    await stillWorks();
  });
});

describe('tokenizer, config, devices and downloads', () => {
  let tokenizer: Qwen3Tokenizer;
  beforeAll(async () => {
    tokenizer = await Qwen3Tokenizer.load();
  });

  it('the tokenizer refuses non-strings, bad ids and unknown options', async () => {
    await expect(tokenizer.encode(5 as never)).rejects.toThrow('Expected string for text but received 5');
    await expect(tokenizer.encode('x', { chat: 'y' as never })).rejects.toThrow('Expected boolean for chat but received "y"');
    expect(() => tokenizer.decode('abc' as never)).toThrow('Expected array or Int32Array of token ids for ids but received "abc"');
    expect(() => tokenizer.decode([Number.NaN])).toThrow('Expected non-negative integer for ids.0 but received NaN');
    expect(() => tokenizer.decode([1, -1])).toThrow('Expected non-negative integer for ids.1 but received -1');
    expect(() => tokenizer.createStreamDecoder().push(1.5)).toThrow('Expected non-negative integer for id but received 1.5');
    await expect(Qwen3Tokenizer.load({ tokenizerFile: 'x' } as never)).rejects.toThrow('Unknown option tokenizerFile');
    expect(() => formatChat([{ role: 'root', content: 'x' } as never])).toThrow('Expected one of "system", "user", "assistant" for messages.0.role but received "root"');
    expect(() => formatChat(null as never)).toThrow('Expected array of chat messages for messages but received null');
  });

  it('configs, devices and memory queries refuse what libtorch would choke on', () => {
    expect(() => parseConfig({ ...fx.config, n_heads: 8, n_kv_groups: 3 })).toThrow(/multiple of n_kv_groups/);
    expect(() => parseConfig({ ...fx.config, head_dim: 33 })).toThrow('Expected even integer for config.head_dim but received 33');
    expect(() => resolveDevice(5)).toThrow(/for device but received 5/);
    expect(() => getDevice({ enableTensorCores: 'y' } as never)).toThrow('Expected boolean for enableTensorCores but received "y"');
    expect(() => setTensorCores(1 as never)).toThrow('Expected boolean for enabled but received 1');
    for (const bad of ['bogus', 'auto', '', 'cuda:x', 5]) {
      expect(() => memoryStats(bad as never)).toThrow(InvalidOptionError);
      expect(() => resetPeakMemory(bad as never)).toThrow(InvalidOptionError);
    }
    expect(memoryStats('cpu')).toBeNull();
  });

  it('downloads refuse bad options before any request', async () => {
    await expect(downloadQwen3Small(null as never)).rejects.toThrow('Expected object for options but received null');
    await expect(downloadQwen3Small({ kind: 'base', baseUrl: 'file:///etc' })).rejects.toThrow('Expected http(s) URL for baseUrl but received "file:///etc"');
    await expect(downloadQwen3Small({ kind: 'base', outDir: '' })).rejects.toThrow('Expected non-empty string for outDir but received ""');
  });
});

describe('the raw native binding checks what it is given', () => {
  let handle: NativeModel;
  const good: NativeStepRequest = { ids: Int32Array.from([1, 2, 3]), batch: 1, seq: 3, logits: 0, temperature: 0, topK: 0, topP: 1, uniforms: null };
  const step = (patch: object) => () => handle.forward({ ...good, ...patch } as NativeStepRequest);
  const steps = (patch: object) => () => handle.decodeSteps({ ...good, ids: Int32Array.from([1]), seq: 1, stopId: -1, ...patch } as NativeStepRequest);
  beforeAll(async () => {
    handle = await native().loadModel({ path: fx.modelPath, config: fx.config as never, device: 'cpu', dtype: 'float32', compile: false });
  });
  afterAll(() => handle.dispose());

  it.each([
    ['ids not an Int32Array', step({ ids: [1, 2, 3] }), 'Expected Int32Array for ids but received an array'],
    ['batch NaN', step({ batch: Number.NaN }), 'Expected integer between 1 and 2147483647 for batch but received NaN'],
    ['batch huge', step({ batch: 2 ** 40 }), 'Expected integer between 1 and 2147483647 for batch but received 1099511627776'],
    ['seq fractional', step({ seq: 1.5 }), 'Expected integer between 1 and 2147483647 for seq but received 1.5'],
    ['batch * seq not the ids length', step({ batch: 2 }), 'Expected ids to hold batch * seq = 2 * 3 tokens but received 3'],
    ['an id past the vocabulary', step({ ids: Int32Array.from([1, 512, 3]) }), 'Expected integer between 0 and 511 for token id at index 1 but received 512'],
    ['a negative id', step({ ids: Int32Array.from([-1, 2, 3]) }), 'Expected integer between 0 and 511 for token id at index 0 but received -1'],
    ['logits mode 7', step({ logits: 7 }), 'Expected integer between 0 and 2 for logits but received 7'],
    ['temperature NaN', step({ temperature: Number.NaN }), /for temperature but received NaN/],
    ['temperature negative', step({ temperature: -1 }), /for temperature but received -1/],
    ['topK negative', step({ topK: -1 }), 'Expected integer between 0 and 2147483647 for topK but received -1'],
    ['topP 0', step({ topP: 0 }), /for topP but received 0/],
    ['topP NaN', step({ topP: Number.NaN }), /for topP but received NaN/],
    ['uniforms missing when sampling', step({ temperature: 1 }), 'Expected Float64Array of one uniform draw per row for uniforms but received null'],
    ['a uniform draw of NaN', step({ temperature: 1, uniforms: Float64Array.from([Number.NaN]) }), /Expected uniform draws between 0 and 1 for uniforms but received nan/i],
    ['no request at all', () => (handle.forward as unknown as () => unknown)(), 'Expected object for step request but received undefined'],
    ['pad not an Int32Array', step({ pad: [1] }), /Expected Int32Array of one padding count per row for pad but received/],
    ['pad of the wrong length', step({ pad: Int32Array.from([0, 1]) }), /Expected Int32Array of one padding count per row for pad/],
    ['pad that leaves no real token', step({ pad: Int32Array.from([3]) }), 'Expected padding between 0 and 2 for pad[0] but received 3'],
    ['negative pad', step({ pad: Int32Array.from([-1]) }), 'Expected padding between 0 and 2 for pad[0] but received -1'],
    ['decodeSteps without steps', steps({}), 'Expected integer between 1 and 96 for steps but received undefined'],
    ['decodeSteps past the context', steps({ steps: 97 }), 'Expected integer between 1 and 96 for steps but received 97'],
    ['decodeSteps with stopId NaN', steps({ steps: 2, stopId: Number.NaN }), 'Expected integer between -1 and 2147483647 for stopId but received NaN'],
    ['decodeSteps with one draw for two steps', steps({ steps: 2, temperature: 1, uniforms: Float64Array.from([0.5]) }),
      'Expected Float64Array of one uniform draw per row and step for uniforms but received a typed array'],
  ] as [string, () => unknown, string | RegExp][])('a step refuses %s synchronously', (_label, call, message) => {
    expect(call).toThrow(message);
  });

  it('load refuses bad configs and paths synchronously', () => {
    const load = (patch: object, config: object = {}) => () =>
      native().loadModel({ path: fx.modelPath, device: 'cpu', dtype: 'float32', compile: false, ...patch, config: { ...fx.config, ...config } } as never);
    expect(load({}, { vocab_size: Number.NaN })).toThrow('Expected integer between 1 and 16777216 for config.vocab_size but received NaN');
    expect(load({}, { emb_dim: 1e300 })).toThrow('Expected integer between 1 and 1048576 for config.emb_dim but received 1e+300');
    expect(load({}, { n_kv_groups: 0 })).toThrow('Expected integer between 1 and 1024 for config.n_kv_groups but received 0');
    expect(load({}, { n_kv_groups: 3 })).toThrow('Expected a divisor of n_heads (8) for config.n_kv_groups but received 3');
    expect(load({}, { head_dim: 31 })).toThrow('Expected even integer for config.head_dim but received 31');
    expect(load({}, { rope_base: Number.NaN })).toThrow(/for rope_base but received NaN/);
    expect(load({}, { qk_norm: 1 })).toThrow('Expected boolean for config.qk_norm but received 1');
    expect(load({ path: 'model.pth\0.txt' })).toThrow('Expected non-empty string without NUL characters for path but received "model.pth\\x00.txt"');
    expect(load({ dtype: 'int8' })).toThrow('Expected one of "float32", "bfloat16", "float16" for dtype but received "int8"');
    expect(load({ compile: 'yes' })).toThrow('Expected boolean for compile but received "yes"');
    expect(() => handle.resetCache('yes' as never)).toThrow('Expected boolean for release but received "yes"');
  });

  it('decodeSteps refuses an empty cache and logits in the engine, as a rejection', async () => {
    handle.resetCache(true);
    await expect(handle.decodeSteps({ ...good, ids: Int32Array.from([1]), seq: 1, steps: 2, stopId: -1 })).rejects.toThrow(
      'decode_steps needs a prefilled KV cache: call prefill first',
    );
    await handle.prefill(good);
    await expect(handle.decodeSteps({ ...good, ids: Int32Array.from([1]), seq: 1, logits: 1, steps: 2, stopId: -1 })).rejects.toThrow(
      'decode_steps returns no logits: use decode for them',
    );
    handle.resetCache(true);
  });

  it('after all of that, the raw handle and the model still give the reference tokens', async () => {
    expect((await handle.prefill({ ...good, ids: Int32Array.from(fx.prompt), seq: fx.prompt.length })).next[0]).toBe(greedy[0]);
    await stillWorks();
  });
});

/** Runs the CLI; resolves with exit code and output. */
function qwen3(args: string[], input = ''): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args]);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.stdout.resume();
    child.on('close', (status) => resolve({ status, stderr }));
    child.stdin.end(input);
  });
}

describe('CLI flags', { timeout: 120_000 }, () => {
  const model = ['--model', fx.modelPath, '--config', fx.configPath, '--device', 'cpu', '--dtype', 'float32'];
  const gen = (...extra: string[]) => ['generate', ...model, '--prompt-ids', '1,2', ...extra];
  const cases: [string[], RegExp][] = [
    [gen('--max-new-tokens', '1.5'), /Expected integer for --max-new-tokens but received "1\.5"/],
    [gen('--max-new-tokens', '-3'), /Expected integer between 1 and 96 for maxNewTokens but received -3/],
    [gen('--max-new-tokens', '99999999999999999999'), /for maxNewTokens but received 100000000000000000000/],
    [gen('--max-new-tokens', ''), /Expected integer for --max-new-tokens but received ""/],
    [gen('--temperature', 'NaN'), /Expected number for --temperature but received "NaN"/],
    [gen('--temperature', 'Infinity'), /Expected number for --temperature but received "Infinity"/],
    [gen('--temperature', '-1'), /for temperature but received -1/],
    [gen('--top-k', '-1'), /Expected integer between 0 and 512 for topK but received -1/],
    [gen('--top-k', '2.5'), /Expected integer for --top-k but received "2\.5"/],
    [gen('--top-p', '0'), /for topP but received 0/],
    [gen('--top-p', '1.5'), /for topP but received 1\.5/],
    [gen('--seed', '4294967296'), /for seed but received 4294967296/],
    [gen('--seed', 'x'), /Expected integer for --seed but received "x"/],
    [gen('--eos-token-id', '-1'), /for eosTokenId but received -1/],
    [['generate', ...model, '--prompt-ids', '1,,2'], /Expected comma-separated token ids for --prompt-ids but received "1,,2"/],
    [['generate', ...model, '--prompt-ids', '-1'], /comma-separated token ids/],
    [['generate', ...model, '--prompt-ids', '3,512'], /Expected integer between 0 and 511 for token id at position 1 but received 512/],
    [['generate', ...model, '--prompt-ids', '99999999999999999999'], /for token id at position 0 but received 100000000000000000000/],
    [['generate', ...model, '--prompt-ids', new Array(95).fill(1).join(',')], /Expected prompt plus maxNewTokens to fit the context_length of 96 but received 95 \+ 50/],
    [['generate', ...model, '--prompt', ''], /Expected at least one token for ids but received an empty prompt/],
    [gen('--device', ''), /Expected non-empty string for device but received ""/],
    [gen('--device', 'cuda:-1'), /for device but received "cuda:-1"/],
    [gen('--dtype', 'int8'), /Allowed choices are bfloat16, float32, float16/],
    [gen('--size', '7B'), /Allowed choices are 0\.6B/],
    [gen('--bogus'), /unknown option '--bogus'/],
    [['download', '--kind', 'chat'], /Allowed choices are base, reasoning/],
    [['tokenize', '--prompt'], /argument missing/],
  ];

  it('every bad flag value ends in one clear line and exit code 1', async () => {
    const runs = await Promise.all(cases.map(([args]) => qwen3(args)));
    runs.forEach((r, i) => {
      const [args, message] = cases[i]!;
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    });
  });

  it('chat refuses --max-new-tokens 0 at the first message', async () => {
    const r = await qwen3(['chat', ...model, '--max-new-tokens', '0'], 'hello\n');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Expected integer between 1 and 96 for maxNewTokens but received 0/);
  });

  it('a config file that is not JSON is named', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{');
    const r = await qwen3(['generate', '--model', fx.modelPath, '--config', bad, '--prompt-ids', '1']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`Config file ${bad} is not valid JSON`);
  });
});

describe('generation entry points check their own arguments', () => {
  it('a model that is not a Qwen3Model is named', async () => {
    await rejectsBeforeNative(generateTextBasicCache(null as never, [1]), 'Expected Qwen3Model for model but received null');
    await rejectsBeforeNative(generateTextBasic({} as never, [1]), 'Expected Qwen3Model for model but received object {}');
    await rejectsBeforeNative(generateStats(5 as never, [1]), 'Expected Qwen3Model for model but received 5');
    await rejectsBeforeNative(generateBatchCache('m' as never, [[1]]), 'Expected Qwen3Model for model but received "m"');
  });

  it('generateStats checks onToken and print before generating', async () => {
    await rejectsBeforeNative(generateStats(model, fx.prompt, { onToken: 5 as never }), 'Expected function for onToken but received 5');
    await rejectsBeforeNative(generateStats(model, fx.prompt, { print: 'yes' as never }), 'Expected boolean for print but received "yes"');
  });

  it('generateBatchCache names a prompt that is not an array', async () => {
    await rejectsBeforeNative(generateBatchCache(model, [5, 6] as never), 'Expected array of token ids for prompts[0] but received 5');
    await rejectsBeforeNative(generateBatchCache(model, []), 'Expected non-empty array of prompts for prompts but received array of length 0');
  });

  it('formatStats and exclusive reject what they cannot use', async () => {
    expect(() => formatStats(null as never)).toThrow('Expected generation stats object for stats but received null');
    await rejectsBeforeNative(model.exclusive(5 as never), 'Expected function for fn but received 5');
    await stillWorks();
  });
});
