// downloadQwen3Small where others share the folder: two processes downloading the same file at
// once, links planted at the part file or the final name, and a server that trickles bytes.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, linkSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { downloadQwen3Small } from '../lib/download.js';

const MODEL = 'qwen3-0.6B-base.pth';
const TOKENIZER = 'tokenizer-base.json';
const FILES: Record<string, Buffer> = { [MODEL]: randomBytes(3 * 2 ** 20), [TOKENIZER]: Buffer.from('{"model": "tokenizer"}') };
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const DIST_DOWNLOAD = path.join(__dirname, '..', 'dist', 'download.js');

/** How GETs are answered: `hold` stops a body after some bytes until it resolves; `trickle` sends a byte per interval. */
interface Plan {
  hold?: { after: number; until: Promise<void>; onHeld: () => void };
  trickleMs?: number;
}

let server: http.Server;
let baseUrl: string;
let dir: string;
let outside: string;
let plan: Plan;
let gets: string[];

function handle(req: http.IncomingMessage, res: http.ServerResponse) {
  const name = decodeURIComponent(req.url!.replace(/^\/repo\//, ''));
  const data = FILES[name];
  if (!data) return void res.writeHead(404).end();
  const headers = { 'Accept-Ranges': 'bytes', 'X-Linked-Etag': `"${sha(data)}"`, 'X-Linked-Size': String(data.length), ETag: `"${sha(data)}"` };
  if (req.method === 'HEAD') return void res.writeHead(200, { ...headers, 'Content-Length': data.length }).end();
  gets.push(name);
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const start = m ? Number(m[1]) : 0;
  const body = data.subarray(start);
  res.writeHead(start > 0 ? 206 : 200, {
    ...headers,
    'Content-Length': body.length,
    ...(start > 0 ? { 'Content-Range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
  });
  const hold = name === MODEL ? plan.hold : undefined;
  if (hold) {
    plan.hold = undefined; // only the first GET is held
    res.write(body.subarray(0, hold.after), () => hold.onHeld());
    void hold.until.then(() => res.end(body.subarray(hold.after)));
    return;
  }
  if (name === MODEL && plan.trickleMs !== undefined) {
    let sent = 0;
    const timer = setInterval(() => res.write(body.subarray(sent, ++sent)), plan.trickleMs);
    res.on('close', () => clearInterval(timer));
    return;
  }
  res.end(body);
}

beforeEach(async () => {
  plan = {};
  gets = [];
  dir = mkdtempSync(path.join(os.tmpdir(), 'qwen3-dlsafe-'));
  outside = mkdtempSync(path.join(os.tmpdir(), 'qwen3-dlsafe-outside-'));
  server = http.createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/repo`;
});
afterEach(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
});

const download = (extra: object = {}) => downloadQwen3Small({ kind: 'base', outDir: dir, baseUrl, progress: false, ...extra });
const at = (name: string) => path.join(dir, name);

interface Child { proc: ChildProcess; stderr: string; done: Promise<{ code: number | null; stdout: string; stderr: string }> }

/** A separate Node process running downloadQwen3Small from the compiled package. */
function downloader(onStderr?: (all: string) => void): Child {
  const script = `require(${JSON.stringify(DIST_DOWNLOAD)}).downloadQwen3Small({ kind: 'base', outDir: ${JSON.stringify(dir)}, baseUrl: ${JSON.stringify(baseUrl)}, progress: true })
    .then((r) => console.log(JSON.stringify(r)), (e) => { console.error('FAILED: ' + e.message); process.exitCode = 1; });`;
  const proc = spawn(process.execPath, ['-e', script]);
  const child: Child = { proc, stderr: '', done: undefined as never };
  let stdout = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d));
  proc.stderr!.on('data', (d: Buffer) => {
    child.stderr += d;
    onStderr?.(child.stderr);
  });
  child.done = new Promise((resolve) => proc.on('close', (code) => resolve({ code, stdout, stderr: child.stderr })));
  return child;
}

describe('two processes downloading into one folder at once', { timeout: 60_000 }, () => {
  it('both succeed, the second waits for the first and keeps its verified file', async () => {
    let releaseFirst!: () => void;
    const until = new Promise<void>((resolve) => (releaseFirst = resolve));
    let firstHeld!: () => void;
    const held = new Promise<void>((resolve) => (firstHeld = resolve));
    plan.hold = { after: 101_000, until, onHeld: firstHeld };

    const first = downloader();
    await held; // the first process is inside its transfer, 101,000 bytes in
    // The first body goes on once the second process is seen waiting, or (as happened before the
    // lock existed) once the second one asks for the same file too: either way the two overlap.
    const second = downloader((stderr) => {
      if (stderr.includes(`${MODEL}: waiting for another process`)) releaseFirst();
    });
    const secondGet = setInterval(() => gets.filter((g) => g === MODEL).length > 1 && releaseFirst(), 5);
    const [a, b] = await Promise.all([first.done, second.done]).finally(() => clearInterval(secondGet));

    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).toContain(`${MODEL}: waiting for another process that is downloading it into ${dir}`);
    expect(JSON.parse(b.stdout).skipped).toContain(MODEL);
    expect(gets.filter((g) => g === MODEL)).toHaveLength(1); // one transfer served both
    expect(sha(readFileSync(at(MODEL)))).toBe(sha(FILES[MODEL]!));
    expect(readFileSync(at(TOKENIZER)).equals(FILES[TOKENIZER]!)).toBe(true);
    expect(readdirSync(dir).sort()).toEqual([MODEL, TOKENIZER]); // no part file or lock left
  });

  it('a lock left by a process that died is taken over once stale', async () => {
    // What a killed process leaves: the lock directory, with an old heartbeat.
    const lockDir = at(`${MODEL}.lock`);
    const { mkdirSync, utimesSync } = await import('node:fs');
    mkdirSync(lockDir);
    const old = new Date(Date.now() - 10 * 60_000);
    utimesSync(lockDir, old, old);
    const result = await download();
    expect(result.downloaded).toContain(MODEL);
    expect(sha(readFileSync(at(MODEL)))).toBe(sha(FILES[MODEL]!));
    expect(existsSync(lockDir)).toBe(false);
  });
});

describe('links planted in the download folder are never followed', { timeout: 10_000 }, () => {
  const victim = () => path.join(outside, 'victim.txt');
  beforeEach(() => writeFileSync(victim(), 'precious'));

  const expectCleanResult = () => {
    expect(readFileSync(victim(), 'utf8')).toBe('precious');
    expect(lstatSync(at(MODEL)).isFile()).toBe(true);
    expect(sha(readFileSync(at(MODEL)))).toBe(sha(FILES[MODEL]!));
    expect(existsSync(at(`${MODEL}.part`))).toBe(false);
  };

  it('a symlink at the part file pointing at an existing file: replaced, its target untouched', async () => {
    symlinkSync(victim(), at(`${MODEL}.part`));
    await download();
    expectCleanResult();
  });

  it('a dangling symlink at the part file: no file appears at its target', async () => {
    const target = path.join(outside, 'created-by-download');
    symlinkSync(target, at(`${MODEL}.part`));
    await download();
    expect(existsSync(target)).toBe(false);
    expectCleanResult();
  });

  it('a hard link at the part file: not written through', async () => {
    linkSync(victim(), at(`${MODEL}.part`));
    await download();
    expectCleanResult();
  });

  it('a symlink at the final name (to a file, or dangling) is a clear error and nothing is written', async () => {
    const dangling = path.join(outside, 'nothing-here');
    for (const target of [victim(), dangling]) {
      rmSync(at(MODEL), { force: true });
      symlinkSync(target, at(MODEL));
      await expect(download()).rejects.toThrow(`Refusing to download to ${at(MODEL)}: it is a symbolic link (to ${target}), which is never followed`);
      expect(lstatSync(at(MODEL)).isSymbolicLink()).toBe(true);
    }
    expect(readFileSync(victim(), 'utf8')).toBe('precious');
    expect(existsSync(dangling)).toBe(false);
    expect(gets).toEqual([]);
  });

  it('a directory at the final name is a clear error', async () => {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(at(MODEL));
    await expect(download()).rejects.toThrow(`Refusing to download to ${at(MODEL)}: it is a directory`);
  });
});

describe('low-speed limit', { timeout: 10_000 }, () => {
  it('a server that trickles bytes is given up after lowSpeedTime, keeping the part file', async () => {
    plan.trickleMs = 50; // about 20 bytes/s
    const started = performance.now();
    await expect(download({ lowSpeedLimit: 1000, lowSpeedTime: 0.4 })).rejects.toThrow(
      new RegExp(`^Download of ${MODEL} from ${baseUrl}/${MODEL} was slower than 1000 bytes/s over 0\\.4 s \\([\\d.]+ bytes/s, \\d+ of 3145728 bytes so far\\); run the download again to resume$`),
    );
    expect(performance.now() - started).toBeGreaterThanOrEqual(400);
    expect(existsSync(at(MODEL))).toBe(false);
    expect(existsSync(at(`${MODEL}.part`))).toBe(true);
    // The next run resumes from the part file.
    plan.trickleMs = undefined;
    const result = await download({ lowSpeedLimit: 0 });
    expect(sha(readFileSync(at(MODEL)))).toBe(sha(FILES[MODEL]!));
    expect(result.downloaded).toContain(MODEL);
  });

  it('validates the limit options', async () => {
    await expect(download({ lowSpeedLimit: -1 })).rejects.toThrow('Expected integer between 0 and 2147483647 for lowSpeedLimit but received -1');
    await expect(download({ lowSpeedTime: 0 })).rejects.toThrow('Expected number greater than 0 and at most 86400 for lowSpeedTime but received 0');
  });
});
