/**
 * Harness for the cache node (`cascade registry` with the `downstream` middleware) end-to-end tests:
 * starting origins and caches as "hops" whose access logs can be counted, fetching blobs with a streamed
 * sha256 (and telling a complete response from a truncated one), uploading blobs, and looking into a
 * node's storage folder (blob data files, leftovers of interrupted fills).
 *
 * A hop's access log is read the same way for Cascade (JSON lines with `msg: "request"`) and for
 * distribution (its combined-log lines `"GET /v2/... HTTP/1.1" 200 ...`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { CASCADE_BIN, startCascade, testScope, type CascadeProcess } from './cascade.js';

export { testScope };
import { fileDigest } from './image.js';
import { distributionRequests, startDistribution, type Distribution } from './peers.js';

export const MiB = 1 << 20;

/** `sha256:<hex>` of some bytes. */
export const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** One request seen by a hop. */
export interface AccessLine {
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  readonly query?: string;
  readonly status: number;
}


/** A registry process in a chain (an origin or a cache), whose access log can be counted. */
export interface Hop {
  readonly name: string;
  readonly kind: 'cascade' | 'distribution';
  /** `http(s)://127.0.0.1:PORT` */
  readonly url: string;
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly rootdirectory: string;
  /** The Cascade process (undefined for distribution). */
  readonly proc?: CascadeProcess;
  /** Every request logged so far, oldest first. */
  requests(): AccessLine[];
  /** Recent access lines and warnings, for assertion messages. */
  diagnostics(lines?: number): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

function cascadeLines(proc: CascadeProcess): AccessLine[] {
  return proc.requests().map((l) => ({
    method: String(l.method),
    path: String(l.path),
    ...(typeof l.query === 'string' ? { query: l.query } : {}),
    status: Number(l.status),
  }));
}

/** Wraps a running `cascade` process as a hop. */
export function cascadeHop(name: string, proc: CascadeProcess, rootdirectory: string): Hop {
  return {
    name,
    kind: 'cascade',
    url: proc.url,
    host: proc.host,
    rootdirectory,
    proc,
    requests: () => cascadeLines(proc),
    diagnostics(lines = 40) {
      const reqs = cascadeLines(proc).slice(-lines).map((r) => `  ${r.method} ${r.path}${r.query ? `?${r.query}` : ''} -> ${r.status}`);
      const other = proc.logs.filter((l) => l.msg !== 'request' && typeof l.level === 'number' && l.level >= 40).slice(-20).map((l) => `  ${JSON.stringify(l)}`);
      return [`--- ${name} (${proc.url}) access log, last ${reqs.length} ---`, ...reqs, `--- ${name} warnings/errors ---`, ...other, ...proc.text.slice(-10)].join('\n');
    },
    async stop(signal) {
      await proc.stop(signal);
    },
  };
}

/** Wraps a running distribution as a hop. */
export function distributionHop(name: string, d: Distribution): Hop {
  return {
    name,
    kind: 'distribution',
    url: d.url,
    host: d.host,
    rootdirectory: d.rootdirectory,
    requests: () => distributionRequests(d.output),
    diagnostics(lines = 40) {
      return [`--- ${name} (distribution ${d.url}) log, last ${lines} ---`, ...d.output.slice(-lines)].join('\n');
    },
    stop: () => d.stop(),
  };
}

/** Starts a plain `cascade registry` origin with filesystem storage in `dir/<name>/data`. */
export async function startCascadeOrigin(dir: string, name = 'origin', extra: Record<string, unknown> = {}): Promise<Hop> {
  const home = join(dir, name);
  await mkdir(home, { recursive: true });
  const rootdirectory = join(home, 'data');
  const proc = await startCascade(home, { storage: { filesystem: { rootdirectory }, delete: { enabled: true } }, ...extra });
  return cascadeHop(name, proc, rootdirectory);
}

/** Starts distribution's `docker-registry` as an origin with its storage in `dir/<name>/data`. */
export async function startDistributionOrigin(dir: string, name = 'origin'): Promise<Hop> {
  const rootdirectory = join(dir, name, 'data');
  await mkdir(rootdirectory, { recursive: true });
  return distributionHop(name, await startDistribution({ rootdirectory, deleteEnabled: true }));
}

/** The options of one cache node. */
export interface CacheOptions {
  /** `originhost`. */
  origin: string;
  upstreamhosts?: string[];
  cas?: string[];
  /** Default 24h. */
  blobttl?: string;
  /** Any other `downstream` option (`filltimeout`, `sweepinterval`, `maxsize`, `auth`...). */
  options?: Record<string, unknown>;
  /** Extra top-level config (`log`, `http`...). */
  config?: Record<string, unknown>;
  env?: Record<string, string>;
}

/** The config object of a cache node with storage in `rootdirectory`. */
export function cacheConfig(rootdirectory: string, o: CacheOptions): Record<string, unknown> {
  const upstream: Record<string, unknown> = { originhost: o.origin };
  if (o.upstreamhosts) upstream.upstreamhosts = o.upstreamhosts;
  if (o.cas) upstream.cas = o.cas;
  return {
    storage: { delete: { enabled: true }, filesystem: { rootdirectory } },
    middleware: {
      registry: [{ name: 'downstream', options: { blobttl: o.blobttl ?? '24h', upstreams: [upstream], ...(o.options ?? {}) } }],
    },
    ...(o.config ?? {}),
  };
}

/**
 * Starts `cascade registry` as a cache node with its config and storage in `dir/<name>/`. Calling it
 * again with the same `dir`, `name` and options restarts the node on the same storage (new port).
 */
export async function startCacheNode(dir: string, name: string, o: CacheOptions): Promise<Hop> {
  const home = join(dir, name);
  await mkdir(home, { recursive: true });
  const rootdirectory = join(home, 'data');
  const proc = await startCascade(home, cacheConfig(rootdirectory, o), o.env ? { env: o.env } : {});
  return cascadeHop(name, proc, rootdirectory);
}

/** Requests for `/v2/<any name>/blobs/<digest>` (optionally of one method). */
export function blobRequests(hop: Hop, digest: string, method?: string): AccessLine[] {
  return hop.requests().filter((r) => r.path.endsWith(`/blobs/${digest}`) && (method === undefined || r.method === method));
}

/** Requests other than the `/v2/` ping and the {@link settle} markers. */
export function contentRequests(hop: Hop): AccessLine[] {
  return hop.requests().filter((r) => r.path !== '/v2/' && r.path !== '/v2');
}

/**
 * Waits until everything `hop` has answered so far is in its access log: sends a marker request
 * (`GET /v2/?settle=<id>`) and waits for its line (access lines are written in completion order and
 * Cascade's logger is asynchronous).
 */
export async function settle(hop: Hop, timeoutMs = 5000): Promise<void> {
  const id = randomUUID();
  // node:https without verification: the marker only needs to reach the hop, whatever its certificate
  await fetchBlob(`${hop.url}/v2/?settle=${id}`, { insecure: true, timeoutMs: timeoutMs });
  await waitFor(`${hop.name}: settle marker in its access log`, () => hop.requests().some((r) => r.query?.includes(id)), timeoutMs);
}

/** Polls `probe` every `intervalMs` until it returns a truthy value; throws after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 10_000, intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** The result of one blob request. */
export interface BlobResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** sha256 of every body byte received. */
  readonly digest: string;
  /** Body bytes received. */
  readonly size: number;
  /** The body, when it is at most `keepBody` bytes (default 1 MiB). */
  readonly body?: Buffer;
  /** True when the body ended normally (not aborted, not reset, not shorter than Content-Length). */
  readonly complete: boolean;
  /** The error that cut the response short, if any. */
  readonly error?: string;
  /** Milliseconds from the request to the first body byte (undefined when no byte came). */
  readonly firstByteMs?: number;
  readonly totalMs: number;
}

/**
 * GET (or HEAD) `url` with node:http(s), hashing the body as it streams (memory stays flat for big blobs).
 * Never throws for HTTP or transport errors: a reset before the headers gives `status: 0`.
 */
export function fetchBlob(
  url: string,
  options: { method?: 'GET' | 'HEAD'; headers?: Record<string, string>; keepBody?: number; timeoutMs?: number; onData?: (received: number) => void; ca?: string; insecure?: boolean; signal?: AbortSignal } = {},
): Promise<BlobResponse> {
  const started = Date.now();
  const keep = options.keepBody ?? MiB;
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let size = 0;
    let firstByteMs: number | undefined;
    const chunks: Buffer[] = [];
    let status = 0;
    let headers: IncomingHttpHeaders = {};
    let done = false;
    const finish = (complete: boolean, error?: string) => {
      if (done) return;
      done = true;
      const declared = Number(headers['content-length']);
      const short = options.method !== 'HEAD' && Number.isFinite(declared) && status !== 0 && size !== declared;
      resolve({
        status,
        headers,
        digest: `sha256:${hash.digest('hex')}`,
        size,
        ...(size <= keep ? { body: Buffer.concat(chunks) } : {}),
        complete: complete && !short,
        ...(error ? { error } : short ? { error: `body of ${size} bytes, Content-Length ${declared}` } : {}),
        ...(firstByteMs !== undefined ? { firstByteMs } : {}),
        totalMs: Date.now() - started,
      });
    };
    const doRequest = url.startsWith('https:') ? httpsRequest : httpRequest;
    const req = doRequest(url, { method: options.method ?? 'GET', headers: options.headers ?? {}, agent: false, ...(options.ca ? { ca: options.ca } : {}), ...(options.insecure ? { rejectUnauthorized: false } : {}), ...(options.signal ? { signal: options.signal } : {}) }, (res) => {
      status = res.statusCode ?? 0;
      headers = res.headers;
      res.on('data', (chunk: Buffer) => {
        if (firstByteMs === undefined) firstByteMs = Date.now() - started;
        hash.update(chunk);
        size += chunk.length;
        if (size <= keep) chunks.push(chunk);
        options.onData?.(size);
      });
      res.on('end', () => finish(!res.readableAborted));
      res.on('aborted', () => finish(false, 'aborted'));
      res.on('error', (err) => finish(false, err.message));
      res.on('close', () => finish(res.complete, res.complete ? undefined : 'closed before the end'));
    });
    req.on('error', (err) => finish(false, err.message));
    if (options.timeoutMs) req.setTimeout(options.timeoutMs, () => req.destroy(new Error(`timeout after ${options.timeoutMs} ms`)));
    req.end();
  });
}

/** `<url>/v2/<name>/blobs/<digest>` */
export const blobUrl = (base: string, name: string, digest: string): string => `${base}/v2/${name}/blobs/${digest}`;

/** GETs a blob and asserts a complete 200 whose bytes hash to `digest`. */
export async function assertBlob(hop: Hop | string, name: string, digest: string, size?: number, context = ''): Promise<BlobResponse> {
  const base = typeof hop === 'string' ? hop : hop.url;
  const res = await fetchBlob(blobUrl(base, name, digest));
  const where = `GET ${blobUrl(base, name, digest)}${context ? ` (${context})` : ''}`;
  const diag = typeof hop === 'string' ? '' : `\n${hop.diagnostics()}`;
  assert.equal(res.status, 200, `${where} -> ${res.status} ${res.body?.toString().slice(0, 500) ?? ''}${diag}`);
  assert.ok(res.complete, `${where}: response cut short: ${res.error} after ${res.size} bytes${diag}`);
  assert.equal(res.digest, digest, `${where}: the bytes received hash to ${res.digest}${diag}`);
  if (size !== undefined) assert.equal(res.size, size, `${where}: size`);
  return res;
}

/** The OCI error codes of a JSON error body (`{errors: [{code}]}`), or [] when it is not one. */
export function errorCodes(res: BlobResponse): string[] {
  try {
    const parsed = JSON.parse(res.body?.toString() ?? '') as { errors?: Array<{ code?: string }> };
    return (parsed.errors ?? []).map((e) => String(e.code));
  } catch {
    return [];
  }
}

/** Uploads `bytes` to `/v2/<name>/blobs/` with POST + PUT (works with Cascade and distribution). */
export async function pushBlob(base: string, name: string, bytes: Buffer): Promise<string> {
  const digest = sha256(bytes);
  const start = await fetch(`${base}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  await start.arrayBuffer();
  assert.equal(start.status, 202, `POST ${base}/v2/${name}/blobs/uploads/ -> ${start.status}`);
  const location = new URL(start.headers.get('location') ?? '', base);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
  const text = await put.text();
  assert.equal(put.status, 201, `PUT ${location} -> ${put.status}: ${text}`);
  return digest;
}

/** Deterministic pseudo-random bytes (fast, incompressible). */
export function randomBlob(seed: string, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let block = createHash('sha256').update(seed).digest();
  for (let off = 0; off < size; off += block.length) {
    block.copy(out, off, 0, Math.min(block.length, size - off));
    if (off + block.length < size) block = createHash('sha256').update(block).update(seed).digest();
  }
  return out;
}

/** `<root>/docker/registry/v2/blobs/sha256/<2>/<hex>/data`, where distribution (and Cascade) keep a blob. */
export function blobDataPath(rootdirectory: string, digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return join(rootdirectory, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

/** True when the blob's data file exists in the node's storage folder. */
export async function hasBlobData(rootdirectory: string, digest: string): Promise<boolean> {
  return stat(blobDataPath(rootdirectory, digest)).then(
    () => true,
    () => false,
  );
}

/** Every regular file under `dir`, as paths relative to it, sorted ([] when `dir` is missing). */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string): Promise<void> {
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(dir, p));
    }
  }
  await walk(dir);
  return out.sort();
}

/**
 * Asserts that every blob data file in a node's storage hashes to its own name: nothing partial or
 * corrupt is stored. Returns the digests found.
 */
export async function assertStoreIntegrity(rootdirectory: string): Promise<string[]> {
  // A cache sends the last byte once the digest is verified, then syncs and moves the file into place: a
  // blob a client just received may still be on its way into storage. Give such commits a moment.
  const fills = join(rootdirectory, 'docker/registry/v2/_cascade_fills');
  for (const deadline = Date.now() + 2000; Date.now() < deadline && (await listFiles(fills)).length > 0; ) await new Promise((r) => setTimeout(r, 25));
  const found: string[] = [];
  for (const f of await listFiles(join(rootdirectory, 'docker/registry/v2/blobs'))) {
    const m = /^sha256\/([0-9a-f]{2})\/([0-9a-f]{64})\/data$/.exec(f);
    if (!m) continue;
    const actual = await fileDigest(join(rootdirectory, 'docker/registry/v2/blobs', f));
    assert.equal(actual, `sha256:${m[2]}`, `${rootdirectory}: blob data file ${f} holds bytes that hash to ${actual}`);
    found.push(actual);
  }
  return found;
}

/**
 * Files that look like leftovers of an interrupted write: Cascade's `_cascade/tmp/` and the cache's fill
 * folder (`_cascade_fills/`), `*.tmp`, `*.part*`, upload folders.
 */
export async function tempLeftovers(rootdirectory: string): Promise<string[]> {
  return (await listFiles(rootdirectory)).filter(
    (f) => f.startsWith('_cascade/tmp/') || /\.(tmp|part|partial)$/.test(f) || /(^|\/)(_uploads|_cascade_fills|tmp|partial|partials|fills)\//.test(f),
  );
}

/** Every file under the storage root whose path names `digest` (its hex), whatever the layout. */
export async function filesNaming(rootdirectory: string, digest: string): Promise<string[]> {
  const hex = digest.replace(/^sha256:/, '');
  return (await listFiles(rootdirectory)).filter((f) => f.includes(hex));
}

/** Runs `cascade ARGS...` to completion (for commands expected to exit, e.g. on a config error). */
export function runCascadeCommand(args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CASCADE_BIN, ...args], { env: { ...process.env, ...env }, timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Writes a cache node's config to `dir/<name>.yml` and runs `cascade registry` on it to completion. */
export async function runCacheExpectingExit(dir: string, name: string, o: CacheOptions, timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string; file: string }> {
  const file = join(dir, `${name}.yml`);
  const config = cacheConfig(join(dir, name, 'data'), o);
  await writeFile(file, stringify({ version: '0.1', http: { addr: '127.0.0.1:0' }, ...config }));
  return { ...(await runCascadeCommand(['registry', file], {}, timeoutMs)), file };
}
