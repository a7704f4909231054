// The files a download touches, handled so that neither another process nor a planted link can
// corrupt them or redirect the writes:
//
// - One download per file at a time: `<file>.lock` (a directory made with mkdir, through
//   proper-lockfile) is held while `<file>.part` is written and renamed. A second process waits
//   for it, then finds the finished file and keeps it. A lock whose holder died goes stale after
//   LOCK_STALE_MS without its heartbeat and is taken over.
// - No symbolic link is followed. A symlink (or anything but a plain file with one link) at
//   `<file>.part` is removed, not written through, and a fresh part file is created with
//   O_EXCL | O_NOFOLLOW; a resumed one is opened with O_NOFOLLOW and checked with fstat. A
//   symlink or directory at the final name is an error that names it: it is never trusted as
//   the downloaded file, and the rename that ends a download replaces a name, never a target.
import { constants } from 'node:fs';
import { type FileHandle, lstat, open, readlink, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** A lock not refreshed for this long belongs to a process that is gone. */
export const LOCK_STALE_MS = 30_000;
/** How often a waiting process looks at the lock again. */
export const LOCK_POLL_MS = 250;

const NOFOLLOW = constants.O_NOFOLLOW ?? 0;

/** Size of the regular file at the final name, undefined when there is none; an error for anything else. */
export async function finalFileSize(file: string): Promise<number | undefined> {
  let info;
  try {
    info = await lstat(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  if (info.isSymbolicLink()) {
    const target = await readlink(file).catch(() => '?');
    throw new Error(`Refusing to download to ${file}: it is a symbolic link (to ${target}), which is never followed; remove it, or pass the file it points to as the model`);
  }
  if (!info.isFile()) throw new Error(`Refusing to download to ${file}: it is ${info.isDirectory() ? 'a directory' : 'not a regular file'}`);
  return info.size;
}

/** Size of a part file that can be resumed; anything else at that name is removed. */
export async function resumableSize(part: string): Promise<number> {
  let info;
  try {
    info = await lstat(part);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  if (info.isFile() && info.nlink === 1) return info.size;
  await rm(part, { force: true }); // a link is removed itself, its target is left alone
  return 0;
}

/**
 * Opens the part file for writing: a new, empty one (offset 0), or the existing one to append
 * to, which must still be a plain file of `offset` bytes.
 */
export async function openPart(part: string, offset: number): Promise<FileHandle> {
  if (offset === 0) {
    await rm(part, { force: true });
    // O_EXCL: if anything reappeared at the name since, fail rather than write through it.
    return open(part, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | NOFOLLOW, 0o644);
  }
  const file = await open(part, constants.O_RDWR | constants.O_APPEND | NOFOLLOW);
  const info = await file.stat();
  if (!info.isFile() || info.nlink !== 1 || info.size !== offset) {
    await file.close();
    throw new Error(`The partial download ${part} changed while it was being resumed; run the download again`);
  }
  return file;
}

/**
 * Renames the finished part file to the final name, provided the part name still refers to the
 * file that was written through `file` (same device and inode): a name swapped for a link in a
 * shared folder while the download ran is refused rather than moved into place.
 */
export async function renameWritten(file: { dev: number; ino: number }, part: string, final: string): Promise<void> {
  const now = await lstat(part);
  if (!now.isFile() || now.dev !== file.dev || now.ino !== file.ino) {
    throw new Error(`The partial download ${part} was replaced by something else while it was written; nothing was renamed, run the download again`);
  }
  await rename(part, final);
}

export interface HeldLock {
  release(): Promise<void>;
  /** Set when another process took the lock over (this one stalled past LOCK_STALE_MS). */
  lost(): Error | undefined;
}

/**
 * Takes `<file>.lock`, waiting while another process holds it; `onWait` is called once when
 * waiting starts. Rejects when `signal` fires while waiting.
 */
export async function lockDownload(file: string, signal: AbortSignal | undefined, onWait: () => void): Promise<HeldLock> {
  // Loaded on first use: proper-lockfile installs exit hooks (to remove held locks) when loaded,
  // and a program that only imports this package for inference should not get them.
  const { lock } = await import('proper-lockfile');
  let lostWith: Error | undefined;
  let waiting = false;
  for (;;) {
    signal?.throwIfAborted();
    try {
      const release = await lock(file, {
        lockfilePath: `${file}.lock`,
        realpath: false, // the file does not exist yet
        stale: LOCK_STALE_MS,
        onCompromised: (err) => {
          lostWith = err;
        },
      });
      return { release: () => release().catch(() => {}), lost: () => lostWith };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') {
        throw new Error(`Cannot take the download lock ${file}.lock in ${path.dirname(file)}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (!waiting) onWait();
    waiting = true;
    await sleep(LOCK_POLL_MS, undefined, { signal });
  }
}
