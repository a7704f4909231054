// Errors as OpenAI's API sends them: a status and {error: {message, type, param, code}}.
import { InvalidOptionError } from '../validate.js';
import { CompleterClosedError, QueueFullError } from './completer.js';

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** Seconds a client refused for a full queue is told to wait. */
const RETRY_AFTER_SECONDS = 1;

/** Fastify's own errors carry a status code and a code such as FST_ERR_CTP_INVALID_JSON_BODY. */
interface StatusError {
  statusCode?: number;
  code?: string;
  message: string;
}

/** The API error for anything a request handler threw. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof InvalidOptionError) return new ApiError(400, err.message, 'invalid_request_error', err.option);
  if (err instanceof QueueFullError) {
    return new ApiError(429, err.message, 'rate_limit_error', null, 'rate_limit_exceeded', { 'retry-after': String(RETRY_AFTER_SECONDS) });
  }
  if (err instanceof CompleterClosedError) return new ApiError(503, err.message, 'server_error', null, 'service_unavailable');
  const e = err as StatusError;
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    const message = e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e instanceof SyntaxError ? 'The request body is not valid JSON' : e.message;
    return new ApiError(e.statusCode, message, 'invalid_request_error', null, e.code ?? null);
  }
  return new ApiError(500, `The server failed: ${e instanceof Error ? e.message : String(err)}`, 'server_error');
}
