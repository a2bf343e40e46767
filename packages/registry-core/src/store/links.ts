/** Link files: a small file holding a digest, as distribution writes them (no trailing newline). */
import { Digest } from '../digest.js';
import { isPathNotFound, type StorageDriver } from '../drivers/driver.js';

/** Reads a link; undefined when the link does not exist or does not hold a valid digest. */
export async function readLink(driver: StorageDriver, path: string): Promise<Digest | undefined> {
  try {
    return Digest.tryParse((await driver.getContent(path)).toString('utf8').trim());
  } catch (err) {
    if (isPathNotFound(err)) return undefined;
    throw err;
  }
}

/** Writes a link atomically. */
export async function writeLink(driver: StorageDriver, path: string, digest: Digest): Promise<void> {
  await driver.putContent(path, Buffer.from(digest.toString()));
}

/** Stats a path; undefined when missing. */
export async function statOrUndefined(driver: StorageDriver, path: string) {
  try {
    return await driver.stat(path);
  } catch (err) {
    if (isPathNotFound(err)) return undefined;
    throw err;
  }
}

/** Lists a directory; empty when missing. */
export async function listOrEmpty(driver: StorageDriver, path: string): Promise<string[]> {
  try {
    return await driver.list(path);
  } catch (err) {
    if (isPathNotFound(err)) return [];
    throw err;
  }
}

/** Deletes a path; false when it was already missing. */
export async function deleteIfExists(driver: StorageDriver, path: string): Promise<boolean> {
  try {
    await driver.delete(path);
    return true;
  } catch (err) {
    if (isPathNotFound(err)) return false;
    throw err;
  }
}

/** The last component of a driver path. */
export function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
