/**
 * Compact JWS (RFC 7515) on node:crypto: the one place where Cascade splits, decodes, signs and verifies
 * tokens. Grants (`es256.ts`) and registry tokens (`auth/token/jwt.ts`) are profiles on top of it. Nothing a
 * token says about itself is trusted: the algorithm must be on the caller's list, the key must be of the
 * algorithm's kind, and decoding is strict, so one token has exactly one spelling.
 */
import { constants, sign, verify, type KeyObject } from 'node:crypto';

/**
 * The JWS algorithms (RFC 7518) a token may be verified with, each bound to one kind of key. `none` and the
 * HMAC algorithms (HS256...) are absent on purpose: with them, anyone holding a public key, or nobody at
 * all, could mint tokens.
 */
export const JWS_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'] as const;

/** One of {@link JWS_ALGORITHMS}. */
export type JwsAlgorithm = (typeof JWS_ALGORITHMS)[number];

/** Smallest RSA modulus trusted, in bits: shorter keys are factorable. */
export const MIN_RSA_BITS = 2048;

interface AlgorithmSpec {
  readonly keyType: 'ec' | 'rsa' | 'ed25519';
  /** node's name of the EC curve. */
  readonly curve?: string;
  /** Digest name for node's sign/verify; null for EdDSA, which hashes internally. */
  readonly hash: string | null;
  readonly pss?: boolean;
  /** Exact length of an ECDSA signature (r || s, IEEE P1363, not DER), in bytes. */
  readonly signatureLength?: number;
}

const ALGORITHMS: Readonly<Record<JwsAlgorithm, AlgorithmSpec>> = {
  ES256: { keyType: 'ec', curve: 'prime256v1', hash: 'sha256', signatureLength: 64 },
  ES384: { keyType: 'ec', curve: 'secp384r1', hash: 'sha384', signatureLength: 96 },
  ES512: { keyType: 'ec', curve: 'secp521r1', hash: 'sha512', signatureLength: 132 },
  RS256: { keyType: 'rsa', hash: 'sha256' },
  RS384: { keyType: 'rsa', hash: 'sha384' },
  RS512: { keyType: 'rsa', hash: 'sha512' },
  PS256: { keyType: 'rsa', hash: 'sha256', pss: true },
  PS384: { keyType: 'rsa', hash: 'sha384', pss: true },
  PS512: { keyType: 'rsa', hash: 'sha512', pss: true },
  EdDSA: { keyType: 'ed25519', hash: null },
};

/** Why a token or key was refused. */
export type JwsErrorReason = 'malformed' | 'algorithm' | 'signature' | 'key';

/**
 * A refused token or key. The message says what is wrong and never contains the token, so it can be
 * logged and returned to the client.
 */
export class JwsError extends Error {
  constructor(readonly reason: JwsErrorReason, message: string) {
    super(message);
    this.name = 'JwsError';
  }
}

/** True when `key` is the kind of key `alg` signs with (so an RSA key is never used for ES256, say). */
export function keyFitsAlgorithm(alg: JwsAlgorithm, key: KeyObject): boolean {
  const spec = ALGORITHMS[alg];
  const details = key.asymmetricKeyDetails ?? {};
  switch (spec.keyType) {
    case 'ec':
      return key.asymmetricKeyType === 'ec' && details.namedCurve === spec.curve;
    case 'rsa':
      return (key.asymmetricKeyType === 'rsa' || (spec.pss === true && key.asymmetricKeyType === 'rsa-pss')) && (details.modulusLength ?? 0) >= MIN_RSA_BITS;
    case 'ed25519':
      return key.asymmetricKeyType === 'ed25519';
  }
}

/** A compact JWS split and its header decoded and checked, before its signature is. */
export interface ParsedJws {
  readonly header: Readonly<Record<string, unknown>> & { readonly alg: JwsAlgorithm };
  /** The payload segment as received (base64url); {@link parseJwsPayload} decodes it. */
  readonly payloadSegment: string;
  /** `<header>.<payload>` as received: what the signature covers. */
  readonly signingInput: string;
  readonly signature: Buffer;
}

/** What {@link parseCompactJws} accepts. */
export interface JwsProfile {
  /** The algorithms accepted; never `none` or HS*, which are not {@link JwsAlgorithm}s. */
  readonly algorithms: readonly JwsAlgorithm[];
  /** Longest token accepted, in characters; bounds the work done on attacker-chosen input. */
  readonly maxLength: number;
}

/**
 * Splits a compact JWS and decodes its header. Throws JwsError `malformed` (length, segments, encoding,
 * JSON, `crit`, `typ`, a signature that is empty or of the wrong length for an ECDSA algorithm) or
 * `algorithm` (not on the profile's list, including `none`). The payload is left encoded: a caller that
 * reads claims only once the signature checks out can do so.
 */
export function parseCompactJws(token: string, profile: JwsProfile): ParsedJws {
  if (typeof token !== 'string' || token.length === 0) throw new JwsError('malformed', 'token is empty');
  if (token.length > profile.maxLength) throw new JwsError('malformed', `token is longer than ${profile.maxLength} characters`);
  const parts = token.split('.');
  if (parts.length !== 3) throw new JwsError('malformed', `token has ${parts.length} segments, not three (header.payload.signature)`);
  const [h, p, s] = parts as [string, string, string];
  const header = parseSegment(h, 'header');
  const alg = header['alg'];
  if (typeof alg !== 'string' || !Object.hasOwn(ALGORITHMS, alg) || !profile.algorithms.includes(alg as JwsAlgorithm)) {
    const shown = typeof alg === 'string' ? JSON.stringify(alg.slice(0, 20)) : alg === undefined ? 'missing' : 'not a string';
    throw new JwsError('algorithm', `token algorithm ${shown} is not accepted: only ${profile.algorithms.join(', ')}`);
  }
  // RFC 7515 4.1.11: an extension the verifier does not understand must be refused, and Cascade knows none.
  if (header['crit'] !== undefined) throw new JwsError('malformed', 'token header has critical extensions, none are supported');
  if (header['typ'] !== undefined && typeof header['typ'] !== 'string') throw new JwsError('malformed', 'token header typ is not a string');
  const signature = decodeBase64url(s);
  const length = ALGORITHMS[alg as JwsAlgorithm].signatureLength;
  if (length !== undefined && signature?.length !== length) throw new JwsError('malformed', `token signature is not a ${length}-byte ${alg} signature`);
  if (signature === undefined) throw new JwsError('malformed', 'token signature is not base64url');
  if (signature.length === 0) throw new JwsError('malformed', 'token is not signed');
  return { header: header as ParsedJws['header'], payloadSegment: p, signingInput: `${h}.${p}`, signature };
}

/** Decodes a payload segment to a JSON object; throws JwsError `malformed`. */
export function parseJwsPayload(segment: string): Record<string, unknown> {
  return parseSegment(segment, 'payload');
}

/**
 * True when `signature` over `signingInput` verifies with `key` under `alg`; false, never a throw, for a key
 * of another kind or a signature node cannot read.
 */
export function verifyJwsSignatureWith(alg: JwsAlgorithm, key: KeyObject, signingInput: string, signature: Buffer): boolean {
  const spec = ALGORITHMS[alg];
  if (!keyFitsAlgorithm(alg, key)) return false;
  // node accepts DER as well as r||s unless told otherwise; JWS allows only the fixed-length form.
  if (spec.signatureLength !== undefined && signature.length !== spec.signatureLength) return false;
  try {
    return verify(spec.hash, Buffer.from(signingInput), signingKey(spec, key), signature);
  } catch {
    return false;
  }
}

/**
 * Signs `payload` as a compact JWS whose protected header is `header` (serialised in its own key order;
 * `header.alg` chooses the algorithm). Throws JwsError `key` when `privateKey` is not of `alg`'s kind.
 */
export function signCompactJws(header: { readonly alg: JwsAlgorithm } & Readonly<Record<string, unknown>>, payload: object, privateKey: KeyObject): string {
  if (!keyFitsAlgorithm(header.alg, privateKey)) throw new JwsError('key', `the key cannot sign ${header.alg}`);
  const input = `${encodeBase64url(JSON.stringify(header))}.${encodeBase64url(JSON.stringify(payload))}`;
  const signature = sign(ALGORITHMS[header.alg].hash, Buffer.from(input), signingKey(ALGORITHMS[header.alg], privateKey));
  return `${input}.${signature.toString('base64url')}`;
}

function signingKey(spec: AlgorithmSpec, key: KeyObject) {
  if (spec.keyType === 'ec') return { key, dsaEncoding: 'ieee-p1363' as const };
  if (spec.pss === true) return { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST };
  return key;
}

/** base64url without padding. */
export function encodeBase64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/**
 * Strict base64url, or undefined: Buffer.from ignores stray characters and trailing bits, so the text is
 * checked and must be the canonical encoding of what it decodes to (one token, one spelling).
 */
export function decodeBase64url(text: string): Buffer | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64url');
  return bytes.toString('base64url') === text ? bytes : undefined;
}

function parseSegment(segment: string, what: 'header' | 'payload'): Record<string, unknown> {
  const bytes = decodeBase64url(segment);
  if (bytes === undefined) throw new JwsError('malformed', `token ${what} is not base64url`);
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new JwsError('malformed', `token ${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new JwsError('malformed', `token ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}
