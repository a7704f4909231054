// Fetch the small Qwen3 checkpoints (weights + tokenizer) published for "Qwen3 from scratch".
//
// Files are large (the 0.6B weights are about 1.4 GiB), so downloads resume: bytes go into
// `<file>.part`, a later run continues it with a Range request, and only a complete, verified
// file is renamed to its final name. A file already present with the size the server announces
// is left alone, which also keeps repeated runs (and offline runs) cheap. Several processes may
// download into one folder at once, and the folder may be shared: see download/files.ts for the
// lock and the rules about links, download/speed.ts for the low-speed limit.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { finalFileSize, lockDownload } from './download/files.js';
import { LOW_SPEED_LIMIT, LOW_SPEED_TIME } from './download/speed.js';
import {
  type Meter, type RemoteInfo, type TransferJob, UnreachableError,
  abortError, httpError, isEncoded, request, sha256Of, sizeHeader, throwIfAborted, transfer,
} from './download/transfer.js';
import { formatBytes as mib, stderrBar } from './download/progress-bar.js';
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

interface Job extends TransferJob {
  show: boolean;
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
      meter: show ? barMeter(name) : undefined,
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

function say(job: Job, line: string): void {
  if (job.show) process.stderr.write(`${line}\n`);
}

/** "qwen3-0.6B-base.pth: 42% (602 MiB / 1433 MiB)", redrawn in place on a TTY. */
function barMeter(name: string): Meter {
  let known: number | undefined;
  const bar = stderrBar((value) =>
    `${name}: ${known === undefined ? '' : `${Math.floor((value / Math.max(known, 1)) * 100)}% `}(${mib(value)} / ${known === undefined ? '?' : mib(known)})`);
  return {
    start: (total, offset) => {
      known = total;
      bar.start(total ?? 0, offset);
    },
    update: (received) => bar.update(received),
    stop: () => bar.stop(),
  };
}
