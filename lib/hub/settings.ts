// Where the Hugging Face Hub and its cache are, read as huggingface_hub (Python) reads them, so
// that a model downloaded here is found by Python and the other way round: HF_HUB_CACHE, HF_HOME
// (the cache is its hub/ folder), HF_ENDPOINT, HF_TOKEN (else the token file that `hf auth login`
// writes) and HF_HUB_OFFLINE. Also what a repo id and a revision may look like: both end up in
// paths under the cache and in URLs, so anything that could climb out of either is refused before
// any request is made.
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { InvalidOptionError, describeValue } from '../validate.js';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

export interface HubSettings {
  /** The Hub's base URL, without a trailing slash. */
  endpoint: string;
  /** Where the `models--owner--name` folders are. */
  cacheDir: string;
  token: string | undefined;
  offline: boolean;
  /** Which setting the offline mode came from, for messages. */
  offlineBy: string;
}

/** What callers may set instead of the environment. */
export interface HubOverrides {
  endpoint?: string;
  cacheDir?: string;
  token?: string;
  offline?: boolean;
}

const TRUE_VALUES = new Set(['1', 'ON', 'YES', 'TRUE']);
const isTrue = (value: string | undefined) => value !== undefined && TRUE_VALUES.has(value.trim().toUpperCase());
const env = (name: string) => (process.env[name] === '' ? undefined : process.env[name]);

/** The settings in force: explicit overrides first, then the environment, then the defaults. */
export async function hubSettings(over: HubOverrides = {}): Promise<HubSettings> {
  const { getHFHubCachePath } = await import('@huggingface/hub');
  const endpoint = checkEndpoint(over.endpoint ?? env('HF_ENDPOINT') ?? DEFAULT_ENDPOINT, over.endpoint !== undefined ? 'endpoint' : 'HF_ENDPOINT');
  const cacheDir = path.resolve(over.cacheDir ?? getHFHubCachePath());
  const offline = over.offline ?? isTrue(env('HF_HUB_OFFLINE'));
  const offlineBy = over.offline !== undefined ? 'offline is set' : 'HF_HUB_OFFLINE is set';
  const token = over.token ?? env('HF_TOKEN') ?? env('HUGGING_FACE_HUB_TOKEN') ?? (await storedToken());
  if (token !== undefined) checkToken(token, over.token !== undefined ? 'token' : 'HF_TOKEN');
  return { endpoint, cacheDir, token, offline, offlineBy };
}

/** The token `hf auth login` saved: $HF_TOKEN_PATH, else $HF_HOME/token. */
async function storedToken(): Promise<string | undefined> {
  const home = env('HF_HOME') ?? path.join(env('XDG_CACHE_HOME') ?? path.join(homedir(), '.cache'), 'huggingface');
  try {
    const token = (await readFile(env('HF_TOKEN_PATH') ?? path.join(home, 'token'), 'utf8')).trim();
    return token === '' ? undefined : token;
  } catch {
    return undefined;
  }
}

function checkEndpoint(value: string, option: string): string {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    // reported below
  }
  if (!url || !['http:', 'https:'].includes(url.protocol) || url.search !== '' || url.hash !== '') {
    throw new InvalidOptionError(`Expected http(s) URL for ${option} but received ${describeValue(value)}`, option);
  }
  return value.replace(/\/+$/, '');
}

// A header value cannot hold control characters; a token with them is a pasting mistake.
function checkToken(value: string, option: string): void {
  if (!/^[\x21-\x7e]+$/.test(value)) {
    throw new InvalidOptionError(`Expected a token of printable characters without spaces for ${option} but received a value that has others`, option);
  }
}

// The Hub's own rule (huggingface_hub's validate_repo_id), with the owner required: letters,
// digits, '-', '_' and '.', each part starting and ending with a letter, digit or '_', no '--'
// (the cache's separator) and no '..', 96 characters at most.
const PART = '[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?';
const REPO_ID = new RegExp(`^${PART}/${PART}$`);

/** True when `value` has the form of a Hub model id, `owner/name`. */
export function isRepoId(value: string): boolean {
  return value.length <= 96 && REPO_ID.test(value) && !value.includes('--') && !value.includes('..');
}

export function checkRepoId(value: unknown, option = 'repoId'): string {
  if (typeof value !== 'string' || !isRepoId(value)) {
    throw new InvalidOptionError(
      `Expected Hugging Face repo id "owner/name" (letters, digits, '-', '_' and '.', no '..' or '--', at most 96 characters) for ${option} but received ${describeValue(value)}`,
      option,
    );
  }
  return value;
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/**
 * A branch, tag or commit: git's characters for ref names, '/' only between parts, no part that
 * starts with '.' (so no '..'), 255 characters at most. It names a file under refs/ in the cache.
 */
export function checkRevision(value: unknown, option = 'revision'): string {
  const ok = typeof value === 'string' && value.length <= 255
    && value.split('/').every((part) => /^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$/.test(part) && !part.endsWith('.lock'));
  if (!ok) {
    throw new InvalidOptionError(
      `Expected branch, tag or commit hash (letters, digits, '.', '_', '+', '-' and '/' between parts) for ${option} but received ${describeValue(value)}`,
      option,
    );
  }
  return value as string;
}
