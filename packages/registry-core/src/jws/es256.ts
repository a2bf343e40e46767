/**
 * The ES256-only profile, for grants: the one token Cascade both signs and verifies itself, so the verifier
 * accepts exactly one algorithm (no `none`, no HMAC confusion, no RSA, whatever the header says) and every
 * token names its key by a `kid` (the key's RFC 7638 thumbprint).
 */
import type { KeyObject } from 'node:crypto';
import { JwsError, parseCompactJws, parseJwsPayload, signCompactJws, verifyJwsSignatureWith } from './compact.js';
import { assertEs256Key, isKid, JWS_ALGORITHM } from './keys.js';

/**
 * Longest token accepted, in characters. A grant is about 600; the bound keeps base64 decoding and JSON
 * parsing of attacker-chosen input cheap.
 */
export const JWS_MAX_LENGTH = 8192;

const PROFILE = { algorithms: [JWS_ALGORITHM], maxLength: JWS_MAX_LENGTH } as const;

/** The protected header of a token this profile signs or accepts. */
export interface JwsHeader {
  readonly alg: typeof JWS_ALGORITHM;
  readonly kid: string;
  readonly typ?: string;
  readonly [name: string]: unknown;
}

/** A token split and decoded, before its signature is checked. */
export interface DecodedJws {
  readonly header: JwsHeader;
  readonly payload: Readonly<Record<string, unknown>>;
  /** `<header>.<payload>` as received: what the signature covers. */
  readonly signingInput: string;
  readonly signature: Buffer;
}

/** Signs `payload` as a compact ES256 JWS with `kid` (and `typ`, when given) in the protected header. */
export function signJws(payload: object, key: { readonly privateKey: KeyObject; readonly kid: string }, typ?: string): string {
  assertEs256Key(key.privateKey);
  return signCompactJws({ alg: JWS_ALGORITHM, kid: key.kid, ...(typ === undefined ? {} : { typ }) }, payload, key.privateKey);
}

/**
 * Splits and decodes a compact JWS without checking its signature: the caller needs the header's `kid`
 * to find the key. Throws JwsError `malformed` (length, segments, encoding, JSON, `crit`, `kid`) or
 * `algorithm` (anything but ES256, including `none`).
 */
export function decodeJws(token: string): DecodedJws {
  const jws = parseCompactJws(token, PROFILE);
  const kid = jws.header['kid'];
  if (typeof kid !== 'string' || !isKid(kid)) throw new JwsError('malformed', 'token header has no valid kid');
  return { header: jws.header as JwsHeader, payload: parseJwsPayload(jws.payloadSegment), signingInput: jws.signingInput, signature: jws.signature };
}

/** True when `jws`'s signature verifies with `key`; throws JwsError `key` unless it is an ES256 key. */
export function verifyJwsSignature(jws: DecodedJws, key: KeyObject): boolean {
  assertEs256Key(key);
  return verifyJwsSignatureWith(JWS_ALGORITHM, key, jws.signingInput, jws.signature);
}

/**
 * Decodes `token`, finds its key by `kid` and verifies the signature. Throws JwsError: `malformed`,
 * `algorithm`, `key` (unknown kid) or `signature`.
 */
export async function verifyJws(token: string, getKey: (kid: string) => Promise<KeyObject | undefined>): Promise<DecodedJws> {
  const jws = decodeJws(token);
  const key = await getKey(jws.header.kid);
  if (key === undefined) throw new JwsError('key', `token is signed with an unknown key (kid ${jws.header.kid})`);
  if (!verifyJwsSignature(jws, key)) throw new JwsError('signature', 'token signature does not verify');
  return jws;
}
