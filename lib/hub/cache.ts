// One repo's folder in the Hugging Face cache, laid out as huggingface_hub lays it out:
//
//   models--Qwen--Qwen3-8B/
//     blobs/<etag>                    file contents, named by the Hub's ETag (the SHA-256 for LFS files)
//     snapshots/<commit>/<file>       relative symbolic links to ../../blobs/<etag>
//     refs/<revision>                 the commit a branch or tag pointed to when last resolved
//     .no_exist/<commit>/<file>       empty files: the Hub said this file is absent at that commit
//
// The cache may be shared, so nothing here follows a link it did not make: the folders under the
// repo folder must be real folders, a snapshot entry counts only when it is a link to a plain
// file in this repo's blobs/ (or a plain file itself, as Python leaves where links are not
// possible), and every name is written by renaming a fresh file or link over it, so a reader
// never sees a half-written ref and a planted link is replaced rather than written through.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, readlink, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { COMMIT_HASH } from './settings.js';

export interface RepoCache {
  repoId: string;
  cacheDir: string;
  /** cacheDir/models--owner--name */
  root: string;
}

export async function repoCache(cacheDir: string, repoId: string): Promise<RepoCache> {
  const { getRepoFolderName } = await import('@huggingface/hub');
  return { repoId, cacheDir, root: path.join(cacheDir, getRepoFolderName({ type: 'model', name: repoId })) };
}

export const snapshotDir = (repo: RepoCache, commit: string) => path.join(repo.root, 'snapshots', commit);
export const blobPath = (repo: RepoCache, etag: string) => path.join(repo.root, 'blobs', etag);
/** This package's part file: Python writes `<etag>.<random>.incomplete`, so the two never share one. */
export const partPath = (repo: RepoCache, etag: string) => path.join(repo.root, 'blobs', `${etag}.qwen3-torch.incomplete`);
/** Where the repo's download locks are, as in Python's cache (its own are `<etag>.lock` files). */
export const lockFolder = (repo: RepoCache) => path.join(repo.cacheDir, '.locks', path.basename(repo.root));
/** The name download/files.ts locks (as `<name>.lock`, a folder). */
export const lockName = (repo: RepoCache, etag: string) => path.join(lockFolder(repo), `${etag}.qwen3-torch`);

/** Creates the folders a download writes into, and refuses any of them that is a link. */
export async function prepareFolders(repo: RepoCache, commit: string): Promise<void> {
  const folders = [
    path.join(repo.root, 'blobs'),
    path.join(repo.root, 'snapshots'),
    snapshotDir(repo, commit),
    path.join(repo.root, 'refs'),
    lockFolder(repo),
  ];
  for (const folder of folders) {
    await mkdir(folder, { recursive: true });
    await checkRealFolder(folder);
  }
}

async function checkRealFolder(folder: string): Promise<void> {
  const info = await lstat(folder);
  if (info.isSymbolicLink()) {
    const target = await readlink(folder).catch(() => '?');
    throw new Error(`Refusing to use ${folder} in the Hugging Face cache: it is a symbolic link (to ${target}), which is never followed; remove it`);
  }
  if (!info.isDirectory()) throw new Error(`Refusing to use ${folder} in the Hugging Face cache: it is not a folder; remove it`);
}

/**
 * The size of the blob that the snapshot entry `file` stands for, when the entry is sound: a link
 * to a plain file in this repo's blobs/, or a plain file. Undefined for anything else (missing,
 * dangling, a link that leads elsewhere, a folder, a folder on the way that is a link).
 */
export async function snapshotFileSize(repo: RepoCache, commit: string, file: string): Promise<number | undefined> {
  const entry = path.join(snapshotDir(repo, commit), file);
  try {
    for (const folder of [path.join(repo.root, 'snapshots'), snapshotDir(repo, commit)]) {
      if (!(await lstat(folder)).isDirectory()) return undefined;
    }
    const info = await lstat(entry);
    if (info.isFile()) return info.size;
    if (!info.isSymbolicLink()) return undefined;
    const target = path.resolve(path.dirname(entry), await readlink(entry));
    if (path.dirname(target) !== path.join(repo.root, 'blobs')) return undefined;
    if (!(await lstat(path.join(repo.root, 'blobs'))).isDirectory()) return undefined;
    const blob = await lstat(target);
    return blob.isFile() ? blob.size : undefined;
  } catch {
    return undefined;
  }
}

/** Points snapshots/<commit>/<file> at blobs/<etag> with a relative link, replacing whatever was there. */
export async function linkSnapshotFile(repo: RepoCache, commit: string, file: string, etag: string): Promise<void> {
  const entry = path.join(snapshotDir(repo, commit), file);
  const temp = `${entry}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await symlink(path.relative(path.dirname(entry), blobPath(repo, etag)), temp);
  try {
    await rename(temp, entry);
  } catch (err) {
    await rm(temp, { force: true });
    throw new Error(`Cannot link ${entry} in the Hugging Face cache: ${(err as Error).message}`, { cause: err });
  }
}

/** The commit refs/<revision> names, or undefined when there is no sound one. */
export async function readRef(repo: RepoCache, revision: string): Promise<string | undefined> {
  try {
    const file = path.join(repo.root, 'refs', revision);
    if (!(await lstat(file)).isFile()) return undefined;
    const commit = (await readFile(file, 'utf8')).trim();
    return COMMIT_HASH.test(commit) ? commit : undefined;
  } catch {
    return undefined;
  }
}

/** Writes refs/<revision> (a branch may hold '/': refs/pr/1) through a fresh file renamed over the name. */
export async function writeRef(repo: RepoCache, revision: string, commit: string): Promise<void> {
  const refs = path.join(repo.root, 'refs');
  const file = path.join(refs, revision);
  const parts = revision.split('/');
  for (let i = 1; i < parts.length; i++) {
    const folder = path.join(refs, ...parts.slice(0, i));
    await mkdir(folder, { recursive: true });
    await checkRealFolder(folder);
  }
  await writeFresh(file, commit);
}

/** Marks `file` as absent from the repo at `commit` (what Python records in .no_exist). */
export async function markAbsent(repo: RepoCache, commit: string, file: string): Promise<void> {
  const folder = path.join(repo.root, '.no_exist', commit);
  await mkdir(folder, { recursive: true });
  await checkRealFolder(path.join(repo.root, '.no_exist'));
  await checkRealFolder(folder);
  await writeFresh(path.join(folder, file), '');
}

export async function isMarkedAbsent(repo: RepoCache, commit: string, file: string): Promise<boolean> {
  try {
    return (await lstat(path.join(repo.root, '.no_exist', commit, file))).isFile();
  } catch {
    return false;
  }
}

async function writeFresh(file: string, text: string): Promise<void> {
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0), 0o644);
  try {
    await handle.writeFile(text);
  } finally {
    await handle.close();
  }
  try {
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true });
    throw new Error(`Cannot write ${file} in the Hugging Face cache: ${(err as Error).message}`, { cause: err });
  }
}
