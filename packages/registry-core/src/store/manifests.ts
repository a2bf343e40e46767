/**
 * Manifests, tags and referrers of one repository over a storage driver. Manifest bytes are stored as
 * blobs (as distribution does) and linked from `_manifests/revisions`; tags link to revisions.
 */
import { Digest } from '../digest.js';
import { RegistryError } from '../errors.js';
import { readManifest, type Descriptor, type ParsedManifest } from '../manifest.js';
import type { ManifestStore, TagStore } from '../registry.js';
import { isPathNotFound, type StorageDriver } from '../drivers/driver.js';
import type { StorageBlobStore } from './blobs.js';
import { basename, deleteIfExists, listOrEmpty, readLink, statOrUndefined, writeLink } from './links.js';
import { paths } from './paths.js';

/** {@link ManifestStore} over a storage driver in distribution's layout. */
export class StorageManifestStore implements ManifestStore {
  constructor(
    private readonly driver: StorageDriver,
    readonly name: string,
    private readonly blobs: StorageBlobStore,
    private readonly tags: StorageTagStore,
  ) {}

  async exists(digest: Digest): Promise<boolean> {
    const linked = await readLink(this.driver, paths.revisionLink(this.name, digest));
    return linked !== undefined && linked.equals(digest) && (await statOrUndefined(this.driver, paths.blobData(digest))) !== undefined;
  }

  async get(digest: Digest): Promise<ParsedManifest> {
    if (!(await readLink(this.driver, paths.revisionLink(this.name, digest)))) throw manifestUnknown(digest.toString());
    let bytes: Buffer;
    try {
      bytes = await this.driver.getContent(paths.blobData(digest));
    } catch (err) {
      if (isPathNotFound(err)) throw manifestUnknown(digest.toString());
      throw err;
    }
    const actual = Digest.of(bytes, digest.algorithm);
    if (!actual.equals(digest)) {
      // Never serve bytes that do not match their digest, whatever happened to the disk.
      throw new RegistryError('UNKNOWN', `stored manifest ${digest.toString()} is corrupt (content hashes to ${actual.toString()})`);
    }
    return readManifest(bytes, digest);
  }

  /**
   * Stores a manifest and links it in the repository. The blobs and child manifests it references must be
   * in the repository, unless `checkReferences` is false (a mirror stores a manifest before its blobs).
   */
  async put(manifest: ParsedManifest, options: { checkReferences?: boolean } = {}): Promise<void> {
    if (options.checkReferences !== false) await this.checkReferences(manifest);
    const data = paths.blobData(manifest.digest);
    if (!(await statOrUndefined(this.driver, data))) await this.driver.putContent(data, manifest.bytes);
    await writeLink(this.driver, paths.revisionLink(this.name, manifest.digest), manifest.digest);
    if (manifest.subject) {
      const subject = Digest.parse(manifest.subject.digest);
      await writeLink(this.driver, paths.referrerLink(this.name, subject, manifest.digest), manifest.digest);
    }
  }

  private async checkReferences(manifest: ParsedManifest): Promise<void> {
    const missing: string[] = [];
    await Promise.all(
      manifest.blobs.map(async (b) => {
        try {
          await this.blobs.stat(Digest.parse(b.digest));
        } catch (err) {
          if (err instanceof RegistryError && err.code === 'BLOB_UNKNOWN') missing.push(b.digest);
          else throw err;
        }
      }),
    );
    await Promise.all(
      manifest.manifests.map(async (m) => {
        if (!(await this.exists(Digest.parse(m.digest)))) missing.push(m.digest);
      }),
    );
    if (missing.length > 0) {
      throw new RegistryError('MANIFEST_BLOB_UNKNOWN', `manifest references ${missing.length} blob(s) or manifest(s) not in ${this.name}: ${missing.slice(0, 5).join(', ')}`, {
        detail: { digests: missing },
      });
    }
  }

  async delete(digest: Digest): Promise<string[]> {
    const manifest = await this.get(digest);
    await this.driver.delete(paths.revisionDir(this.name, digest));
    const untagged: string[] = [];
    for (const tag of await this.tags.listOrEmpty()) {
      const current = await readLink(this.driver, paths.tagCurrentLink(this.name, tag));
      if (current?.equals(digest) && (await deleteIfExists(this.driver, paths.tagDir(this.name, tag)))) untagged.push(tag);
    }
    if (manifest.subject) {
      const subject = Digest.tryParse(manifest.subject.digest);
      if (subject) await deleteIfExists(this.driver, paths.referrerLink(this.name, subject, digest).replace(/\/link$/, ''));
    }
    return untagged;
  }

  async referrers(subject: Digest, artifactType?: string): Promise<Descriptor[]> {
    const out: Descriptor[] = [];
    for (const algDir of await listOrEmpty(this.driver, paths.referrersDir(this.name, subject))) {
      for (const entry of await listOrEmpty(this.driver, algDir)) {
        const digest = await readLink(this.driver, `${entry}/link`);
        if (!digest || !(await this.exists(digest))) continue;
        let m: ParsedManifest;
        try {
          m = await this.get(digest);
        } catch {
          continue;
        }
        if (artifactType !== undefined && m.artifactType !== artifactType) continue;
        const d: Descriptor = { mediaType: m.mediaType, digest: digest.toString(), size: m.bytes.length };
        if (m.artifactType) d.artifactType = m.artifactType;
        if (m.annotations) d.annotations = m.annotations;
        out.push(d);
      }
    }
    return out.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  }
}

/** {@link TagStore} over a storage driver in distribution's layout. */
export class StorageTagStore implements TagStore {
  constructor(
    private readonly driver: StorageDriver,
    readonly name: string,
  ) {}

  async resolve(tag: string): Promise<Digest> {
    const digest = await readLink(this.driver, paths.tagCurrentLink(this.name, tag));
    if (!digest) throw manifestUnknown(tag);
    return digest;
  }

  async tag(tag: string, digest: Digest): Promise<void> {
    await writeLink(this.driver, paths.tagIndexLink(this.name, tag, digest), digest);
    await writeLink(this.driver, paths.tagCurrentLink(this.name, tag), digest);
  }

  async untag(tag: string): Promise<void> {
    if (!(await deleteIfExists(this.driver, paths.tagDir(this.name, tag)))) throw manifestUnknown(tag);
  }

  async list(): Promise<string[]> {
    if (!(await statOrUndefined(this.driver, paths.manifestsDir(this.name)))) {
      throw new RegistryError('NAME_UNKNOWN', `repository ${this.name} is not known to the registry`, { detail: { name: this.name } });
    }
    return this.listOrEmpty();
  }

  /** Tags that have a current link, sorted; empty when there are none. */
  async listOrEmpty(): Promise<string[]> {
    const tags: string[] = [];
    for (const dir of await listOrEmpty(this.driver, paths.tagsDir(this.name))) {
      const tag = basename(dir);
      if (await statOrUndefined(this.driver, `${dir}/current/link`)) tags.push(tag);
    }
    return tags.sort();
  }
}

function manifestUnknown(reference: string): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', undefined, { detail: { reference: reference.slice(0, 140) } });
}
