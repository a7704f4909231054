// A Hugging Face Hub on 127.0.0.1 for tests, answering the calls the downloader makes as the real
// one does: the model API's revision → commit, HEAD and GET of /<repo>/resolve/<rev>/<file>
// (X-Repo-Commit; git ETag and Content-Length for small files; a 302 to a CDN carrying
// X-Linked-Etag = SHA-256 and X-Linked-Size for LFS files), 404 with X-Error-Code EntryNotFound
// for absent files, and a bearer token checked when one is required. The CDN is a second server
// (another origin, as on the real Hub) that serves blobs by SHA-256 with Range requests, and can
// cut, corrupt or hold a body on demand. Every request is logged.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
export const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

export interface FakeRepo {
  /** revision (branch or tag) → commit */
  refs: Record<string, string>;
  /** commit → files */
  commits: Record<string, Record<string, Buffer>>;
}

export interface Logged {
  server: 'hub' | 'cdn';
  method: string;
  path: string;
  authorization?: string;
  range?: string;
}

/** How the CDN answers GETs of one blob (by SHA-256); each applies to the next GET only, then is cleared. */
export interface BlobBehaviour {
  /** Serve these bytes instead (same length): content that does not match the announced SHA-256. */
  replaceWith?: Buffer;
  /**
   * Send `after` bytes and call onHeld; once `until` resolves, send the rest ('send') or drop the
   * connection ('drop': the client has the first `after` bytes and then sees the connection end).
   */
  hold?: { after: number; until: Promise<'send' | 'drop'>; onHeld?: () => void };
}

const isLfs = (file: string) => file.endsWith('.safetensors') || file.endsWith('.pth');

export class FakeHub {
  readonly repos = new Map<string, FakeRepo>();
  readonly log: Logged[] = [];
  readonly blobBehaviour = new Map<string, BlobBehaviour>();
  /** When set, the Hub (not the CDN) answers 401 to requests without `Authorization: Bearer <token>`. */
  token: string | undefined;
  /** When set, the Hub (not the CDN) answers every request with this status, as when it is down. */
  failWith: number | undefined;
  /** Path prefix the Hub is served under (a mirror's HF_ENDPOINT may have one). */
  prefix = '';
  private hub = http.createServer((req, res) => this.onHub(req, res));
  private cdn = http.createServer((req, res) => this.onCdn(req, res));
  private blobs = new Map<string, Buffer>();

  get endpoint(): string {
    return `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}${this.prefix}`;
  }

  private get cdnOrigin(): string {
    return `http://127.0.0.1:${(this.cdn.address() as AddressInfo).port}`;
  }

  async start(): Promise<this> {
    for (const server of [this.hub, this.cdn]) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return this;
  }

  async stop(): Promise<void> {
    for (const server of [this.hub, this.cdn]) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }

  addRepo(repoId: string, commit: string, files: Record<string, Buffer>, refs: Record<string, string> = { main: commit }): void {
    const repo = this.repos.get(repoId) ?? { refs: {}, commits: {} };
    repo.commits[commit] = files;
    Object.assign(repo.refs, refs);
    this.repos.set(repoId, repo);
    for (const data of Object.values(files)) if (data) this.blobs.set(sha256(data), data);
  }

  /** Requests of one kind, e.g. requests('hub', 'HEAD'). */
  requests(server?: 'hub' | 'cdn', method?: string): Logged[] {
    return this.log.filter((l) => (server === undefined || l.server === server) && (method === undefined || l.method === method));
  }

  private record(server: 'hub' | 'cdn', req: http.IncomingMessage): void {
    this.log.push({ server, method: req.method!, path: req.url!, authorization: req.headers.authorization, range: req.headers.range });
  }

  private onHub(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.record('hub', req);
    const url = new URL(req.url!, 'http://x');
    if (this.failWith !== undefined) return void json(res, this.failWith, { error: 'The Hub is down' });
    if (!url.pathname.startsWith(`${this.prefix}/`)) return void res.writeHead(404).end();
    const route = url.pathname.slice(this.prefix.length);
    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
      return void json(res, 401, { error: 'Invalid credentials in Authorization header' }, { 'X-Error-Code': 'RepoNotFound' });
    }
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(route);
    if (api) {
      const repo = this.repos.get(api[1]!);
      if (!repo) return void json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      const rev = decodeURIComponent(api[2]!);
      const sha = repo.commits[rev] ? rev : repo.refs[rev];
      if (!sha) return void json(res, 404, { error: `Invalid rev id: ${rev}` }, { 'X-Error-Code': 'RevisionNotFound' });
      return void json(res, 200, { _id: 'x', id: api[1], sha, private: false, downloads: 0, likes: 0, lastModified: '2026-01-01T00:00:00.000Z' });
    }
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(route);
    if (!resolve) return void res.writeHead(404).end();
    const repo = this.repos.get(resolve[1]!);
    if (!repo) return void res.writeHead(404, { 'X-Error-Code': 'RepoNotFound' }).end();
    const rev = decodeURIComponent(resolve[2]!);
    const commit = repo.commits[rev] ? rev : repo.refs[rev];
    if (!commit) return void res.writeHead(404, { 'X-Error-Code': 'RevisionNotFound' }).end();
    const file = decodeURIComponent(resolve[3]!);
    const data = repo.commits[commit]![file];
    if (!data) return void res.writeHead(404, { 'X-Error-Code': 'EntryNotFound', 'X-Repo-Commit': commit }).end();
    if (isLfs(file)) {
      return void res.writeHead(302, {
        Location: `${this.cdnOrigin}/cdn/${sha256(data)}?signature=abc`,
        'X-Repo-Commit': commit,
        'X-Linked-Etag': `"${sha256(data)}"`,
        'X-Linked-Size': String(data.length),
        ETag: `"${sha256(data)}"`,
        'Content-Length': 0,
      }).end();
    }
    const headers = { 'X-Repo-Commit': commit, ETag: `"${gitOid(data)}"`, 'Accept-Ranges': 'bytes' };
    sendBody(req, res, data, headers);
  }

  private onCdn(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.record('cdn', req);
    const digest = /^\/cdn\/([0-9a-f]{64})/.exec(req.url!)?.[1];
    const data = digest === undefined ? undefined : this.blobs.get(digest);
    if (!data) return void res.writeHead(404).end();
    const behaviour = req.method === 'GET' ? this.blobBehaviour.get(digest!) : undefined;
    if (behaviour) this.blobBehaviour.delete(digest!);
    sendBody(req, res, behaviour?.replaceWith ?? data, { ETag: '"cdn-etag"', 'Accept-Ranges': 'bytes' }, behaviour);
  }
}

function json(res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers }).end(text);
}

function sendBody(req: http.IncomingMessage, res: http.ServerResponse, data: Buffer, headers: http.OutgoingHttpHeaders, behaviour?: BlobBehaviour): void {
  if (req.method === 'HEAD') return void res.writeHead(200, { ...headers, 'Content-Length': data.length }).end();
  const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
  const body = data.subarray(start);
  res.writeHead(start > 0 ? 206 : 200, {
    ...headers,
    'Content-Length': body.length,
    ...(start > 0 ? { 'Content-Range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
  });
  const hold = behaviour?.hold;
  if (hold) {
    res.write(body.subarray(0, hold.after), () => hold.onHeld?.());
    void hold.until.then((then) => (then === 'drop' ? res.socket?.destroy() : res.end(body.subarray(hold.after))));
    return;
  }
  res.end(body);
}
