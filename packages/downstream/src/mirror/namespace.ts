/**
 * Mirror mode's namespace: one node in front of several remote registries, plus local repositories.
 *
 * A request is routed to a remote by containerd's `?ns=<host>`, sealer's `domain` header, a path prefix
 * (`/v2/<remote name>/<repository>`), or else to the default remote; names under a `proxy.local` prefix
 * are local repositories (pushes accepted). A host that is not a configured remote is refused, never
 * contacted.
 *
 * Proxied content is stored under `<remote name>/<repository>` in distribution's layout:
 * - manifests by digest are stored once fetched (and verified) and never asked for again while stored; with
 *   `ttl`, one not served for that long is removed like a blob, and fetched again when next asked for;
 * - a tag is checked with a HEAD (which Docker Hub does not count against its pull limit) at most once per
 *   `revalidate`, and the manifest is fetched only when the digest changed; with the remote down, or
 *   answering 429/5xx, the stored tag is served with a `Warning` header;
 * - blobs go through the cache node's fills (single flight, digest verified, TTL). A blob is linked in the
 *   repository it was fetched for; the same bytes asked for in another repository are served from disk only
 *   once that repository's remote confirmed, with a HEAD, that the repository has them.
 *
 * In a region (`proxy.region`), the nodes share the folder, the fills (a fill records its remote and repository)
 * and the expiry state, as a cache node's region does.
 */
import type { Logger } from 'pino';
import {
  CASCADE_DIRS,
  Digest,
  isPathNotFound,
  MANIFEST_MAX_BYTES,
  paths,
  readManifest,
  RegistryError,
  type BlobDescriptor,
  type BlobStore,
  type BlobUpload,
  type ServedBlob,
  type Descriptor,
  type ManifestStore,
  type Namespace,
  type ParsedManifest,
  type Repository,
  type RequestContext,
  type StorageDriver,
  type StorageNamespace,
  type StorageRepository,
  type TagStore,
} from '@cascade/registry-core';
import { CacheBlobStore, MANIFEST_ACCEPT, readLimited, referrersOf, statBlob, verifiedManifest, type CacheNamespace } from '../cache.js';
import type { ExpiryIndex } from '../expiry.js';
import type { Fill } from '../fill.js';
import type { UpstreamBlobResponse, UpstreamPool, UpstreamRequest } from '../upstream.js';
import type { MirrorOptions, MirrorRemote } from './options.js';
import type { RemoteAuth } from './remote-auth.js';

/** Marks blobs pushed to local repositories, which expiry must keep: `<dir>/<alg>/<hex>`. */
export const LOCAL_BLOBS_DIR = CASCADE_DIRS.local;

/** The path of the marker of a blob pushed to a local repository. */
export function localBlobMarker(digest: Digest): string {
  return `${LOCAL_BLOBS_DIR}/${digest.algorithm}/${digest.hex}`;
}

/** The request header that lists the mirrors a request went through. */
export const VIA_HEADER = 'x-cascade-via';

const STALE_WARNING = '110 cascade "Response is Stale"';

/** A remote and what the mirror keeps about it at run time. */
export interface RemoteRuntime {
  readonly remote: MirrorRemote;
  readonly pool: UpstreamPool;
  readonly auth: RemoteAuth;
  /** When each `<repository>:<tag>` was last checked with the remote. */
  readonly checked: Map<string, number>;
  /** Tag checks in flight, shared by concurrent requests. */
  readonly checking: Map<string, Promise<Digest>>;
}

/** Counters of mirror mode, for metrics. */
export interface MirrorMetrics {
  tagChecks: number;
  tagFresh: number;
  tagStale: number;
  manifestFetches: number;
  manifestHits: number;
  refused: number;
  loops: number;
}

/** Options of {@link MirrorNamespace}. */
export interface MirrorNamespaceOptions {
  /** The mirror's `proxy` section, as loaded and checked. */
  readonly options: MirrorOptions;
  readonly storage: StorageNamespace;
  readonly driver: StorageDriver;
  /** Runs the fills and counts hits and misses. */
  readonly cache: CacheNamespace;
  readonly remotes: readonly RemoteRuntime[];
  /** This node's id in `X-Cascade-Via`. */
  readonly nodeId: string;
  readonly logger: Logger;
  readonly now?: () => number;
  /** Expiry of stored content by `proxy.ttl` (blobs through the cache's fills; manifests here). */
  readonly expiry?: ExpiryIndex;
}

type Route = { kind: 'local'; name: string } | { kind: 'remote'; runtime: RemoteRuntime; upstreamName: string };

/** The namespace of a mirror node. */
export class MirrorNamespace implements Namespace {
  readonly metrics: MirrorMetrics = { tagChecks: 0, tagFresh: 0, tagStale: 0, manifestFetches: 0, manifestHits: 0, refused: 0, loops: 0 };
  private readonly byName = new Map<string, RemoteRuntime>();
  private readonly byHost = new Map<string, RemoteRuntime>();
  private readonly defaultRuntime: RemoteRuntime | undefined;
  readonly now: () => number;

  constructor(readonly options: MirrorNamespaceOptions) {
    this.now = options.now ?? Date.now;
    for (const runtime of options.remotes) {
      this.byName.set(runtime.remote.name, runtime);
      for (const host of runtime.remote.hosts) this.byHost.set(host, runtime);
    }
    this.defaultRuntime = options.remotes.find((r) => r.remote === options.options.defaultRemote);
  }

  /** The expiry index, when `proxy.ttl` is set. */
  get expiry(): ExpiryIndex | undefined {
    return this.options.expiry;
  }

  /**
   * Records that a proxied manifest was stored or served: like blobs, a manifest not used for `ttl` is
   * removed, and fetched again (and checked against its digest) when it is next asked for.
   */
  touchManifest(manifest: ParsedManifest): void {
    this.options.expiry?.touch(manifest.digest, manifest.bytes.length, 'hit');
  }

  repository(name: string, ctx?: RequestContext): Repository {
    this.checkLoop(ctx);
    if (name === '') return this.options.storage.repository(name);
    const route = this.route(name, ctx?.registryHost);
    if (route.kind === 'local') return new LocalRepository(this.options.storage.repository(route.name), this.options.driver);
    const { remote } = route.runtime;
    if (remote.username !== undefined && !remote.anonymous && !ctx?.user) {
      this.metrics.refused += 1;
      throw new RegistryError('UNAUTHORIZED', `${remote.url} is a private remote of this mirror: sign in to pull from it`);
    }
    return new MirrorRepository(this, route.runtime, route.upstreamName, name, ctx);
  }

  catalog(n: number, last?: string): Promise<string[]> {
    return this.options.storage.catalog(n, last);
  }

  /** Which remote (or local repository) a client's name means. */
  route(name: string, registryHost: string | undefined): Route {
    if (registryHost) {
      const runtime = this.byHost.get(registryHost) ?? this.byName.get(registryHost);
      if (!runtime) {
        this.metrics.refused += 1;
        throw new RegistryError('DENIED', `this mirror does not proxy ${registryHost}; its remotes are ${this.remoteList()}`);
      }
      return { kind: 'remote', runtime, upstreamName: normalize(runtime.remote, name) };
    }
    if (this.options.options.local.some((p) => name === p || name.startsWith(`${p}/`))) return { kind: 'local', name };
    const slash = name.indexOf('/');
    if (slash > 0) {
      const first = name.slice(0, slash);
      const runtime = this.byName.get(first) ?? this.byHost.get(first);
      if (runtime) return { kind: 'remote', runtime, upstreamName: normalize(runtime.remote, name.slice(slash + 1)) };
    }
    if (this.defaultRuntime) return { kind: 'remote', runtime: this.defaultRuntime, upstreamName: normalize(this.defaultRuntime.remote, name) };
    this.metrics.refused += 1;
    throw new RegistryError(
      'NAME_UNKNOWN',
      `${name} is not a local repository${this.options.options.local.length > 0 ? ` (${this.options.options.local.join(', ')})` : ''} and names no remote: use <remote>/${name}, with <remote> one of ${this.remoteList()}`,
      { detail: { name } },
    );
  }

  /** The headers that go with every request to a remote: this node added to the request's `X-Cascade-Via`. */
  viaHeaders(ctx: RequestContext | undefined): Record<string, string> {
    const incoming = ctx?.forward?.[VIA_HEADER];
    return { [VIA_HEADER]: incoming ? `${incoming}, ${this.options.nodeId}` : this.options.nodeId };
  }

  private checkLoop(ctx: RequestContext | undefined): void {
    const via = ctx?.forward?.[VIA_HEADER];
    if (via && via.split(',').some((id) => id.trim() === this.options.nodeId)) {
      this.metrics.loops += 1;
      this.options.logger.error({ via }, 'request loop: this mirror is (through others) its own remote; check proxy remotes');
      throw new RegistryError('REQUEST_LOOP', 'request loop: this mirror is (directly or through other mirrors) its own remote; check its proxy remotes');
    }
  }

  private remoteList(): string {
    return this.options.remotes.map((r) => r.remote.name).join(', ');
  }
}

/** `alpine` on Docker Hub is `library/alpine`. */
function normalize(remote: MirrorRemote, name: string): string {
  return remote.dockerHub && !name.includes('/') ? `library/${name}` : name;
}

function readOnly(remote: MirrorRemote): RegistryError {
  return new RegistryError('UNSUPPORTED', `this repository is a mirror of ${remote.url}: push to a local repository of this mirror (proxy.local) or to the remote itself`);
}

/** The remote failed or could not be reached (a stored tag or referrers list may then be served, stale). */
function isUpstreamFailure(err: unknown): boolean {
  return err instanceof RegistryError && (err.code === 'UPSTREAM_FAILED' || err.code === 'UNAVAILABLE');
}

function isCode(err: unknown, code: string): boolean {
  return err instanceof RegistryError && err.code === code;
}

/** A proxied repository: `upstreamName` at the remote, `<remote>/<upstreamName>` in local storage. */
class MirrorRepository implements Repository {
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly tags: TagStore;
  readonly stored: StorageRepository;
  readonly headers: Record<string, string>;

  constructor(
    readonly mirror: MirrorNamespace,
    readonly runtime: RemoteRuntime,
    readonly upstreamName: string,
    readonly name: string,
    readonly ctx: RequestContext | undefined,
  ) {
    this.stored = mirror.options.storage.repository(`${runtime.remote.name}/${upstreamName}`);
    this.headers = mirror.viaHeaders(ctx);
    this.blobs = new MirrorBlobStore(this);
    this.manifests = new MirrorManifestStore(this);
    this.tags = new MirrorTagStore(this);
  }

  get remote(): MirrorRemote {
    return this.runtime.remote;
  }

  get log(): Logger {
    return this.mirror.options.logger;
  }

  /** A request to the remote; its refusals become this mirror's (the client cannot sign in to the remote). */
  async fetch(request: Omit<UpstreamRequest, 'headers'> & { headers?: Record<string, string> }, notFound: Parameters<UpstreamPool['fetch']>[1]): Promise<UpstreamBlobResponse> {
    try {
      return await this.runtime.pool.fetch({ ...request, headers: { ...this.headers, ...(request.headers ?? {}) } }, notFound);
    } catch (err) {
      if (isCode(err, 'UNAUTHORIZED') || isCode(err, 'DENIED')) {
        const how = this.remote.username !== undefined ? 'with the configured credentials' : `anonymously (configure credentials in ${this.remote.key})`;
        throw new RegistryError('DENIED', `${this.remote.url} refused access to ${this.upstreamName} ${how}`);
      }
      throw err;
    }
  }

  /** Fetches a manifest by digest, checks that its bytes hash to that digest, and stores it. */
  async fetchManifest(digest: Digest): Promise<ParsedManifest> {
    const res = await this.fetch({ method: 'GET', path: `/v2/${this.upstreamName}/manifests/${digest.toString()}`, headers: { accept: MANIFEST_ACCEPT } }, 'MANIFEST_UNKNOWN');
    let manifest: ParsedManifest;
    try {
      manifest = await verifiedManifest(res, digest);
    } catch (err) {
      this.log.warn({ remote: this.remote.url, repository: this.upstreamName, requested: digest.toString(), reason: (err as Error).message }, 'manifest from the remote refused (cut, malformed, or not matching its digest): not stored');
      throw err;
    }
    await this.stored.manifests.put(manifest, { checkReferences: false });
    this.mirror.touchManifest(manifest);
    this.mirror.metrics.manifestFetches += 1;
    return manifest;
  }
}

class MirrorManifestStore implements ManifestStore {
  constructor(private readonly repo: MirrorRepository) {}

  async get(digest: Digest): Promise<ParsedManifest> {
    try {
      const manifest = await this.repo.stored.manifests.get(digest);
      this.repo.mirror.touchManifest(manifest);
      this.repo.mirror.metrics.manifestHits += 1;
      return manifest;
    } catch (err) {
      if (!isCode(err, 'MANIFEST_UNKNOWN')) throw err;
    }
    return this.repo.fetchManifest(digest);
  }

  async exists(digest: Digest): Promise<boolean> {
    if (await this.repo.stored.manifests.exists(digest)) return true;
    try {
      const res = await this.repo.fetch({ method: 'HEAD', path: `/v2/${this.repo.upstreamName}/manifests/${digest.toString()}`, headers: { accept: MANIFEST_ACCEPT } }, 'MANIFEST_UNKNOWN');
      res.body.resume();
      return true;
    } catch (err) {
      if (isCode(err, 'MANIFEST_UNKNOWN')) return false;
      throw err;
    }
  }

  put(): Promise<void> {
    return Promise.reject(readOnly(this.repo.remote));
  }

  delete(): Promise<string[]> {
    return Promise.reject(readOnly(this.repo.remote));
  }

  async referrers(digest: Digest, artifactType?: string): Promise<Descriptor[]> {
    const query = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : '';
    try {
      return await referrersOf(await this.repo.fetch({ method: 'GET', path: `/v2/${this.repo.upstreamName}/referrers/${digest.toString()}${query}` }, 'NOT_FOUND'));
    } catch (err) {
      if (isCode(err, 'NOT_FOUND')) return [];
      // The remote is down: what this mirror stored is the best answer it has.
      if (isUpstreamFailure(err)) return this.repo.stored.manifests.referrers(digest, artifactType);
      throw err;
    }
  }
}

class MirrorTagStore implements TagStore {
  constructor(private readonly repo: MirrorRepository) {}

  async resolve(tag: string): Promise<Digest> {
    const { repo } = this;
    const { runtime, mirror } = repo;
    const key = `${repo.upstreamName}:${tag}`;
    const cached = await repo.stored.tags.resolve(tag).catch((err: unknown) => {
      if (isCode(err, 'MANIFEST_UNKNOWN')) return undefined;
      throw err;
    });
    const last = runtime.checked.get(key);
    if (cached && last !== undefined && mirror.now() - last < runtime.remote.revalidateMs) {
      mirror.metrics.tagFresh += 1;
      return cached;
    }
    let check = runtime.checking.get(key);
    if (!check) {
      check = this.check(tag, cached).finally(() => runtime.checking.delete(key));
      runtime.checking.set(key, check);
    }
    try {
      const digest = await check;
      runtime.checked.set(key, mirror.now());
      return digest;
    } catch (err) {
      if (cached && isUpstreamFailure(err)) {
        mirror.metrics.tagStale += 1;
        repo.log.warn({ remote: runtime.remote.url, repository: repo.upstreamName, tag, digest: cached.toString(), reason: (err as Error).message }, 'remote unavailable: serving the stored tag');
        if (repo.ctx?.responseHeaders) repo.ctx.responseHeaders['Warning'] = STALE_WARNING;
        return cached;
      }
      throw err;
    }
  }

  /** Asks the remote where `tag` points now; fetches and stores the manifest when it moved. */
  private async check(tag: string, cached: Digest | undefined): Promise<Digest> {
    const { repo } = this;
    repo.mirror.metrics.tagChecks += 1;
    const path = `/v2/${repo.upstreamName}/manifests/${tag}`;
    let digest: Digest | undefined;
    try {
      const res = await repo.fetch({ method: 'HEAD', path, headers: { accept: MANIFEST_ACCEPT } }, 'MANIFEST_UNKNOWN');
      res.body.resume();
      const header = res.headers['docker-content-digest'];
      digest = typeof header === 'string' ? Digest.tryParse(header) : undefined;
    } catch (err) {
      if (cached && isCode(err, 'MANIFEST_UNKNOWN')) {
        // The tag is gone from the remote: so it is from here.
        await repo.stored.tags.untag(tag).catch(() => undefined);
      }
      throw err;
    }
    if (digest && cached?.equals(digest)) return digest;
    if (digest) {
      if (!(await repo.stored.manifests.exists(digest))) await repo.fetchManifest(digest);
    } else {
      // No Docker-Content-Digest on the HEAD: the digest is that of the bytes a GET returns.
      const res = await repo.fetch({ method: 'GET', path, headers: { accept: MANIFEST_ACCEPT } }, 'MANIFEST_UNKNOWN');
      const bytes = await readLimited(res.body, MANIFEST_MAX_BYTES);
      digest = Digest.of(bytes);
      const contentType = typeof res.headers['content-type'] === 'string' ? res.headers['content-type'] : undefined;
      const manifest = readManifest(bytes, digest, contentType);
      await repo.stored.manifests.put(manifest, { checkReferences: false });
      repo.mirror.touchManifest(manifest);
      repo.mirror.metrics.manifestFetches += 1;
    }
    await repo.stored.tags.tag(tag, digest);
    return digest;
  }

  tag(): Promise<void> {
    return Promise.reject(readOnly(this.repo.remote));
  }

  untag(): Promise<void> {
    return Promise.reject(readOnly(this.repo.remote));
  }

  async list(): Promise<string[]> {
    const { repo } = this;
    try {
      const res = await repo.fetch({ method: 'GET', path: `/v2/${repo.upstreamName}/tags/list` }, 'NAME_UNKNOWN');
      const body = JSON.parse((await readLimited(res.body, 16 << 20)).toString('utf8')) as { tags?: unknown };
      return Array.isArray(body.tags) ? body.tags.filter((t): t is string => typeof t === 'string').sort() : [];
    } catch (err) {
      if (!isUpstreamFailure(err)) throw err;
      const stored = await repo.stored.tags.listOrEmpty();
      if (stored.length === 0) throw err;
      repo.log.warn({ remote: repo.remote.url, repository: repo.upstreamName, reason: (err as Error).message }, 'remote unavailable: listing the stored tags');
      if (repo.ctx?.responseHeaders) repo.ctx.responseHeaders['Warning'] = STALE_WARNING;
      return stored;
    }
  }
}

/**
 * Blobs of a proxied repository: the cache node's fills from this remote, plus the rule that bytes on disk
 * are served to a repository only when it is linked to them or its remote confirms it has them.
 */
class MirrorBlobStore implements BlobStore {
  private readonly inner: CacheBlobStore;
  private readonly key: string;

  constructor(private readonly repo: MirrorRepository) {
    this.key = `${repo.remote.name}/${repo.upstreamName}`;
    this.inner = new CacheBlobStore(repo.mirror.options.cache, repo.upstreamName, repo.headers, { upstreams: repo.runtime.pool, key: this.key }, (fill) => this.linkWhenDone(fill));
  }

  async stat(digest: Digest, ctx?: RequestContext): Promise<BlobDescriptor> {
    await this.admit(digest);
    return this.inner.stat(digest, ctx);
  }

  async serve(digest: Digest, ctx: RequestContext): Promise<ServedBlob> {
    await this.admit(digest);
    return this.inner.serve(digest, ctx);
  }

  /**
   * Bytes stored (or being fetched) for another repository are served here only once the remote says this
   * repository has them too. In a region, a fill another node runs counts (its key is in the region's record).
   */
  private async admit(digest: Digest): Promise<void> {
    const driver = this.repo.mirror.options.driver;
    if (await exists(driver, paths.layerLink(this.key, digest))) return;
    const onDisk = (await statBlob(driver, digest)) !== undefined;
    const running = onDisk ? undefined : await this.repo.mirror.options.cache.fills.runningKey(digest);
    if (!onDisk && (!running || running.key === this.key)) return;
    const res = await this.repo.fetch({ method: 'HEAD', path: `/v2/${this.repo.upstreamName}/blobs/${digest.toString()}` }, 'BLOB_UNKNOWN');
    res.body.resume();
    if (onDisk) await this.link(digest);
  }

  private linkWhenDone(fill: Fill): void {
    void fill.finished.then(async () => {
      if (fill.state === 'done') await this.link(fill.digest);
    }).catch((err: unknown) => this.repo.log.warn({ err, digest: fill.digest.toString() }, 'cannot link a mirrored blob'));
  }

  private async link(digest: Digest): Promise<void> {
    await this.repo.mirror.options.driver.putContent(paths.layerLink(this.key, digest), Buffer.from(digest.toString()));
  }

  createUpload(): Promise<BlobUpload> {
    return Promise.reject(readOnly(this.repo.remote));
  }

  getUpload(): Promise<BlobUpload> {
    return Promise.reject(readOnly(this.repo.remote));
  }

  mount(): Promise<BlobDescriptor | undefined> {
    return Promise.reject(readOnly(this.repo.remote));
  }

  delete(): Promise<void> {
    return Promise.reject(readOnly(this.repo.remote));
  }
}

async function exists(driver: StorageDriver, path: string): Promise<boolean> {
  try {
    await driver.stat(path);
    return true;
  } catch (err) {
    if (isPathNotFound(err)) return false;
    throw err;
  }
}

/**
 * A local repository of a mirror: the storage repository, with every blob and manifest it stores marked,
 * so that the mirror's expiry (which removes blobs not used for `ttl`) keeps them.
 */
class LocalRepository implements Repository {
  readonly name: string;
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly tags: TagStore;

  constructor(inner: StorageRepository, driver: StorageDriver) {
    const mark = (digest: Digest) => driver.putContent(localBlobMarker(digest), Buffer.alloc(0));
    this.name = inner.name;
    this.tags = inner.tags;
    const b = inner.blobs;
    const wrap = (upload: BlobUpload): BlobUpload => ({
      get id() {
        return upload.id;
      },
      get size() {
        return upload.size;
      },
      get startedAt() {
        return upload.startedAt;
      },
      append: (body, start) => upload.append(body, start),
      commit: async (digest, expectedSize) => {
        await mark(digest);
        return upload.commit(digest, expectedSize);
      },
      cancel: () => upload.cancel(),
    });
    this.blobs = {
      stat: (d) => b.stat(d),
      serve: (d, ctx) => b.serve(d, ctx),
      createUpload: async () => wrap(await b.createUpload()),
      getUpload: async (id) => wrap(await b.getUpload(id)),
      mount: async (digest, from) => {
        await mark(digest);
        return b.mount(digest, from);
      },
      delete: (d) => b.delete(d),
    };
    const m = inner.manifests;
    this.manifests = {
      get: (d) => m.get(d),
      exists: (d) => m.exists(d),
      put: async (manifest) => {
        await mark(manifest.digest);
        return m.put(manifest);
      },
      delete: (d) => m.delete(d),
      referrers: (d, t) => m.referrers(d, t),
    };
  }
}
