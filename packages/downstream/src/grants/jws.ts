/**
 * Compact JWS (RFC 7515) with ES256 only, on node:crypto. Grants are the one token this project signs,
 * so the verifier accepts exactly one algorithm: no `none`, no HMAC (the classic confusion where a public
 * key is used as an HMAC secret), no RSA, whatever the header says. Keys are named by their RFC 7638
 * thumbprint (registry-core's `thumbprintOfJwk`, which its token keys use too), so a key's `kid` is the
 * same wherever it is published.
 */
import { createPublicKey, KeyObject, sign, verify, type JsonWebKey } from 'node:crypto';
import { thumbprintOfJwk } from '@cascade/registry-core';

/** The only JWS algorithm signed and accepted. */
export const JWS_ALGORITHM = 'ES256';

/**
 * Longest token accepted, in characters. A grant is about 600; the bound keeps base64 decoding and JSON
 * parsing of attacker-chosen input cheap.
 */
export const JWS_MAX_LENGTH = 8192;

/** Longest `kid` accepted; a thumbprint is 43 characters. */
const KID_MAX_LENGTH = 128;
const KID_GRAMMAR = /^[A-Za-z0-9._-]+$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;
/** An ES256 signature is r || s, 32 bytes each (IEEE P1363), not DER. */
const ES256_SIGNATURE_LENGTH = 64;

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

/** The protected header of a token this module signs or accepts. */
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

/**
 * Throws unless `key` is an EC key on P-256, the only curve ES256 is defined for. Checked before every
 * signature operation because node's `verify` would otherwise happily verify with whatever key type it is
 * given (an RSA key would make "ES256" mean RSA).
 */
export function assertEs256Key(key: KeyObject): void {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    throw new JwsError('key', `expected an EC P-256 key for ES256, got ${key.asymmetricKeyType ?? key.type}${curve ? ` (${curve})` : ''}`);
  }
}

/**
 * The RFC 7638 thumbprint of a public key: SHA-256 over the required members in lexicographic order,
 * base64url. EC and RSA keys are supported (RSA only so that a thumbprint can be computed for any key an
 * operator drops in; such keys are still refused for signing).
 */
export function jwkThumbprint(key: KeyObject | JsonWebKey): string {
  const jwk: JsonWebKey = key instanceof KeyObject ? (key.type === 'private' ? createPublicKey(key) : key).export({ format: 'jwk' }) : key;
  const thumbprint = jwk.kty === 'EC' || jwk.kty === 'RSA' ? thumbprintOfJwk(jwk as Record<string, unknown>) : undefined;
  if (thumbprint === undefined) throw new JwsError('key', `cannot compute the thumbprint of a ${String(jwk.kty)} key`);
  return thumbprint;
}

/** The public JWK of an ES256 key (private or public), with its thumbprint as `kid`. */
export function publicJwk(key: KeyObject): PublicJwk {
  assertEs256Key(key);
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string' || typeof jwk.y !== 'string') throw new JwsError('key', 'EC key without coordinates');
  return { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, kid: jwkThumbprint(pub), alg: JWS_ALGORITHM, use: 'sig' };
}

/**
 * Imports one JWK of a key set received from elsewhere: the key, and the JWK reduced to its public members
 * (for re-publishing). Throws JwsError `key` saying why it is not a usable ES256 verification key. Only the
 * public members are read, so a set that (wrongly) carries a private `d` does not turn into a signing key.
 */
export function importPublicJwk(value: unknown): { kid: string; key: KeyObject; jwk: PublicJwk } {
  if (!isObject(value)) throw new JwsError('key', 'key is not a JSON object');
  const { kty, crv, x, y, kid, alg, use } = value;
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

/** Signs `payload` as a compact ES256 JWS with `kid` (and `typ`, when given) in the protected header. */
export function signJws(payload: object, key: { readonly privateKey: KeyObject; readonly kid: string }, typ?: string): string {
  assertEs256Key(key.privateKey);
  const header: JwsHeader = { alg: JWS_ALGORITHM, kid: key.kid, ...(typ === undefined ? {} : { typ }) };
  const signingInput = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(payload))}`;
  const signature = sign('sha256', Buffer.from(signingInput), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${signingInput}.${signature.toString('base64url')}`;
}

/**
 * Splits and decodes a compact JWS without checking its signature: the caller needs the header's `kid`
 * to find the key. Throws JwsError `malformed` (length, segments, encoding, JSON, `crit`) or `algorithm`
 * (anything but ES256, including `none`).
 */
export function decodeJws(token: string): DecodedJws {
  if (typeof token !== 'string' || token.length === 0) throw new JwsError('malformed', 'token is empty');
  if (token.length > JWS_MAX_LENGTH) throw new JwsError('malformed', `token is longer than ${JWS_MAX_LENGTH} characters`);
  const parts = token.split('.');
  if (parts.length !== 3) throw new JwsError('malformed', `token has ${parts.length} segments, expected 3 (header.payload.signature)`);
  const [h, p, s] = parts as [string, string, string];
  const header = parseSegment(h, 'header');
  const payload = parseSegment(p, 'payload');
  if (header.alg !== JWS_ALGORITHM) {
    const alg = typeof header.alg === 'string' ? JSON.stringify(header.alg.slice(0, 20)) : 'missing';
    throw new JwsError('algorithm', `token algorithm ${alg} is not accepted: only ${JWS_ALGORITHM} is`);
  }
  // RFC 7515 4.1.11: an extension the verifier does not understand must be refused, and this one knows none.
  if (header.crit !== undefined) throw new JwsError('malformed', 'token header has critical extensions, none are supported');
  if (typeof header.kid !== 'string' || !isKid(header.kid)) throw new JwsError('malformed', 'token header has no valid kid');
  if (header.typ !== undefined && typeof header.typ !== 'string') throw new JwsError('malformed', 'token header typ is not a string');
  const signature = decodeB64(s);
  if (signature === undefined || signature.length !== ES256_SIGNATURE_LENGTH) throw new JwsError('malformed', 'token signature is not a 64-byte ES256 signature');
  return { header: header as JwsHeader, payload, signingInput: `${h}.${p}`, signature };
}

/** True when `jws`'s signature verifies with `key` (which must be an ES256 key). */
export function verifyJwsSignature(jws: DecodedJws, key: KeyObject): boolean {
  assertEs256Key(key);
  return verify('sha256', Buffer.from(jws.signingInput), { key, dsaEncoding: 'ieee-p1363' }, jws.signature);
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

function parseSegment(segment: string, what: 'header' | 'payload'): Record<string, unknown> {
  const bytes = decodeB64(segment);
  if (bytes === undefined) throw new JwsError('malformed', `token ${what} is not base64url`);
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new JwsError('malformed', `token ${what} is not JSON`);
  }
  if (!isObject(value)) throw new JwsError('malformed', `token ${what} is not a JSON object`);
  return value;
}

/**
 * Strict base64url: Buffer.from ignores stray characters and trailing bits, so the text is checked and
 * must be the canonical encoding of what it decodes to (one token, one spelling).
 */
function decodeB64(text: string): Buffer | undefined {
  if (!BASE64URL.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64url');
  return bytes.toString('base64url') === text ? bytes : undefined;
}

function b64(text: string): string {
  return Buffer.from(text).toString('base64url');
}

function isKid(kid: string): boolean {
  return kid.length > 0 && kid.length <= KID_MAX_LENGTH && KID_GRAMMAR.test(kid);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
