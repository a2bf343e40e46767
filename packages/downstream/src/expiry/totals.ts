/**
 * The byte total and the counters of the expiry index. Fills, removals and sweeps adjust the total as they
 * happen; a reconciliation walk resets it from what it finds on storage, keeping the adjustments it could not
 * see (those of blobs it had already passed).
 */
import { paths, type Digest } from '@cascade/registry-core';

export class Totals {
  /** Bytes of the cached blobs (see `ExpiryIndex.totalBytes`). */
  bytes = 0;
  /** Blobs removed to get under the quota. */
  evictions = 0;
  /** Blobs removed because their TTL passed. */
  expirations = 0;
  /** Blobs journaled by a reconciliation walk because no journal had them. */
  adopted = 0;

  /** Path of the last blob the running walk visited; deltas of blobs at or before it are the walk's to add. */
  #walkCursor: string | undefined;
  #walkDelta = 0;

  /** Sees every adjustment, and every total a walk completes (a region keeps its total in Redis). */
  listener: { adjusted(delta: number): void; walked(bytes: number): void } | undefined;

  /** Adds `delta` bytes (negative for a removal) for a blob, never going below 0. */
  adjust(digest: Digest, delta: number): void {
    this.bytes = Math.max(0, this.bytes + delta);
    this.listener?.adjusted(delta);
    // The running walk has counted (or will count) this blob as it finds it: keep only the deltas it cannot see.
    if (this.#walkCursor !== undefined && paths.blobData(digest) <= this.#walkCursor) this.#walkDelta += delta;
  }

  /** A walk over the blobs, in path order, begins. */
  beginWalk(): void {
    this.#walkCursor = '';
    this.#walkDelta = 0;
  }

  /** The walk counted the blob at `path` (its data file). */
  walked(path: string): void {
    this.#walkCursor = path;
  }

  /** The walk completed and counted `bytes`: they become the total, with the adjustments made behind it. */
  completeWalk(bytes: number): void {
    this.bytes = Math.max(0, bytes + this.#walkDelta);
    this.listener?.walked(this.bytes);
  }

  /** The walk is over, completed or not. */
  endWalk(): void {
    this.#walkCursor = undefined;
  }
}
