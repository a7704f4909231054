// One file's transfer, shared by the book's downloads (download.ts) and the Hugging Face cache
// (hub-download.ts): the body goes into a part file that a later run resumes with a Range
// request, its size and SHA-256 are checked, and only then is it renamed to its final name. The
// file-system rules (locks, no link followed) are in files.ts, the low-speed limit in
// speed.ts.
import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, rm } from 'node:fs/promises';
import { openPart, renameWritten, resumableSize } from './files.js';
import { watchSpeed } from './speed.js';

/** Receives a transfer's progress: where it starts, each chunk, and its end. */
export interface Meter {
  start(total: number | undefined, offset: number): void;
  update(received: number, total: number | undefined): void;
  stop(): void;
}

export interface TransferJob {
  /** The file's name in messages. */
  name: string;
  url: string;
  finalPath: string;
  partPath: string;
  signal: AbortSignal | undefined;
  lowSpeed: { limit: number; seconds: number };
  /**
   * Extra request headers for a URL (credentials); asked again at every redirect, so that a
   * token meant for one host is not sent to the host a redirect leads to.
   */
  headersFor?: (url: string) => Record<string, string>;
  meter?: Meter;
}

/** What a single request needs of a job: its name and URL for messages, the signal, the credentials. */
export type RequestJob = Pick<TransferJob, 'name' | 'url' | 'signal' | 'headersFor'>;

/** What the server announced before the transfer: the size and, for LFS files, the SHA-256. */
export interface RemoteInfo {
  size?: number;
  sha256?: string;
}

/**
 * Fetches the job's file into its part file (resuming what is there) and renames it to the final
 * name once complete and verified. `lost` reports a download lock taken over by another process:
 * then nothing is renamed.
 */
export async function transfer(job: TransferJob, remote: RemoteInfo, lost: () => Error | undefined): Promise<void> {
  let offset = await resumableSize(job.partPath);
  if (remote.size !== undefined && offset > remote.size) offset = 0; // not a prefix of this file
  let res: Response | undefined;
  let total = remote.size;
  let received = offset;
  // The request's signal also fires when its body turns out too slow (the watch starts below).
  const tooSlow = new AbortController();
  const bodyJob: TransferJob = { ...job, signal: job.signal ? AbortSignal.any([job.signal, tooSlow.signal]) : tooSlow.signal };
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
  job.meter?.start(total, offset);
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
      job.meter?.update(received, total);
    }
    done = true;
    await file.sync();
  } finally {
    speed.stop();
    if (!done) await chunks.return?.().catch(() => {}); // release the connection
    await file.close().catch(() => {});
    job.meter?.stop();
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
async function openBody(job: TransferJob, offset: number): Promise<{ res: Response; offset: number }> {
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

export class UnreachableError extends Error {
  constructor(message: string, readonly reason: string, options: ErrorOptions) {
    super(message, options);
  }
}

/**
 * fetch() with uncompressed bodies (sizes must match the bytes on disk) and clear failures.
 * Redirects are followed here rather than by fetch (unless `init.redirect` says otherwise), so
 * that `job.headersFor` decides the credentials of every hop.
 */
export async function request(job: RequestJob, url: string, init: RequestInit): Promise<Response> {
  const follow = init.redirect === undefined;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    let res: Response;
    try {
      res = await fetch(url, {
        ...init,
        headers: { 'Accept-Encoding': 'identity', ...job.headersFor?.(url), ...(init.headers as Record<string, string> | undefined) },
        redirect: follow ? 'manual' : init.redirect,
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
    const location = res.headers.get('location');
    if (!follow || !REDIRECTS.has(res.status) || !location) return res;
    void res.body?.cancel();
    url = new URL(location, url).href;
  }
  throw new Error(`Failed to download ${job.name} from ${job.url}: more than ${MAX_REDIRECTS} redirects`);
}

const MAX_REDIRECTS = 10;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

// undici reports network failures as TypeError('fetch failed') or ('terminated') with the
// socket or DNS error as cause (an AggregateError when several addresses were tried).
export function describeError(err: unknown): string {
  let cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
  if (cause instanceof AggregateError && cause.errors.length > 0) cause = cause.errors[0];
  const message = cause instanceof Error ? cause.message || (cause as NodeJS.ErrnoException).code : String(cause);
  if (err instanceof Error && err !== cause && err.message !== 'fetch failed') return `${err.message}: ${message}`;
  return message || 'network error';
}

export function httpError(job: RequestJob, res: Response): Error {
  return new Error(`Failed to download ${job.name} from ${job.url}: HTTP ${res.status} ${res.statusText}`.trimEnd());
}

export function abortError(job: RequestJob): Error {
  const err = new Error(`Download of ${job.name} from ${job.url} was aborted`, { cause: job.signal?.reason });
  err.name = 'AbortError';
  return err;
}

export function throwIfAborted(job: RequestJob): void {
  if (job.signal?.aborted) throw abortError(job);
}

/** A 64-hex-digit ETag is the SHA-256 of the content (Hugging Face LFS); anything else is opaque. */
export function sha256Of(etag: string | null): string | undefined {
  const m = /^(?:W\/)?"?([0-9a-f]{64})"?$/i.exec(etag?.trim() ?? '');
  return m ? m[1]!.toLowerCase() : undefined;
}

export function sizeHeader(value: string | null): number | undefined {
  return value !== null && /^\d+$/.test(value.trim()) ? Number(value) : undefined;
}

// fetch transparently decompresses, so lengths of an encoded response do not count file bytes.
export function isEncoded(res: Response): boolean {
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

