/**
 * A fake registry for tests: a real node:http (or https) server on 127.0.0.1:0 that serves blobs and manifests
 * by digest (manifests by tag too, under any repository name by digest), honours a single `Range` on blobs,
 * lists tags, answers `/v2/`, can ask for Basic credentials or a Bearer token (with its own token endpoint),
 * and records every request it receives, so tests can count what reached it per digest and method.
 *
 * What is special to a test goes in its `hook`: it sees each request (classified, recorded, past the challenge)
 * before the default answer and may answer it itself, with the fake's `serve` (throttled, cut, other bytes) or by
 * hand. test/lib/fault-upstream.ts builds its fault scenarios on it this way.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

/** `sha256:<hex>` of `bytes`. */
export const sha256 = (bytes: Buffer | string): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/** What a request asked for. `classify` may add kinds of its own. */
export type RequestKind = 'ping' | 'blob' | 'manifest' | 'tags' | 'token' | 'other' | (string & {});

/** One request the fake received. */
export interface FakeRequest {
  readonly method: string;
  /** The request target as sent (with its query). */
  readonly url: string;
  /** The path, without the query. */
  readonly path: string;
  readonly kind: RequestKind;
  /** The repository name of `/v2/<name>/...` requests. */
  readonly name?: string;
  /** The digest for blob and manifest requests (a known tag resolved to its manifest's digest). */
  readonly digest?: string;
  readonly headers: IncomingHttpHeaders;
  readonly at: number;
  /** Answered 401 by the challenge (the hook and the content never saw it). */
  challenged?: boolean;
  /** When the connection closed before the response was complete (the client gave up, or the test cut it). */
  closedEarlyAt?: number;
  /** When the response's connection was done with it (finished or closed); undefined while it is open. */
  closedAt?: number;
}

/** A blob or manifest the fake serves. A manifest has a media type, a blob has none. */
export interface Content {
  readonly digest: string;
  readonly bytes: Buffer;
  readonly mediaType?: string;
}

/** The credentials the fake asks for (every request but the token endpoint's). */
export type Challenge =
  | { readonly scheme: 'basic'; readonly username: string; readonly password: string; readonly realm: string }
  | {
      readonly scheme: 'bearer';
      /** The credentials the token endpoint (`/token`) takes as Basic auth. */
      readonly username: string;
      readonly password: string;
      readonly service: string;
      readonly scope?: string;
      /** Default `<url>/token`. */
      readonly realm?: string;
      /** The token handed out (default `tok-<n>`, n counting the tokens); any token handed out is accepted. */
      readonly token?: string;
    };

/** How `serve` answers: the content's bytes by default, with its Range honoured. */
export interface ServeOptions {
  /** Other bytes than the content's (corrupt ones), with their own length. */
  readonly bytes?: Buffer;
  /** Answer a ranged GET with the whole body (200), as some servers do. */
  readonly ignoreRange?: boolean;
  /** Write the body in chunks of this many bytes (with backpressure). */
  readonly chunkBytes?: number;
  /** Wait this long after each chunk but the last (a trickle). */
  readonly chunkDelayMs?: number;
  /** Destroy the socket at the first chunk that starts at or past half of the body. */
  readonly cutHalfway?: boolean;
}

/** One request, as a hook sees it. */
export interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly record: FakeRequest;
  /** The content the request names, when the fake holds it. */
  readonly content?: Content;
  readonly head: boolean;
  /** Answers with `content` (or 404 when there is none): 200, or 206/416 for a Range on a blob. */
  serve(options?: ServeOptions): Promise<void>;
  /** Answers with an OCI error body. */
  fail(status: number, code: string, message: string, headers?: Record<string, string>): void;
}

/** Answers a request itself (returns true, or a promise of true), or leaves it to the fake (false/undefined). */
export type Hook = (exchange: Exchange) => boolean | void | Promise<boolean | void>;

export interface FakeRegistryOptions {
  /** Serve HTTPS with this certificate (chain) and key. */
  readonly tls?: { readonly cert: string; readonly key: string };
  readonly maxHeaderSize?: number;
  readonly challenge?: Challenge;
  readonly hook?: Hook;
  /** Classifies paths the fake does not know (for `count` and hooks); undefined: `other`. */
  readonly classify?: (path: string) => { kind: RequestKind; digest?: string } | undefined;
}

export interface FakeRegistry {
  /** `http://127.0.0.1:PORT` (or https). */
  readonly url: string;
  readonly host: string;
  readonly server: Server;
  /** Every request, in order (the token endpoint's and challenged ones too). */
  readonly requests: FakeRequest[];
  /** Mutable: what the next requests are asked for. */
  challenge: Challenge | undefined;
  /** Mutable: the hook of the next requests. */
  hook: Hook | undefined;
  /** Mutable: every request waits this long before it is answered (the token endpoint's too). */
  delayMs: number;
  /** Mutable: the answer to `/v2/` (default 200 `{}`; another status gets an UNAUTHORIZED body). */
  ping: { status: number; headers: Record<string, string> };
  /** Serves `bytes` as a blob; returns its digest. */
  addBlob(bytes: Buffer): string;
  /**
   * Serves `bytes` as a manifest by digest (under any name) and, with `name` and `tag`, by that tag.
   * The media type defaults to the manifest's own `mediaType`, else OCI's image manifest. With `digest`, the bytes
   * are served under that digest instead of their own (a registry that lies).
   */
  addManifest(bytes: Buffer, options?: { name?: string; tag?: string; mediaType?: string; digest?: string }): string;
  /** Points `name:tag` at a manifest digest. */
  tag(name: string, tag: string, digest: string): void;
  content(digest: string): Content | undefined;
  /** Requests for one digest (optionally one method) that got past the challenge. */
  count(digest: string, method?: string): number;
  /** Sleeps `ms`, or until `stop()`. */
  sleep(ms: number): Promise<void>;
  /** Closes the server and destroys every open connection. */
  stop(): Promise<void>;
}

const BLOB_PATH = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;
const MANIFEST_PATH = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const TAGS_PATH = /^\/v2\/(.+)\/tags\/list$/;

/** Writes an OCI error (`{"errors":[...]}`), without the body for a HEAD. */
export function sendError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}, head = false): void {
  const body = JSON.stringify({ errors: [{ code, message, detail: null }] });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0', ...headers });
  res.end(head ? undefined : body);
}

/** The headers every content answer carries. */
export function contentHeaders(content: Content): OutgoingHttpHeaders {
  return {
    'content-type': content.mediaType ?? 'application/octet-stream',
    'docker-content-digest': content.digest,
    'docker-distribution-api-version': 'registry/2.0',
    ...(content.mediaType ? {} : { 'accept-ranges': 'bytes' }),
  };
}

const basic = (username: string, password: string): string => `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;

/** Starts a fake registry on a free port of 127.0.0.1. */
export async function startFakeRegistry(options: FakeRegistryOptions = {}): Promise<FakeRegistry> {
  const contents = new Map<string, Content>();
  /** `<name>:<tag>` -> manifest digest */
  const tags = new Map<string, string>();
  const requests: FakeRequest[] = [];
  const sockets = new Set<Socket>();
  const sleeps = new Map<NodeJS.Timeout, () => void>();
  const tokens = new Set<string>();
  let base = '';

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        sleeps.delete(t);
        resolve();
      }, ms);
      sleeps.set(t, resolve);
    });

  function classify(path: string): { kind: RequestKind; name?: string; digest?: string } {
    if (path === '/v2/' || path === '/v2') return { kind: 'ping' };
    const blob = BLOB_PATH.exec(path);
    if (blob) return { kind: 'blob', name: blob[1]!, digest: blob[2]! };
    const manifest = MANIFEST_PATH.exec(path);
    if (manifest) {
      const [, name, ref] = manifest as unknown as [string, string, string];
      const digest = ref.startsWith('sha256:') ? ref : tags.get(`${name}:${ref}`);
      return { kind: 'manifest', name, ...(digest ? { digest } : {}) };
    }
    const tagList = TAGS_PATH.exec(path);
    if (tagList) return { kind: 'tags', name: tagList[1]! };
    if (path === '/token') return { kind: 'token' };
    return options.classify?.(path) ?? { kind: 'other' };
  }

  async function serve(req: IncomingMessage, res: ServerResponse, content: Content | undefined, head: boolean, o: ServeOptions = {}): Promise<void> {
    if (content === undefined) {
      if (BLOB_PATH.test((req.url ?? '').split('?')[0]!)) sendError(res, 404, 'BLOB_UNKNOWN', 'blob unknown to registry', {}, head);
      else sendError(res, 404, 'MANIFEST_UNKNOWN', 'manifest unknown', {}, head);
      return;
    }
    const bytes = o.bytes ?? content.bytes;
    const headers = contentHeaders(content);
    let body = bytes;
    const range = content.mediaType || o.ignoreRange ? null : /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), bytes.length - 1) : bytes.length - 1;
      if (start >= bytes.length || start > end) {
        res.writeHead(416, { ...headers, 'content-range': `bytes */${bytes.length}` });
        res.end();
        return;
      }
      res.writeHead(206, { ...headers, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${bytes.length}` });
      body = bytes.subarray(start, end + 1);
    } else {
      res.writeHead(200, { ...headers, 'content-length': bytes.length });
    }
    if (head) {
      res.end();
      return;
    }
    if (o.chunkBytes === undefined && !o.cutHalfway) {
      res.end(body);
      return;
    }
    res.flushHeaders();
    const step = o.chunkBytes ?? 64 * 1024;
    for (let off = 0; off < body.length; off += step) {
      if (res.destroyed) return;
      if (o.cutHalfway && off >= body.length / 2) {
        res.destroy();
        return;
      }
      const chunk = body.subarray(off, off + step);
      if (off + step >= body.length) {
        res.end(chunk);
        return;
      }
      if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
      if (o.chunkDelayMs) await sleep(o.chunkDelayMs);
    }
    res.end();
  }

  /** Answers the token endpoint and the challenge; true when the request was answered here. */
  function challenged(req: IncomingMessage, res: ServerResponse, record: FakeRequest & { challenged?: boolean }): boolean {
    const c = fake.challenge;
    if (c === undefined) return false;
    const authorization = req.headers.authorization;
    if (c.scheme === 'bearer' && record.kind === 'token') {
      req.resume();
      if (authorization !== basic(c.username, c.password)) {
        res.writeHead(401).end();
        return true;
      }
      const token = c.token ?? `tok-${tokens.size + 1}`;
      tokens.add(token);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }));
      return true;
    }
    const ok = c.scheme === 'basic' ? authorization === basic(c.username, c.password) : authorization?.startsWith('Bearer ') && tokens.has(authorization.slice('Bearer '.length));
    if (ok) return false;
    record.challenged = true;
    req.resume();
    const challenge =
      c.scheme === 'basic' ? `Basic realm="${c.realm}"` : `Bearer realm="${c.realm ?? `${base}/token`}",service="${c.service}"${c.scope ? `,scope="${c.scope}"` : ''}`;
    sendError(res, 401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': challenge }, req.method === 'HEAD');
    return true;
  }

  function answer(req: IncomingMessage, res: ServerResponse, record: FakeRequest, content: Content | undefined, head: boolean): void {
    req.resume();
    const get = req.method === 'GET' || head;
    if (record.kind === 'ping') {
      const body = fake.ping.status === 200 ? '{}' : JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
      res.writeHead(fake.ping.status, { 'content-type': 'application/json', 'content-length': body.length, 'docker-distribution-api-version': 'registry/2.0', ...fake.ping.headers });
      res.end(head ? undefined : body);
    } else if (record.kind === 'tags' && get) {
      const name = record.name!;
      const list = [...tags.keys()].filter((k) => k.startsWith(`${name}:`)).map((k) => k.slice(name.length + 1)).sort();
      if (list.length === 0) {
        sendError(res, 404, 'NAME_UNKNOWN', `fake registry: no repository ${name}`, {}, head);
        return;
      }
      const body = JSON.stringify({ name, tags: list });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0' });
      res.end(head ? undefined : body);
    } else if ((record.kind === 'blob' || record.kind === 'manifest') && get) {
      void serve(req, res, content, head);
    } else {
      sendError(res, 404, 'NOT_FOUND', `fake registry: nothing at ${req.method} ${record.path}`, {}, head);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const path = url.split('?')[0]!;
    const head = req.method === 'HEAD';
    const record: FakeRequest = { method: req.method ?? 'GET', url, path, ...classify(path), headers: req.headers, at: Date.now() };
    requests.push(record);
    res.on('close', () => {
      record.closedAt = Date.now();
      if (!res.writableFinished) record.closedEarlyAt = Date.now();
    });
    if (fake.delayMs > 0) await sleep(fake.delayMs);
    if (challenged(req, res, record)) return;
    const content = record.digest !== undefined ? contents.get(record.digest) : undefined;
    const hook = fake.hook;
    if (hook) {
      const exchange: Exchange = {
        req,
        res,
        record,
        ...(content ? { content } : {}),
        head,
        serve: (o) => serve(req, res, content, head, o),
        fail: (status, code, message, headers) => sendError(res, status, code, message, headers, head),
      };
      if ((await hook(exchange)) === true) return;
    }
    answer(req, res, record, content, head);
  }

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((err: Error) => {
      if (!res.headersSent) sendError(res, 500, 'UNKNOWN', `fake registry: ${err.message}`);
      else res.destroy(err);
    });
  };
  const serverOptions = options.maxHeaderSize ? { maxHeaderSize: options.maxHeaderSize } : {};
  const server: Server = options.tls ? createHttpsServer({ ...serverOptions, cert: options.tls.cert, key: options.tls.key }, listener) : createServer(serverOptions, listener);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((res, rej) => server.once('error', rej).listen(0, '127.0.0.1', () => res()));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('fake registry: no address');
  const host = `127.0.0.1:${address.port}`;
  base = `${options.tls ? 'https' : 'http'}://${host}`;

  const fake: FakeRegistry = {
    url: base,
    host,
    server,
    requests,
    challenge: options.challenge,
    hook: options.hook,
    delayMs: 0,
    ping: { status: 200, headers: {} },
    addBlob(bytes) {
      const digest = sha256(bytes);
      contents.set(digest, { digest, bytes });
      return digest;
    },
    addManifest(bytes, o = {}) {
      const digest = o.digest ?? sha256(bytes);
      let mediaType = o.mediaType;
      if (mediaType === undefined) {
        try {
          mediaType = (JSON.parse(bytes.toString()) as { mediaType?: string }).mediaType;
        } catch {
          // not JSON: served as it is
        }
      }
      contents.set(digest, { digest, bytes, mediaType: mediaType ?? OCI_MANIFEST });
      if (o.name !== undefined && o.tag !== undefined) tags.set(`${o.name}:${o.tag}`, digest);
      return digest;
    },
    tag(name, tag, digest) {
      tags.set(`${name}:${tag}`, digest);
    },
    content: (digest) => contents.get(digest),
    count: (digest, method) => requests.filter((r) => r.digest === digest && !r.challenged && (method === undefined || r.method === method)).length,
    sleep,
    async stop() {
      for (const [t, resolve] of sleeps) {
        clearTimeout(t);
        resolve();
      }
      sleeps.clear();
      const closed = new Promise<void>((res) => server.close(() => res()));
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
  return fake;
}
