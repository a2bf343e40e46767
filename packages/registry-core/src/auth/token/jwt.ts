/**
 * Compact JWS tokens as the Docker token spec uses them (distribution's `registry/auth/token`), with
 * node:crypto only: signing with ES256 or RS256, and verification that trusts nothing the token says about
 * itself until its signature checks out against a configured key.
 *
 * Keys are identified as distribution 3 does, by the RFC 7638 JWK thumbprint in `kid`; the libtrust key ID
 * that distribution 2 and docker_auth put in `kid` is also recognised when verifying, and a signer whose
 * certificate is configured adds `x5c`, which is what distribution 2 needs to trust a key.
 */
import { constants, createHash, createPublicKey, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';

/**
 * The JWS algorithms (RFC 7518) a token may be verified with, each bound to one kind of key. `none` and the
 * HMAC algorithms (HS256...) are absent on purpose: with them, anyone holding a public key, or nobody at
 * all, could mint tokens.
 */
export const JWS_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'] as const;

/** One of {@link JWS_ALGORITHMS}. */
export type JwsAlgorithm = (typeof JWS_ALGORITHMS)[number];

/** The algorithms Cascade signs with: ES256 for an EC P-256 key, RS256 for an RSA key. */
export type SigningAlgorithm = 'ES256' | 'RS256';

/** Clock skew tolerated on `exp` and `nbf`, in seconds, as distribution's `Leeway`. */
export const CLOCK_LEEWAY_SECONDS = 60;

/** Tokens longer than this are refused before any parsing (a header cannot usefully be larger). */
const MAX_TOKEN_LENGTH = 16 * 1024;

/** Smallest RSA modulus trusted, in bits: shorter keys are factorable. */
const MIN_RSA_BITS = 2048;

interface AlgorithmSpec {
  readonly keyType: 'ec' | 'rsa' | 'ed25519';
  /** node's name of the EC curve. */
  readonly curve?: string;
  /** Digest name for node's sign/verify; null for EdDSA, which hashes internally. */
  readonly hash: string | null;
  readonly pss?: boolean;
  /** Exact signature length of an ECDSA signature (r || s), in bytes. */
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

function isJwsAlgorithm(value: unknown): value is JwsAlgorithm {
  return typeof value === 'string' && Object.hasOwn(ALGORITHMS, value);
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

/** One resource of the token's `access` claim and the actions granted on it. */
export interface ResourceActions {
  /** `repository` or `registry` (for `catalog`); other types are carried but never granted by Cascade. */
  readonly type: string;
  readonly name: string;
  readonly actions: readonly string[];
}

/** The claims of a registry token (the Docker token spec's claim set). */
export interface TokenClaims {
  readonly iss: string;
  /** The account the token was issued to; '' for an anonymous client. */
  readonly sub: string;
  readonly aud: string | readonly string[];
  /** Expiry, in seconds since the epoch. */
  readonly exp: number;
  readonly nbf?: number;
  readonly iat?: number;
  readonly jti?: string;
  readonly access: readonly ResourceActions[];
}

/**
 * Why a token was refused. The reason is for logs and tests; clients are only told the token is invalid,
 * so that a forger learns nothing about which check failed.
 */
export class TokenInvalidError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'TokenInvalidError';
  }
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** Strict base64url: the alphabet only, no padding, and a length a real encoding can have. */
function fromBase64url(part: string, what: string): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(part) || part.length % 4 === 1) throw new TokenInvalidError(`${what} is not base64url`);
  return Buffer.from(part, 'base64url');
}

function parseJsonObject(bytes: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new TokenInvalidError(`${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TokenInvalidError(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

/** The public half of `key` (itself when it already is public). */
function publicOf(key: KeyObject): KeyObject {
  return key.type === 'public' ? key : createPublicKey(key);
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
 * The RFC 7638 JWK thumbprint of a key (its public half): base64url SHA-256 of the canonical JWK. This is
 * the `kid` Cascade writes and the key ID distribution 3 gives the keys of `rootcertbundle`.
 *
 * @example jwkThumbprint(createPublicKey(pem)) // 43 base64url characters
 */
export function jwkThumbprint(key: KeyObject): string {
  const jwk = publicOf(key).export({ format: 'jwk' }) as Record<string, unknown>;
  const thumbprint = thumbprintOfJwk(jwk);
  if (thumbprint === undefined) throw new Error(`cannot compute the JWK thumbprint of a ${key.asymmetricKeyType ?? 'symmetric'} key`);
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

/** Options of {@link JwsSigner}. */
export interface JwsSignerOptions {
  /**
   * Certificates of the key, leaf first, sent as `x5c` so that verifiers that only trust certificate chains
   * (distribution 2) accept the tokens. The leaf must hold the signing key's public key.
   */
  readonly certificates?: readonly X509Certificate[];
}

/**
 * Signs tokens with one private key: ES256 for an EC P-256 key, RS256 for an RSA key of at least 2048 bits.
 * The header carries `kid` (the key's JWK thumbprint) and, when certificates are given, `x5c`.
 *
 * @throws Error when the key is of another kind, or the certificate does not hold its public key.
 * @example
 * const signer = new JwsSigner(createPrivateKey(pem));
 * const token = signer.sign({ iss: 'cascade', sub: 'alice', aud: 'registry', exp, access: [] });
 */
export class JwsSigner {
  /** The algorithm of every token this signer makes. */
  readonly alg: SigningAlgorithm;
  /** The RFC 7638 thumbprint of the public key, sent as `kid`. */
  readonly kid: string;
  /** The public key verifiers need. */
  readonly publicKey: KeyObject;
  /** The `x5c` header value (standard base64 DER, leaf first), when certificates were given. */
  readonly x5c: readonly string[] | undefined;
  private readonly privateKey: KeyObject;

  constructor(privateKey: KeyObject, options: JwsSignerOptions = {}) {
    if (privateKey.type !== 'private') throw new Error('expected a private key');
    if (keyFitsAlgorithm('ES256', privateKey)) this.alg = 'ES256';
    else if (keyFitsAlgorithm('RS256', privateKey)) this.alg = 'RS256';
    else {
      const details = privateKey.asymmetricKeyDetails ?? {};
      const what = details.namedCurve ? `an EC ${details.namedCurve} key` : details.modulusLength ? `a ${details.modulusLength}-bit RSA key` : `a ${privateKey.asymmetricKeyType ?? 'symmetric'} key`;
      throw new Error(`expected an EC P-256 key (ES256) or an RSA key of at least ${MIN_RSA_BITS} bits (RS256), got ${what}`);
    }
    this.privateKey = privateKey;
    this.publicKey = createPublicKey(privateKey);
    this.kid = jwkThumbprint(this.publicKey);
    const certificates = options.certificates ?? [];
    const leaf = certificates[0];
    if (leaf !== undefined && jwkThumbprint(leaf.publicKey) !== this.kid) throw new Error('the certificate does not hold the public key of the signing key');
    this.x5c = leaf === undefined ? undefined : certificates.map((c) => c.raw.toString('base64'));
  }

  /** Signs `claims` as a compact JWS (`header.payload.signature`). */
  sign(claims: object): string {
    const header = { typ: 'JWT', alg: this.alg, kid: this.kid, ...(this.x5c ? { x5c: this.x5c } : {}) };
    const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature =
      this.alg === 'ES256'
        ? sign('sha256', Buffer.from(input), { key: this.privateKey, dsaEncoding: 'ieee-p1363' })
        : sign('sha256', Buffer.from(input), this.privateKey);
    return `${input}.${base64url(signature)}`;
  }
}

/** A public key a token may be signed with, and the IDs a token's `kid` may name it by. */
export interface TrustedKey {
  readonly key: KeyObject;
  /** An explicit key ID (a JWKS entry's `kid`), besides the thumbprint and libtrust ID always recognised. */
  readonly kid?: string;
}

/** Certificates parsed from `x5c` are refused beyond this chain length. */
const MAX_CHAIN = 10;

/**
 * The keys and root certificates tokens are verified against. Certificates of the bundle are trust anchors
 * for `x5c` chains, and their public keys are also trusted directly by `kid`.
 */
export class TrustedKeys {
  private readonly byId = new Map<string, KeyObject>();
  private readonly keys: KeyObject[] = [];
  private readonly roots: readonly X509Certificate[];

  constructor(options: { keys?: readonly TrustedKey[]; roots?: readonly X509Certificate[] }) {
    this.roots = options.roots ?? [];
    const all: TrustedKey[] = [...(options.keys ?? []), ...this.roots.map((c) => ({ key: c.publicKey }))];
    for (const { key, kid } of all) {
      const pub = publicOf(key);
      this.keys.push(pub);
      if (kid !== undefined) this.byId.set(kid, pub);
      this.byId.set(jwkThumbprint(pub), pub);
      this.byId.set(libtrustKeyId(pub), pub);
    }
  }

  /** How many keys are trusted (certificates' keys included). */
  get size(): number {
    return this.keys.length;
  }

  /** The trusted key a `kid` names, by explicit ID, JWK thumbprint or libtrust ID. */
  byKid(kid: string): KeyObject | undefined {
    return this.byId.get(kid);
  }

  /** Every trusted key. */
  all(): readonly KeyObject[] {
    return this.keys;
  }

  /**
   * The leaf public key of an `x5c` chain (standard base64 DER, leaf first) that leads to a certificate of
   * the bundle: each link issued and signed by the next, intermediates being CAs, all valid at `nowMs`.
   *
   * @throws TokenInvalidError when the chain is malformed or leads nowhere trusted.
   */
  verifyChain(x5c: readonly unknown[], nowMs: number): KeyObject {
    if (x5c.length === 0 || x5c.length > MAX_CHAIN) throw new TokenInvalidError(`x5c holds ${x5c.length} certificates`);
    const chain = x5c.map((entry, i) => {
      if (typeof entry !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(entry)) throw new TokenInvalidError(`x5c[${i}] is not base64`);
      try {
        return new X509Certificate(Buffer.from(entry, 'base64'));
      } catch {
        throw new TokenInvalidError(`x5c[${i}] is not a certificate`);
      }
    });
    const valid = (c: X509Certificate) => Date.parse(c.validFrom) <= nowMs && nowMs <= Date.parse(c.validTo);
    const leaf = chain[0] as X509Certificate;
    let current = leaf;
    const intermediates = chain.slice(1);
    for (let depth = 0; depth <= MAX_CHAIN; depth++) {
      if (!valid(current)) throw new TokenInvalidError(`certificate ${current.subject.replace(/\n/g, ', ')} is not valid now`);
      if (this.roots.some((r) => r.raw.equals(current.raw))) return leaf.publicKey;
      const cert = current;
      const signedBy = (issuer: X509Certificate) => issuer.ca && cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
      const root = this.roots.find((r) => signedBy(r) && valid(r));
      if (root !== undefined) return leaf.publicKey;
      const next = intermediates.find(signedBy);
      if (next === undefined) throw new TokenInvalidError('x5c does not lead to a certificate of the root bundle');
      current = next;
    }
    throw new TokenInvalidError('x5c chain is too long');
  }
}

/** Options of {@link verifyJwt}. */
export interface VerifyJwtOptions {
  readonly keys: TrustedKeys;
  /** The only accepted `iss`. */
  readonly issuer: string;
  /** The service: `aud` must be it, or a list holding it. */
  readonly audience: string;
  /** Accepted algorithms (default: all of {@link JWS_ALGORITHMS}); never `none` or HS*. */
  readonly algorithms?: readonly JwsAlgorithm[];
  /** The clock, in ms (default `Date.now`). */
  readonly now?: () => number;
  /** Tolerated clock skew on `exp`/`nbf`, in seconds (default {@link CLOCK_LEEWAY_SECONDS}). */
  readonly leewaySeconds?: number;
}

function signatureValid(alg: JwsAlgorithm, key: KeyObject, input: Buffer, signature: Buffer): boolean {
  const spec = ALGORITHMS[alg];
  if (!keyFitsAlgorithm(alg, key)) return false;
  // node accepts DER as well as r||s unless told otherwise; JWS allows only the fixed-length form.
  if (spec.signatureLength !== undefined && signature.length !== spec.signatureLength) return false;
  try {
    if (spec.keyType === 'ec') return verify(spec.hash, input, { key, dsaEncoding: 'ieee-p1363' }, signature);
    if (spec.pss === true) {
      return verify(spec.hash, input, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, signature);
    }
    return verify(spec.hash, input, key, signature);
  } catch {
    return false;
  }
}

/** The keys a header points at: its `x5c` chain, else a trusted `jwk`, else `kid`, else every trusted key. */
function candidateKeys(header: Record<string, unknown>, keys: TrustedKeys, nowMs: number): readonly KeyObject[] {
  const x5c = header['x5c'];
  if (x5c !== undefined) {
    if (!Array.isArray(x5c)) throw new TokenInvalidError('x5c is not a list');
    return [keys.verifyChain(x5c, nowMs)];
  }
  const jwk = header['jwk'];
  if (jwk !== undefined) {
    // A key that comes with the token proves nothing; it only selects one of the trusted keys.
    const thumbprint = typeof jwk === 'object' && jwk !== null && !Array.isArray(jwk) ? thumbprintOfJwk(jwk as Record<string, unknown>) : undefined;
    const key = thumbprint === undefined ? undefined : keys.byKid(thumbprint);
    if (key === undefined) throw new TokenInvalidError('the jwk of the header is not a trusted key');
    return [key];
  }
  const kid = header['kid'];
  if (kid !== undefined) {
    const key = typeof kid === 'string' ? keys.byKid(kid) : undefined;
    if (key === undefined) throw new TokenInvalidError(`kid ${JSON.stringify(kid)} names no trusted key`);
    return [key];
  }
  return keys.all();
}

function parseAccess(value: unknown): ResourceActions[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new TokenInvalidError('access is not a list');
  return value.map((entry: unknown): ResourceActions => {
    if (typeof entry !== 'object' || entry === null) throw new TokenInvalidError('an access entry is not an object');
    const { type, name, actions } = entry as Record<string, unknown>;
    if (typeof type !== 'string' || typeof name !== 'string') throw new TokenInvalidError('an access entry lacks type or name');
    const list = actions === undefined || actions === null ? [] : actions;
    if (!Array.isArray(list) || !list.every((a): a is string => typeof a === 'string')) throw new TokenInvalidError('access actions are not a list of strings');
    return { type, name, actions: list };
  });
}

function isNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/**
 * Verifies a compact JWS token and returns its claims: the algorithm must be allowed, the signature valid
 * for a trusted key of the algorithm's kind, `iss` the issuer, `aud` the audience, `exp` (required) and
 * `nbf` current within the leeway. Claims are only read once the signature has checked out.
 *
 * @throws TokenInvalidError naming the failed check (for logs; clients get "invalid token").
 */
export function verifyJwt(token: string, options: VerifyJwtOptions): TokenClaims {
  if (token.length > MAX_TOKEN_LENGTH) throw new TokenInvalidError(`token is longer than ${MAX_TOKEN_LENGTH} characters`);
  const parts = token.split('.');
  if (parts.length !== 3) throw new TokenInvalidError('not a compact JWS (three dot-separated parts)');
  const [rawHeader = '', rawPayload = '', rawSignature = ''] = parts;
  const header = parseJsonObject(fromBase64url(rawHeader, 'header'), 'header');
  const alg = header['alg'];
  const allowed: readonly JwsAlgorithm[] = options.algorithms ?? JWS_ALGORITHMS;
  if (!isJwsAlgorithm(alg) || !allowed.includes(alg)) throw new TokenInvalidError(`algorithm ${JSON.stringify(alg)} is not accepted`);
  // Extensions marked critical must be understood, and Cascade understands none (RFC 7515 section 4.1.11).
  if (header['crit'] !== undefined) throw new TokenInvalidError('the header has critical extensions');
  const signature = fromBase64url(rawSignature, 'signature');
  if (signature.length === 0) throw new TokenInvalidError('the token is not signed');
  const now = (options.now ?? Date.now)();
  const input = Buffer.from(`${rawHeader}.${rawPayload}`);
  const keys = candidateKeys(header, options.keys, now).filter((k) => keyFitsAlgorithm(alg, k));
  if (!keys.some((k) => signatureValid(alg, k, input, signature))) throw new TokenInvalidError('the signature does not verify with a trusted key');

  const claims = parseJsonObject(fromBase64url(rawPayload, 'payload'), 'payload');
  const { iss, sub, aud, exp, nbf, iat, jti } = claims;
  if (iss !== options.issuer) throw new TokenInvalidError(`issuer ${JSON.stringify(iss)} is not ${JSON.stringify(options.issuer)}`);
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
  if (!audiences.includes(options.audience)) throw new TokenInvalidError(`audience ${JSON.stringify(aud)} does not include ${JSON.stringify(options.audience)}`);
  const seconds = now / 1000;
  const leeway = options.leewaySeconds ?? CLOCK_LEEWAY_SECONDS;
  if (!isNumber(exp)) throw new TokenInvalidError('the token has no exp');
  if (seconds > exp + leeway) throw new TokenInvalidError('the token has expired');
  if (nbf !== undefined && !isNumber(nbf)) throw new TokenInvalidError('nbf is not a number');
  if (nbf !== undefined && seconds < nbf - leeway) throw new TokenInvalidError('the token is not valid yet');
  if (sub !== undefined && typeof sub !== 'string') throw new TokenInvalidError('sub is not a string');
  return {
    iss,
    sub: sub ?? '',
    aud: typeof aud === 'string' ? aud : audiences.filter((a): a is string => typeof a === 'string'),
    exp,
    ...(isNumber(nbf) ? { nbf } : {}),
    ...(isNumber(iat) ? { iat } : {}),
    ...(typeof jti === 'string' ? { jti } : {}),
    access: parseAccess(claims['access']),
  };
}
