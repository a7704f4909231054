// Fetch the small Qwen3 checkpoints (weights + tokenizer) published for "Qwen3 from scratch".
//
// Files are large (the 0.6B weights are about 1.4 GiB), so downloads resume: bytes go into
// `<file>.part`, a later run continues it with a Range request, and only a complete, verified
// file is renamed to its final name. A file already present with the size the server announces
// is left alone, which also keeps repeated runs (and offline runs) cheap. Several processes may
// download into one folder at once, and the folder may be shared: see download-files.ts for the
// lock and the rules about links, download-speed.ts for the low-speed limit.
import { SingleBar } from 'cli-progress';
import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { finalFileSize, lockDownload, openPart, renameWritten, resumableSize } from './download-files.js';
import { LOW_SPEED_LIMIT, LOW_SPEED_TIME, watchSpeed } from './download-speed.js';
import { abortSignal, boolean, integer, nonEmptyString, number, oneOf, parseOptions } from './validate.js';

export const DEFAULT_BASE_URL = 'https://huggingface.co/rasbt/qwen3-from-scratch/resolve/main';

export interface DownloadOptions {
  kind: 'base' | 'reasoning';
  /** Only fetch tokenizer-{kind}.json. */
  tokenizerOnly?: boolean;
  /** Target directory (created if needed); default: the current directory. */
  outDir?: string;
  baseUrl?: string;
  /** Progress bar and status lines on stderr; 'auto' (default) shows them when stderr is a TTY. */
  progress?: boolean | 'auto';
  signal?: AbortSignal;
  /**
   * Give up a transfer whose body arrives at fewer than this many bytes per second, averaged
   * over `lowSpeedTime` seconds (the part file is kept for the next run to resume). Default
   * 1024; 0 turns the limit off. Time waiting for another process's download does not count.
   */
  lowSpeedLimit?: number;
  /** Seconds over which lowSpeedLimit is averaged. Default 60. */
  lowSpeedTime?: number;
}

export interface DownloadResult {
  modelPath?: string;
  tokenizerPath: string;
  /** File names fetched (fully or by resuming) in this call. */
  downloaded: string[];
  /** File names left as they were: already complete, or kept because the server was unreachable. */
  skipped: string[];
}

const isHttpUrl = (v: string) => {
  try {
    return ['http:', 'https:'].includes(new URL(v).protocol);
  } catch {
    return false;
  }
};

const optionsSchema = z.strictObject(
  {
    kind: oneOf(['base', 'reasoning']),
    tokenizerOnly: boolean().optional(),
    outDir: nonEmptyString().optional(),
    baseUrl: z.string({ error: 'Expected http(s) URL' }).refine(isHttpUrl, { error: 'Expected http(s) URL' }).optional(),
    progress: z.union([boolean(), z.literal('auto')], { error: 'Expected boolean or "auto"' }).optional(),
    signal: abortSignal().optional(),
    lowSpeedLimit: integer(0, 2 ** 31 - 1).optional(),
    lowSpeedTime: number(0, 86_400, { exclusiveMin: true }).optional(),
  },
  { error: 'Expected object' },
);

interface Job {
  name: string;
  url: string;
  finalPath: string;
  partPath: string;
  show: boolean;
  signal: AbortSignal | undefined;
  lowSpeed: { limit: number; seconds: number };
}

export async function downloadQwen3Small(options: DownloadOptions): Promise<DownloadResult> {
  const opts = parseOptions(optionsSchema, options);
  const baseUrl = (opts.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, '');
  const outDir = path.resolve(opts.outDir ?? '.');
  const show = opts.progress === undefined || opts.progress === 'auto' ? Boolean(process.stderr.isTTY) : opts.progress;
  await mkdir(outDir, { recursive: true });

  const model = `qwen3-0.6B-${opts.kind}.pth`;
  const tokenizer = `tokenizer-${opts.kind}.json`;
  const result: DownloadResult = { tokenizerPath: path.join(outDir, tokenizer), downloaded: [], skipped: [] };
  if (!opts.tokenizerOnly) result.modelPath = path.join(outDir, model);

  for (const name of opts.tokenizerOnly ? [tokenizer] : [model, tokenizer]) {
    const finalPath = path.join(outDir, name);
    const job: Job = {
      name,
      url: `${baseUrl}/${name}`,
      finalPath,
      partPath: `${finalPath}.part`,
      show,
      signal: opts.signal,
      lowSpeed: { limit: opts.lowSpeedLimit ?? LOW_SPEED_LIMIT, seconds: opts.lowSpeedTime ?? LOW_SPEED_TIME },
    };
    const fetched = await fetchFile(job);
    (fetched ? result.downloaded : result.skipped).push(name);
  }
  return result;
}

/** Returns false when the existing file was kept (or another process downloaded it meanwhile). */
async function fetchFile(job: Job): Promise<boolean> {
  throwIfAborted(job);
  const existing = await finalFileSize(job.finalPath);
  let remote: RemoteInfo;
  try {
    remote = await probe(job);
  } catch (err) {
    if (existing !== undefined && err instanceof UnreachableError) {
      say(job, `${job.name}: could not reach ${new URL(job.url).host} (${err.reason}); keeping the existing file`);
      return false;
    }
    throw err;
  }
  if (existing !== undefined && existing === remote.size) {
    say(job, `${job.name}: already up-to-date (${mib(existing)})`);
    return false;
  }
  let held;
  try {
    held = await lockDownload(job.finalPath, job.signal, () =>
      say(job, `${job.name}: waiting for another process that is downloading it into ${path.dirname(job.finalPath)}`));
  } catch (err) {
    if (job.signal?.aborted) throw abortError(job);
    throw err;
  }
  try {
    // The process that held the lock may have just finished this very file.
    const now = await finalFileSize(job.finalPath);
    if (now !== undefined && remote.size !== undefined && now === remote.size) {
      say(job, `${job.name}: downloaded by another process meanwhile (${mib(now)})`);
      return false;
    }
    await transfer(job, remote, held.lost);
    return true;
  } finally {
    await held.release();
  }
}

interface RemoteInfo {
  size?: number;
  sha256?: string;
}

/**
 * HEAD the file, following redirects by hand: Hugging Face answers with a redirect to its CDN
 * that carries X-Linked-Size and X-Linked-Etag (the SHA-256 of LFS files); fetch would drop
 * those headers if it followed the redirect itself. As huggingface_hub does, the CDN itself is
 * not asked: its pre-signed URLs may be valid for GET only.
 */
async function probe(job: Job): Promise<RemoteInfo> {
  const info: RemoteInfo = {};
  let url = job.url;
  for (let hop = 0; hop < 10; hop++) {
    const res = await request(job, url, { method: 'HEAD', redirect: 'manual' });
    void res.body?.cancel();
    info.sha256 ??= sha256Of(res.headers.get('x-linked-etag'));
    info.size ??= sizeHeader(res.headers.get('x-linked-size'));
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      if (info.size !== undefined) return info;
      url = new URL(location, url).href;
      continue;
    }
    // A server (or redirect target) that refuses HEAD: the GET that follows decides.
    if (res.status === 405 || res.status === 501 || (hop > 0 && !res.ok)) return info;
    if (!res.ok) throw httpError(job, res);
    info.sha256 ??= sha256Of(res.headers.get('etag'));
    if (!isEncoded(res)) info.size ??= sizeHeader(res.headers.get('content-length'));
    return info;
  }
  throw new Error(`Failed to download ${job.name} from ${job.url}: too many redirects`);
}

async function transfer(job: Job, remote: RemoteInfo, lost: () => Error | undefined): Promise<void> {
  let offset = await resumableSize(job.partPath);
  if (remote.size !== undefined && offset > remote.size) offset = 0; // not a prefix of this file
  let res: Response | undefined;
  let total = remote.size;
  let received = offset;
  // The request's signal also fires when its body turns out too slow (the watch starts below).
  const tooSlow = new AbortController();
  const bodyJob: Job = { ...job, signal: job.signal ? AbortSignal.any([job.signal, tooSlow.signal]) : tooSlow.signal };
  // A part file that is already complete (e.g. interrupted just before the rename) needs no request.
  if (!(remote.size !== undefined && offset === remote.size)) {
    ({ res, offset } = await openBody(bodyJob, offset));
    received = offset;
    const announced = isEncoded(res) ? undefined : sizeHeader(res.headers.get('content-length'));
    const rangeTotal = sizeHeader(/\/(\d+)$/.exec(res.headers.get('content-range') ?? '')?.[1] ?? null);
    total = rangeTotal ?? (announced === undefined ? remote.size : offset + announced);
    // A body that contradicts the size announced first (an error page served with 200, a proxy's
    // garbage) must not be taken for the file, even when no checksum is there to catch it.
    if (remote.size !== undefined && total !== remote.size) {
      void res.body?.cancel();
      throw new Error(
        `Server announced ${remote.size} bytes for ${job.name} from ${job.url} but answered with ${total} bytes; nothing was kept`,
      );
    }
  }
  const sha256 = remote.sha256 ?? (res && sha256Of(res.headers.get('etag')));

  // Hash what is already on disk first, so the digest covers the whole file after resuming.
  const hash = sha256 === undefined ? undefined : createHash('sha256');
  let file: FileHandle;
  let written: { dev: number; ino: number };
  try {
    file = await openPart(job.partPath, offset);
    written = await file.stat();
    if (hash && offset > 0) await hashFile(file, offset, hash);
  } catch (err) {
    void res?.body?.cancel();
    throw err;
  }
  const speed = watchSpeed(job.lowSpeed.limit, job.lowSpeed.seconds, () => received, (rate) => {
    const err = new Error(
      `Download of ${job.name} from ${job.url} was slower than ${job.lowSpeed.limit} bytes/s over ${job.lowSpeed.seconds} s`
      + ` (${rate.toFixed(1)} bytes/s, ${received} of ${total ?? 'unknown'} bytes so far); run the download again to resume`,
    );
    tooSlow.abort(err);
    return err;
  });
  const bar = startBar(job, total, offset);
  const body: AsyncIterable<Uint8Array> = res?.body ?? (async function* () {})();
  const chunks = body[Symbol.asyncIterator]();
  let done = false;
  try {
    for (;;) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await chunks.next();
      } catch (err) {
        done = true; // the body stream has failed; nothing left to cancel
        if (speed.error) throw speed.error;
        if (job.signal?.aborted) throw abortError(job);
        // The part file holds a valid prefix: keep it so that the next run resumes from there.
        throw new Error(
          `Connection lost while downloading ${job.name} from ${job.url} after ${received} of ${total ?? 'unknown'} bytes`
          + ` (${describeError(err)}); run the download again to resume`,
          { cause: err },
        );
      }
      if (next.done) break;
      if (total !== undefined && received + next.value.length > total) {
        await file.close();
        await rm(job.partPath, { force: true });
        throw new Error(`Server sent more bytes than announced for ${job.name} from ${job.url} (over ${total} bytes); the partial file was deleted`);
      }
      await file.write(next.value);
      hash?.update(next.value);
      received += next.value.length;
      bar?.update(received, sizes(received, total));
    }
    done = true;
    await file.sync();
  } finally {
    speed.stop();
    if (!done) await chunks.return?.().catch(() => {}); // release the connection
    await file.close().catch(() => {});
    bar?.stop();
  }
  if (total !== undefined && received < total) {
    throw new Error(`Download of ${job.name} from ${job.url} ended after ${received} of ${total} bytes; run the download again to resume`);
  }
  if (hash && sha256 !== undefined) {
    const actual = hash.digest('hex');
    if (actual !== sha256) {
      await rm(job.partPath, { force: true });
      throw new Error(`Checksum mismatch for ${job.name} from ${job.url}: expected sha256 ${sha256} but got ${actual}; the partial file was deleted`);
    }
  }
  const stolen = lost();
  if (stolen) throw new Error(`Download of ${job.name} lost its lock to another process (${stolen.message}); nothing was renamed, run the download again`);
  await renameWritten(written, job.partPath, job.finalPath);
}

/** GET the file, asking for the missing tail when a part file exists. */
async function openBody(job: Job, offset: number): Promise<{ res: Response; offset: number }> {
  const res = await request(job, job.url, offset > 0 ? { headers: { Range: `bytes=${offset}-` } } : {});
  if (res.status === 200) return { res, offset: 0 }; // full body: the server ignored Range, start over
  if (res.status === 206 && offset > 0 && Number(/^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1]) === offset) {
    return { res, offset };
  }
  void res.body?.cancel();
  // 416 or a range we did not ask for: the part file does not fit the remote file; start over.
  if (offset > 0 && (res.status === 206 || res.status === 416)) return openBody(job, 0);
  throw httpError(job, res);
}

class UnreachableError extends Error {
  constructor(message: string, readonly reason: string, options: ErrorOptions) {
    super(message, options);
  }
}

/** fetch() with uncompressed bodies (sizes must match the bytes on disk) and clear failures. */
async function request(job: Job, url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, {
      ...init,
      headers: { 'Accept-Encoding': 'identity', ...(init.headers as Record<string, string> | undefined) },
      signal: job.signal,
    });
  } catch (err) {
    if (job.signal?.aborted) throw abortError(job);
    const reason = describeError(err);
    throw new UnreachableError(
      `Could not reach ${new URL(url).host} to download ${job.name} (${reason}): check your connection or download the file manually from ${job.url}`,
      reason,
      { cause: err },
    );
  }
}

// undici reports network failures as TypeError('fetch failed') or ('terminated') with the
// socket or DNS error as cause (an AggregateError when several addresses were tried).
function describeError(err: unknown): string {
  let cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
  if (cause instanceof AggregateError && cause.errors.length > 0) cause = cause.errors[0];
  const message = cause instanceof Error ? cause.message || (cause as NodeJS.ErrnoException).code : String(cause);
  if (err instanceof Error && err !== cause && err.message !== 'fetch failed') return `${err.message}: ${message}`;
  return message || 'network error';
}

function httpError(job: Job, res: Response): Error {
  return new Error(`Failed to download ${job.name} from ${job.url}: HTTP ${res.status} ${res.statusText}`.trimEnd());
}

function abortError(job: Job): Error {
  const err = new Error(`Download of ${job.name} from ${job.url} was aborted`, { cause: job.signal?.reason });
  err.name = 'AbortError';
  return err;
}

function throwIfAborted(job: Job): void {
  if (job.signal?.aborted) throw abortError(job);
}

/** A 64-hex-digit ETag is the SHA-256 of the content (Hugging Face LFS); anything else is opaque. */
function sha256Of(etag: string | null): string | undefined {
  const m = /^(?:W\/)?"?([0-9a-f]{64})"?$/i.exec(etag?.trim() ?? '');
  return m ? m[1]!.toLowerCase() : undefined;
}

function sizeHeader(value: string | null): number | undefined {
  return value !== null && /^\d+$/.test(value.trim()) ? Number(value) : undefined;
}

// fetch transparently decompresses, so lengths of an encoded response do not count file bytes.
function isEncoded(res: Response): boolean {
  return (res.headers.get('content-encoding') ?? 'identity').toLowerCase() !== 'identity';
}

/** Feeds the first `bytes` of an open file to `hash`, through the handle (no second open by name). */
async function hashFile(file: FileHandle, bytes: number, hash: Hash): Promise<void> {
  const buf = Buffer.alloc(Math.min(bytes, 1 << 20));
  for (let pos = 0; pos < bytes;) {
    const { bytesRead } = await file.read(buf, 0, Math.min(buf.length, bytes - pos), pos);
    if (bytesRead === 0) throw new Error(`The partial download ended before ${bytes} bytes while resuming`);
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(bytes >= 100 * 2 ** 20 ? 0 : 1)} MiB`;

function sizes(value: number, total: number | undefined) {
  return { done: mib(value), size: total === undefined ? '?' : mib(total) };
}

function say(job: Job, line: string): void {
  if (job.show) process.stderr.write(`${line}\n`);
}

/** "qwen3-0.6B-base.pth: 42% (602 MiB / 1433 MiB)", redrawn in place on a TTY. */
function startBar(job: Job, total: number | undefined, start: number): SingleBar | undefined {
  if (!job.show) return undefined;
  const bar = new SingleBar({
    stream: process.stderr,
    format: (_options, params, payload: Record<string, string>) =>
      `${job.name}: ${total === undefined ? '' : `${Math.floor(params.progress * 100)}% `}(${payload.done} / ${payload.size})`,
    // When progress is requested explicitly without a TTY, print a line every few seconds.
    noTTYOutput: true,
    notTTYSchedule: 5000,
    // Without a TTY every redraw already ends its line; a completion newline would add a blank one.
    clearOnComplete: !process.stderr.isTTY,
    hideCursor: false,
    gracefulExit: false,
  });
  bar.start(total ?? 0, start, sizes(start, total));
  return bar;
}
