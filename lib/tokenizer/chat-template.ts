// A model folder's chat template, rendered the way transformers' apply_chat_template(tokenize=False)
// renders it, with @huggingface/jinja (the Jinja engine of transformers.js):
//   - the template comes from chat_template.jinja (and additional_chat_templates/*.jinja) when the
//     folder has them, else from tokenizer_config.json's `chat_template`, a string or a list of
//     {name, template}; of several, "tool_use" is taken when tools are given and it exists, else
//     "default";
//   - message keys whose value is null are dropped, and reasoning given under any of
//     `reasoning_content`, `thinking` or `reasoning` is passed as both `reasoning_content` and
//     `thinking`;
//   - the template sees messages, tools (null when none), documents (null), add_generation_prompt,
//     the folder's named special tokens (bos_token, eos_token, ... when set), and enable_thinking
//     only when the caller sets it; raise_exception and strftime_now are defined; blocks are
//     trimmed (trim_blocks, lstrip_blocks) and nothing is stripped from the result.
// The engine's strip, lstrip and rstrip ignore their argument, while Qwen3's template strips only
// newlines with them (`content.lstrip('\n')`); those calls are rewritten to Python's semantics.
// Where the two engines still differ: JSON numbers have no separate float type in JavaScript, so a
// whole number written as 2.0 reaches `tojson` as 2, and a number JavaScript prints in exponent
// form (1.5e-7) lacks Python's two-digit exponent (1.5e-07); object keys that look like integers
// come first, as in every JavaScript object.
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { z } from 'zod';
import { InvalidOptionError, boolean, describeValue, oneOf, parseOptions } from '../validate.js';

export const CHAT_ROLES = ['system', 'user', 'assistant', 'tool'] as const;
export type ChatRole = (typeof CHAT_ROLES)[number];

/** A call of a tool by the assistant, OpenAI style ({type, function: {name, arguments}}) or bare ({name, arguments}). */
export interface ToolCall {
  type?: 'function';
  id?: string;
  function?: { name: string; arguments: Record<string, unknown> | string };
  name?: string;
  arguments?: Record<string, unknown> | string;
  [key: string]: unknown;
}

/** One message as chat templates read it; other keys are passed to the template as they are. */
export interface TemplateMessage {
  role: ChatRole;
  content: string;
  /** The assistant's thinking, kept apart from `content` (Qwen3 renders it in a think block). */
  reasoning_content?: string | null;
  tool_calls?: ToolCall[] | null;
  [key: string]: unknown;
}

export interface ApplyChatTemplateOptions {
  /** Tool definitions (JSON schemas, usually {type: "function", function: {name, description, parameters}}). */
  tools?: readonly Record<string, unknown>[] | null;
  /** Open an assistant turn at the end for the model to answer in. Default false. */
  addGenerationPrompt?: boolean;
  /** Qwen3: false pre-fills an empty think block (no thinking); unset leaves the template's default (thinking). */
  enableThinking?: boolean;
}

/** The templates of a folder: one, or several by name. */
export type ChatTemplates = string | ReadonlyMap<string, string>;

/** transformers' named special tokens, passed to every template that has them set. */
const SPECIAL_TOKEN_NAMES = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;
const REASONING_FIELDS = ['reasoning_content', 'thinking', 'reasoning'] as const;

const objectError = { error: 'Expected object' };
const messageSchema = z.looseObject(
  {
    role: oneOf(CHAT_ROLES),
    content: z.string({ error: 'Expected string' }),
    reasoning_content: z.string({ error: 'Expected string or null' }).nullable().optional(),
    tool_calls: z.array(z.looseObject({}, objectError), { error: 'Expected array of tool calls or null' }).nullable().optional(),
  },
  objectError,
);
const inputSchema = z.object({
  messages: z.array(messageSchema, { error: 'Expected array of chat messages' }).min(1, { error: 'Expected at least one chat message' }),
  options: z.strictObject(
    {
      tools: z.array(z.looseObject({}, objectError), { error: 'Expected array of tool definitions or null' }).nullable().optional(),
      addGenerationPrompt: boolean().optional(),
      enableThinking: boolean().optional(),
    },
    objectError,
  ),
});

/**
 * A copy of `value` made only of JSON values (what transformers hands a template: plain data,
 * nothing callable). Keys whose value is undefined are left out, as JSON.stringify does.
 */
function plainData(value: unknown, path: string): unknown {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (Array.isArray(value)) return value.map((v, i) => plainData(v, `${path}.${i}`));
  if (typeof value === 'object' && (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = plainData(v, `${path}.${k}`);
    return out;
  }
  throw new InvalidOptionError(`Expected a JSON value (string, finite number, boolean, null, array or plain object) for ${path} but received ${describeValue(value)}`, path);
}

/** transformers' message preparation: null values dropped, reasoning under every name templates read. */
function prepareMessage(message: Record<string, unknown>): Record<string, unknown> {
  const kept = Object.fromEntries(Object.entries(message).filter(([, v]) => v !== null && v !== undefined));
  const field = REASONING_FIELDS.find((f) => kept[f] !== undefined);
  if (field === undefined) return kept;
  const reasoning = kept[field];
  return { thinking: reasoning, ...kept, reasoning_content: reasoning };
}

/** The named special tokens of a tokenizer_config.json (a string, or an added-token object's content). */
export function specialTokensOf(tokenizerConfig: Record<string, unknown>): Record<string, string> {
  const tokens: Record<string, string> = {};
  for (const name of SPECIAL_TOKEN_NAMES) {
    const value = tokenizerConfig[name];
    if (typeof value === 'string') tokens[name] = value;
    else if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') {
      tokens[name] = (value as { content: string }).content;
    }
  }
  return tokens;
}

/** Python's whitespace (str.isspace), which strip() removes when given no characters. */
const PYTHON_WHITESPACE = new Set([...'\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000']);
const STRIP_METHODS = new Set(['strip', 'lstrip', 'rstrip']);
/** A name no template can write (it is not a Jinja identifier), for the rewritten calls. */
const PYTHON_STRIP = 'python strip';

/** Python's str.strip / lstrip / rstrip: `chars` (default: whitespace) removed from one or both ends. */
function pythonStrip(value: unknown, method: unknown, chars: unknown): string {
  if (typeof value !== 'string') throw new Error(`${String(method)}() is a string method, but it was called on ${describeValue(value)}`);
  if (chars !== undefined && chars !== null && typeof chars !== 'string') throw new Error(`${String(method)}() takes a string of characters, not ${describeValue(chars)}`);
  const set = typeof chars === 'string' ? new Set([...chars]) : PYTHON_WHITESPACE;
  const points = [...value];
  let start = 0;
  let end = points.length;
  if (method !== 'rstrip') while (start < end && set.has(points[start]!)) start++;
  if (method !== 'lstrip') while (end > start && set.has(points[end - 1]!)) end--;
  return points.slice(start, end).join('');
}

type Node = { type?: unknown; [key: string]: unknown };

/** Rewrites every `x.strip(...)`, `x.lstrip(...)` and `x.rstrip(...)` in a parsed template into a call of pythonStrip. */
function usePythonStrip(node: unknown): void {
  if (Array.isArray(node)) return node.forEach(usePythonStrip);
  if (typeof node !== 'object' || node === null) return;
  const n = node as Node;
  Object.values(n).forEach(usePythonStrip);
  const callee = n.callee as Node | undefined;
  const property = callee?.property as Node | undefined;
  if (n.type === 'CallExpression' && callee?.type === 'MemberExpression' && !callee.computed && property?.type === 'Identifier' && STRIP_METHODS.has(property.value as string)) {
    n.args = [callee.object, { type: 'StringLiteral', value: property.value }, ...(n.args as unknown[])];
    n.callee = { type: 'Identifier', value: PYTHON_STRIP };
  }
}

/** A folder's chat templates, compiled once each, rendered as transformers renders them. */
export class ChatTemplate {
  readonly templates: ChatTemplates;
  /** Where the templates were read from, for error messages. */
  readonly origin: string;
  readonly specialTokens: Readonly<Record<string, string>>;
  readonly #compiled = new Map<string, Template>();

  constructor(templates: ChatTemplates, specialTokens: Record<string, string> = {}, origin = 'the chat template') {
    this.templates = templates;
    this.specialTokens = Object.freeze({ ...specialTokens });
    this.origin = origin;
  }

  /** The template used for a call with (or without) tools. */
  source(hasTools: boolean): string {
    if (typeof this.templates === 'string') return this.templates;
    const name = hasTools && this.templates.has('tool_use') ? 'tool_use' : 'default';
    const template = this.templates.get(name);
    if (template === undefined) {
      throw new Error(`${this.origin} has several chat templates and none named "default" (it has ${[...this.templates.keys()].map((n) => `"${n}"`).join(', ')})`);
    }
    return template;
  }

  /** The prompt text for `messages`, exactly as transformers' apply_chat_template(tokenize=False) renders it. */
  render(messages: readonly TemplateMessage[], options: ApplyChatTemplateOptions = {}): string {
    const input = parseOptions(inputSchema, { messages, options });
    // The caller's objects, not the parsed copies, so that keys keep their order.
    const tools = input.options.tools === undefined || input.options.tools === null ? null : plainData(options.tools, 'options.tools');
    const prepared = messages.map((m, i) => prepareMessage(plainData(m, `messages.${i}`) as Record<string, unknown>));
    const source = this.source(tools !== null);
    let template = this.#compiled.get(source);
    if (template === undefined) {
      try {
        template = new Template(source);
        usePythonStrip(template.parsed);
      } catch (err) {
        throw new Error(`Cannot parse ${this.origin}: ${(err as Error).message}`, { cause: err });
      }
      this.#compiled.set(source, template);
    }
    const context: Record<string, unknown> = {
      ...this.specialTokens,
      messages: prepared,
      tools,
      documents: null,
      add_generation_prompt: input.options.addGenerationPrompt ?? false,
      [PYTHON_STRIP]: pythonStrip,
    };
    if (input.options.enableThinking !== undefined) context.enable_thinking = input.options.enableThinking;
    try {
      return template.render(context);
    } catch (err) {
      throw new Error(`${this.origin} could not render these messages: ${(err as Error).message}`, { cause: err });
    }
  }
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`Cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

const templateListSchema = z.array(z.object({ name: z.string(), template: z.string() }));

/**
 * The chat template of model folder `dir` with its tokenizer_config.json already parsed, or null
 * when it has none. Template files win over tokenizer_config.json's entry, as in transformers.
 */
export async function readChatTemplate(dir: string, tokenizerConfig: Record<string, unknown>): Promise<ChatTemplate | null> {
  const specials = specialTokensOf(tokenizerConfig);
  const files = new Map<string, string>();
  const main = await readText(join(dir, 'chat_template.jinja'));
  if (main !== undefined) files.set('default', main);
  const extraDir = join(dir, 'additional_chat_templates');
  const extra = await readdir(extraDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
    throw new Error(`Cannot read ${extraDir}: ${err.message}`, { cause: err });
  });
  for (const name of extra.filter((n) => n.endsWith('.jinja')).sort()) {
    files.set(name.slice(0, -'.jinja'.length), (await readText(join(extraDir, name)))!);
  }
  if (files.size > 0) {
    const origin = `the chat template of ${dir}`;
    return new ChatTemplate(files.size === 1 && files.has('default') ? files.get('default')! : files, specials, origin);
  }
  const entry = tokenizerConfig.chat_template;
  const origin = `the chat template in ${join(dir, 'tokenizer_config.json')}`;
  if (entry === undefined || entry === null) return null;
  if (typeof entry === 'string') return new ChatTemplate(entry, specials, origin);
  const list = templateListSchema.safeParse(entry);
  if (!list.success) throw new Error(`${join(dir, 'tokenizer_config.json')}: expected chat_template to be a string or a list of {name, template} but it is ${describeValue(entry)}`);
  return new ChatTemplate(new Map(list.data.map((t) => [t.name, t.template])), specials, origin);
}

/**
 * Splits a Qwen3 reply into its thinking and its answer the way the template reads an assistant
 * turn: the answer is what follows the last `</think>`, leading newlines dropped; the thinking is
 * what precedes the first `</think>`, after the last `<think>` before it, newlines around it
 * dropped. A reply without `</think>` is all answer.
 */
export function splitThinking(reply: string): { thinking: string; answer: string } {
  if (!reply.includes('</think>')) return { thinking: '', answer: reply };
  const parts = reply.split('</think>');
  return {
    thinking: parts[0]!.replace(/\n+$/, '').split('<think>').at(-1)!.replace(/^\n+/, ''),
    answer: parts.at(-1)!.replace(/^\n+/, ''),
  };
}
