/**
 * The `auth.token` scheme: JWS signing and verification (and the attacks verification must refuse), the
 * access rules, the token endpoint over real HTTP, the authorizer's challenges, and the configuration.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import bcrypt from 'bcryptjs';
import { pino } from 'pino';
import type { Access } from '../src/auth/authorizer.js';
import { TokenAuthorizer } from '../src/auth/token/authorizer.js';
import { jwkThumbprint, JwsSigner, libtrustKeyId, TokenInvalidError, TrustedKeys, verifyJwt, type ResourceActions } from '../src/auth/token/jwt.js';
import { AccessRules, globMatches, parseScopes, ScopeError } from '../src/auth/token/rules.js';
import { createTokenAuth, TokenConfigError } from '../src/auth/token/setup.js';
import { ConfigError, parseConfig, type RegistryConfig } from '../src/config/index.js';
import { RegistryError } from '../src/errors.js';
import { createRegistryApp } from '../src/http/app.js';
import { listen } from '../src/http/listen.js';
import { createAuth } from '../src/run.js';
import { InMemoryDriver } from '../src/drivers/inmemory.js';
import { StorageNamespace } from '../src/store/namespace.js';

const silent = pino({ level: 'silent' });
const ISSUER = 'cascade-token';
const SERVICE = 'cascade-registry';
const REALM = 'http://127.0.0.1:5000/auth/token';

function ecKey(): KeyObject {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);
const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const now = nowSeconds();
  return { iss: ISSUER, sub: 'alice', aud: SERVICE, exp: now + 300, nbf: now, iat: now, jti: 'j1', access: [], ...overrides };
}

function trusting(...keys: KeyObject[]): TrustedKeys {
  return new TrustedKeys({ keys: keys.map((key) => ({ key })) });
}

function verify(token: string, keys: TrustedKeys, extra: Partial<Parameters<typeof verifyJwt>[1]> = {}) {
  return verifyJwt(token, { keys, issuer: ISSUER, audience: SERVICE, ...extra });
}

function refused(fn: () => unknown, reason: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof TokenInvalidError && reason.test(e.message));
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'cascade-token-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A CA and a leaf it signed (EC P-256 both), made with the openssl command; PEM texts. */
function opensslChain(dir: string, name: string): { caCert: string; leafCert: string; leafKey: string } {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const curve = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run('req', '-x509', ...curve, '-keyout', `${name}-ca.key`, '-out', `${name}-ca.pem`, '-days', '2', '-subj', `/CN=${name} CA`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  run('req', ...curve, '-keyout', `${name}-leaf.key`, '-out', `${name}-leaf.csr`, '-subj', `/CN=${name} token signer`);
  run('x509', '-req', '-in', `${name}-leaf.csr`, '-CA', `${name}-ca.pem`, '-CAkey', `${name}-ca.key`, '-CAcreateserial', '-out', `${name}-leaf.pem`, '-days', '1');
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return { caCert: read(`${name}-ca.pem`), leafCert: read(`${name}-leaf.pem`), leafKey: read(`${name}-leaf.key`) };
}

describe('JWS tokens (jwt.ts)', () => {
  test('ES256: kid is the RFC 7638 thumbprint, the signature is raw r||s, the claims come back', () => {
    const key = ecKey();
    const signer = new JwsSigner(key);
    assert.equal(signer.alg, 'ES256');
    const token = signer.sign(claims({ access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] }));
    const [header = '', , signature = ''] = token.split('.');
    assert.deepEqual(JSON.parse(Buffer.from(header, 'base64url').toString()), { typ: 'JWT', alg: 'ES256', kid: jwkThumbprint(createPublicKey(key)) });
    assert.equal(Buffer.from(signature, 'base64url').length, 64, 'ieee-p1363, not DER');
    const c = verify(token, trusting(signer.publicKey));
    assert.equal(c.sub, 'alice');
    assert.deepEqual(c.access, [{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
  });

  test('RS256 with an RSA key', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const signer = new JwsSigner(privateKey);
    assert.equal(signer.alg, 'RS256');
    assert.equal(verify(signer.sign(claims()), trusting(signer.publicKey)).iss, ISSUER);
  });

  test('key IDs match the RFC 7638 example and libtrust', () => {
    // RFC 7638 section 3.1; the libtrust ID was computed independently (Python: base32 of sha256(SPKI)[:30]).
    const n =
      '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw';
    const key = createPublicKey({ key: { kty: 'RSA', n, e: 'AQAB' }, format: 'jwk' });
    assert.equal(jwkThumbprint(key), 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
    assert.equal(libtrustKeyId(key), 'VUZD:EDHW:YWLN:RBFQ:KOA3:UVZ2:XKG5:2V2J:WTPI:6SRD:U6PZ:VCO5');
  });

  test('a token whose kid is the libtrust ID of a trusted key verifies (distribution 2, docker_auth)', () => {
    const key = ecKey();
    const input = `${b64({ alg: 'ES256', kid: libtrustKeyId(key) })}.${b64(claims())}`;
    const sig = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    assert.equal(verify(`${input}.${sig.toString('base64url')}`, trusting(createPublicKey(key))).sub, 'alice');
  });

  test('only EC P-256 and RSA >= 2048 keys sign', () => {
    assert.throws(() => new JwsSigner(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey), /EC P-256 .* got an EC secp384r1 key/);
    assert.throws(() => new JwsSigner(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey), /got a 1024-bit RSA key/);
    assert.throws(() => new JwsSigner(generateKeyPairSync('ed25519').privateKey), /got a ed25519 key/);
  });

  test('a tampered payload or header is refused', () => {
    const signer = new JwsSigner(ecKey());
    const keys = trusting(signer.publicKey);
    const [header = '', , signature = ''] = signer.sign(claims()).split('.');
    const widened = b64(claims({ sub: 'admin', access: [{ type: 'repository', name: '*', actions: ['*'] }] }));
    refused(() => verify(`${header}.${widened}.${signature}`, keys), /signature/);
    const otherAlg = b64({ typ: 'JWT', alg: 'ES384', kid: signer.kid });
    refused(() => verify(`${otherAlg}.${b64(claims())}.${signature}`, keys), /signature/);
  });

  test('"none" and HMAC algorithms are refused, even with the public key as the HMAC secret', () => {
    const signer = new JwsSigner(ecKey());
    const keys = trusting(signer.publicKey);
    const payload = b64(claims());
    refused(() => verify(`${b64({ alg: 'none' })}.${payload}.`, keys), /algorithm "none"/);
    refused(() => verify(`${b64({ alg: 'none' })}.${payload}.${b64('x')}`, keys), /algorithm "none"/);
    refused(() => verify(`${b64({ alg: 'NONE' })}.${payload}.`, keys), /algorithm "NONE"/);
    const hsInput = `${b64({ alg: 'HS256', kid: signer.kid })}.${payload}`;
    const secret = signer.publicKey.export({ type: 'spki', format: 'pem' });
    const mac = createHmac('sha256', secret).update(hsInput).digest('base64url');
    refused(() => verify(`${hsInput}.${mac}`, keys), /algorithm "HS256"/);
  });

  test('an algorithm outside the allow-list is refused', () => {
    const signer = new JwsSigner(ecKey());
    refused(() => verify(signer.sign(claims()), trusting(signer.publicKey), { algorithms: ['RS256'] }), /algorithm "ES256"/);
    assert.equal(verify(signer.sign(claims()), trusting(signer.publicKey), { algorithms: ['ES256'] }).sub, 'alice');
  });

  test('a DER-encoded ECDSA signature is refused (JWS allows only r||s)', () => {
    const key = ecKey();
    const input = `${b64({ alg: 'ES256', kid: jwkThumbprint(key) })}.${b64(claims())}`;
    const der = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'der' });
    refused(() => verify(`${input}.${der.toString('base64url')}`, trusting(createPublicKey(key))), /signature/);
  });

  test('keys that are not trusted, or named by an unknown kid, are refused', () => {
    const trusted = new JwsSigner(ecKey());
    const strangerKey = ecKey();
    const stranger = new JwsSigner(strangerKey);
    refused(() => verify(stranger.sign(claims()), trusting(trusted.publicKey)), /kid .* names no trusted key/);
    // The stranger claims the trusted key's kid: the signature gives it away.
    const input = `${b64({ alg: 'ES256', kid: trusted.kid })}.${b64(claims())}`;
    const [, , sig = ''] = stranger.sign(claims()).split('.');
    refused(() => verify(`${input}.${sig}`, trusting(trusted.publicKey)), /signature/);
    // A key sent along in the header selects a trusted key; it is never trusted itself.
    const jwk = stranger.publicKey.export({ format: 'jwk' });
    const withJwk = `${b64({ alg: 'ES256', jwk })}.${b64(claims())}`;
    const jwkSig = sign('sha256', Buffer.from(withJwk), { key: strangerKey, dsaEncoding: 'ieee-p1363' });
    refused(() => verify(`${withJwk}.${jwkSig.toString('base64url')}`, trusting(trusted.publicKey)), /jwk .* not a trusted key/);
  });

  test('expiry and not-before have 60 s of leeway; exp is required', () => {
    const signer = new JwsSigner(ecKey());
    const keys = trusting(signer.publicKey);
    const now = nowSeconds();
    refused(() => verify(signer.sign(claims({ exp: now - 61 })), keys), /expired/);
    assert.equal(verify(signer.sign(claims({ exp: now - 59 })), keys).sub, 'alice');
    refused(() => verify(signer.sign(claims({ nbf: now + 61 })), keys), /not valid yet/);
    assert.equal(verify(signer.sign(claims({ nbf: now + 59 })), keys).sub, 'alice');
    refused(() => verify(signer.sign(claims({ exp: undefined })), keys), /no exp/);
    refused(() => verify(signer.sign(claims({ exp: String(now + 100) })), keys), /no exp/);
    // The clock is the verifier's own.
    refused(() => verify(signer.sign(claims()), keys, { now: () => (now + 300 + 61) * 1000 }), /expired/);
  });

  test('issuer and audience must match; an audience list holding the service is fine', () => {
    const signer = new JwsSigner(ecKey());
    const keys = trusting(signer.publicKey);
    refused(() => verify(signer.sign(claims({ aud: 'another-registry' })), keys), /audience/);
    refused(() => verify(signer.sign(claims({ aud: undefined })), keys), /audience/);
    refused(() => verify(signer.sign(claims({ iss: 'someone-else' })), keys), /issuer/);
    assert.deepEqual(verify(signer.sign(claims({ aud: ['x', SERVICE] })), keys).aud, ['x', SERVICE]);
  });

  test('malformed tokens are refused', () => {
    const signer = new JwsSigner(ecKey());
    const keys = trusting(signer.publicKey);
    const token = signer.sign(claims());
    refused(() => verify(token.split('.').slice(0, 2).join('.'), keys), /three/);
    refused(() => verify(`${token}.x`, keys), /three/);
    refused(() => verify(`!!.${token.split('.').slice(1).join('.')}`, keys), /header is not base64url/);
    refused(() => verify(`${b64('not json')}.${token.split('.').slice(1).join('.')}`, keys), /header is not JSON/);
    refused(() => verify(signer.sign(claims({ access: 'everything' })), keys), /access is not a list/);
    refused(() => verify(signer.sign(claims({ access: [{ type: 'repository', name: 'a', actions: [1] }] })), keys), /actions/);
    refused(() => verify(`${b64({ alg: 'ES256', kid: signer.kid, crit: ['exp'] })}.${token.split('.')[1] ?? ''}.${token.split('.')[2] ?? ''}`, keys), /critical/);
    refused(() => verify('a'.repeat(20_000), keys), /longer/);
  });

  test('x5c: a chain to a certificate of the root bundle is trusted; another root is not', { skip: !hasOpenssl() && 'needs openssl' }, (t) => {
    const dir = tempDir(t);
    const good = opensslChain(dir, 'good');
    const other = opensslChain(dir, 'other');
    const signer = new JwsSigner(createPrivateKey(good.leafKey), { certificates: [new X509Certificate(good.leafCert)] });
    const token = signer.sign(claims());
    const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { x5c: string[] };
    assert.equal(header.x5c.length, 1);
    assert.equal(header.x5c[0], new X509Certificate(good.leafCert).raw.toString('base64'));
    // Verified through the chain alone: the leaf's key is not among the trusted keys.
    assert.equal(verify(token, new TrustedKeys({ roots: [new X509Certificate(good.caCert)] })).sub, 'alice');
    refused(() => verify(token, new TrustedKeys({ roots: [new X509Certificate(other.caCert)] })), /x5c does not lead/);
    // The leaf certificate itself in the bundle is trusted too (a self-contained setup).
    assert.equal(verify(token, new TrustedKeys({ roots: [new X509Certificate(good.leafCert)] })).sub, 'alice');
    // A chain whose leaf does not hold the signing key cannot be made.
    assert.throws(() => new JwsSigner(ecKey(), { certificates: [new X509Certificate(good.leafCert)] }), /does not hold the public key/);
    // A token signed by another key with the good chain attached fails on the signature.
    const forged = `${token.split('.')[0] ?? ''}.${b64(claims({ sub: 'mallory' }))}`;
    const sig = sign('sha256', Buffer.from(forged), { key: ecKey(), dsaEncoding: 'ieee-p1363' });
    refused(() => verify(`${forged}.${sig.toString('base64url')}`, new TrustedKeys({ roots: [new X509Certificate(good.caCert)] })), /signature/);
  });
});


describe('access rules (rules.ts)', () => {
  test('scopes parse as type[(class)]:name:actions, several per value', () => {
    assert.deepEqual(parseScopes('repository:team/app:pull,push'), [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]);
    assert.deepEqual(parseScopes('repository:a:pull registry:catalog:*'), [
      { type: 'repository', name: 'a', actions: ['pull'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    assert.deepEqual(parseScopes('repository:localhost:5000/app:pull'), [{ type: 'repository', name: 'localhost:5000/app', actions: ['pull'] }]);
    assert.deepEqual(parseScopes('repository(plugin):vieux/sshfs:pull'), [{ type: 'repository', name: 'vieux/sshfs', actions: ['pull'] }]);
    assert.deepEqual(parseScopes('repository:team/app:'), [{ type: 'repository', name: 'team/app', actions: [] }]);
    for (const bad of ['repository', 'repository:app', 'repository::pull', 'Repo:app:pull', ':app:pull']) {
      assert.throws(() => parseScopes(bad), ScopeError, bad);
    }
  });

  test('globs: * spans slashes, ${account} is the user, the rest is literal', () => {
    assert.ok(globMatches('team/*', 'team/app', undefined));
    assert.ok(globMatches('team/*', 'team/sub/app', undefined));
    assert.ok(!globMatches('team/*', 'teamx/app', undefined));
    assert.ok(!globMatches('team/*', 'team', undefined));
    assert.ok(globMatches('*', 'a/b/c', undefined));
    assert.ok(globMatches('team/app', 'team/app', undefined));
    assert.ok(!globMatches('team.app', 'teamxapp', undefined), 'a dot is a dot');
    assert.ok(globMatches('${account}/*', 'alice/app', 'alice'));
    assert.ok(!globMatches('${account}/*', 'bob/app', 'alice'));
    assert.ok(!globMatches('${account}/*', 'alice/app', undefined), 'anonymous has no namespace');
  });

  const rules = new AccessRules([
    { account: 'mallory', name: '*', actions: [] },
    { account: 'alice', name: 'team/*', actions: ['pull', 'push'] },
    { account: 'alice', name: 'team/*', actions: ['*'] },
    { account: 'admin', name: '*', actions: ['*'] },
    { account: '*', name: 'team/*', actions: ['pull'] },
    { account: '*', name: '${account}/*', actions: ['pull', 'push', 'delete'] },
    { account: 'anonymous', name: 'public/*', actions: ['pull'] },
    { account: '*', type: 'registry', name: 'catalog', actions: ['*'] },
  ]);
  const ask = (type: string, name: string, ...actions: string[]): ResourceActions => ({ type, name, actions });

  test('the first matching rule decides: later rules never widen it, an empty rule denies', () => {
    assert.deepEqual(rules.allowed('alice', 'repository', 'team/app'), ['pull', 'push'], 'the later "*" rule for alice is never reached');
    assert.deepEqual(rules.allowed('mallory', 'repository', 'team/app'), [], 'denied before the "*" rule');
    assert.deepEqual(rules.allowed('mallory', 'repository', 'mallory/app'), []);
    assert.deepEqual(rules.allowed('bob', 'repository', 'team/app'), ['pull']);
    assert.deepEqual(rules.allowed('bob', 'repository', 'bob/app'), ['pull', 'push', 'delete']);
    assert.deepEqual(rules.allowed('bob', 'repository', 'other/app'), []);
  });

  test('granted = requested ∩ allowed, never more', () => {
    assert.deepEqual(rules.grant('alice', [ask('repository', 'team/app', 'pull', 'push', 'delete')]), [ask('repository', 'team/app', 'pull', 'push')]);
    assert.deepEqual(rules.grant('bob', [ask('repository', 'team/app', 'push')]), [], 'nothing granted: the resource is left out');
    assert.deepEqual(rules.grant('admin', [ask('repository', 'x/y', 'pull', 'delete')]), [ask('repository', 'x/y', 'pull', 'delete')], '"*" allowed grants what was asked');
    assert.deepEqual(rules.grant('admin', [ask('repository', 'x/y', '*')]), [ask('repository', 'x/y', '*')]);
    assert.deepEqual(rules.grant('bob', [ask('repository', 'bob/app', '*')]), [], '"*" asked is only granted by a "*" rule');
    assert.deepEqual(
      rules.grant('bob', [ask('repository', 'bob/app', 'pull'), ask('repository', 'bob/app', 'push')]),
      [ask('repository', 'bob/app', 'pull', 'push')],
      'scopes of one resource are merged',
    );
  });

  test('anonymous matches only "anonymous" rules; "*" means any authenticated user', () => {
    assert.deepEqual(rules.grant(undefined, [ask('repository', 'public/app', 'pull', 'push')]), [ask('repository', 'public/app', 'pull')]);
    assert.deepEqual(rules.grant(undefined, [ask('repository', 'team/app', 'pull')]), []);
    assert.deepEqual(rules.grant(undefined, [ask('registry', 'catalog', '*')]), []);
    assert.deepEqual(rules.grant('bob', [ask('repository', 'public/app', 'pull')]), [], 'an "anonymous" rule is not for users');
  });

  test('the catalog is granted by registry rules only; unknown types and invalid names never', () => {
    assert.deepEqual(rules.grant('bob', [ask('registry', 'catalog', '*')]), [ask('registry', 'catalog', '*')]);
    assert.deepEqual(rules.grant('admin', [ask('registry', 'catalog', '*')]), [ask('registry', 'catalog', '*')], 'a repository "*" rule does not match, the registry rule does');
    assert.deepEqual(new AccessRules([{ account: '*', name: '*', actions: ['*'] }]).grant('bob', [ask('registry', 'catalog', '*')]), []);
    assert.deepEqual(rules.grant('admin', [ask('plugin', 'x', 'pull')]), []);
    assert.deepEqual(rules.grant('alice', [ask('repository', 'team/../secret', 'pull')]), []);
    assert.deepEqual(rules.grant('alice', [ask('repository', 'team/App', 'pull')]), []);
  });
});

/** Writes a token-mode registry's files and parses its config. */
function tokenConfig(t: TestContext, extra = ''): { dir: string; config: RegistryConfig; key: KeyObject } {
  const dir = tempDir(t);
  const key = ecKey();
  writeFileSync(join(dir, 'token.key'), key.export({ type: 'pkcs8', format: 'pem' }));
  const hash = (p: string) => bcrypt.hashSync(p, 4);
  writeFileSync(join(dir, 'htpasswd'), `alice:${hash('alice-pw')}\nbob:${hash('bob-pw')}\n`);
  const yaml = `version: 0.1
storage:
  inmemory:
auth:
  token:
    realm: ${REALM}
    service: ${SERVICE}
    issuer: ${ISSUER}
    signingkey: ${join(dir, 'token.key')}
    htpasswd: ${join(dir, 'htpasswd')}
    access:
      - {account: alice, name: "team/*", actions: [pull, push]}
      - {account: bob, name: "team/*", actions: [pull]}
      - {account: "*", type: registry, name: catalog, actions: ["*"]}
      - {account: anonymous, name: "public/*", actions: [pull]}
${extra}`;
  return { dir, config: parseConfig(yaml, 'config.yml', {}).config, key };
}

/** A registry in token mode on a free port, with Cascade's token endpoint at /auth/token. */
async function tokenRegistry(t: TestContext, extra = ''): Promise<{ url: string; keys: TrustedKeys; dir: string }> {
  const { config, key, dir } = tokenConfig(t, extra);
  const { authorizer, routes } = createAuth(config, silent);
  const driver = new InMemoryDriver();
  await driver.recover();
  const app = createRegistryApp({ namespace: new StorageNamespace(driver), logger: silent, authorizer, extraRoutes: routes });
  const server = await listen(app.callback(), { addr: '127.0.0.1:0' }, silent);
  t.after(() => server.close());
  return { url: server.url, keys: trusting(createPublicKey(key)), dir };
}

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

interface TokenBody {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
}

async function getToken(url: string, scopes: string[], authorization?: string, service = SERVICE): Promise<Response> {
  const q = new URLSearchParams({ service });
  for (const s of scopes) q.append('scope', s);
  return fetch(`${url}/auth/token?${q.toString()}`, { headers: authorization ? { authorization } : {} });
}

async function errorsOf(res: Response): Promise<Array<{ code: string; message: string }>> {
  return ((await res.json()) as { errors: Array<{ code: string; message: string }> }).errors;
}

describe('the token endpoint (server.ts)', () => {
  test('anonymous GET: only what "anonymous" rules grant, in the spec response shape', async (t) => {
    const { url, keys } = await tokenRegistry(t);
    const res = await getToken(url, ['repository:public/app:pull,push', 'repository:team/app:pull']);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const body = (await res.json()) as TokenBody;
    assert.deepEqual(Object.keys(body).sort(), ['access_token', 'expires_in', 'issued_at', 'token']);
    assert.equal(body.access_token, body.token);
    assert.equal(body.expires_in, 300);
    assert.ok(Math.abs(Date.parse(body.issued_at) - Date.now()) < 5000, body.issued_at);
    const c = verify(body.token, keys);
    assert.equal(c.sub, '');
    assert.deepEqual(c.access, [{ type: 'repository', name: 'public/app', actions: ['pull'] }]);
    assert.equal(c.exp - (c.iat ?? 0), 300);
  });

  test('GET with Basic credentials: the user, requested ∩ allowed', async (t) => {
    const { url, keys } = await tokenRegistry(t);
    const alice = verify(((await (await getToken(url, ['repository:team/app:pull,push,delete', 'registry:catalog:*'], basic('alice', 'alice-pw'))).json()) as TokenBody).token, keys);
    assert.equal(alice.sub, 'alice');
    assert.deepEqual(alice.access, [
      { type: 'repository', name: 'team/app', actions: ['pull', 'push'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    const bob = verify(((await (await getToken(url, ['repository:team/app:pull,push'], basic('bob', 'bob-pw'))).json()) as TokenBody).token, keys);
    assert.deepEqual(bob.access, [{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
    // No scope at all (docker login): a token with no access, proving the credentials.
    const login = await getToken(url, [], basic('bob', 'bob-pw'));
    assert.equal(login.status, 200);
    assert.deepEqual(verify(((await login.json()) as TokenBody).token, keys).access, []);
  });

  test('wrong credentials are a 401 with the OCI envelope, never an anonymous token', async (t) => {
    const { url } = await tokenRegistry(t);
    for (const authorization of [basic('alice', 'wrong'), basic('carol', 'alice-pw'), 'Bearer abc', 'Basic !!']) {
      const res = await getToken(url, ['repository:public/app:pull'], authorization);
      assert.equal(res.status, 401, authorization);
      assert.equal(res.headers.get('www-authenticate'), `Basic realm="${SERVICE}"`);
      assert.equal((await errorsOf(res))[0]?.code, 'UNAUTHORIZED');
    }
  });

  test('another service, or a malformed scope, is a 400', async (t) => {
    const { url } = await tokenRegistry(t);
    const other = await getToken(url, ['repository:team/app:pull'], undefined, 'another-registry');
    assert.equal(other.status, 400);
    assert.match((await errorsOf(other))[0]?.message ?? '', /service "another-registry" is not this registry's/);
    const bad = await getToken(url, ['repository:team/app']);
    assert.equal(bad.status, 400);
    assert.match((await errorsOf(bad))[0]?.message ?? '', /type:name:actions/);
    // No service parameter at all is fine: the token is for this registry.
    assert.equal((await fetch(`${url}/auth/token?scope=repository:public/a:pull`)).status, 200);
  });

  test('POST grant_type=password (the OAuth2 flow of docker login)', async (t) => {
    const { url, keys } = await tokenRegistry(t);
    const post = (form: Record<string, string>, contentType = 'application/x-www-form-urlencoded') =>
      fetch(`${url}/auth/token`, { method: 'POST', headers: { 'content-type': contentType }, body: new URLSearchParams(form).toString() });
    const ok = await post({ grant_type: 'password', username: 'alice', password: 'alice-pw', service: SERVICE, scope: 'repository:team/app:push repository:team/b:pull', client_id: 'docker' });
    assert.equal(ok.status, 200);
    const c = verify(((await ok.json()) as TokenBody).access_token, keys);
    assert.equal(c.sub, 'alice');
    assert.deepEqual(c.access, [
      { type: 'repository', name: 'team/app', actions: ['push'] },
      { type: 'repository', name: 'team/b', actions: ['pull'] },
    ]);
    assert.equal((await post({ grant_type: 'password', username: 'alice', password: 'nope' })).status, 401);
    assert.equal((await post({ grant_type: 'refresh_token', refresh_token: 'x' })).status, 400);
    assert.equal((await post({ grant_type: 'password', username: 'alice', password: 'alice-pw' }, 'application/json')).status, 400);
  });

  test('other methods are 405 with Allow; the /v2/ API is unchanged beside it', async (t) => {
    const { url, keys } = await tokenRegistry(t);
    const put = await fetch(`${url}/auth/token`, { method: 'PUT' });
    assert.equal(put.status, 405);
    // @koa/router answers HEAD wherever GET is (RFC 9110 9.1), and lists it.
    assert.equal(put.headers.get('allow'), 'HEAD, GET, POST');
    assert.equal((await fetch(`${url}/auth/other`)).status, 404);
    // The token from the endpoint opens the API.
    const token = ((await (await getToken(url, ['repository:team/app:pull'], basic('bob', 'bob-pw'))).json()) as TokenBody).token;
    assert.equal(verify(token, keys).sub, 'bob');
    const tags = await fetch(`${url}/v2/team/app/tags/list`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(tags.status, 404, 'authorized: the repository is just empty');
    assert.equal((await errorsOf(tags))[0]?.code, 'NAME_UNKNOWN');
    const base = await fetch(`${url}/v2/`);
    assert.equal(base.status, 401);
    assert.equal(base.headers.get('www-authenticate'), `Bearer realm="${REALM}",service="${SERVICE}"`);
  });

  test('an extra route cannot shadow the registry API', () => {
    const route = { method: 'GET', path: '/v2/token', handler: async () => undefined };
    assert.throws(() => createRegistryApp({ namespace: new StorageNamespace(new InMemoryDriver()), logger: silent, extraRoutes: [route] }), /inside the registry API/);
  });
});

describe('TokenAuthorizer (authorizer.ts)', () => {
  const key = ecKey();
  const signer = new JwsSigner(key);
  const authorizer = new TokenAuthorizer({ realm: REALM, service: SERVICE, issuer: ISSUER, keys: trusting(signer.publicKey) });
  const pull: Access = { type: 'repository', name: 'team/app', actions: ['pull'] };
  const push: Access = { type: 'repository', name: 'team/app', actions: ['pull', 'push'] };
  const catalog: Access = { type: 'registry', name: 'catalog', actions: ['*'] };
  const bearer = (access: ResourceActions[], overrides: Record<string, unknown> = {}) => ({ authorization: `Bearer ${signer.sign(claims({ access, ...overrides }))}` });

  async function challenge(headers: Record<string, string>, access: Access[]): Promise<string | undefined> {
    try {
      await authorizer.authorize(headers, access);
    } catch (e) {
      assert.ok(e instanceof RegistryError);
      assert.equal(e.code, 'UNAUTHORIZED');
      assert.equal(e.status, 401);
      return e.headers['WWW-Authenticate'];
    }
    assert.fail('expected a 401');
  }

  test('no token: the challenge names the realm, the service and the scope the request needs', async () => {
    const base = `Bearer realm="${REALM}",service="${SERVICE}"`;
    assert.equal(await challenge({}, []), base);
    assert.equal(await challenge({}, [pull]), `${base},scope="repository:team/app:pull"`);
    assert.equal(await challenge({}, [push]), `${base},scope="repository:team/app:pull,push"`);
    assert.equal(await challenge({}, [catalog]), `${base},scope="registry:catalog:*"`);
    const mount: Access = { type: 'repository', name: 'other/src', actions: ['pull'] };
    assert.equal(await challenge({}, [push, mount]), `${base},scope="repository:team/app:pull,push repository:other/src:pull"`);
    assert.equal(await challenge({ authorization: basic('alice', 'pw') }, [pull]), `${base},scope="repository:team/app:pull"`, 'Basic is not a token');
  });

  test('an invalid token: error="invalid_token"', async () => {
    const expected = `Bearer realm="${REALM}",service="${SERVICE}",scope="repository:team/app:pull",error="invalid_token"`;
    assert.equal(await challenge({ authorization: 'Bearer not-a-token' }, [pull]), expected);
    assert.equal(await challenge(bearer([], { exp: nowSeconds() - 3600 }), [pull]), expected);
    assert.equal(await challenge(bearer([], { aud: 'elsewhere' }), [pull]), expected);
    assert.equal(await challenge({ authorization: `Bearer ${new JwsSigner(ecKey()).sign(claims())}` }, [pull]), expected);
  });

  test('a valid token without the needed actions: 401 error="insufficient_scope" (as distribution)', async () => {
    const pullOnly = bearer([{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
    assert.equal(await challenge(pullOnly, [push]), `Bearer realm="${REALM}",service="${SERVICE}",scope="repository:team/app:pull,push",error="insufficient_scope"`);
    assert.equal(await challenge(bearer([{ type: 'repository', name: 'team/other', actions: ['*'] }]), [pull]), `Bearer realm="${REALM}",service="${SERVICE}",scope="repository:team/app:pull",error="insufficient_scope"`);
    assert.equal(await challenge(pullOnly, [catalog]), `Bearer realm="${REALM}",service="${SERVICE}",scope="registry:catalog:*",error="insufficient_scope"`);
  });

  test('a valid token with the actions: the identity is its subject', async () => {
    assert.deepEqual(await authorizer.authorize(bearer([{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]), [push]), { user: 'alice' });
    assert.deepEqual(await authorizer.authorize(bearer([{ type: 'repository', name: 'team/app', actions: ['*'] }]), [push]), { user: 'alice' }, '"*" covers any action');
    assert.deepEqual(await authorizer.authorize(bearer([{ type: 'repository', name: 'team/app', actions: ['pull'] }, { type: 'repository', name: 'team/app', actions: ['push'] }]), [push]), { user: 'alice' });
    assert.deepEqual(await authorizer.authorize(bearer([]), []), { user: 'alice' }, 'the base route needs a valid token only');
    assert.deepEqual(await authorizer.authorize(bearer([{ type: 'registry', name: 'catalog', actions: ['*'] }], { sub: '' }), [catalog]), {}, 'an anonymous token');
  });

  test('the 401 body lists what was needed', async () => {
    try {
      await authorizer.authorize({}, [push]);
      assert.fail('expected a 401');
    } catch (e) {
      assert.ok(e instanceof RegistryError);
      assert.deepEqual(e.detail, [
        { Type: 'repository', Name: 'team/app', Action: 'pull' },
        { Type: 'repository', Name: 'team/app', Action: 'push' },
      ]);
    }
  });
});

describe('auth.token configuration', () => {
  const PREFIX = 'version: 0.1\nstorage: inmemory\nauth:\n  token:\n';
  const parse = (body: string, env: NodeJS.ProcessEnv = {}) => parseConfig(`${PREFIX}${body}`, 'config.yml', env).config;
  function fails(body: string): ConfigError {
    try {
      parse(body);
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      return e;
    }
    assert.fail('expected a ConfigError');
  }
  const DISTRIBUTION = '    realm: https://auth.example.com/token\n    service: registry.example.com\n    issuer: auth.example.com\n    rootcertbundle: /certs/bundle.pem\n';

  test("distribution's keys load as they are, with Cascade's defaults", () => {
    const token = parse(`${DISTRIBUTION}    autoredirect: false\n    autoredirectpath: /auth/token\n    jwks: /certs/jwks.json\n    signingalgorithms: [RS256, ES256]\n`).auth.token;
    assert.deepEqual(token, {
      realm: 'https://auth.example.com/token',
      service: 'registry.example.com',
      issuer: 'auth.example.com',
      rootcertbundle: '/certs/bundle.pem',
      autoredirect: false,
      autoredirectpath: '/auth/token',
      jwks: '/certs/jwks.json',
      signingalgorithms: ['RS256', 'ES256'],
      expiration: 300_000,
      access: [],
    });
  });

  test("Cascade's token server keys: expiration is a Go duration, rules default to repositories", () => {
    const token = parse(
      `${DISTRIBUTION}    signingkey: /keys/token.pem\n    htpasswd: /auth/htpasswd\n    expiration: 10m\n    access:\n      - {account: alice, name: "team/*", actions: [pull, push]}\n`,
    ).auth.token;
    assert.equal(token?.expiration, 600_000);
    assert.deepEqual(token?.access, [{ account: 'alice', type: 'repository', name: 'team/*', actions: ['pull', 'push'] }]);
    // rootcertbundle is optional when Cascade signs its own tokens.
    assert.equal(parse('    realm: http://r/auth/token\n    service: s\n    issuer: i\n    signingkey: /k.pem\n').auth.token?.signingkey, '/k.pem');
  });

  test('missing required keys are named', () => {
    const err = fails('    realm: https://auth.example.com/token\n');
    assert.deepEqual(err.issues.map((i) => i.key), ['auth.token.service', 'auth.token.issuer', 'auth.token.rootcertbundle']);
    assert.match(err.message, /^config\.yml: auth\.token\.service: expected the name of this registry .*, got nothing$/m);
  });

  test('wrong keys and values name the key', () => {
    const cases: Array<[string, string, RegExp?]> = [
      [`${DISTRIBUTION}    servce: x\n`, 'auth.token.servce', /did you mean "service"/],
      [DISTRIBUTION.replace('https://auth.example.com/token', 'auth.example.com'), 'auth.token.realm', /absolute http/],
      [`${DISTRIBUTION}    signingkey: /k\n    access:\n      - {account: a, name: "*", actions: [pull, write]}\n`, 'auth.token.access[0].actions[1]'],
      [`${DISTRIBUTION}    signingkey: /k\n    access:\n      - {account: a, actions: [pull]}\n`, 'auth.token.access[0].name'],
      [`${DISTRIBUTION}    htpasswd: /auth/htpasswd\n`, 'auth.token.signingkey', /which auth\.token\.htpasswd configures/],
      [`${DISTRIBUTION}    signingalgorithms: [HS256]\n`, 'auth.token.signingalgorithms[0]'],
      [`${DISTRIBUTION}    expiration: 500ms\n`, 'auth.token.expiration', /at least 1s/],
      [`${DISTRIBUTION}    expiration: soon\n`, 'auth.token.expiration'],
      [DISTRIBUTION.replace('https://auth.example.com/token', 'http://r/v2/token') + '    signingkey: /k\n', 'auth.token.realm', /outside \/v2\//],
    ];
    for (const [body, key, message] of cases) {
      const err = fails(body);
      assert.deepEqual(err.issues.map((i) => i.key), [key], err.message);
      if (message) assert.match(err.message, message);
    }
  });

  test('REGISTRY_AUTH_TOKEN_* variables set the keys, rules included', () => {
    const token = parse(DISTRIBUTION, {
      REGISTRY_AUTH_TOKEN_SERVICE: 'from-env',
      REGISTRY_AUTH_TOKEN_SIGNINGKEY: '/k.pem',
      REGISTRY_AUTH_TOKEN_ACCESS_0_ACCOUNT: 'anonymous',
      REGISTRY_AUTH_TOKEN_ACCESS_0_NAME: 'public/*',
      REGISTRY_AUTH_TOKEN_ACCESS_0_ACTIONS: '[pull]',
    }).auth.token;
    assert.equal(token?.service, 'from-env');
    assert.deepEqual(token?.access, [{ account: 'anonymous', type: 'repository', name: 'public/*', actions: ['pull'] }]);
  });
});

describe('createTokenAuth (setup.ts): files named by auth.token', () => {
  function setupFails(t: TestContext, change: (dir: string) => string, key: string, message: RegExp): void {
    const { dir, config } = tokenConfig(t);
    const extra = change(dir);
    const token = { ...config.auth.token, ...(JSON.parse(extra) as object) } as NonNullable<RegistryConfig['auth']['token']>;
    assert.throws(() => createTokenAuth(token), (e: unknown) => e instanceof TokenConfigError && e.key === key && message.test(e.message) && e.message.startsWith(`${key}: `));
  }

  test('unreadable or unusable files stop start-up, naming the key and the file', (t) => {
    setupFails(t, (dir) => JSON.stringify({ signingkey: join(dir, 'missing.pem') }), 'auth.token.signingkey', /cannot read .*missing\.pem/);
    setupFails(
      t,
      (dir) => {
        writeFileSync(join(dir, 'p384.pem'), generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
        return JSON.stringify({ signingkey: join(dir, 'p384.pem') });
      },
      'auth.token.signingkey',
      /EC P-256 .* in .*p384\.pem/,
    );
    setupFails(
      t,
      (dir) => {
        writeFileSync(join(dir, 'public.pem'), createPublicKey(ecKey()).export({ type: 'spki', format: 'pem' }));
        return JSON.stringify({ signingkey: join(dir, 'public.pem') });
      },
      'auth.token.signingkey',
      /expected an unencrypted PEM private key/,
    );
    setupFails(
      t,
      (dir) => {
        writeFileSync(join(dir, 'empty.pem'), 'no certificates here\n');
        return JSON.stringify({ rootcertbundle: join(dir, 'empty.pem') });
      },
      'auth.token.rootcertbundle',
      /expected PEM certificates in .*empty\.pem, got none/,
    );
    setupFails(
      t,
      (dir) => {
        writeFileSync(join(dir, 'md5'), 'alice:$apr1$abc$def\n');
        return JSON.stringify({ htpasswd: join(dir, 'md5') });
      },
      'auth.token.htpasswd',
      /md5:1: expected a bcrypt hash/,
    );
    setupFails(t, () => JSON.stringify({ signingalgorithms: ['RS256'] }), 'auth.token.signingalgorithms', /includes ES256/);
    setupFails(
      t,
      (dir) => {
        writeFileSync(join(dir, 'jwks.json'), '{"keys": []}');
        return JSON.stringify({ jwks: join(dir, 'jwks.json') });
      },
      'auth.token.jwks',
      /at least one key/,
    );
  });

  test('a JWKS file adds trusted keys, by their kid', async (t) => {
    const { dir, config } = tokenConfig(t);
    const outside = ecKey();
    const jwk = { ...createPublicKey(outside).export({ format: 'jwk' }), kid: 'outside-1' };
    writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [jwk] }));
    const { authorizer } = createTokenAuth({ ...config.auth.token!, jwks: join(dir, 'jwks.json') });
    const input = `${b64({ alg: 'ES256', kid: 'outside-1' })}.${b64(claims({ access: [{ type: 'repository', name: 'a', actions: ['pull'] }] }))}`;
    const sig = sign('sha256', Buffer.from(input), { key: outside, dsaEncoding: 'ieee-p1363' }).toString('base64url');
    assert.deepEqual(await authorizer.authorize({ authorization: `Bearer ${input}.${sig}` }, [{ type: 'repository', name: 'a', actions: ['pull'] }]), { user: 'alice' });
  });

  test('the signing key\'s certificate is sent as x5c: from its own file, or from the bundle', { skip: !hasOpenssl() && 'needs openssl' }, (t) => {
    const { dir, config } = tokenConfig(t);
    const chain = opensslChain(dir, 'x5c');
    const x5cOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { x5c?: string[] }).x5c;
    const leafDer = new X509Certificate(chain.leafCert).raw.toString('base64');
    // Key and certificate in one file; the bundle holds the CA.
    writeFileSync(join(dir, 'key+cert.pem'), `${chain.leafKey}${chain.leafCert}`);
    writeFileSync(join(dir, 'ca.pem'), chain.caCert);
    const own = createTokenAuth({ ...config.auth.token!, signingkey: join(dir, 'key+cert.pem'), rootcertbundle: join(dir, 'ca.pem') });
    assert.deepEqual(x5cOf(own.server!.issue('alice', []).response.token), [leafDer]);
    // Key alone; its certificate in the bundle.
    writeFileSync(join(dir, 'leaf.key'), chain.leafKey);
    writeFileSync(join(dir, 'bundle.pem'), `${chain.caCert}${chain.leafCert}`);
    const bundled = createTokenAuth({ ...config.auth.token!, signingkey: join(dir, 'leaf.key'), rootcertbundle: join(dir, 'bundle.pem') });
    assert.deepEqual(x5cOf(bundled.server!.issue('alice', []).response.token), [leafDer]);
    // No certificate anywhere: kid only.
    assert.equal(x5cOf(createTokenAuth(config.auth.token!).server!.issue('alice', []).response.token), undefined);
  });
});
