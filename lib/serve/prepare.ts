// From a checked request body to what the completer needs: the prompt ids (a chat rendered with
// the model's chat template and tokenized), the length of each completion, the sampling settings
// (the request's, else the model folder's generation_config.json, else OpenAI's defaults), the
// stop ids and strings, and logprobs.
import type { GenerationConfig } from '../model/generation-config.js';
import type { Qwen3Model } from '../model.js';
import type { Qwen3Tokenizer } from '../tokenizer.js';
import { type TemplateMessage } from '../tokenizer/chat-template.js';
import { formatChat, type ChatMessage } from '../tokenizer.js';
import { ApiError } from './errors.js';
import type { ChatBody, CompletionBody } from './schemas.js';

export interface ServeContext {
  model: Qwen3Model;
  tokenizer: Qwen3Tokenizer;
  generation: GenerationConfig | null;
  servedModelName: string;
}

export interface PromptPlan {
  ids: number[];
  maxTokens: number;
}

export interface Plan {
  prompts: PromptPlan[];
  /** Completions per prompt. */
  n: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number | undefined;
  stopIds: number[];
  stops: string[];
  logprobs: number | null;
  /** Chat only: whether the reply starts inside a think block; null where no reasoning is split off (completions). */
  startsThinking: boolean | null;
}

// OpenAI's defaults, used where neither the request nor the model folder says.
const DEFAULT_TEMPERATURE = 1;

type Body = Pick<ChatBody, 'model' | 'max_tokens' | 'temperature' | 'top_p' | 'top_k' | 'seed' | 'stop' | 'n' | 'ignore_eos'>;

/** The unknown-model check: a request may leave `model` out, or must name the served model. */
export function checkModelName(ctx: ServeContext, name: string | null | undefined): void {
  if (name == null || name === ctx.servedModelName) return;
  throw new ApiError(404, `The model ${JSON.stringify(name)} does not exist; this server serves ${JSON.stringify(ctx.servedModelName)}`, 'invalid_request_error', 'model', 'model_not_found');
}

function sampling(ctx: ServeContext, body: Body) {
  const defaults = ctx.generation?.sampling ?? null;
  const vocab = ctx.model.config.vocab_size;
  if (body.top_k != null && body.top_k > vocab) {
    throw new ApiError(400, `Expected integer between -1 and ${vocab} for top_k but received ${body.top_k}`, 'invalid_request_error', 'top_k');
  }
  return {
    temperature: body.temperature ?? defaults?.temperature ?? DEFAULT_TEMPERATURE,
    // -1 (vLLM's spelling) and 0 both mean no top-k.
    topK: body.top_k != null ? Math.max(0, body.top_k) : (defaults?.topK ?? 0),
    topP: body.top_p ?? defaults?.topP ?? 1,
  };
}

/** Every prompt must leave room for its completion in the model's context. */
function fitContext(ctx: ServeContext, prompts: number[][], maxTokens: number | null | undefined, param: string): PromptPlan[] {
  const context = ctx.model.config.context_length;
  return prompts.map((ids) => {
    if (ids.length === 0) throw new ApiError(400, `The ${param} is empty: it must have at least one token`, 'invalid_request_error', param);
    if (ids.length >= context) {
      throw new ApiError(400, `This model's maximum context length is ${context} tokens, but the ${param} has ${ids.length} tokens, which leaves no room for a completion`, 'invalid_request_error', param, 'context_length_exceeded');
    }
    if (maxTokens != null && ids.length + maxTokens > context) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${context} tokens, but ${ids.length + maxTokens} were requested (${ids.length} in the ${param}, ${maxTokens} for the completion); shorten the ${param} or lower max_tokens`,
        'invalid_request_error',
        param,
        'context_length_exceeded',
      );
    }
    return { ids, maxTokens: maxTokens ?? context - ids.length };
  });
}

const union = (...lists: (readonly number[])[]) => [...new Set(lists.flat())];
const stopStrings = (stop: string | string[] | null | undefined) => (stop == null ? [] : [stop].flat().filter((s) => s !== ''));

function basePlan(ctx: ServeContext, body: Body, prompts: PromptPlan[], logprobs: number | null, stopIds: number[], startsThinking: boolean | null): Plan {
  return { prompts, n: body.n ?? 1, ...sampling(ctx, body), seed: body.seed ?? undefined, stopIds: body.ignore_eos ? [] : stopIds, stops: stopStrings(body.stop), logprobs, startsThinking };
}

/** OpenAI's message to the template's: text parts joined, "developer" read as "system". */
function templateMessage(m: ChatBody['messages'][number]): TemplateMessage {
  const text = typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join('\n');
  return { ...m, role: m.role === 'developer' ? 'system' : m.role, content: text };
}

/**
 * The chat's prompt text: with a model folder's chat template exactly as transformers renders it;
 * otherwise (the book's checkpoints) the book's ChatML layout, as `qwen3 chat` does.
 */
function renderChat(ctx: ServeContext, body: ChatBody): string {
  const messages = body.messages.map(templateMessage);
  const thinking = body.chat_template_kwargs?.enable_thinking ?? undefined;
  const { tokenizer } = ctx;
  try {
    if (tokenizer.modelDir !== null && tokenizer.chatTemplate !== null) {
      return tokenizer.applyChatTemplate(messages, { tools: body.tools ?? null, addGenerationPrompt: true, enableThinking: thinking });
    }
    if (body.tools != null) throw new Error('tools need a model folder with a chat template that renders them');
    const plain = messages.map((m, i): ChatMessage => {
      if (m.role === 'tool') throw new Error(`messages.${i}: tool messages need a model folder with a chat template that renders them`);
      return { role: m.role, content: m.content };
    });
    return formatChat(plain, { addGenerationPrompt: true, addThinking: thinking ?? false });
  } catch (err) {
    throw new ApiError(400, (err as Error).message, 'invalid_request_error', 'messages');
  }
}

export async function planChat(ctx: ServeContext, body: ChatBody): Promise<Plan> {
  if (body.top_logprobs != null && !body.logprobs) {
    throw new ApiError(400, 'top_logprobs needs logprobs set to true', 'invalid_request_error', 'top_logprobs');
  }
  const text = renderChat(ctx, body);
  const ids = await ctx.tokenizer.encode(text, { chat: false });
  checkIds(ctx, ids, 'messages');
  const prompts = fitContext(ctx, [ids], body.max_completion_tokens ?? body.max_tokens, 'messages');
  const imEnd = ctx.tokenizer.specialTokens.get('<|im_end|>')!;
  const stopIds = union(ctx.tokenizer.eosTokenIds, ctx.generation?.eosTokenIds ?? [], [imEnd]);
  return basePlan(ctx, body, prompts, body.logprobs ? (body.top_logprobs ?? 0) : null, stopIds, /<think>\n*$/.test(text));
}

export async function planCompletion(ctx: ServeContext, body: CompletionBody): Promise<Plan> {
  const p = body.prompt;
  const list: unknown[] = typeof p === 'string' ? [p] : p;
  const texts = list.every((x) => typeof x === 'string') ? (list as string[]) : null;
  const prompts = texts !== null
    ? await Promise.all(texts.map((t) => ctx.tokenizer.encode(t, { chat: false })))
    : list.every((x) => typeof x === 'number') ? [list as number[]] : (list as number[][]);
  if (texts !== null) prompts.forEach((ids) => checkIds(ctx, ids, 'prompt'));
  const stopIds = union(ctx.tokenizer.eosTokenIds, ctx.generation?.eosTokenIds ?? []);
  return basePlan(ctx, body, fitContext(ctx, prompts, body.max_tokens, 'prompt'), body.logprobs ?? null, stopIds, null);
}

/** Text may tokenize to ids past a small model's vocabulary (a test model with the full tokenizer). */
function checkIds(ctx: ServeContext, ids: number[], param: string): void {
  const vocab = ctx.model.config.vocab_size;
  const bad = ids.find((id) => id >= vocab);
  if (bad !== undefined) {
    throw new ApiError(400, `The ${param} tokenizes to id ${bad}, outside this model's vocabulary of ${vocab} tokens`, 'invalid_request_error', param);
  }
}
