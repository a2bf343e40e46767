/**
 * The cache node's namespace: the same `Namespace` interface as a plain registry, so the HTTP layer does
 * not know whether it serves a registry or a cache. Blobs are served from local storage and filled from
 * the upstreams on a miss; manifests and tags are passed through to the upstreams, never stored (the DTR
 * server serves manifests from the origin, so they are never stale).
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import {
  Digest,
  isPathNotFound,
  MANIFEST_MAX_BYTES,
  MANIFEST_MEDIA_TYPES,
  readManifest,
  paths,
  RegistryError,
  type BlobDescriptor,
  type BlobStore,
  type BlobUpload,
  openStored,
  resolveRange,
  servedFrom,
  type ServedBlob,
  streamBody,
  type Descriptor,
  type ManifestStore,
  type Namespace,
  type ParsedManifest,
  type Repository,
  type RequestContext,
  type StorageDriver,
  type TagStore,
} from '@cascade/registry-core';
import { FillManager, type Fill, type FillManagerOptions, type FillSource } from './fill.js';
import type { RegionCoordinator } from './region/coordinator.js';
import { blobPath, describeError, type UpstreamBlobResponse, type UpstreamPool } from './upstream.js';

/** How long the upstream's answer to an anonymous `GET /v2/` is reused (`auth: passthrough`). */
const PING_CACHE_MS = 30_000;

/** Records accesses and protects blobs being served (see expiry.ts); optional. */
export interface AccessTracker {
  /** `fill` when the blob was just stored (it counts towards the disk total), `hit` when it was served. */
  touch(digest: Digest, size: number, access?: 'hit' | 'fill'): void;
  pin(digest: Digest): () => void;
}

/** Counters of a cache node, logged periodically. */
export interface CacheMetrics {
  hits: number;
  misses: number;
  bytesFromDisk: number;
  bytesFromUpstream: number;
  /** Of those, the bytes a fill's native pump received, hashed and wrote off the JavaScript thread. */
  bytesPumped: number;
  /** Blob bytes sent to clients in full answers (hits and misses alike; not the far-ahead ranges fetched directly). */
  bytesServed: number;
  fillsCompleted: number;
  fillsFailed: number;
  /** Fills that failed on this node's own storage (disk full, I/O error), not on the upstream. */
  storageErrors: number;
  rangePassthrough: number;
}

/** Options of {@link CacheNamespace}. */
export interface CacheNamespaceOptions {
  readonly driver: StorageDriver;
  readonly upstreams: UpstreamPool;
  readonly logger: Logger;
  readonly fillTimeoutMs?: number;
  readonly tracker?: AccessTracker;
  /** Forward the client's Authorization upstream on a miss (`auth: passthrough`). */
  readonly forwardAuthorization: boolean;
  /**
   * A range that starts more than this many bytes past what a running fill has written is fetched from
   * upstream directly instead of waiting (default 8 MiB).
   */
  readonly rangeAheadBytes?: number;
  /** The region of nodes this one fills with (see region/coordinator.ts). */
  readonly region?: RegionCoordinator;
  /** A mirror's sources by key, for fills taken over from another node of the region (see `FillManagerOptions`). */
  readonly resolveSource?: FillManagerOptions['resolveSource'];
}

/** A registry namespace that is a cache of its upstreams. */
export class CacheNamespace implements Namespace {
  readonly fills: FillManager;
  readonly metrics: CacheMetrics = { hits: 0, misses: 0, bytesFromDisk: 0, bytesFromUpstream: 0, bytesPumped: 0, bytesServed: 0, fillsCompleted: 0, fillsFailed: 0, storageErrors: 0, rangePassthrough: 0 };

  constructor(readonly options: CacheNamespaceOptions) {
    this.fills = new FillManager({
      driver: options.driver,
      upstreams: options.upstreams,
      logger: options.logger,
      ...(options.fillTimeoutMs !== undefined ? { fillTimeoutMs: options.fillTimeoutMs } : {}),
      ...(options.region ? { region: options.region } : {}),
      ...(options.resolveSource ? { resolveSource: options.resolveSource } : {}),
      onCommitted: (digest, size) => {
        this.metrics.fillsCompleted += 1;
        options.tracker?.touch(digest, size, 'fill');
      },
      onFailed: (_digest, _reason, cause) => {
        this.metrics.fillsFailed += 1;
        if (cause === 'storage') this.metrics.storageErrors += 1;
      },
      onUpstreamBytes: (n, pumped) => {
        this.metrics.bytesFromUpstream += n;
        if (pumped) this.metrics.bytesPumped += n;
      },
    });
  }

  repository(name: string, ctx?: RequestContext): Repository {
    const headers = this.upstreamHeaders(ctx);
    return {
      name,
      blobs: new CacheBlobStore(this, name, headers),
      manifests: new PassthroughManifestStore(this.options.upstreams, name, headers),
      tags: new PassthroughTagStore(this.options.upstreams, name, headers),
    };
  }

  /**
   * `GET /v2/` with `auth: passthrough`: answered as the upstream answers it, with the client's credentials,
   * so that a client configured for the origin works unchanged through the cache (an origin that needs a
   * password gets its challenge to the client, which then sends its credentials; a 200 with no challenge
   * would make docker and skopeo pull anonymously and fail on the first manifest). The upstream's answer to
   * anonymous requests is remembered for {@link PING_CACHE_MS}. With no upstream reachable the cache answers
   * 200 itself (its stored blobs can still be served; `/ready` says the upstream is down).
   */
  async ping(ctx: RequestContext): Promise<void> {
    if (!this.options.forwardAuthorization) return;
    const headers = this.upstreamHeaders(ctx);
    const anonymous = headers.authorization === undefined;
    if (anonymous && this.anonymousPing && this.anonymousPing.until > Date.now()) {
      if (this.anonymousPing.error) throw this.anonymousPing.error;
      return;
    }
    let error: RegistryError | undefined;
    try {
      const res = await this.options.upstreams.fetch({ method: 'GET', path: '/v2/', headers, ...(ctx.signal ? { signal: ctx.signal } : {}) }, 'NOT_FOUND');
      res.body.resume();
    } catch (err) {
      if (!(err instanceof RegistryError)) throw err;
      if (err.code === 'UNAUTHORIZED' || err.code === 'DENIED') error = err;
      else this.options.logger.debug({ reason: err.message }, 'upstream did not answer the version check; answering it here');
    }
    if (anonymous) this.anonymousPing = { until: Date.now() + PING_CACHE_MS, ...(error ? { error } : {}) };
    if (error) throw error;
  }

  private anonymousPing: { until: number; error?: RegistryError } | undefined;

  async catalog(): Promise<string[]> {
    // A cache keeps blobs, not repositories: it has nothing to list.
    return [];
  }

  /** Removes partial fills left by a previous process. */
  recover(): Promise<void> {
    return this.fills.recover();
  }

  async close(): Promise<void> {
    await this.fills.close();
    this.options.upstreams.close();
  }

  private upstreamHeaders(ctx: RequestContext | undefined): Record<string, string> {
    const out: Record<string, string> = {};
    const auth = ctx?.forward?.authorization;
    if (this.options.forwardAuthorization && auth) out.authorization = auth;
    const grant = ctx?.forward?.['x-cascade-grant'];
    if (grant) out['x-cascade-grant'] = grant;
    return out;
  }
}

/**
 * Blobs served from local storage, filled from upstream on a miss. `source` (a mirror's remote) replaces the
 * node's upstreams; `onFill` sees every fill a request starts or joins (a mirror links the blob once stored).
 */
export class CacheBlobStore implements BlobStore {
  private readonly upstreams: UpstreamPool;

  constructor(
    private readonly cache: CacheNamespace,
    private readonly name: string,
    private readonly headers: Readonly<Record<string, string>>,
    private readonly source?: FillSource,
    private readonly onFill?: (fill: Fill) => void,
  ) {
    this.upstreams = source?.upstreams ?? cache.options.upstreams;
  }

  /**
   * The blob's size without starting anything: from the disk, a running fill, or the upstream's answer to a
   * HEAD.
   */
  async stat(digest: Digest, ctx?: RequestContext): Promise<BlobDescriptor> {
    const local = await statBlob(this.cache.options.driver, digest);
    if (local !== undefined) return { digest, size: local };
    const running = this.cache.fills.get(digest);
    if (running) return { digest, size: await running.waitReady(ctx?.signal) };
    return { digest, size: await this.upstreamSize(digest, ctx) };
  }

  /**
   * A GET or HEAD: from the disk when the blob is there (one open), else from its fill, started or joined
   * once. A HEAD starts no fill: it asks the upstream for the size. A range far ahead of a running fill is
   * fetched from the upstream directly.
   */
  async serve(digest: Digest, ctx: RequestContext): Promise<ServedBlob> {
    const { driver, tracker } = this.cache.options;
    const metrics = this.cache.metrics;
    const stored = await openStored(driver, paths.blobData(digest), ctx.signal);
    if (stored) {
      // A body being read is pinned against expiry, and counts as an access; a HEAD is neither.
      let release: (() => void) | undefined;
      const served = servedFrom(stored, ctx, (complete) => {
        release?.();
        if (!complete) return;
        metrics.bytesFromDisk += served.body?.length ?? 0;
        metrics.bytesServed += served.body?.length ?? 0;
      });
      if (served.body) {
        metrics.hits += 1;
        tracker?.touch(digest, stored.size);
        release = tracker?.pin(digest);
      }
      return served;
    }
    const running = this.cache.fills.get(digest);
    if (!running && ctx.method === 'HEAD') return { size: await this.upstreamSize(digest, ctx) };
    if (!running && ctx.range && this.cache.fills.failedRecently(digest)) {
      // A downstream cache resuming what this node just failed to fill (after its own resumes).
      throw new RegistryError('UPSTREAM_FAILED', "this blob's fill failed on the upstream moments ago: a range of it is not fetched again yet");
    }
    const fill = running ?? this.cache.fills.start(this.name, digest, this.headers, this.source);
    this.onFill?.(fill);
    // A fill whose bytes were all here and verified when this request joined it (being synced into place)
    // serves like a hit.
    const hit = fill.verified;
    const size = await fill.waitReady(ctx.signal);
    const range = resolveRange(ctx.range, size);
    const start = range?.start ?? 0;
    const end = range?.end ?? size - 1;
    if (ctx.method === 'HEAD' || end < start) return { size, ...(range ? { range } : {}) };
    if (hit) metrics.hits += 1;
    else metrics.misses += 1;
    if (range && fill.state === 'filling' && start > fill.written + (this.cache.options.rangeAheadBytes ?? 8 << 20)) {
      // Far ahead of the fill: ask upstream for the range instead of waiting for the bytes before it.
      metrics.rangePassthrough += 1;
      const res = await this.upstreams.fetch({ method: 'GET', path: blobPath(this.name, digest), headers: { ...this.headers, range: `bytes=${start}-${end}` }, ...(ctx.signal ? { signal: ctx.signal } : {}) });
      if (res.status !== 206) {
        res.body.destroy();
        throw new RegistryError('UPSTREAM_FAILED', 'upstream ignored the range request');
      }
      return { size, range, body: streamBody(end - start + 1, () => res.body, () => res.body.destroy()) };
    }
    // Pinned while it is sent, as a hit is: the fill may commit the blob while a slow client still reads it,
    // and a sweeper (of this node or, in a region, another one) must not remove it from under that client.
    const release = tracker?.pin(digest);
    const body = fill.body(start, end, (complete) => {
      release?.();
      if (!complete) return;
      if (hit) metrics.bytesFromDisk += end - start + 1;
      metrics.bytesServed += end - start + 1;
    });
    return { size, ...(range ? { range } : {}), body };
  }

  /** The size the upstream gives in its answer to a HEAD of the blob. */
  private async upstreamSize(digest: Digest, ctx?: RequestContext): Promise<number> {
    const res = await this.upstreams.fetch({ method: 'HEAD', path: blobPath(this.name, digest), headers: this.headers, ...(ctx?.signal ? { signal: ctx.signal } : {}) });
    res.body.resume();
    if (res.size === undefined) throw new RegistryError('UPSTREAM_FAILED', 'upstream did not give the blob size');
    return res.size;
  }

  createUpload(): Promise<BlobUpload> {
    return Promise.reject(readOnly());
  }

  getUpload(): Promise<BlobUpload> {
    return Promise.reject(readOnly());
  }

  mount(): Promise<BlobDescriptor | undefined> {
    return Promise.reject(readOnly());
  }

  delete(): Promise<void> {
    return Promise.reject(readOnly());
  }
}

/** The Accept header of manifest requests upstream: every manifest and index type. */
export const MANIFEST_ACCEPT = [...MANIFEST_MEDIA_TYPES].join(', ');

/**
 * The manifest in an upstream's answer to a GET by `digest`, once its bytes hash to that digest.
 * @throws RegistryError UNAVAILABLE (502) when they do not: the upstream sent something else.
 */
export async function verifiedManifest(res: UpstreamBlobResponse, digest: Digest): Promise<ParsedManifest> {
  const bytes = await readLimited(res.body, MANIFEST_MAX_BYTES);
  const actual = Digest.of(bytes, digest.algorithm);
  if (!actual.equals(digest)) {
    throw new RegistryError('UPSTREAM_FAILED', `upstream ${res.host.url} sent a manifest whose digest is ${actual.toString()}, not ${digest.toString()}`);
  }
  const contentType = typeof res.headers['content-type'] === 'string' ? res.headers['content-type'] : undefined;
  return readManifest(bytes, digest, contentType);
}

/** The descriptors of an upstream's answer to a referrers request (an image index). */
export async function referrersOf(res: UpstreamBlobResponse): Promise<Descriptor[]> {
  const index = JSON.parse((await readLimited(res.body, MANIFEST_MAX_BYTES)).toString('utf8')) as { manifests?: Descriptor[] };
  return Array.isArray(index.manifests) ? index.manifests : [];
}

/** Manifests read from the upstreams on every request, verified against their digest, never stored. */
class PassthroughManifestStore implements ManifestStore {
  constructor(
    private readonly upstreams: UpstreamPool,
    private readonly name: string,
    private readonly headers: Readonly<Record<string, string>>,
  ) {}

  async get(digest: Digest): Promise<ParsedManifest> {
    const res = await this.upstreams.fetch(
      { method: 'GET', path: `/v2/${this.name}/manifests/${digest.toString()}`, headers: { ...this.headers, accept: MANIFEST_ACCEPT } },
      'MANIFEST_UNKNOWN',
    );
    return verifiedManifest(res, digest);
  }

  async exists(digest: Digest): Promise<boolean> {
    try {
      const res = await this.upstreams.fetch({ method: 'HEAD', path: `/v2/${this.name}/manifests/${digest.toString()}`, headers: { ...this.headers, accept: MANIFEST_ACCEPT } }, 'MANIFEST_UNKNOWN');
      res.body.resume();
      return true;
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'MANIFEST_UNKNOWN') return false;
      throw err;
    }
  }

  put(): Promise<void> {
    return Promise.reject(readOnly());
  }

  delete(): Promise<string[]> {
    return Promise.reject(readOnly());
  }

  async referrers(digest: Digest, artifactType?: string): Promise<Descriptor[]> {
    const query = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : '';
    try {
      return await referrersOf(await this.upstreams.fetch({ method: 'GET', path: `/v2/${this.name}/referrers/${digest.toString()}${query}`, headers: this.headers }, 'NOT_FOUND'));
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'NOT_FOUND') return [];
      throw err;
    }
  }
}

/** Tags resolved by the upstreams on every request. */
class PassthroughTagStore implements TagStore {
  constructor(
    private readonly upstreams: UpstreamPool,
    private readonly name: string,
    private readonly headers: Readonly<Record<string, string>>,
  ) {}

  async resolve(tag: string): Promise<Digest> {
    const res = await this.upstreams.fetch({ method: 'HEAD', path: `/v2/${this.name}/manifests/${tag}`, headers: { ...this.headers, accept: MANIFEST_ACCEPT } }, 'MANIFEST_UNKNOWN');
    res.body.resume();
    const header = res.headers['docker-content-digest'];
    const digest = typeof header === 'string' ? Digest.tryParse(header) : undefined;
    if (!digest) throw new RegistryError('UPSTREAM_FAILED', `upstream ${res.host.url} did not send Docker-Content-Digest for ${this.name}:${tag}`);
    return digest;
  }

  tag(): Promise<void> {
    return Promise.reject(readOnly());
  }

  untag(): Promise<void> {
    return Promise.reject(readOnly());
  }

  async list(): Promise<string[]> {
    const res = await this.upstreams.fetch({ method: 'GET', path: `/v2/${this.name}/tags/list`, headers: this.headers }, 'NAME_UNKNOWN');
    const body = JSON.parse((await readLimited(res.body, 16 << 20)).toString('utf8')) as { tags?: unknown };
    return Array.isArray(body.tags) ? body.tags.filter((t): t is string => typeof t === 'string').sort() : [];
  }
}

export async function statBlob(driver: StorageDriver, digest: Digest): Promise<number | undefined> {
  try {
    return (await driver.stat(paths.blobData(digest))).size;
  } catch (err) {
    if (isPathNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * The whole body of an upstream's answer, at most `limit` bytes.
 * @throws RegistryError UNAVAILABLE (502) when it is larger, or when the upstream cut it or broke its framing
 *   (never the stream's own error: that would be answered 500, as if this node had failed).
 */
export async function readLimited(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body) {
      total += (chunk as Buffer).length;
      if (total > limit) {
        body.destroy();
        throw new RegistryError('UPSTREAM_FAILED', `upstream response exceeds ${limit} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (err instanceof RegistryError) throw err;
    throw new RegistryError('UPSTREAM_FAILED', `the upstream's answer was cut or malformed after ${total} bytes: ${describeError(err)}`, { cause: err });
  }
  return Buffer.concat(chunks, total);
}

function readOnly(): RegistryError {
  return new RegistryError('UNSUPPORTED', 'this registry is a cache (downstream middleware): push to the origin registry');
}
