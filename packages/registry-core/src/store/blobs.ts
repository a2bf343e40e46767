/**
 * The blob store of one repository over a storage driver: repository links in `_layers`, shared content
 * under `blobs/`, and upload sessions in `_uploads`. A blob becomes visible only after its digest has been
 * verified and its data moved into place.
 */
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { Digest } from '../digest.js';
import { RegistryError } from '../errors.js';
import type { BlobDescriptor, BlobStore, BlobUpload, RequestContext } from '../registry.js';
import { openStored, type ServedBlob, type StoredFile } from './body.js';
import { resolveRange } from './range.js';
import { isPathNotFound, type StorageDriver } from '../drivers/driver.js';
import { deleteIfExists, readLink, statOrUndefined, writeLink } from './links.js';
import { paths } from './paths.js';

const UPLOAD_ID = /^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$/;

/** The running hash of an upload, kept between PATCH requests so a commit need not re-read the data. */
interface HashState {
  hash: Hash;
  offset: number;
}

/**
 * Upload bookkeeping shared by all repositories of one namespace: running hashes and a per-upload lock
 * that serialises requests on the same session.
 */
export class UploadState {
  readonly hashes = new Map<string, HashState>();
  private readonly locks = new Map<string, Promise<void>>();

  /** Runs `fn` with exclusive access to upload `key`. */
  async exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const current = new Promise<void>((r) => (release = r));
    const chained = previous.then(() => current);
    this.locks.set(key, chained);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(key) === chained) this.locks.delete(key);
    }
  }
}

/** {@link BlobStore} over a storage driver in distribution's layout. */
export class StorageBlobStore implements BlobStore {
  constructor(
    private readonly driver: StorageDriver,
    readonly name: string,
    private readonly uploads: UploadState,
  ) {}

  async stat(digest: Digest): Promise<BlobDescriptor> {
    const linked = await readLink(this.driver, paths.layerLink(this.name, digest));
    if (!linked || !linked.equals(digest)) throw blobUnknown(digest);
    const info = await statOrUndefined(this.driver, paths.blobData(digest));
    if (!info) throw blobUnknown(digest);
    return { digest, size: info.size };
  }

  async serve(digest: Digest, ctx: RequestContext): Promise<ServedBlob> {
    const linked = await readLink(this.driver, paths.layerLink(this.name, digest));
    if (!linked || !linked.equals(digest)) throw blobUnknown(digest);
    const file = await openStored(this.driver, paths.blobData(digest), ctx.signal);
    if (!file) throw blobUnknown(digest);
    return servedFrom(file, ctx);
  }

  async delete(digest: Digest): Promise<void> {
    const linked = await readLink(this.driver, paths.layerLink(this.name, digest));
    if (!linked) throw blobUnknown(digest);
    await this.driver.delete(paths.layerDir(this.name, digest));
  }

  async mount(digest: Digest, from: string): Promise<BlobDescriptor | undefined> {
    const source = new StorageBlobStore(this.driver, from, this.uploads);
    let desc: BlobDescriptor;
    try {
      desc = await source.stat(digest);
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'BLOB_UNKNOWN') return undefined;
      throw err;
    }
    await writeLink(this.driver, paths.layerLink(this.name, digest), digest);
    return desc;
  }

  /** Links content that is already under `blobs/` into this repository (used by manifests and caches). */
  async link(digest: Digest): Promise<void> {
    await writeLink(this.driver, paths.layerLink(this.name, digest), digest);
  }

  async createUpload(): Promise<BlobUpload> {
    const id = randomUUID();
    const startedAt = new Date();
    await this.driver.putContent(paths.uploadStartedAt(this.name, id), Buffer.from(startedAt.toISOString()));
    await this.driver.putContent(paths.uploadData(this.name, id), Buffer.alloc(0));
    return new StorageBlobUpload(this.driver, this, id, 0, startedAt, this.uploads);
  }

  async getUpload(id: string): Promise<BlobUpload> {
    if (!UPLOAD_ID.test(id)) throw uploadUnknown(id);
    const info = await statOrUndefined(this.driver, paths.uploadData(this.name, id));
    if (!info) throw uploadUnknown(id);
    let startedAt = info.modTime;
    try {
      const parsed = new Date((await this.driver.getContent(paths.uploadStartedAt(this.name, id))).toString('utf8'));
      if (!Number.isNaN(parsed.getTime())) startedAt = parsed;
    } catch (err) {
      if (!isPathNotFound(err)) throw err;
    }
    return new StorageBlobUpload(this.driver, this, id, info.size, startedAt, this.uploads);
  }
}

class StorageBlobUpload implements BlobUpload {
  private readonly key: string;

  constructor(
    private readonly driver: StorageDriver,
    private readonly store: StorageBlobStore,
    readonly id: string,
    public size: number,
    readonly startedAt: Date,
    private readonly state: UploadState,
  ) {
    this.key = `${store.name}/${id}`;
  }

  append(body: AsyncIterable<Uint8Array>, start?: number): Promise<void> {
    return this.state.exclusive(this.key, async () => {
      const dataPath = paths.uploadData(this.store.name, this.id);
      const writer = await this.driver.writer(dataPath, { append: true }).catch((err: unknown) => {
        if (isPathNotFound(err)) throw uploadUnknown(this.id);
        throw err;
      });
      this.size = writer.size;
      if (start !== undefined && start !== writer.size) {
        await writer.close();
        throw new RegistryError('RANGE_INVALID', `chunk starts at ${start}, but the upload has ${writer.size} bytes: send the chunk that starts at ${writer.size}`, {
          headers: { Range: rangeHeader(writer.size) },
        });
      }
      let hs = this.state.hashes.get(this.key);
      if (!hs || hs.offset !== writer.size) {
        // No running hash for this offset (restart, or another process): the commit will re-read the data.
        this.state.hashes.delete(this.key);
        hs = writer.size === 0 ? { hash: createHash('sha256'), offset: 0 } : undefined;
      }
      try {
        for await (const chunk of body) {
          await writer.write(chunk);
          if (hs) {
            hs.hash.update(chunk);
            hs.offset += chunk.length;
          }
        }
      } catch (err) {
        this.state.hashes.delete(this.key);
        this.size = writer.size;
        await writer.close();
        throw err;
      }
      this.size = writer.size;
      await writer.close();
      if (hs) this.state.hashes.set(this.key, hs);
    });
  }

  commit(digest: Digest, expectedSize?: number): Promise<BlobDescriptor> {
    return this.state.exclusive(this.key, async () => {
      const dataPath = paths.uploadData(this.store.name, this.id);
      // fsync the data before it is moved into place, so a crash never leaves a short blob visible.
      const writer = await this.driver.writer(dataPath, { append: true }).catch((err: unknown) => {
        if (isPathNotFound(err)) throw uploadUnknown(this.id);
        throw err;
      });
      const size = writer.size;
      await writer.commit();
      if (expectedSize !== undefined && expectedSize !== size) {
        await this.remove();
        throw new RegistryError('SIZE_INVALID', `upload has ${size} bytes, ${expectedSize} were declared`);
      }
      const actual = await this.digestOf(dataPath, digest, size);
      if (!actual.equals(digest)) {
        await this.remove();
        throw new RegistryError('DIGEST_INVALID', `uploaded content has digest ${actual.toString()}, not ${digest.toString()}`, {
          detail: { expected: digest.toString(), actual: actual.toString() },
        });
      }
      const target = paths.blobData(digest);
      if (await statOrUndefined(this.driver, target)) {
        // Another writer committed the same content first; ours is identical, so keep theirs.
        await this.remove();
      } else {
        await this.driver.move(dataPath, target);
        await this.remove();
      }
      await this.store.link(digest);
      return { digest, size };
    });
  }

  cancel(): Promise<void> {
    return this.state.exclusive(this.key, () => this.remove());
  }

  private async remove(): Promise<void> {
    this.state.hashes.delete(this.key);
    await deleteIfExists(this.driver, paths.uploadDir(this.store.name, this.id));
  }

  private async digestOf(dataPath: string, want: Digest, size: number): Promise<Digest> {
    const hs = this.state.hashes.get(this.key);
    if (hs && hs.offset === size && want.algorithm === 'sha256') return Digest.fromHash('sha256', hs.hash.copy());
    const hash = want.newHash();
    const stream = await this.driver.reader(dataPath);
    for await (const chunk of stream) hash.update(chunk as Buffer);
    return Digest.fromHash(want.algorithm, hash);
  }
}

/**
 * The answer to a GET or HEAD of a stored file: its size, the range of `ctx.range`, and a body for a GET of a
 * non-empty range (the file is released at once otherwise).
 */
export function servedFrom(file: StoredFile, ctx: RequestContext, onClose?: (complete: boolean) => void): ServedBlob {
  let range;
  try {
    range = resolveRange(ctx.range, file.size);
  } catch (err) {
    file.close();
    throw err;
  }
  const length = range ? range.end - range.start + 1 : file.size;
  if (ctx.method === 'HEAD' || length === 0) {
    file.close();
    return { size: file.size, ...(range ? { range } : {}) };
  }
  return { size: file.size, ...(range ? { range } : {}), body: file.body(range, onClose) };
}

/** The `Range` header value of an upload of `size` bytes, as distribution sends it. */
export function rangeHeader(size: number): string {
  return `0-${Math.max(0, size - 1)}`;
}

function blobUnknown(digest: Digest): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', undefined, { detail: { digest: digest.toString() } });
}

function uploadUnknown(id: string): RegistryError {
  return new RegistryError('BLOB_UPLOAD_UNKNOWN', undefined, { detail: { uuid: id.slice(0, 64) } });
}
