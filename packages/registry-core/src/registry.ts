/**
 * The registry domain interfaces, after distribution's `registry.go` and `blobs.go`. The HTTP layer speaks
 * only to these, so a plain registry, a cache node (which wraps the blob store) and a mirror are served by
 * the same handlers.
 */
import type { ServedBlob } from './store/body.js';
import type { Digest } from './digest.js';
import type { Descriptor, ParsedManifest } from './manifest.js';

/** What the registry knows of a blob. */
export interface BlobDescriptor {
  readonly digest: Digest;
  readonly size: number;
}

/** An inclusive byte range, already resolved against the blob size. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** Who is asking, passed down so that a cache can forward the client's authorization upstream. */
export interface RequestContext {
  /** Authenticated user name, when known. */
  readonly user?: string;
  /** Headers to forward to an upstream on a miss (e.g. `authorization`), never logged. */
  readonly forward?: Readonly<Record<string, string>>;
  /** Aborted when the client goes away. */
  readonly signal?: AbortSignal;
  /** The HTTP method (a cache answers HEAD on a miss without filling). */
  readonly method?: string;
  /**
   * The registry the client means, when it says so: containerd's `?ns=<host>` query parameter on requests
   * to a mirror, or sealer's `domain` header. Lower-cased; a mirror routes by it.
   */
  readonly registryHost?: string;
  /** The client's `Range` header, when it sent one (a cache refuses ranges of a blob whose fill just failed). */
  readonly range?: string;
  /** Headers the namespace wants on a successful response (a mirror's `Warning` on a stale tag). */
  readonly responseHeaders?: Record<string, string>;
}

/** Read access to the blobs of one repository. A cache node implements this over local storage + upstreams. */
export interface BlobReader {
  /**
   * The blob's size, for reference checks (a manifest's layers). Starts nothing: a cache answers from its
   * disk, a running fill or its upstream's HEAD. @throws RegistryError BLOB_UNKNOWN
   */
  stat(digest: Digest, ctx?: RequestContext): Promise<BlobDescriptor>;
  /**
   * Serves a GET or HEAD (`ctx.method`) of the blob, with `ctx.range` (a `Range` header) resolved against its
   * size: the one call the HTTP layer makes. The store looks at its disk once and, in a cache, starts or joins
   * a fill once; the answer carries the size and, for a GET of a non-empty range, the body, which the caller
   * must close. @throws RegistryError BLOB_UNKNOWN, RANGE_INVALID
   */
  serve(digest: Digest, ctx: RequestContext): Promise<ServedBlob>;
}

/** An upload session (`/v2/<name>/blobs/uploads/<id>`). */
export interface BlobUpload {
  readonly id: string;
  /** Bytes received so far. */
  readonly size: number;
  readonly startedAt: Date;
  /**
   * Appends a chunk. `start`, when given (from Content-Range), must equal {@link size}.
   * @throws RegistryError RANGE_INVALID (416) on an out-of-order chunk.
   */
  append(body: AsyncIterable<Uint8Array>, start?: number): Promise<void>;
  /**
   * Verifies the content against `digest` and makes the blob visible in the repository. On mismatch the
   * session is removed and nothing is stored.
   * @throws RegistryError DIGEST_INVALID, SIZE_INVALID
   */
  commit(digest: Digest, expectedSize?: number): Promise<BlobDescriptor>;
  /** Removes the session and its data. */
  cancel(): Promise<void>;
}

/** The blobs of one repository: reads, uploads, mounts and deletes. */
export interface BlobStore extends BlobReader {
  /** Starts an upload session. */
  createUpload(): Promise<BlobUpload>;
  /** @throws RegistryError BLOB_UPLOAD_UNKNOWN */
  getUpload(id: string): Promise<BlobUpload>;
  /** Links a blob already in `from` into this repository; undefined when `from` does not have it. */
  mount(digest: Digest, from: string): Promise<BlobDescriptor | undefined>;
  /** Removes the blob from this repository. @throws RegistryError BLOB_UNKNOWN */
  delete(digest: Digest): Promise<void>;
}

/** The manifests of one repository. */
export interface ManifestStore {
  /** @throws RegistryError MANIFEST_UNKNOWN */
  get(digest: Digest): Promise<ParsedManifest>;
  /** True when the manifest is in this repository. */
  exists(digest: Digest): Promise<boolean>;
  /**
   * Validates and stores a manifest, after checking that every blob and child manifest it references is
   * in the repository.
   * @throws RegistryError MANIFEST_INVALID, MANIFEST_BLOB_UNKNOWN
   */
  put(manifest: ParsedManifest): Promise<void>;
  /**
   * Removes the manifest and every tag that points to it; resolves with those tags.
   * @throws RegistryError MANIFEST_UNKNOWN
   */
  delete(digest: Digest): Promise<string[]>;
  /** Descriptors of the manifests whose `subject` is `digest`, optionally only those of `artifactType`. */
  referrers(digest: Digest, artifactType?: string): Promise<Descriptor[]>;
}

/** The tags of one repository. */
export interface TagStore {
  /** @throws RegistryError MANIFEST_UNKNOWN */
  resolve(tag: string): Promise<Digest>;
  tag(tag: string, digest: Digest): Promise<void>;
  /** @throws RegistryError MANIFEST_UNKNOWN */
  untag(tag: string): Promise<void>;
  /** Every tag, sorted. @throws RegistryError NAME_UNKNOWN when the repository does not exist */
  list(): Promise<string[]>;
}

/** One repository. */
export interface Repository {
  readonly name: string;
  readonly blobs: BlobStore;
  readonly manifests: ManifestStore;
  readonly tags: TagStore;
}

/** The whole registry. */
export interface Namespace {
  /**
   * The repository `name` (validated by the caller). Repositories exist once something is pushed.
   * `ctx` is the request on whose behalf it is used (a cache forwards the client's authorization upstream).
   */
  repository(name: string, ctx?: RequestContext): Repository;
  /** Repository names in lexical path order after `last`, at most `n`. */
  catalog(n: number, last?: string): Promise<string[]>;
  /**
   * The API version check (`GET /v2/`) as this namespace answers it, when it is not a plain 200: a cache that
   * passes the client's credentials upstream answers as its upstream does, so that a client configured for
   * the upstream sends them (a 401 with the upstream's challenge).
   * @throws RegistryError UNAUTHORIZED (with `WWW-Authenticate`) or DENIED
   */
  ping?(ctx: RequestContext): Promise<void>;
}
