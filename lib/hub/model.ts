// A Qwen3 model from the Hugging Face Hub, by repo id, into the shared Hugging Face cache: only
// the files the engine needs (the config, the tokenizer, the safetensors weights, single or in the
// shards that model.safetensors.index.json names), so that nothing else large is fetched. With
// HF_HUB_OFFLINE (or when the Hub cannot be reached) the cached snapshot is used as it is.
import { readFile, stat } from 'node:fs/promises';
import { z } from 'zod';
import { LOW_SPEED_LIMIT, LOW_SPEED_TIME } from '../download/speed.js';
import { type Meter, UnreachableError } from '../download/transfer.js';
import { InvalidOptionError, abortSignal, boolean, describeValue, integer, nonEmptyString, number, parseOptions } from '../validate.js';
import { type RepoCache, isMarkedAbsent, markAbsent, prepareFolders, readRef, repoCache, snapshotDir, snapshotFileSize, writeRef } from './cache.js';
import { type HubContext, type RemoteFile, fetchToCache, headFile, resolveCommit } from './remote.js';
import { COMMIT_HASH, checkRepoId, checkRevision, hubSettings, isRepoId } from './settings.js';

/** What a download reports while it runs. */
export type HubProgress =
  /** Bytes arrived: `fileBytes` of `fileSize` of the file, `bytes` of `totalBytes` of all files fetched by this call (as known so far). */
  | { type: 'bytes'; repoId: string; file: string; fileBytes: number; fileSize: number; bytes: number; totalBytes: number }
  /** Another process is downloading this file into the cache; this one waits for it. */
  | { type: 'waiting'; repoId: string; file: string }
  /** The Hub could not be reached; the cached snapshot is used instead. */
  | { type: 'cached'; repoId: string; reason: string };

export interface HubDownloadOptions {
  /** Branch, tag or commit hash; default "main". */
  revision?: string;
  signal?: AbortSignal;
  onProgress?: (progress: HubProgress) => void;
  /** Instead of $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** Instead of $HF_ENDPOINT (else https://huggingface.co). */
  endpoint?: string;
  /** Instead of $HF_TOKEN (else the token file that `hf auth login` writes). */
  token?: string;
  /** Instead of $HF_HUB_OFFLINE: use the cache only. */
  offline?: boolean;
  /** Give up a transfer slower than this many bytes per second over lowSpeedTime seconds (default 1024; 0: no limit). */
  lowSpeedLimit?: number;
  lowSpeedTime?: number;
}

export interface HubDownloadResult {
  /** The snapshot folder: snapshots/<commit> of the repo in the cache. */
  dir: string;
  repoId: string;
  revision: string;
  commit: string;
  /** Files fetched by this call. */
  downloaded: string[];
  /** True when the cache was used without asking the Hub (offline, or the Hub unreachable). */
  offline: boolean;
}

const optionsSchema = z.strictObject(
  {
    revision: z.string({ error: 'Expected string' }).optional(),
    signal: abortSignal().optional(),
    onProgress: z.custom<(p: HubProgress) => void>((v) => typeof v === 'function', { error: 'Expected function' }).optional(),
    cacheDir: nonEmptyString().optional(),
    endpoint: nonEmptyString().optional(),
    token: nonEmptyString().optional(),
    offline: boolean().optional(),
    lowSpeedLimit: integer(0, 2 ** 31 - 1).optional(),
    lowSpeedTime: number(0, 86_400, { exclusiveMin: true }).optional(),
  },
  { error: 'Expected object' },
);

const CONFIG = 'config.json';
const TOKENIZER = 'tokenizer.json';
/** Fetched when the repo has them; a model runs without them. */
const OPTIONAL = ['generation_config.json', 'tokenizer_config.json'];
const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';

/**
 * Downloads what a Qwen3 model needs from the Hub repo `repoId` at `revision` (default "main")
 * into the Hugging Face cache, and returns its snapshot folder. Files already in the cache are
 * not fetched again; an interrupted download resumes.
 */
export async function downloadModel(repoId: string, options: HubDownloadOptions = {}): Promise<HubDownloadResult> {
  checkRepoId(repoId);
  const opts = parseOptions(optionsSchema, options);
  const revision = checkRevision(opts.revision ?? 'main');
  const settings = await hubSettings(opts);
  const repo = await repoCache(settings.cacheDir, repoId);
  const ctx: HubContext = {
    settings, repo, revision, signal: opts.signal,
    lowSpeed: { limit: opts.lowSpeedLimit ?? LOW_SPEED_LIMIT, seconds: opts.lowSpeedTime ?? LOW_SPEED_TIME },
  };
  const report = opts.onProgress ?? (() => {});
  if (settings.offline) return fromCache(repo, revision, settings.offlineBy);
  opts.signal?.throwIfAborted();

  let plan: Plan;
  try {
    const commit = COMMIT_HASH.test(revision) ? revision : await resolveCommit(ctx);
    await prepareFolders(repo, commit);
    plan = await planFiles(ctx, commit);
  } catch (err) {
    if (!(err instanceof UnreachableError)) throw err;
    const cached = await fromCache(repo, revision, err.message);
    report({ type: 'cached', repoId, reason: err.message });
    return cached;
  }
  const downloaded = await fetchPlan(ctx, plan, report);
  if (revision !== plan.commit) await writeRef(repo, revision, plan.commit);
  return { dir: snapshotDir(repo, plan.commit), repoId, revision, commit: plan.commit, downloaded, offline: false };
}

/**
 * Where the model `idOrDir` is on this machine: an existing file or folder is returned as it is;
 * otherwise a Hub repo id (`owner/name`) is downloaded (or found in the cache, see downloadModel)
 * and its snapshot folder returned.
 */
export async function resolveModelDir(idOrDir: string, options: HubDownloadOptions = {}): Promise<string> {
  if (typeof idOrDir !== 'string' || idOrDir === '') {
    throw new InvalidOptionError(`Expected a model file or folder, or a Hugging Face repo id, for model but received ${describeValue(idOrDir)}`, 'model');
  }
  parseOptions(optionsSchema, options);
  try {
    await stat(idOrDir);
    return idOrDir;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // A NUL byte (ERR_INVALID_ARG_VALUE) names no file either.
    if (code !== 'ENOENT' && code !== 'ENOTDIR' && code !== 'ERR_INVALID_ARG_VALUE') throw new Error(`Cannot read model path ${idOrDir}: ${(err as Error).message}`, { cause: err });
  }
  if (!isRepoId(idOrDir)) {
    throw new Error(`Model ${JSON.stringify(idOrDir)} not found: it is neither a file or folder here nor a Hugging Face repo id (owner/name, such as Qwen/Qwen3-0.6B)`);
  }
  return (await downloadModel(idOrDir, options)).dir;
}

interface Plan {
  commit: string;
  /** Files to fetch, in order; the index (when there is one) has been fetched already. */
  fetch: RemoteFile[];
  totalBytes: number;
  doneBytes: number;
  downloaded: string[];
}

/** Asks the Hub about every file not yet in the snapshot; fetches the index to learn the shards. */
async function planFiles(ctx: HubContext, commit: string): Promise<Plan> {
  const { repo, revision } = ctx;
  const plan: Plan = { commit, fetch: [], totalBytes: 0, doneBytes: 0, downloaded: [] };
  const missing = (file: string) => new Error(`${repo.repoId} has no ${file} at revision ${revision}${revision === commit ? '' : ` (commit ${commit})`}`);
  /** Adds `file` to the plan unless the snapshot has it; false when the Hub does not have it. */
  const want = async (file: string): Promise<boolean> => {
    if ((await snapshotFileSize(repo, commit, file)) !== undefined) return true;
    if (await isMarkedAbsent(repo, commit, file)) return false;
    const remote = await headFile(ctx, commit, file);
    if (!remote) {
      await markAbsent(repo, commit, file);
      return false;
    }
    plan.fetch.push(remote);
    plan.totalBytes += remote.size;
    return true;
  };
  for (const file of [CONFIG, TOKENIZER]) if (!(await want(file))) throw missing(file);
  for (const file of OPTIONAL) await want(file);
  if (await want(SINGLE)) return plan;
  if (!(await want(INDEX))) throw missing(`${SINGLE} or ${INDEX}`);

  const index = plan.fetch.find((f) => f.file === INDEX);
  if (index) {
    plan.fetch.splice(plan.fetch.indexOf(index), 1);
    await fetchOne(ctx, plan, index, () => {});
  }
  for (const shard of await readShards(repo, commit)) {
    if (!(await want(shard))) throw new Error(`${INDEX} of ${repo.repoId} names the shard ${shard}, which the repo does not have at revision ${revision}`);
  }
  return plan;
}

async function fetchPlan(ctx: HubContext, plan: Plan, report: (p: HubProgress) => void): Promise<string[]> {
  for (const remote of plan.fetch) await fetchOne(ctx, plan, remote, report);
  return plan.downloaded;
}

async function fetchOne(ctx: HubContext, plan: Plan, remote: RemoteFile, report: (p: HubProgress) => void): Promise<void> {
  const { repoId } = ctx.repo;
  const before = plan.doneBytes;
  const emit = (fileBytes: number) =>
    report({ type: 'bytes', repoId, file: remote.file, fileBytes, fileSize: remote.size, bytes: before + fileBytes, totalBytes: Math.max(plan.totalBytes, before + remote.size) });
  const meter: Meter = { start: (_total, offset) => emit(offset), update: (received) => emit(received), stop: () => {} };
  if (await fetchToCache(ctx, plan.commit, remote, meter, () => report({ type: 'waiting', repoId, file: remote.file }))) {
    plan.downloaded.push(remote.file);
  } else {
    emit(remote.size); // already in the cache (another revision's, or another process's): done all the same
  }
  plan.doneBytes = before + remote.size;
}

const indexSchema = z.object({ weight_map: z.record(z.string(), z.string()) });
// Shards sit beside the index, named by the repo: a plain file name, so that none leads elsewhere.
const SHARD = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,250}\.safetensors$/;

/** The shard names that the snapshot's model.safetensors.index.json lists. */
async function readShards(repo: RepoCache, commit: string): Promise<string[]> {
  const where = `${INDEX} of ${repo.repoId} (${snapshotDir(repo, commit)})`;
  let json: unknown;
  try {
    json = JSON.parse(await readFile(`${snapshotDir(repo, commit)}/${INDEX}`, 'utf8'));
  } catch (err) {
    throw new Error(`Cannot read ${where}: ${(err as Error).message}`, { cause: err });
  }
  const parsed = indexSchema.safeParse(json);
  if (!parsed.success) throw new Error(`${where} has no weight_map of tensor names to shard file names`);
  const shards = [...new Set(Object.values(parsed.data.weight_map))].sort();
  const bad = shards.find((s) => !SHARD.test(s));
  if (bad !== undefined) throw new Error(`${where} names the shard ${JSON.stringify(bad)}, which is not a plain .safetensors file name`);
  if (shards.length === 0) throw new Error(`${where} names no shard`);
  return shards;
}

/**
 * The cached snapshot of `revision`, when it holds everything a model needs; otherwise an error
 * that starts with `why` (the reason the Hub was not asked) and says what is missing where.
 */
async function fromCache(repo: RepoCache, revision: string, why: string): Promise<HubDownloadResult> {
  const commit = COMMIT_HASH.test(revision) ? revision : await readRef(repo, revision);
  const result = (c: string): HubDownloadResult => ({ dir: snapshotDir(repo, c), repoId: repo.repoId, revision, commit: c, downloaded: [], offline: true });
  const notCached = `${why} and ${repo.repoId} at revision ${revision} is not in the cache at ${repo.cacheDir}`;
  if (commit === undefined) throw new Error(notCached);
  const has = async (file: string) => (await snapshotFileSize(repo, commit, file)) !== undefined;
  if (!(await has(CONFIG)) && !(await has(SINGLE)) && !(await has(INDEX))) throw new Error(notCached);
  const lacking = [];
  for (const file of [CONFIG, TOKENIZER]) if (!(await has(file))) lacking.push(file);
  if (await has(SINGLE)) return lacking.length === 0 ? result(commit) : incomplete(lacking);
  if (!(await has(INDEX))) return incomplete([...lacking, `${SINGLE} or ${INDEX}`]);
  for (const shard of await readShards(repo, commit)) if (!(await has(shard))) lacking.push(shard);
  return lacking.length === 0 ? result(commit) : incomplete(lacking);

  function incomplete(files: string[]): never {
    throw new Error(`${why} and the cached snapshot of ${repo.repoId} at revision ${revision} (${snapshotDir(repo, commit!)}) lacks ${files.join(', ')}`);
  }
}
