/**
 * Docker token-spec tokens (distribution's `registry/auth/token`) on Cascade's JWS module (`src/jws/`):
 * signing with ES256 or RS256, and verification that trusts nothing the token says about itself until its
 * signature checks out against a configured key.
 *
 * Keys are identified as distribution 3 does, by the RFC 7638 JWK thumbprint in `kid`; the libtrust key ID
 * that distribution 2 and docker_auth put in `kid` is also recognised when verifying, and a signer whose
 * certificate is configured adds `x5c`, which is what distribution 2 needs to trust a key.
 */
import { createPublicKey, type KeyObject, type X509Certificate } from 'node:crypto';
import { JWS_ALGORITHMS, JwsError, jwkThumbprint, keyFitsAlgorithm, libtrustKeyId, MIN_RSA_BITS, parseCompactJws, parseJwsPayload, publicOf } from '../../jws/index.js';
import { signCompactJws, thumbprintOfJwk, verifyJwsSignatureWith, verifyX5c, type JwsAlgorithm } from '../../jws/index.js';

export { jwkThumbprint, libtrustKeyId } from '../../jws/index.js';

/** The algorithms Cascade signs with: ES256 for an EC P-256 key, RS256 for an RSA key. */
export type SigningAlgorithm = 'ES256' | 'RS256';

/** Clock skew tolerated on `exp` and `nbf`, in seconds, as distribution's `Leeway`. */
export const CLOCK_LEEWAY_SECONDS = 60;

/** Tokens longer than this are refused before any parsing (a header cannot usefully be larger). */
const MAX_TOKEN_LENGTH = 16 * 1024;

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
    return signCompactJws({ typ: 'JWT', alg: this.alg, kid: this.kid, ...(this.x5c ? { x5c: this.x5c } : {}) }, claims, this.privateKey);
  }
}

/** A public key a token may be signed with, and the IDs a token's `kid` may name it by. */
export interface TrustedKey {
  readonly key: KeyObject;
  /** An explicit key ID (a JWKS entry's `kid`), besides the thumbprint and libtrust ID always recognised. */
  readonly kid?: string;
}

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
   * the bundle ({@link verifyX5c}).
   *
   * @throws TokenInvalidError when the chain is malformed or leads nowhere trusted.
   */
  verifyChain(x5c: readonly unknown[], nowMs: number): KeyObject {
    try {
      return verifyX5c(x5c, this.roots, nowMs);
    } catch (e) {
      throw e instanceof JwsError ? new TokenInvalidError(e.message) : e;
    }
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
  let claims: Record<string, unknown>;
  const now = (options.now ?? Date.now)();
  try {
    const jws = parseCompactJws(token, { algorithms: options.algorithms ?? JWS_ALGORITHMS, maxLength: MAX_TOKEN_LENGTH });
    const { alg } = jws.header;
    const keys = candidateKeys(jws.header, options.keys, now).filter((k) => keyFitsAlgorithm(alg, k));
    if (!keys.some((k) => verifyJwsSignatureWith(alg, k, jws.signingInput, jws.signature))) throw new TokenInvalidError('the signature does not verify with a trusted key');
    claims = parseJwsPayload(jws.payloadSegment);
  } catch (e) {
    throw e instanceof JwsError ? new TokenInvalidError(e.message) : e;
  }
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
