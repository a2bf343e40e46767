/** The blobs that must not be removed right now: being served, or being written at their data path. */
import type { Digest } from '@cascade/registry-core';

export class Pins {
  readonly #counts = new Map<string, number>();

  /** Pins a blob until the returned function is called (idempotent). Pins nest. */
  pin(digest: Digest): () => void {
    const key = digest.toString();
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.#counts.get(key) ?? 1) - 1;
      if (n <= 0) this.#counts.delete(key);
      else this.#counts.set(key, n);
    };
  }

  /** Whether the blob with this digest (as text) is pinned. */
  has(key: string): boolean {
    return this.#counts.has(key);
  }
}
