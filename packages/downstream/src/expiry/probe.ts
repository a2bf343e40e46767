/** The start-up check that the storage driver keeps the modification times the index relies on. */
import type { StorageDriver } from '@cascade/registry-core';
import { EXPIRY_DIRECTORY, type ExpiryLogger } from './options.js';

const PROBE_PATH = `${EXPIRY_DIRECTORY}/touch-probe`;

/** Warns when the driver does not keep modification times: hits could not refresh a blob's expiry. Never rejects. */
export async function probeTouch(driver: StorageDriver, log: ExpiryLogger | undefined): Promise<void> {
  const probe = new Date(Date.UTC(2001, 0, 1));
  try {
    await driver.putContent(PROBE_PATH, Buffer.alloc(0));
    await driver.touch(PROBE_PATH, probe);
    const kept = Math.abs((await driver.stat(PROBE_PATH)).modTime.getTime() - probe.getTime()) < 2000;
    await driver.delete(PROBE_PATH);
    if (!kept) {
      log?.warn(
        { driver: driver.name },
        'storage driver does not keep modification times: blobs expire ttl after they were stored, hits do not extend it',
      );
    }
  } catch (err) {
    log?.warn({ err }, 'cannot probe the storage driver for modification times');
  }
}
