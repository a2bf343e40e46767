/**
 * Naming and publishing keys: RFC 7638 thumbprints (the `kid` Cascade writes, and distribution 3's key ID),
 * libtrust key IDs (distribution 2, docker_auth), and the EC P-256 JWKs of a key set such as the grant
 * keys at `/api/v0/keys`.
 */
import { createHash, createPublicKey, KeyObject, type JsonWebKey } from 'node:crypto';
import { JwsError, keyFitsAlgorithm } from './compact.js';

/** The only algorithm of the keys {@link publicJwk} and {@link importPublicJwk} handle. */
export const JWS_ALGORITHM = 'ES256';

/** A public signing key as published in a JWKS: EC P-256 members plus `kid`, `alg` and `use`. */
export interface PublicJwk {
  readonly kty: 'EC';
  readonly crv: 'P-256';
  readonly x: string;
  readonly y: string;
  readonly kid: string;
  readonly alg: typeof JWS_ALGORITHM;
  readonly use: 'sig';
}

/** A JSON Web Key Set, the body of `/api/v0/keys`. */
export interface Jwks {
  readonly keys: PublicJwk[];
}

/** Longest `kid` accepted in a key set or a grant; a thumbprint is 43 characters. */
const KID_MAX_LENGTH = 128;

/** True when `kid` is a key ID Cascade accepts in a key set or a grant: 1 to 128 of `A-Za-z0-9._-`. */
export function isKid(kid: string): boolean {
  return kid.length > 0 && kid.length <= KID_MAX_LENGTH && /^[A-Za-z0-9._-]+$/.test(kid);
}

/** The public half of `key` (itself when it already is public). */
export function publicOf(key: KeyObject): KeyObject {
  return key.type === 'public' ? key : createPublicKey(key);
}

/**
 * Throws JwsError `key` unless `key` is an EC key on P-256, the only curve ES256 is defined for. Checked
 * before every ES256 operation because node's `verify` would otherwise happily verify with whatever key type
 * it is given (an RSA key would make "ES256" mean RSA).
 */
export function assertEs256Key(key: KeyObject): void {
  if (!keyFitsAlgorithm('ES256', key)) {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    throw new JwsError('key', `expected an EC P-256 key for ES256, got ${key.asymmetricKeyType ?? key.type}${curve ? ` (${curve})` : ''}`);
  }
}

/** The members RFC 7638 hashes, per key type, in the lexicographic order the RFC requires. */
const THUMBPRINT_MEMBERS: Readonly<Record<string, readonly string[]>> = {
  EC: ['crv', 'kty', 'x', 'y'],
  RSA: ['e', 'kty', 'n'],
  OKP: ['crv', 'kty', 'x'],
};

/** The RFC 7638 thumbprint of a JWK given as an object; undefined when it is not an EC, RSA or OKP key. */
export function thumbprintOfJwk(jwk: Readonly<Record<string, unknown>>): string | undefined {
  const members = typeof jwk['kty'] === 'string' ? THUMBPRINT_MEMBERS[jwk['kty']] : undefined;
  if (members === undefined) return undefined;
  const parts: string[] = [];
  for (const m of members) {
    const v = jwk[m];
    if (typeof v !== 'string') return undefined;
    parts.push(`${JSON.stringify(m)}:${JSON.stringify(v)}`);
  }
  return createHash('sha256').update(`{${parts.join(',')}}`).digest('base64url');
}

/**
 * The RFC 7638 JWK thumbprint of a key (its public half) or of a JWK: base64url SHA-256 of the canonical
 * JWK. This is the `kid` Cascade writes and the key ID distribution 3 gives the keys of `rootcertbundle`.
 *
 * @throws JwsError `key` for a key that is not EC, RSA or OKP.
 * @example jwkThumbprint(createPublicKey(pem)) // 43 base64url characters
 */
export function jwkThumbprint(key: KeyObject | JsonWebKey): string {
  const jwk = key instanceof KeyObject ? publicOf(key).export({ format: 'jwk' }) : key;
  const thumbprint = thumbprintOfJwk(jwk as Record<string, unknown>);
  if (thumbprint === undefined) throw new JwsError('key', `cannot compute the JWK thumbprint of a ${String(jwk.kty)} key`);
  return thumbprint;
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/**
 * The libtrust key ID of a key, as distribution 2 and docker_auth write it in `kid`: the first 240 bits of
 * the SHA-256 of the DER public key, base32, in twelve groups of four joined by ':'.
 */
export function libtrustKeyId(key: KeyObject): string {
  const der = publicOf(key).export({ type: 'spki', format: 'der' });
  const bytes = createHash('sha256').update(der).digest().subarray(0, 30);
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31] ?? '';
      bits -= 5;
    }
  }
  return (out.match(/.{4}/g) ?? []).join(':');
}

/** The public JWK of an ES256 key (private or public), with its thumbprint as `kid`. */
export function publicJwk(key: KeyObject): PublicJwk {
  assertEs256Key(key);
  const jwk = publicOf(key).export({ format: 'jwk' });
  if (typeof jwk.x !== 'string' || typeof jwk.y !== 'string') throw new JwsError('key', 'EC key without coordinates');
  return { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, kid: jwkThumbprint(jwk), alg: JWS_ALGORITHM, use: 'sig' };
}

/**
 * Imports one JWK of a key set received from elsewhere: the key, and the JWK reduced to its public members
 * (for re-publishing). Throws JwsError `key` saying why it is not a usable ES256 verification key. Only the
 * public members are read, so a set that (wrongly) carries a private `d` does not turn into a signing key.
 */
export function importPublicJwk(value: unknown): { kid: string; key: KeyObject; jwk: PublicJwk } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new JwsError('key', 'key is not a JSON object');
  const { kty, crv, x, y, kid, alg, use } = value as Record<string, unknown>;
  if (typeof kid !== 'string' || !isKid(kid)) throw new JwsError('key', 'key has no valid kid');
  if (kty !== 'EC' || crv !== 'P-256') throw new JwsError('key', `key ${kid} is not an EC P-256 key`);
  if (alg !== undefined && alg !== JWS_ALGORITHM) throw new JwsError('key', `key ${kid} is for ${String(alg).slice(0, 20)}, not ${JWS_ALGORITHM}`);
  if (use !== undefined && use !== 'sig') throw new JwsError('key', `key ${kid} is not a signature key`);
  // 32-byte coordinates are 43 base64url characters.
  if (typeof x !== 'string' || typeof y !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(x) || !/^[A-Za-z0-9_-]{43}$/.test(y)) {
    throw new JwsError('key', `key ${kid} has malformed coordinates`);
  }
  let key: KeyObject;
  try {
    // createPublicKey checks that the point is on the curve.
    key = createPublicKey({ key: { kty, crv, x, y }, format: 'jwk' });
  } catch {
    throw new JwsError('key', `key ${kid} is not a valid P-256 public key`);
  }
  assertEs256Key(key);
  return { kid, key, jwk: { kty: 'EC', crv: 'P-256', x, y, kid, alg: JWS_ALGORITHM, use: 'sig' } };
}
