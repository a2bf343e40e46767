/**
 * The index's state file, `<EXPIRY_DIRECTORY>/state.json`: the byte total saved by the last process, so that a
 * restarted index starts from it rather than from 0 until its reconciliation walk completes.
 */
import { isPathNotFound, type StorageDriver } from '@cascade/registry-core';
import { EXPIRY_DIRECTORY, type ExpiryLogger } from './options.js';

const STATE_PATH = `${EXPIRY_DIRECTORY}/state.json`;

export class StateFile {
  constructor(
    private readonly driver: StorageDriver,
    private readonly now: () => number,
    private readonly log: ExpiryLogger | undefined,
  ) {}

  /** The saved total; undefined when there is none or it cannot be read (which is logged). */
  async load(): Promise<number | undefined> {
    try {
      const state: unknown = JSON.parse((await this.driver.getContent(STATE_PATH)).toString('utf8'));
      if (typeof state === 'object' && state !== null && 'totalBytes' in state) {
        const total = state.totalBytes;
        if (typeof total === 'number' && Number.isFinite(total) && total >= 0) return total;
      }
    } catch (err) {
      if (!isPathNotFound(err)) this.log?.warn({ err }, 'unreadable expiry state; the reconciliation walk will recompute it');
    }
    return undefined;
  }

  /** Saves the total. Never rejects: a failure is logged, and the next walk recomputes the total anyway. */
  async save(totalBytes: number): Promise<void> {
    try {
      const state = { version: 1, totalBytes, savedAt: new Date(this.now()).toISOString() };
      await this.driver.putContent(STATE_PATH, Buffer.from(JSON.stringify(state)));
    } catch (err) {
      this.log?.warn({ err }, 'cannot save expiry state');
    }
  }
}
