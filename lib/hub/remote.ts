// The Hub's side of a download, asked as huggingface_hub asks it: the model API turns a branch
// or tag into a commit, a HEAD of `<endpoint>/<repo>/resolve/<commit>/<file>` announces the
// file (X-Repo-Commit, X-Linked-Etag and X-Linked-Size for LFS files, whose answer is a redirect
// to a CDN; ETag and Content-Length for the others), and a GET of the same URL fetches it, through
// the shared transfer (resume, size and SHA-256 check, atomic rename) into blobs/<etag>.
// The token goes to the Hub's own host only, never to the host a redirect leads to.
import { finalFileSize, lockDownload } from '../download/files.js';
import {
  type Meter, type RequestJob, UnreachableError, abortError, describeError, isEncoded, request, sha256Of, sizeHeader, transfer,
} from '../download/transfer.js';
import { type RepoCache, blobPath, linkSnapshotFile, lockName, partPath } from './cache.js';
import { COMMIT_HASH, type HubSettings } from './settings.js';

export interface HubContext {
  settings: HubSettings;
  repo: RepoCache;
  revision: string;
  signal: AbortSignal | undefined;
  lowSpeed: { limit: number; seconds: number };
}

/** A file as the Hub announced it at one commit. */
export interface RemoteFile {
  file: string;
  /** The resolve URL, pinned to the commit. */
  url: string;
  /** The blob's name in the cache: the normalised X-Linked-Etag, else ETag. */
  etag: string;
  size: number;
  /** Present for LFS files, whose X-Linked-Etag is the SHA-256 of the content. */
  sha256: string | undefined;
}

function credentials(settings: HubSettings): (url: string) => Record<string, string> {
  const origin = new URL(settings.endpoint).origin;
  return (url): Record<string, string> => (settings.token !== undefined && new URL(url).origin === origin ? { Authorization: `Bearer ${settings.token}` } : {});
}

function requestJob(ctx: HubContext, name: string, url: string): RequestJob {
  return { name, url, signal: ctx.signal, headersFor: credentials(ctx.settings) };
}

/** The commit that the context's revision names now. */
export async function resolveCommit(ctx: HubContext): Promise<string> {
  const { HubApiError, modelInfo } = await import('@huggingface/hub');
  const { repoId } = ctx.repo;
  const what = `revision ${ctx.revision} of ${repoId}`;
  const job = requestJob(ctx, what, `${ctx.settings.endpoint}/api/models/${repoId}`);
  let sha: unknown;
  try {
    // No token is given to the library: the fetch below adds it, for the Hub's host only.
    ({ sha } = await modelInfo({
      name: repoId,
      revision: ctx.revision,
      hubUrl: ctx.settings.endpoint,
      additionalFields: ['sha'],
      fetch: (input, init) => request(job, String(input), init ?? {}),
    }));
  } catch (err) {
    if (err instanceof UnreachableError) {
      throw new UnreachableError(`Could not reach ${new URL(ctx.settings.endpoint).host} to resolve ${what} (${err.reason})`, err.reason, { cause: err });
    }
    if (err instanceof HubApiError) throw refused(ctx, err.statusCode, `resolving ${what}`, err.message.replace(/\. URL: .*$/s, ''));
    if ((err as Error).name === 'AbortError') throw err;
    throw new Error(`The Hub at ${ctx.settings.endpoint} gave an unreadable answer when resolving ${what}: ${describeError(err)}`, { cause: err });
  }
  if (typeof sha !== 'string' || !COMMIT_HASH.test(sha)) {
    throw new Error(`The Hub at ${ctx.settings.endpoint} gave no commit hash when resolving ${what} (sha: ${JSON.stringify(sha) ?? 'missing'})`);
  }
  return sha;
}

const SAME_ORIGIN_HOPS = 5;

/** HEADs one file at `commit`; undefined when the Hub says the repo has no such file there. */
export async function headFile(ctx: HubContext, commit: string, file: string): Promise<RemoteFile | undefined> {
  const { repoId } = ctx.repo;
  const url = `${ctx.settings.endpoint}/${repoId}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
  const job = requestJob(ctx, `${repoId}/${file}`, url);
  let at = url;
  let res: Response | undefined;
  // Redirects within the Hub (a renamed repo) are followed; one to another host (the CDN that
  // serves LFS files) carries the X-Linked-* headers already and is not asked: its pre-signed
  // URLs may be valid for GET only.
  for (let hop = 0; hop <= SAME_ORIGIN_HOPS; hop++) {
    res = await request(job, at, { method: 'HEAD', redirect: 'manual' });
    void res.body?.cancel();
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location || res.headers.has('x-linked-size')) break;
    const next = new URL(location, at);
    if (next.origin !== new URL(at).origin) break;
    at = next.href;
  }
  res = res!;
  const code = res.headers.get('x-error-code');
  if (res.status === 404 && (code === null || code === 'EntryNotFound')) return undefined;
  const redirected = res.status >= 300 && res.status < 400;
  if (!res.ok && !redirected) throw refused(ctx, res.status, `asking for ${file} of ${repoId}`, code ?? res.statusText);

  const announced = res.headers.get('x-repo-commit');
  if (announced !== null && announced !== commit) {
    throw new Error(`The Hub at ${ctx.settings.endpoint} answered for commit ${announced} when asked for ${file} of ${repoId} at commit ${commit}`);
  }
  const rawEtag = res.headers.get('x-linked-etag') ?? res.headers.get('etag');
  const etag = rawEtag?.trim().replace(/^W\//, '').replace(/^"|"$/g, '');
  if (!etag || !/^[A-Za-z0-9_-]{1,128}$/.test(etag)) {
    throw new Error(`The Hub at ${ctx.settings.endpoint} announced ${rawEtag === null ? 'no ETag' : `the ETag ${JSON.stringify(rawEtag)}`} for ${file} of ${repoId}; the cache names files by it, so it must be letters, digits, '-' and '_'`);
  }
  const size = sizeHeader(res.headers.get('x-linked-size')) ?? (redirected || isEncoded(res) ? undefined : sizeHeader(res.headers.get('content-length')));
  if (size === undefined) throw new Error(`The Hub at ${ctx.settings.endpoint} did not announce the size of ${file} of ${repoId}`);
  return { file, url, etag, size, sha256: sha256Of(res.headers.get('x-linked-etag')) };
}

/**
 * An error for an answer that refuses the request, with what to do about it. A server error
 * (5xx) counts as the Hub being unreachable, as huggingface_hub counts it: a cached snapshot may
 * stand in.
 */
function refused(ctx: HubContext, status: number, doing: string, detail: string): Error {
  const { repoId } = ctx.repo;
  const said = `HTTP ${status}${detail ? `: ${detail}` : ''}`;
  if (status >= 500) {
    return new UnreachableError(`The Hub at ${ctx.settings.endpoint} answered ${said} when ${doing}`, said, {});
  }
  if (status === 401 || status === 403 || status === 404) {
    const hint = ctx.settings.token === undefined
      ? 'if it is private or gated, set HF_TOKEN to a token that can read it'
      : 'the token in use (HF_TOKEN, else the saved one) cannot read it: if it is gated, accept its terms on the Hub with that account';
    return new Error(`${repoId} at revision ${ctx.revision} was not found on ${ctx.settings.endpoint} or cannot be read (${said} when ${doing}); ${hint}`);
  }
  return new Error(`The Hub at ${ctx.settings.endpoint} answered ${said} when ${doing}`);
}

/**
 * Puts `remote` into the cache at `commit`: the blob is fetched unless it is already there with
 * the announced size, under a lock so that one process at a time writes it, and the snapshot
 * entry is linked to it. Returns true when this call fetched the bytes.
 */
export async function fetchToCache(ctx: HubContext, commit: string, remote: RemoteFile, meter: Meter, onWait: () => void): Promise<boolean> {
  const { repo } = ctx;
  const blob = blobPath(repo, remote.etag);
  let fetched = false;
  if ((await finalFileSize(blob)) !== remote.size) {
    const job = requestJob(ctx, `${repo.repoId}/${remote.file}`, remote.url);
    let held;
    try {
      held = await lockDownload(lockName(repo, remote.etag), ctx.signal, onWait);
    } catch (err) {
      if (ctx.signal?.aborted) throw abortError(job);
      throw err;
    }
    try {
      // The process that held the lock may have just put this very blob in place.
      if ((await finalFileSize(blob)) !== remote.size) {
        await transfer(
          { ...job, finalPath: blob, partPath: partPath(repo, remote.etag), lowSpeed: ctx.lowSpeed, meter },
          { size: remote.size, sha256: remote.sha256 },
          held.lost,
        );
        fetched = true;
      }
    } finally {
      await held.release();
    }
  }
  await linkSnapshotFile(repo, commit, remote.file, remote.etag);
  return fetched;
}
