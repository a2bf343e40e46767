/**
 * Content digests (`algorithm:encoded`) as in the OCI image spec: parsing, validation and hashing.
 * Only sha256 and sha512 are supported; other well-formed algorithms are rejected as unsupported.
 */
import { createHash, type Hash } from 'node:crypto';
import { RegistryError } from './errors.js';

/** A supported digest algorithm. */
export type DigestAlgorithm = 'sha256' | 'sha512';

const ENCODED_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
const DIGEST_GRAMMAR = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** A validated digest. `toString()` gives the canonical `algorithm:hex` form. */
export class Digest {
  private constructor(readonly algorithm: DigestAlgorithm, readonly hex: string) {}

  /**
   * Parses and validates a digest string.
   * @throws RegistryError DIGEST_INVALID when malformed or of an unsupported algorithm.
   */
  static parse(value: string): Digest {
    const m = DIGEST_GRAMMAR.exec(value);
    if (!m) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(truncate(value))}: expected algorithm:hex`);
    const algorithm = m[1] as string;
    const hex = m[2] as string;
    if (algorithm !== 'sha256' && algorithm !== 'sha512') {
      throw new RegistryError('DIGEST_INVALID', `unsupported digest algorithm ${JSON.stringify(truncate(algorithm))}: sha256 and sha512 are supported`);
    }
    if (hex.length !== ENCODED_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(hex)) {
      throw new RegistryError('DIGEST_INVALID', `invalid ${algorithm} digest: expected ${ENCODED_LENGTH[algorithm]} lower-case hex characters`);
    }
    return new Digest(algorithm, hex);
  }

  /** Like {@link Digest.parse} but returns undefined instead of throwing. */
  static tryParse(value: string): Digest | undefined {
    try {
      return Digest.parse(value);
    } catch {
      return undefined;
    }
  }

  /** True when `value` is syntactically a digest of any algorithm (used to tell digests from tags). */
  static looksLikeDigest(value: string): boolean {
    return value.includes(':');
  }

  /** The digest of `data` with `algorithm`. */
  static of(data: Uint8Array | string, algorithm: DigestAlgorithm = 'sha256'): Digest {
    return new Digest(algorithm, createHash(algorithm).update(data).digest('hex'));
  }

  /** Wraps a finished hash of `algorithm`. */
  static fromHash(algorithm: DigestAlgorithm, hash: Hash): Digest {
    return new Digest(algorithm, hash.digest('hex'));
  }

  /** A new streaming hash for this digest's algorithm. */
  newHash(): Hash {
    return createHash(this.algorithm);
  }

  equals(other: Digest | string): boolean {
    return this.toString() === other.toString();
  }

  toString(): string {
    return `${this.algorithm}:${this.hex}`;
  }

  toJSON(): string {
    return this.toString();
  }
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 80)}...` : s;
}
