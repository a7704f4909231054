// downloadQwen3Small against a local HTTP server that can misbehave on demand.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { downloadQwen3Small } from '../lib/download.js';

const MODEL = 'qwen3-0.6B-base.pth';
const TOKENIZER = 'tokenizer-base.json';
const FILES: Record<string, Buffer> = {
  [MODEL]: randomBytes(3 * 2 ** 20),
  [TOKENIZER]: Buffer.from(JSON.stringify({ model: 'x'.repeat(200_000) })),
  'tokenizer-reasoning.json': Buffer.from(JSON.stringify({ model: 'reasoning' })),
};
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** How the server treats GETs of one file; HEAD always announces the real size and sha. */
interface Behaviour {
  status?: number; // answer every request (HEAD included) with this status
  getStatus?: number; // only GETs fail with this status
  dropAfter?: number; // send this many bytes, then destroy the socket
  stallAfter?: number; // send this many bytes, then go quiet (for abort)
  onStall?: () => void;
  bodyDelta?: number; // GET without Content-Length, sending size + delta bytes, then end cleanly
  shortBy?: number; // GET with the full Content-Length but this many bytes fewer, then close
  etag?: string; // X-Linked-Etag to announce instead of the real sha256
  ignoreRange?: boolean;
  redirect?: boolean; // answer like Hugging Face: 302 to /cdn/<file> with the X-Linked-* headers
  noChecksum?: boolean; // announce no SHA-256 at all, like a plain web server
  replaceBody?: Buffer; // GETs answer 200 with these bytes instead (an error page, a proxy's garbage)
}

interface Seen { method: string; url: string; range?: string }

let server: http.Server;
let baseUrl: string;
let seen: Seen[];
let behaviour: Record<string, Behaviour>;
let dir: string;

function handle(req: http.IncomingMessage, res: http.ServerResponse) {
  seen.push({ method: req.method!, url: req.url!, range: req.headers.range });
  const cdn = req.url!.startsWith('/cdn/');
  const name = decodeURIComponent(req.url!.replace(/^\/(repo|cdn)\//, ''));
  const data = FILES[name];
  const b = behaviour[name] ?? {};
  if (!data) return void res.writeHead(404).end('not found');
  if (b.status) return void res.writeHead(b.status).end();
  const linked = { 'X-Linked-Etag': `"${b.etag ?? sha(data)}"`, 'X-Linked-Size': String(data.length) };
  if (b.noChecksum) delete (linked as Partial<typeof linked>)['X-Linked-Etag'];
  if (b.redirect && !cdn) return void res.writeHead(302, { Location: `/cdn/${name}`, ...linked }).end();
  const headers: http.OutgoingHttpHeaders = { 'Accept-Ranges': 'bytes', ETag: b.redirect || b.noChecksum ? '"cdn-opaque-etag"' : linked['X-Linked-Etag'] };
  if (req.method === 'HEAD') return void res.writeHead(200, { ...headers, 'Content-Length': data.length }).end();
  if (b.getStatus) return void res.writeHead(b.getStatus).end();
  if (b.replaceBody) return void res.writeHead(200, { ...headers, 'Content-Length': b.replaceBody.length }).end(b.replaceBody);

  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const start = m && !b.ignoreRange ? Number(m[1]) : 0;
  let body = data.subarray(start);
  if (b.bodyDelta !== undefined) {
    body = b.bodyDelta > 0 ? Buffer.concat([body, randomBytes(b.bodyDelta)]) : body.subarray(0, body.length + b.bodyDelta);
    res.writeHead(200, headers); // chunked: no length, the client must rely on HEAD
    return void res.end(body);
  }
  res.writeHead(start > 0 ? 206 : 200, {
    ...headers,
    'Content-Length': body.length,
    ...(start > 0 ? { 'Content-Range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
  });
  const cut = b.dropAfter ?? b.stallAfter ?? (b.shortBy !== undefined ? body.length - b.shortBy : undefined);
  if (cut === undefined) return void res.end(body);
  // Stall or drop only once the client has stored every byte sent: a dropped connection must not
  // race the bytes before it, whatever the machine's speed.
  res.write(body.subarray(0, cut), () => {
    void partHolds(name, start + cut).then(() => (b.stallAfter !== undefined ? b.onStall?.() : res.socket?.destroy()));
  });
}

/** Resolves once the download's part file holds `bytes` bytes. */
async function partHolds(name: string, bytes: number): Promise<void> {
  const size = () => (existsSync(at(`${name}.part`)) ? statSync(at(`${name}.part`)).size : 0);
  while (size() < bytes) await new Promise((resolve) => setTimeout(resolve, 5));
}

beforeEach(async () => {
  seen = [];
  behaviour = {};
  dir = mkdtempSync(path.join(os.tmpdir(), 'qwen3-dl-'));
  server = http.createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/repo`;
});
afterEach(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
  vi.restoreAllMocks();
});

const download = (extra: Partial<Parameters<typeof downloadQwen3Small>[0]> = {}) =>
  downloadQwen3Small({ kind: 'base', outDir: dir, baseUrl, progress: false, ...extra });
const at = (name: string) => path.join(dir, name);
const gets = (name: string) => seen.filter((s) => s.method === 'GET' && s.url.endsWith(`/${name}`));
function captureStderr(): string[] {
  const lines: string[] = [];
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  return lines;
}

describe('downloadQwen3Small', () => {
  it('downloads the weights and the tokenizer', async () => {
    const result = await download();
    expect(result).toEqual({ modelPath: at(MODEL), tokenizerPath: at(TOKENIZER), downloaded: [MODEL, TOKENIZER], skipped: [] });
    expect(sha(readFileSync(at(MODEL)))).toBe(sha(FILES[MODEL]!));
    expect(readFileSync(at(TOKENIZER)).equals(FILES[TOKENIZER]!)).toBe(true);
    expect(existsSync(at(`${MODEL}.part`))).toBe(false);
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      `HEAD /repo/${MODEL}`, `GET /repo/${MODEL}`, `HEAD /repo/${TOKENIZER}`, `GET /repo/${TOKENIZER}`,
    ]);
  });

  it('skips files that are already complete and says so', async () => {
    await download();
    seen = [];
    const lines = captureStderr();
    const result = await download({ progress: true });
    expect(result.skipped).toEqual([MODEL, TOKENIZER]);
    expect(result.downloaded).toEqual([]);
    expect(seen.every((s) => s.method === 'HEAD')).toBe(true);
    expect(lines.join('')).toContain(`${MODEL}: already up-to-date (3.0 MiB)\n`);
  });

  it('shows progress as "<file>: <percent>% (<done> / <total>)"', async () => {
    const lines = captureStderr();
    await download({ progress: true, tokenizerOnly: true });
    expect(lines.join('')).toContain(`${TOKENIZER}: 100% (0.2 MiB / 0.2 MiB)`);
  });

  it('replaces a complete-looking file whose size differs from the server', async () => {
    writeFileSync(at(MODEL), 'stale');
    const result = await download();
    expect(result.downloaded).toContain(MODEL);
    expect(statSync(at(MODEL)).size).toBe(FILES[MODEL]!.length);
  });

  it('fetches only the tokenizer with tokenizerOnly', async () => {
    const result = await download({ tokenizerOnly: true, kind: 'reasoning' });
    expect(result).toEqual({ tokenizerPath: at('tokenizer-reasoning.json'), downloaded: ['tokenizer-reasoning.json'], skipped: [] });
    expect(readFileSync(at('tokenizer-reasoning.json'), 'utf8')).toBe('{"model":"reasoning"}');
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual(['HEAD /repo/tokenizer-reasoning.json', 'GET /repo/tokenizer-reasoning.json']);
  });

  it('finishes a complete part file without fetching it again', async () => {
    writeFileSync(at(`${MODEL}.part`), FILES[MODEL]!); // e.g. interrupted just before the rename
    const result = await download();
    expect(result.downloaded).toEqual([MODEL, TOKENIZER]);
    expect(gets(MODEL)).toEqual([]);
    expect(sha(readFileSync(at(MODEL)))).toBe(sha(FILES[MODEL]!));
    expect(existsSync(at(`${MODEL}.part`))).toBe(false);
  });

  it('resumes an interrupted transfer with a Range request', async () => {
    behaviour[MODEL] = { dropAfter: 2 ** 20 };
    await expect(download()).rejects.toThrow(
      new RegExp(`^Connection lost while downloading ${MODEL} from ${baseUrl}/${MODEL} after \\d+ of 3145728 bytes \\(.+\\); run the download again to resume$`),
    );
    expect(existsSync(at(MODEL))).toBe(false);
    const partial = statSync(at(`${MODEL}.part`)).size;
    expect(partial).toBe(2 ** 20); // all the server sent before the drop

    behaviour = {};
    seen = [];
    const result = await download();
    expect(result.downloaded).toEqual([MODEL, TOKENIZER]);
    expect(gets(MODEL).map((s) => s.range)).toEqual([`bytes=${partial}-`]);
    expect(sha(readFileSync(at(MODEL)))).toBe(sha(FILES[MODEL]!));
    expect(existsSync(at(`${MODEL}.part`))).toBe(false);
  });

  it('starts over when the server ignores Range and answers 200', async () => {
    writeFileSync(at(`${MODEL}.part`), randomBytes(1000)); // not even a valid prefix
    behaviour[MODEL] = { ignoreRange: true };
    await download();
    expect(gets(MODEL).map((s) => s.range)).toEqual(['bytes=1000-']);
    expect(sha(readFileSync(at(MODEL)))).toBe(sha(FILES[MODEL]!));
  });

  it.each([
    [{ status: 500 }, 'HTTP 500 Internal Server Error'],
    [{ status: 404 }, 'HTTP 404 Not Found'],
    [{ getStatus: 503 }, 'HTTP 503 Service Unavailable'],
  ])('reports HTTP errors (%j)', async (b, status) => {
    behaviour[MODEL] = b;
    await expect(download()).rejects.toThrow(`Failed to download ${MODEL} from ${baseUrl}/${MODEL}: ${status}`);
    expect(existsSync(at(MODEL))).toBe(false);
  });

  it('fails when the connection closes before Content-Length bytes arrived', async () => {
    behaviour[MODEL] = { shortBy: 1000 };
    await expect(download()).rejects.toThrow(`Connection lost while downloading ${MODEL} from ${baseUrl}/${MODEL} after `);
    expect(existsSync(at(MODEL))).toBe(false);
    expect(existsSync(at(`${MODEL}.part`))).toBe(true); // resumable
  });

  it('fails when a body without length ends short of the announced size', async () => {
    behaviour[MODEL] = { bodyDelta: -1000 };
    await expect(download()).rejects.toThrow(
      `Download of ${MODEL} from ${baseUrl}/${MODEL} ended after 3144728 of 3145728 bytes; run the download again to resume`,
    );
    expect(existsSync(at(MODEL))).toBe(false);
  });

  it('fails and deletes the part file when more bytes arrive than announced', async () => {
    behaviour[MODEL] = { bodyDelta: 1000 };
    await expect(download()).rejects.toThrow(
      `Server sent more bytes than announced for ${MODEL} from ${baseUrl}/${MODEL} (over 3145728 bytes); the partial file was deleted`,
    );
    expect(existsSync(at(MODEL))).toBe(false);
    expect(existsSync(at(`${MODEL}.part`))).toBe(false);
  });

  it('verifies the SHA-256 announced in X-Linked-Etag', async () => {
    const wrong = 'ab'.repeat(32);
    behaviour[MODEL] = { etag: wrong };
    await expect(download()).rejects.toThrow(
      `Checksum mismatch for ${MODEL} from ${baseUrl}/${MODEL}: expected sha256 ${wrong} but got ${sha(FILES[MODEL]!)}; the partial file was deleted`,
    );
    expect(existsSync(at(MODEL))).toBe(false);
    expect(existsSync(at(`${MODEL}.part`))).toBe(false);
  });

  it('refuses a body whose length contradicts the announced size, even with no checksum to catch it', async () => {
    behaviour[MODEL] = { noChecksum: true, replaceBody: Buffer.from('<html>Bad gateway</html>') };
    await expect(download()).rejects.toThrow(
      `Server announced 3145728 bytes for ${MODEL} from ${baseUrl}/${MODEL} but answered with 24 bytes; nothing was kept`,
    );
    expect(existsSync(at(MODEL))).toBe(false);
    expect(existsSync(at(`${MODEL}.part`))).toBe(false);
  });

  it('catches garbage of exactly the right length by its checksum, and deletes it', async () => {
    behaviour[MODEL] = { replaceBody: randomBytes(FILES[MODEL]!.length) };
    await expect(download()).rejects.toThrow(`Checksum mismatch for ${MODEL} from ${baseUrl}/${MODEL}: expected sha256 ${sha(FILES[MODEL]!)}`);
    expect(existsSync(at(MODEL))).toBe(false);
    expect(existsSync(at(`${MODEL}.part`))).toBe(false);
  });

  it('a corrupt part file fails the checksum of the resumed whole; it is deleted and the next run is clean', async () => {
    writeFileSync(at(`${MODEL}.part`), randomBytes(1000)); // the server will honour the Range after it
    await expect(download()).rejects.toThrow(`Checksum mismatch for ${MODEL}`);
    expect(gets(MODEL).map((s) => s.range)).toEqual(['bytes=1000-']);
    expect(existsSync(at(MODEL))).toBe(false);
    expect(existsSync(at(`${MODEL}.part`))).toBe(false);
    await download();
    expect(sha(readFileSync(at(MODEL)))).toBe(sha(FILES[MODEL]!));
  });

  it.each([
    ['a dropped connection', { dropAfter: 2 ** 20 }],
    ['fewer bytes than Content-Length', { shortBy: 1000 }],
    ['a body without length that ends short', { bodyDelta: -1000 }],
    ['a body without length that runs long', { bodyDelta: 1000 }],
    ['a garbage body', { replaceBody: randomBytes(5000) }],
  ])('never leaves a file under the final name after %s, with or without a checksum', async (_label, b) => {
    for (const noChecksum of [false, true]) {
      behaviour[MODEL] = { ...b, noChecksum };
      await expect(download()).rejects.toThrow(MODEL);
      expect(existsSync(at(MODEL)), `noChecksum ${noChecksum}`).toBe(false);
      rmSync(at(`${MODEL}.part`), { force: true });
    }
  });

  it('reads the checksum from a Hugging Face style redirect', async () => {
    behaviour[MODEL] = { redirect: true };
    await download({ tokenizerOnly: false });
    // The CDN is only asked for the bytes; size and checksum come from the redirect.
    expect(seen.filter((s) => s.url.endsWith(MODEL)).map((s) => `${s.method} ${s.url}`)).toEqual([
      `HEAD /repo/${MODEL}`, `GET /repo/${MODEL}`, `GET /cdn/${MODEL}`,
    ]);
    rmSync(at(MODEL));
    behaviour[MODEL] = { redirect: true, etag: '00'.repeat(32) };
    await expect(download()).rejects.toThrow(`Checksum mismatch for ${MODEL}`);
    expect(existsSync(at(MODEL))).toBe(false);
  });

  it('stops when the signal aborts, keeping the part file for later', async () => {
    const controller = new AbortController();
    behaviour[MODEL] = { stallAfter: 2 ** 20, onStall: () => controller.abort() }; // mid-transfer: 1 MiB stored, the rest pending
    await expect(download({ signal: controller.signal })).rejects.toThrow(`Download of ${MODEL} from ${baseUrl}/${MODEL} was aborted`);
    expect(existsSync(at(MODEL))).toBe(false);
    expect(existsSync(at(`${MODEL}.part`))).toBe(true);
    await expect(download({ signal: AbortSignal.abort() })).rejects.toThrow(`Download of ${MODEL} from ${baseUrl}/${MODEL} was aborted`);
  });

  it('explains an unreachable host, and keeps an existing file when offline', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const offline = `http://127.0.0.1:${port}/repo`;
    await expect(download({ baseUrl: offline })).rejects.toThrow(
      `Could not reach 127.0.0.1:${port} to download ${MODEL} (connect ECONNREFUSED 127.0.0.1:${port}): `
      + `check your connection or download the file manually from ${offline}/${MODEL}`,
    );
    expect(existsSync(at(MODEL))).toBe(false);

    writeFileSync(at(TOKENIZER), 'previously downloaded');
    const lines = captureStderr();
    const result = await download({ baseUrl: offline, tokenizerOnly: true, progress: true });
    expect(result.skipped).toEqual([TOKENIZER]);
    expect(readFileSync(at(TOKENIZER), 'utf8')).toBe('previously downloaded');
    expect(lines.join('')).toContain(`${TOKENIZER}: could not reach 127.0.0.1:${port} (connect ECONNREFUSED 127.0.0.1:${port}); keeping the existing file`);
  });

  it('validates its options', async () => {
    await expect(downloadQwen3Small({} as never)).rejects.toThrow('Expected one of "base", "reasoning" for kind but received undefined');
    await expect(download({ kind: 'chat' as never })).rejects.toThrow('Expected one of "base", "reasoning" for kind but received "chat"');
    await expect(download({ baseUrl: 'ftp://x' })).rejects.toThrow('Expected http(s) URL for baseUrl but received "ftp://x"');
    await expect(download({ progress: 'yes' as never })).rejects.toThrow('Expected boolean or "auto" for progress but received "yes"');
    await expect(download({ retries: 3 } as never)).rejects.toThrow('Unknown option retries');
    await expect(download({ signal: 'stop' as never })).rejects.toThrow('Expected AbortSignal for signal but received "stop"');
    expect(seen).toEqual([]);
  });
});
