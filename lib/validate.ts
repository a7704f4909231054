// Option checking for every public entry point, first, so each message names the option as the
// caller spelled it, what it expects and what it got:
//   "Expected integer between 1 and 40960 for maxNewTokens but received 0"
// The rule for checks across the layers: lib/ validates every option here; the native binding
// checks every argument's type and range again (it is reachable without lib/); the engine checks
// only what depends on its state (native/binding/model_wrap.cc says the same).
import { z } from 'zod';

/** Thrown for any invalid argument or option; `option` names the offending field. */
export class InvalidOptionError extends TypeError {
  readonly option: string;
  constructor(message: string, option: string) {
    super(message);
    this.name = 'InvalidOptionError';
    this.option = option;
  }
}

/** Render a received value compactly for an error message. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return `array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name} of length ${(value as unknown as ArrayLike<unknown>).length}`;
  if (typeof value === 'function') return 'function';
  return typeof value === 'object' ? `object ${describeKeys(value as object)}` : typeof value;
}

function describeKeys(value: object): string {
  const keys = Object.keys(value);
  return `{${keys.slice(0, 5).join(', ')}${keys.length > 5 ? ', ...' : ''}}`;
}

// Schema builders whose messages read "Expected <what>"; the formatter adds "for <option> but received <value>".

export const integer = (min: number, max: number) => {
  const msg = `Expected integer between ${min} and ${max}`;
  return z.number({ error: msg }).int({ error: msg }).min(min, { error: msg }).max(max, { error: msg });
};

export const number = (min: number, max: number, { exclusiveMin = false } = {}) => {
  const msg = `Expected number ${exclusiveMin ? 'greater than' : 'between'} ${min}${exclusiveMin ? ` and at most ${max}` : ` and ${max}`}`;
  const base = z.number({ error: msg }).max(max, { error: msg });
  return exclusiveMin ? base.gt(min, { error: msg }) : base.min(min, { error: msg });
};

export const boolean = () => z.boolean({ error: 'Expected boolean' });

export const nonEmptyString = () => z.string({ error: 'Expected non-empty string' }).min(1, { error: 'Expected non-empty string' });

export const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: `Expected one of ${values.map((v) => JSON.stringify(v)).join(', ')}` });

export const abortSignal = () =>
  z.custom<AbortSignal>((v) => v instanceof AbortSignal, { error: 'Expected AbortSignal' });

/**
 * Parse `value` with `schema`, throwing an InvalidOptionError for the first problem.
 * `prefix` is prepended to option paths (e.g. "config." for a nested object).
 */
export function parseOptions<S extends z.ZodType>(schema: S, value: unknown, prefix = ''): z.output<S> {
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = prefix + issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    const key = `${prefix}${[...issue.path.map(String), issue.keys[0]].join('.')}`;
    throw new InvalidOptionError(`Unknown option ${key}`, key);
  }
  const name = path === '' ? 'options' : path.replace(/\.$/, '');
  const message = issue.message.startsWith('Expected') ? issue.message : `Invalid value (${issue.message})`;
  throw new InvalidOptionError(`${message} for ${name} but received ${describeValue(issue.input)}`, name);
}
