/** A Bloom filter of digests, for the reconciliation walk's "has a journal a line for this blob?". */

/** Bits per expected entry (with 7 probes: about 1% false positives). */
const FILTER_BITS_PER_LINE = 10;
const FILTER_PROBES = 7;

/**
 * A Bloom filter of digests (as text), hashed from their own (uniformly random) hex: no hashing cost. `offset`
 * picks where in the hex the hashes are read, so that filters with other offsets have other false positives.
 */
export class DigestFilter {
  readonly #bits: Uint32Array;
  readonly #size: number;

  constructor(
    expected: number,
    private readonly offset: number,
  ) {
    this.#size = Math.max(1024, expected * FILTER_BITS_PER_LINE);
    this.#bits = new Uint32Array(Math.ceil(this.#size / 32));
  }

  add(key: string): void {
    const [h1, h2] = this.#hashes(key);
    for (let i = 0; i < FILTER_PROBES; i += 1) {
      const bit = (h1 + i * h2) % this.#size;
      this.#bits[bit >>> 5] = (this.#bits[bit >>> 5] ?? 0) | (1 << (bit & 31));
    }
  }

  /** False: `key` was never added. True: it was, or (rarely) a false positive. */
  has(key: string): boolean {
    const [h1, h2] = this.#hashes(key);
    for (let i = 0; i < FILTER_PROBES; i += 1) {
      const bit = (h1 + i * h2) % this.#size;
      if (((this.#bits[bit >>> 5] ?? 0) & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }

  #hashes(key: string): [number, number] {
    const at = key.indexOf(':') + 1 + this.offset;
    const h1 = Number.parseInt(key.slice(at, at + 8), 16) || 0;
    const h2 = (Number.parseInt(key.slice(at + 8, at + 16), 16) || 0) | 1;
    return [h1, h2 >>> 0];
  }
}
