// startServer: an OpenAI-compatible HTTP API over a loaded model (Fastify). Routes:
//   POST /v1/chat/completions, POST /v1/completions (streamed as server-sent events or whole),
//   GET /v1/models, GET /health, GET /metrics (Prometheus).
// Bodies are checked with zod (a wrong field is a 400 naming it), errors have OpenAI's shape,
// a client that goes away aborts its completions, and close() drains: new requests are refused
// (503) while those in flight finish, for at most drainTimeoutMs, after which they are aborted.
// Nothing a request says is used as a path.
import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { GenerationConfig } from '../model/generation-config.js';
import { Qwen3Model } from '../model.js';
import { Qwen3Tokenizer } from '../tokenizer.js';
import { describeValue, integer, nonEmptyString, parseOptions } from '../validate.js';
import type { Completer, StepHook } from './completer.js';
import { ApiError, toApiError } from './errors.js';
import { ServerMetrics } from './metrics.js';
import { type Plan, type ServeContext, checkModelName, planChat, planCompletion } from './prepare.js';
import { type Endpoint, respond } from './responses.js';
import { MAX_CHOICES, checkUnsupported, chatSchema, completionSchema } from './schemas.js';
import { BatchCompleter } from './batch.js';

export interface ServerOptions {
  model: Qwen3Model;
  tokenizer: Qwen3Tokenizer;
  /** The model folder's generation settings: sampling defaults and end tokens (null: none). */
  generation?: GenerationConfig | null;
  /** The name /v1/models lists and requests may give as `model` (default: the model's path). */
  servedModelName?: string;
  /** Default 127.0.0.1: only this machine can connect unless told otherwise. */
  host?: string;
  /** Default 8080; 0 picks a free port (see the returned url). */
  port?: number;
  /** When set, /v1/ routes need `Authorization: Bearer <apiKey>`. */
  apiKey?: string | null;
  /** Requests generated at once, sharing each step (default 32). Ignored with `completer`. */
  maxBatch?: number;
  /** Requests that may wait for the model (default 256); more get 429. Ignored with `completer`. */
  maxQueue?: number;
  /** Ended requests whose KV cache is kept for prefix reuse (default maxBatch). Ignored with `completer`. */
  prefixCache?: number;
  /** What produces completions; default a BatchCompleter on `model`. close() closes it. */
  completer?: Completer;
  /** Passed to the default BatchCompleter (see StepHook). */
  beforeStep?: StepHook;
  /** Largest request body in bytes (default 8 MiB); larger ones get 413. */
  bodyLimit?: number;
  /** How long close('drain') lets requests in flight finish before aborting them (default 30 s). */
  drainTimeoutMs?: number;
}

export interface RunningServer {
  /** http://host:port, the port the server listens on. */
  url: string;
  port: number;
  completer: Completer;
  metrics: ServerMetrics;
  /** Stops the server: 'drain' (default) as described above, 'abort' ends the requests in flight now. */
  close(how?: 'drain' | 'abort'): Promise<void>;
}

export const DEFAULT_PORT = 8080;
export const DEFAULT_BODY_LIMIT = 8 * 1024 * 1024;
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;
/** How long aborted responses may take to send their last chunk before their connections are closed. */
const ABORT_GRACE_MS = 1000;

const optionsSchema = z
  .object({
    model: z.custom<Qwen3Model>((m) => m instanceof Qwen3Model && !m.disposed, { error: 'Expected a loaded Qwen3Model' }),
    tokenizer: z.custom<Qwen3Tokenizer>((t) => t instanceof Qwen3Tokenizer, { error: 'Expected Qwen3Tokenizer' }),
    generation: z.object({ eosTokenIds: z.array(z.number()), sampling: z.any() }, { error: 'Expected generation config' }).nullable().optional(),
    servedModelName: nonEmptyString().optional(),
    host: nonEmptyString().optional(),
    port: integer(0, 65535).optional(),
    apiKey: nonEmptyString().nullable().optional(),
    maxBatch: integer(1, 1024).optional(),
    maxQueue: integer(0, 2 ** 31 - 1).optional(),
    prefixCache: integer(0, 4096).optional(),
    completer: z.custom<Completer>((c) => typeof (c as Completer)?.complete === 'function', { error: 'Expected Completer' }).optional(),
    beforeStep: z.custom<StepHook>((f) => typeof f === 'function', { error: 'Expected function' }).optional(),
    bodyLimit: integer(1, 2 ** 31 - 1).optional(),
    drainTimeoutMs: integer(0, 2 ** 31 - 1).optional(),
  })
  .strict();

const digest = (text: string) => createHash('sha256').update(text).digest();

/** Compares in constant time, so the key cannot be guessed a byte at a time from response times. */
function keyMatches(header: string | undefined, key: Buffer): boolean {
  const given = /^Bearer\s+(.+)$/i.exec(header ?? '')?.[1]?.trim();
  return given !== undefined && timingSafeEqual(digest(given), key);
}

function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiError(400, `Expected a JSON object for the request body but received ${describeValue(body)}`);
  }
  return parseOptions(schema, body);
}

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const o = parseOptions(optionsSchema, options);
  const ctx: ServeContext = {
    model: o.model,
    tokenizer: o.tokenizer,
    generation: (o.generation as GenerationConfig | null | undefined) ?? null,
    servedModelName: o.servedModelName ?? o.model.path,
  };
  const completer = o.completer ?? new BatchCompleter(o.model, { maxBatch: o.maxBatch, maxQueue: o.maxQueue, cachedSlots: o.prefixCache, beforeStep: o.beforeStep });
  const metrics = new ServerMetrics(completer);
  const key = o.apiKey ? digest(o.apiKey) : null;
  const completionSchemaForModel = completionSchema(o.model.config.vocab_size);
  const app = Fastify({ logger: false, bodyLimit: o.bodyLimit ?? DEFAULT_BODY_LIMIT, return503OnClosing: true });
  let draining = false;

  app.setErrorHandler((err, _request, reply) => {
    const e = toApiError(err);
    void reply.code(e.status).headers(e.headers).send(e.body());
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(new ApiError(404, `There is no ${request.method} ${request.url.split('?')[0]} on this server`, 'invalid_request_error', null, 'not_found').body());
  });
  // Responses not yet finished (or cut off): close() waits for them before closing the connections.
  let open = 0;
  const whenNoneOpen: (() => void)[] = [];
  const settleOpen = () => {
    for (const resolve of whenNoneOpen.splice(0)) resolve();
  };
  app.addHook('onRequest', async (request, reply) => {
    open++;
    reply.raw.once('close', () => {
      if (--open === 0) settleOpen();
    });
    if (key !== null && request.url.startsWith('/v1/') && !keyMatches(request.headers.authorization, key)) {
      throw new ApiError(401, 'Missing or wrong API key: send it as "Authorization: Bearer <key>"', 'invalid_request_error', null, 'invalid_api_key');
    }
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.requests.inc({ endpoint: request.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
  });

  app.get('/health', async (_request, reply) => {
    if (draining) return reply.code(503).send({ status: 'draining' });
    // A model split over processes whose other ranks stopped following: no request can succeed.
    const failure = o.model.groupFailure;
    return failure ? reply.code(503).send({ status: 'failed', error: failure.message }) : { status: 'ok' };
  });
  app.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  app.get('/v1/models', async () => ({
    object: 'list',
    data: [{ id: ctx.servedModelName, object: 'model', created: 0, owned_by: 'qwen3-torch', max_model_len: o.model.config.context_length }],
  }));

  const complete = (endpoint: Endpoint) => async (request: FastifyRequest, reply: FastifyReply) => {
    const arrived = performance.now();
    const disconnect = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) disconnect.abort();
    });
    const body = endpoint === 'chat' ? parseBody(chatSchema, request.body) : parseBody(completionSchemaForModel, request.body);
    checkUnsupported(body);
    checkModelName(ctx, body.model);
    const plan: Plan = endpoint === 'chat' ? await planChat(ctx, body as z.output<typeof chatSchema>) : await planCompletion(ctx, body as z.output<typeof completionSchemaForModel>);
    if (plan.prompts.length * plan.n > MAX_CHOICES) {
      throw new ApiError(400, `Expected at most ${MAX_CHOICES} choices (prompts times n) but received ${plan.prompts.length} × ${plan.n}`, 'invalid_request_error', 'n');
    }
    const result = await respond(reply, {
      endpoint,
      tokenizer: ctx.tokenizer,
      completer,
      plan,
      modelName: ctx.servedModelName,
      stream: body.stream ?? false,
      includeUsage: body.stream_options?.include_usage ?? false,
      returnTokenIds: body.return_token_ids ?? false,
      signal: disconnect.signal,
      onFirstToken: () => metrics.timeToFirstToken.observe((performance.now() - arrived) / 1000),
    });
    metrics.promptTokens.inc(plan.prompts.reduce((sum, p) => sum + p.ids.length * plan.n, 0));
    return result ?? reply;
  };
  app.post('/v1/chat/completions', complete('chat'));
  app.post('/v1/completions', complete('text'));

  await app.listen({ host: o.host ?? '127.0.0.1', port: o.port ?? DEFAULT_PORT });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : (o.port ?? DEFAULT_PORT);
  const host = o.host ?? '127.0.0.1';
  const drainTimeoutMs = o.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;

  // Closing: stop listening (later requests on open connections get 503), let the completions end
  // (all of them, or what is left when the drain time is up is aborted), let their responses go
  // out, then close every connection: a client's idle keep-alive connection would otherwise hold
  // the server open for its whole keep-alive time.
  let closing: Promise<void> | null = null;
  let aborting = false;
  let graceOver = false;
  const responsesDone = () => (open === 0 || graceOver ? Promise.resolve() : new Promise<void>((resolve) => whenNoneOpen.push(resolve)));
  const abortAll = () => {
    if (aborting) return;
    aborting = true;
    void completer.close('abort');
    // The aborted responses get a moment to send their last chunk; a client that stopped reading is not waited for.
    setTimeout(() => {
      graceOver = true;
      settleOpen();
    }, ABORT_GRACE_MS).unref();
  };
  const close = (how: 'drain' | 'abort' = 'drain'): Promise<void> => {
    if (how === 'abort') abortAll();
    closing ??= (async () => {
      draining = true;
      const listening = app.close();
      const timer = setTimeout(abortAll, drainTimeoutMs);
      try {
        await completer.close('drain');
        await responsesDone();
      } finally {
        clearTimeout(timer);
      }
      app.server.closeAllConnections();
      await listening;
    })();
    return closing;
  };
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, port, completer, metrics, close };
}
