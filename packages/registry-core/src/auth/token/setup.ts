/**
 * From a validated `auth.token` section to the running pieces: the keys read from their files, the
 * {@link TokenAuthorizer}, and, when `signingkey` is set, Cascade's {@link TokenServer} at the realm's path.
 * Files are read once, synchronously, at start-up, so a bad file stops the registry before it listens.
 */
import { createPrivateKey, createPublicKey, X509Certificate, type JsonWebKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TokenAuthConfig } from '../../config/schema.js';
import type { ExtraRoute } from '../../http/app.js';
import { HtpasswdAuthenticator, type HtpasswdLogger } from '../htpasswd.js';
import { TokenAuthorizer } from './authorizer.js';
import { jwkThumbprint } from '../../jws/index.js';
import { JwsSigner, TrustedKeys, type TrustedKey } from './jwt.js';
import { AccessRules } from './rules.js';
import { TokenServer } from './server.js';

/** A problem with a file `auth.token` names; the message starts with the key, then the file. */
export class TokenConfigError extends Error {
  /** The dotted key, e.g. `auth.token.signingkey`. */
  readonly key: string;

  constructor(key: string, message: string) {
    super(`${key}: ${message}`);
    this.name = 'TokenConfigError';
    this.key = key;
  }
}

/** The logger the token pieces use: debug lines for refused tokens and issued ones, htpasswd reloads. */
export interface TokenLogger extends HtpasswdLogger {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** What {@link createTokenAuth} builds. */
export interface TokenAuth {
  readonly authorizer: TokenAuthorizer;
  /** The embedded token server, when `signingkey` is configured. */
  readonly server: TokenServer | undefined;
  /** Its routes (GET and POST at the realm's path); empty without `signingkey`. */
  readonly routes: ExtraRoute[];
}

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function readText(key: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new TokenConfigError(key, `cannot read ${file}: ${reason(e)}`);
  }
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Reads the certificates of a PEM bundle (other PEM blocks are skipped, as distribution does). */
export function readCertificateBundle(file: string, key = 'auth.token.rootcertbundle'): X509Certificate[] {
  const text = readText(key, file);
  const blocks = text.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new TokenConfigError(key, `expected PEM certificates in ${file}, got none`);
  return blocks.map((pem, i) => {
    try {
      return new X509Certificate(pem);
    } catch (e) {
      throw new TokenConfigError(key, `expected PEM certificates in ${file}, got an unreadable certificate (number ${i + 1}): ${reason(e)}`);
    }
  });
}

/** The members of a private JWK (RFC 7518 section 6), dropped when a JWKS is read. */
const PRIVATE_JWK_MEMBERS: ReadonlySet<string> = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']);

/** Reads a JSON Web Key Set (`{"keys": [...]}`) of public keys, as distribution 3's `jwks`. */
export function readJwks(file: string, key = 'auth.token.jwks'): TrustedKey[] {
  let doc: unknown;
  try {
    doc = JSON.parse(readText(key, file));
  } catch (e) {
    if (e instanceof TokenConfigError) throw e;
    throw new TokenConfigError(key, `expected a JSON Web Key Set in ${file}, got invalid JSON: ${reason(e)}`);
  }
  const keys = typeof doc === 'object' && doc !== null ? (doc as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(keys) || keys.length === 0) throw new TokenConfigError(key, `expected a JSON Web Key Set ({"keys": [...]}) with at least one key in ${file}`);
  return keys.map((jwk: unknown, i): TrustedKey => {
    if (typeof jwk !== 'object' || jwk === null) throw new TokenConfigError(key, `expected a JSON Web Key at keys[${i}] of ${file}`);
    // Only the public members are used: a set that holds private keys must not make this process a signer.
    const publicMembers = Object.fromEntries(Object.entries(jwk).filter(([member]) => !PRIVATE_JWK_MEMBERS.has(member)));
    try {
      const pub = createPublicKey({ key: publicMembers as JsonWebKey, format: 'jwk' });
      const kid = (jwk as { kid?: unknown }).kid;
      return typeof kid === 'string' ? { key: pub, kid } : { key: pub };
    } catch (e) {
      throw new TokenConfigError(key, `expected a public JSON Web Key at keys[${i}] of ${file}, got: ${reason(e)}`);
    }
  });
}

/**
 * Builds the token authorizer and, with `signingkey`, the token server, from `config` (the validated
 * `auth.token`).
 *
 * @throws TokenConfigError naming the key and the file when a key, certificate, JWKS or htpasswd file
 *   cannot be used.
 */
export function createTokenAuth(config: TokenAuthConfig, options: { logger?: TokenLogger } = {}): TokenAuth {
  const { realm, service, issuer } = config;
  // The schema requires these whenever `token` is the configured scheme; this guards direct callers.
  if (realm === undefined || service === undefined || issuer === undefined) {
    const missing = realm === undefined ? 'realm' : service === undefined ? 'service' : 'issuer';
    throw new TokenConfigError(`auth.token.${missing}`, 'expected a value, got nothing');
  }
  const logger = options.logger;
  if (config.autoredirect === true) logger?.warn({}, `auth.token.autoredirect: accepted but not implemented by Cascade; challenges name auth.token.realm as written`);

  const roots = config.rootcertbundle === undefined ? [] : readCertificateBundle(config.rootcertbundle);
  const keys: TrustedKey[] = config.jwks === undefined ? [] : readJwks(config.jwks);

  let server: TokenServer | undefined;
  let routes: ExtraRoute[] = [];
  if (config.signingkey !== undefined) {
    const file = config.signingkey;
    const text = readText('auth.token.signingkey', file);
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey(text);
    } catch (e) {
      throw new TokenConfigError('auth.token.signingkey', `expected an unencrypted PEM private key (EC P-256 or RSA) in ${file}, got: ${reason(e)}`);
    }
    // Certificates are sent as x5c, because distribution 2 trusts a key only through a certificate chain
    // to its rootcertbundle, not by kid: the chain that follows the key in its own file (leaf first), else
    // a certificate of the bundle that holds the key.
    let chain: X509Certificate[];
    try {
      chain = (text.match(PEM_CERTIFICATE) ?? []).map((pem) => new X509Certificate(pem));
    } catch (e) {
      throw new TokenConfigError('auth.token.signingkey', `expected the certificates after the key in ${file} to be readable, got: ${reason(e)}`);
    }
    if (chain.length === 0) {
      const own = roots.find((c) => jwkThumbprint(c.publicKey) === jwkThumbprint(privateKey));
      if (own !== undefined) chain = [own];
    }
    let signer: JwsSigner;
    try {
      signer = new JwsSigner(privateKey, { certificates: chain });
    } catch (e) {
      throw new TokenConfigError('auth.token.signingkey', `${reason(e)} in ${file}`);
    }
    if (config.signingalgorithms !== undefined && !config.signingalgorithms.includes(signer.alg)) {
      throw new TokenConfigError('auth.token.signingalgorithms', `expected a list that includes ${signer.alg}, the algorithm of auth.token.signingkey, got ${config.signingalgorithms.join(', ')}`);
    }
    keys.push({ key: signer.publicKey });
    let authenticator: HtpasswdAuthenticator | undefined;
    if (config.htpasswd !== undefined) {
      try {
        authenticator = new HtpasswdAuthenticator({ realm: service, path: config.htpasswd, ...(logger ? { logger } : {}) });
      } catch (e) {
        throw new TokenConfigError('auth.token.htpasswd', reason(e));
      }
    }
    server = new TokenServer({
      signer,
      issuer,
      service,
      expirationMs: config.expiration,
      rules: new AccessRules(config.access),
      ...(authenticator ? { authenticator } : {}),
      ...(logger ? { logger } : {}),
    });
    routes = server.routes(new URL(realm).pathname);
  }

  const trusted = new TrustedKeys({ keys, roots });
  const authorizer = new TokenAuthorizer({
    realm,
    service,
    issuer,
    keys: trusted,
    ...(config.signingalgorithms ? { algorithms: config.signingalgorithms } : {}),
    ...(logger ? { logger } : {}),
  });
  return { authorizer, server, routes };
}
