/** The registry over a storage driver: repositories and the catalog. */
import type { Namespace, Repository } from '../registry.js';
import type { StorageDriver } from '../drivers/driver.js';
import { StorageBlobStore, UploadState } from './blobs.js';
import { StorageManifestStore, StorageTagStore } from './manifests.js';
import { REPOSITORIES } from './paths.js';

/** A repository backed by storage. */
export interface StorageRepository extends Repository {
  readonly blobs: StorageBlobStore;
  readonly manifests: StorageManifestStore;
  readonly tags: StorageTagStore;
}

/** {@link Namespace} over a storage driver in distribution's layout. */
export class StorageNamespace implements Namespace {
  private readonly uploads = new UploadState();

  constructor(readonly driver: StorageDriver) {}

  repository(name: string): StorageRepository {
    const blobs = new StorageBlobStore(this.driver, name, this.uploads);
    const tags = new StorageTagStore(this.driver, name);
    const manifests = new StorageManifestStore(this.driver, name, blobs, tags);
    return { name, blobs, manifests, tags };
  }

  async catalog(n: number, last?: string): Promise<string[]> {
    const names: string[] = [];
    try {
      await this.driver.walk(REPOSITORIES, (info) => {
        if (!info.isDir) return;
        const base = info.path.slice(info.path.lastIndexOf('/') + 1);
        if (base === '_manifests') {
          names.push(info.path.slice(REPOSITORIES.length + 1, -'/_manifests'.length));
          return 'skip';
        }
        return base.startsWith('_') ? 'skip' : undefined;
      });
    } catch (err) {
      if ((err as { code?: string }).code !== 'PATH_NOT_FOUND') throw err;
    }
    names.sort(comparePaths);
    const start = last === undefined ? 0 : names.findIndex((name) => comparePaths(name, last) > 0);
    return start < 0 ? [] : names.slice(start, start + n);
  }
}

/** Orders repository names component by component, as distribution's catalog does. */
export function comparePaths(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i] as string;
    const y = pb[i] as string;
    if (x !== y) return x < y ? -1 : 1;
  }
  return pa.length - pb.length;
}
