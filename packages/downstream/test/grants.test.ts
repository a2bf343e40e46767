/**
 * Grants: JWS ES256, the server's key store and its rotation, the verifier's refusals, the key set fetched
 * from upstream (over real HTTP), and the cache's grant authorizer, directly and through the registry app.
 */
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { createRegistryApp, Digest, InMemoryDriver, isRegistryError, listen, StorageNamespace, type Access } from '@cascade/registry-core';
import { startFakeRegistry } from '@cascade/testkit';
import { GRANT_HEADER, GrantAuthorizer } from '../src/grants/authorizer.js';
import { GRANT_TYPE, GrantSigner, GrantVerifier, LocalJwks, RemoteJwks, type GrantClaims, type JwksSource } from '../src/grants/grant.js';
import { decodeJws, JWS_MAX_LENGTH, JwsError, jwkThumbprint, publicJwk, signJws, verifyJws } from '../src/grants/jws.js';
import { GrantKeyStore, MAX_GRANT_TTL_SECONDS } from '../src/grants/keys.js';

const silent = pino({ level: 'silent' });
const ISSUER = 'https://server.example';
const REPO = 'team/app';
const DIGEST = Digest.of('layer one').toString();
const OTHER_DIGEST = Digest.of('layer two').toString();
const START = Date.UTC(2030, 0, 1);

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cascade-grants-'));
  dirs.push(dir);
  return dir;
}

/** A clock the test moves by hand. */
function clock(start = START): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

/** A store, signer and verifier sharing one clock, as on the server. */
async function setup(options: { retireAfterMs?: number; audiences?: string[] } = {}) {
  const time = clock();
  const store = await GrantKeyStore.open({ dir: tempDir(), now: time.now, ...(options.retireAfterMs === undefined ? {} : { retireAfterMs: options.retireAfterMs }) });
  const signer = new GrantSigner({ issuer: ISSUER, keys: store, now: time.now });
  const verifier = new GrantVerifier({ issuer: ISSUER, acceptAudiences: options.audiences ?? ['cache-eu'], keys: new LocalJwks(store), now: time.now });
  return { time, store, signer, verifier };
}

const grantFor = (signer: GrantSigner, over: Partial<{ user: string; cache: string; repo: string; digest: string; ttlSeconds: number }> = {}) =>
  signer.sign({ user: 'alice', cache: 'cache-eu', repo: REPO, digest: DIGEST, ...over });

/** Asserts that `promise` rejects with RegistryError `code`, a message matching `pattern`, and not the token. */
async function rejects(promise: Promise<unknown>, code: 'UNAUTHORIZED' | 'DENIED', pattern: RegExp, token?: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isRegistryError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, pattern);
    if (token !== undefined) {
      assert.ok(!err.message.includes(token), 'the message must not echo the token');
      const signature = token.split('.')[2] ?? '';
      if (signature.length > 0) assert.ok(!err.message.includes(signature), 'the message must not echo the signature');
    }
    if (code === 'UNAUTHORIZED') assert.match(err.headers['WWW-Authenticate'] ?? '', /^Bearer realm="cascade-grant"/);
    return true;
  });
}

const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const parts = (token: string) => token.split('.') as [string, string, string];
const claimsOf = (token: string) => JSON.parse(Buffer.from(parts(token)[1], 'base64url').toString()) as GrantClaims;

describe('jws', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = jwkThumbprint(publicKey);
  const keys = async (k: string) => (k === kid ? publicKey : undefined);

  test('sign and verify round trip, kid is the RFC 7638 thumbprint', async () => {
    const token = signJws({ hello: 'world' }, { privateKey, kid }, 'test+jwt');
    const jws = await verifyJws(token, keys);
    assert.deepEqual(jws.payload, { hello: 'world' });
    assert.deepEqual({ ...jws.header }, { alg: 'ES256', kid, typ: 'test+jwt' });
    assert.equal(jwkThumbprint(privateKey), kid);
    assert.equal(publicJwk(privateKey).kid, kid);
    assert.deepEqual(Object.keys(publicJwk(publicKey)).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    assert.equal(jws.signature.length, 64, 'IEEE P1363 r||s, not DER');
  });

  test('thumbprint matches the RFC 7638 example', () => {
    const n =
      '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw';
    assert.equal(jwkThumbprint({ kty: 'RSA', n, e: 'AQAB', alg: 'RS256', kid: '2011-04-29' }), 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
  });

  test('malformed tokens are refused before any key is looked up', async () => {
    const good = signJws({ a: 1 }, { privateKey, kid });
    const [h, p, s] = parts(good);
    const cases: Array<[string, RegExp]> = [
      ['', /empty/],
      ['a'.repeat(JWS_MAX_LENGTH + 1), /longer than 8192/],
      [`${h}.${p}`, /2 segments/],
      [`${h}.${p}.${s}.x`, /4 segments/],
      [`${h}.${p}!.${s}`, /payload is not base64url/],
      [`${h}.${b64('not json')}.${s}`, /payload is not JSON/],
      [`${h}.${b64([1, 2])}.${s}`, /payload is not a JSON object/],
      [`${b64({ alg: 'ES256', kid, crit: ['exp'] })}.${p}.${s}`, /critical/],
      [`${b64({ alg: 'ES256' })}.${p}.${s}`, /kid/],
      [`${h}.${p}.${s.slice(0, -4)}`, /64-byte/],
      // The last character of a 64-byte signature carries 4 padding bits: another spelling of the same bytes.
      [`${h}.${p}.${s.slice(0, -1)}${s.endsWith('A') ? 'B' : 'A'}`, /./],
    ];
    let lookups = 0;
    for (const [token, pattern] of cases) {
      await assert.rejects(
        verifyJws(token, async () => {
          lookups++;
          return publicKey;
        }),
        (err: unknown) => err instanceof JwsError && pattern.test(err.message),
        `${token.slice(0, 40)} should match ${pattern}`,
      );
    }
    // The last case decodes (canonically) to other bytes or fails verification: either way it is refused.
    assert.ok(lookups <= 1);
  });

  test('only ES256: none, HS256, RS256 and ES384 are refused', async () => {
    const [, p] = parts(signJws({ a: 1 }, { privateKey, kid }));
    for (const alg of ['none', 'HS256', 'RS256', 'ES384', 'es256']) {
      await assert.rejects(verifyJws(`${b64({ alg, kid })}.${p}.`, keys), (err: unknown) => err instanceof JwsError && err.reason === 'algorithm');
    }
    await assert.rejects(verifyJws(`${b64({ kid })}.${p}.x`, keys), (err: unknown) => err instanceof JwsError && err.reason === 'algorithm');
  });

  test('a key of another type or curve is refused for ES256', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    assert.throws(() => signJws({}, { privateKey: rsa.privateKey, kid: 'r' }), /EC P-256/);
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    assert.throws(() => signJws({}, { privateKey: p384.privateKey, kid: 'p' }), /EC P-256/);
    const token = signJws({}, { privateKey, kid });
    await assert.rejects(verifyJws(token, async () => rsa.publicKey), /EC P-256/);
  });
});

describe('grant signer and verifier', () => {
  test('round trip: the claims, a fresh jti, and the store active kid', async () => {
    const { signer, verifier, store, time } = await setup();
    const token = grantFor(signer);
    const claims = await verifier.verify(token, { repo: REPO, digest: DIGEST });
    const iat = Math.floor(time.now() / 1000);
    assert.deepEqual({ ...claims, jti: '' }, { iss: ISSUER, sub: 'alice', aud: 'cache-eu', repo: REPO, digest: DIGEST, iat, exp: iat + 60, jti: '' });
    assert.match(claims.jti, /^[A-Za-z0-9_-]{22}$/);
    assert.notEqual(claimsOf(grantFor(signer)).jti, claims.jti);
    assert.equal(decodeJws(token).header.kid, store.active().kid);
    assert.equal(decodeJws(token).header.typ, GRANT_TYPE);
    assert.ok(token.length < 800, `a grant fits in a URL (${token.length} characters)`);
  });

  test('the signer refuses bad repositories, digests, caches and lifetimes', async () => {
    const { signer } = await setup();
    assert.throws(() => grantFor(signer, { repo: 'Team/App' }), (err: unknown) => isRegistryError(err, 'NAME_INVALID'));
    assert.throws(() => grantFor(signer, { digest: 'sha256:abc' }), (err: unknown) => isRegistryError(err, 'DIGEST_INVALID'));
    assert.throws(() => grantFor(signer, { cache: '' }), /cache name/);
    assert.throws(() => grantFor(signer, { ttlSeconds: 0 }), /ttlSeconds/);
    assert.throws(() => grantFor(signer, { ttlSeconds: MAX_GRANT_TTL_SECONDS + 1 }), /ttlSeconds/);
    assert.throws(() => grantFor(signer, { ttlSeconds: 1.5 }), /ttlSeconds/);
  });

  test('a tampered payload is refused as forged', async () => {
    const { signer, verifier } = await setup();
    const token = grantFor(signer);
    const [h, , s] = parts(token);
    const widened = `${h}.${b64({ ...claimsOf(token), repo: 'team/secret' })}.${s}`;
    await rejects(verifier.verify(widened, { repo: 'team/secret', digest: DIGEST }), 'UNAUTHORIZED', /signature does not verify/, widened);
    const longer = `${h}.${b64({ ...claimsOf(token), exp: claimsOf(token).exp + 500 })}.${s}`;
    await rejects(verifier.verify(longer, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /signature does not verify/, longer);
  });

  test('a tampered signature is refused', async () => {
    const { signer, verifier } = await setup();
    const token = grantFor(signer);
    const [h, p, s] = parts(token);
    const sig = Buffer.from(s, 'base64url');
    sig[10] = (sig[10] ?? 0) ^ 0x01;
    const forged = `${h}.${p}.${sig.toString('base64url')}`;
    await rejects(verifier.verify(forged, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /signature does not verify/, forged);
  });

  test('alg none is refused', async () => {
    const { signer, verifier, store } = await setup();
    const token = grantFor(signer);
    const none = `${b64({ alg: 'none', kid: store.active().kid, typ: GRANT_TYPE })}.${parts(token)[1]}.`;
    await rejects(verifier.verify(none, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /algorithm "none" is not accepted/, none);
  });

  test('HS256 signed with the public key as the secret is refused', async () => {
    const { signer, verifier, store } = await setup();
    const token = grantFor(signer);
    const header = b64({ alg: 'HS256', kid: store.active().kid, typ: GRANT_TYPE });
    for (const secret of [store.active().publicKey.export({ type: 'spki', format: 'pem' }), JSON.stringify(publicJwk(store.active().publicKey))]) {
      const input = `${header}.${parts(token)[1]}`;
      const hs = `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
      await rejects(verifier.verify(hs, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /algorithm "HS256" is not accepted/, hs);
    }
  });

  test('a token of another type signed with the same key is not a grant', async () => {
    const { verifier, store, time } = await setup();
    const iat = Math.floor(time.now() / 1000);
    const claims = { iss: ISSUER, sub: 'alice', aud: 'cache-eu', repo: REPO, digest: DIGEST, iat, exp: iat + 60, jti: 'x' };
    for (const typ of [undefined, 'JWT']) {
      const token = signJws(claims, store.active(), typ);
      await rejects(verifier.verify(token, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /not a Cascade grant/, token);
    }
  });

  test('missing claims, another issuer and overlong lifetimes are refused', async () => {
    const { verifier, store, time } = await setup();
    const iat = Math.floor(time.now() / 1000);
    const base = { iss: ISSUER, sub: 'alice', aud: 'cache-eu', repo: REPO, digest: DIGEST, iat, exp: iat + 60, jti: 'x' };
    const sign = (claims: object) => signJws(claims, store.active(), GRANT_TYPE);
    await rejects(verifier.verify(sign({ ...base, repo: undefined }), { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /claim repo is missing/);
    await rejects(verifier.verify(sign({ ...base, exp: '9999999999' }), { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /claim exp is missing or not an integer/);
    await rejects(verifier.verify(sign({ ...base, aud: ['cache-eu'] }), { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /claim aud/);
    await rejects(verifier.verify(sign({ ...base, iss: 'https://evil.example' }), { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /another server/);
    await rejects(verifier.verify(sign({ ...base, exp: iat + 3600 }), { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /lifetime/);
    await rejects(verifier.verify(sign({ ...base, exp: iat }), { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /lifetime/);
  });

  test('expired: refused after exp plus the leeway, accepted within it', async () => {
    const { signer, verifier, time } = await setup();
    const token = grantFor(signer, { ttlSeconds: 60 });
    time.advance(60_000 + 29_000);
    await verifier.verify(token, { repo: REPO, digest: DIGEST });
    time.advance(1000);
    await rejects(verifier.verify(token, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /grant expired 30 s ago/, token);
  });

  test('not yet valid: refused when issued beyond the leeway in the future', async () => {
    const { store, verifier, time } = await setup();
    const ahead = (ms: number) => new GrantSigner({ issuer: ISSUER, keys: store, now: () => time.now() + ms });
    await verifier.verify(grantFor(ahead(20_000)), { repo: REPO, digest: DIGEST });
    const token = grantFor(ahead(120_000));
    await rejects(verifier.verify(token, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /not valid yet \(issued 120 s in the future\)/, token);
  });

  test('another repository or digest is denied', async () => {
    const { signer, verifier } = await setup();
    const token = grantFor(signer);
    await rejects(verifier.verify(token, { repo: 'team/other', digest: DIGEST }), 'DENIED', /another repository, not team\/other/, token);
    await rejects(verifier.verify(token, { repo: REPO, digest: OTHER_DIGEST }), 'DENIED', /another blob/, token);
  });

  test('a grant replayed to another cache is denied; an upstream accepts its downstream caches', async () => {
    const { signer, store, time } = await setup();
    const token = grantFor(signer, { cache: 'cache-eu-edge' });
    const elsewhere = new GrantVerifier({ issuer: ISSUER, acceptAudiences: ['cache-us'], keys: new LocalJwks(store), now: time.now });
    await rejects(elsewhere.verify(token, { repo: REPO, digest: DIGEST }), 'DENIED', /another cache/, token);
    const upstream = new GrantVerifier({ issuer: ISSUER, acceptAudiences: ['cache-eu', 'cache-eu-edge'], keys: new LocalJwks(store), now: time.now });
    assert.equal((await upstream.verify(token, { repo: REPO, digest: DIGEST })).aud, 'cache-eu-edge');
    // The server with no cache registered: no grant is for it, a genuine one is denied, a malformed one is 401.
    const none = new GrantVerifier({ issuer: ISSUER, acceptAudiences: [], keys: new LocalJwks(store), now: time.now });
    await rejects(none.verify(token, { repo: REPO, digest: DIGEST }), 'DENIED', /another cache/, token);
    await rejects(none.verify('a.b.c', { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /invalid grant/);
  });

  test('a grant signed by a key the server does not publish is refused', async () => {
    const { verifier } = await setup();
    const other = await setup();
    const token = grantFor(other.signer);
    await rejects(verifier.verify(token, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /key the server does not publish/, token);
  });
});

describe('key store', () => {
  test('creates one P-256 key, PKCS#8, mode 0600, named by its kid, and loads it again', async () => {
    const dir = tempDir();
    const store = await GrantKeyStore.open({ dir });
    const { kid } = store.active();
    assert.deepEqual(readdirSync(dir), [`${kid}.pem`]);
    const file = join(dir, `${kid}.pem`);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.match(readFileSync(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
    const again = await GrantKeyStore.open({ dir });
    assert.equal(again.active().kid, kid);
    assert.deepEqual(again.jwks(), { keys: [{ ...publicJwk(store.active().publicKey) }] });
    assert.deepEqual(Object.keys(again.jwks().keys[0] ?? {}).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    assert.ok(!JSON.stringify(again.jwks()).includes('"d"'), 'never the private part');
  });

  test('rotation: new grants use the new kid, old grants verify until the old key is retired', async () => {
    const { signer, verifier, store, time } = await setup({ retireAfterMs: 30_000 });
    const oldKid = store.active().kid;
    const oldGrant = grantFor(signer, { ttlSeconds: 600 });
    time.advance(1000);
    const rotated = await store.rotate();
    assert.notEqual(rotated.kid, oldKid);
    const newGrant = grantFor(signer);
    assert.equal(decodeJws(newGrant).header.kid, rotated.kid);
    assert.deepEqual(
      store.jwks().keys.map((k) => k.kid),
      [rotated.kid, oldKid],
      'active key first, old one still published',
    );
    await verifier.verify(oldGrant, { repo: REPO, digest: DIGEST });
    // A restart during the grace period keeps both, and the same active key.
    const reopened = await GrantKeyStore.open({ dir: join(store.active().file, '..'), retireAfterMs: 30_000, now: time.now });
    assert.equal(reopened.active().kid, rotated.kid);
    assert.equal(reopened.jwks().keys.length, 2);

    time.advance(30_000);
    await rejects(verifier.verify(oldGrant, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /does not publish/);
    await verifier.verify(newGrant, { repo: REPO, digest: DIGEST });
    assert.deepEqual(
      store.jwks().keys.map((k) => k.kid),
      [rotated.kid],
      'unpublished at once',
    );
    assert.deepEqual(await store.retire(), [oldKid]);
    assert.deepEqual(readdirSync(join(store.active().file, '..')), [`${rotated.kid}.pem`]);
    assert.deepEqual(await store.retire(), []);
  });

  test('maintain(): rotation on schedule, a new key published before it signs, servers sharing the directory agree', async () => {
    const time = clock();
    const dir = tempDir();
    const options = { dir, now: time.now, activationDelayMs: 15 * 60_000, rotateAfterMs: 24 * 3600_000, retireAfterMs: 20 * 60_000 };
    const one = await GrantKeyStore.open(options);
    time.advance(5000);
    const two = await GrantKeyStore.open(options); // another server, started later on the same directory
    const first = one.active().kid;
    assert.equal(two.active().kid, first, 'the first key signs at once, on both');
    assert.deepEqual(await one.maintain(), { retired: [] }, 'nothing to do before the rotation time');

    time.advance(24 * 3600_000);
    const { created } = await one.maintain();
    assert.ok(created && created !== first, 'a new key once the newest is rotateAfterMs old');
    assert.equal(one.active().kid, first, 'the new key does not sign yet');
    assert.deepEqual(one.jwks().keys.map((k) => k.kid).sort(), [first, created].sort(), 'but it is published');
    assert.deepEqual(await two.maintain(), { retired: [] }, 'the other server finds the new key and makes none of its own');
    assert.deepEqual(two.jwks().keys.map((k) => k.kid).sort(), [first, created].sort());
    assert.equal(two.active().kid, first);
    const signer = new GrantSigner({ issuer: ISSUER, keys: two, now: time.now });
    const verifier = new GrantVerifier({ issuer: ISSUER, acceptAudiences: ['cache-eu'], keys: new LocalJwks(one), now: time.now });
    const before = grantFor(signer, { ttlSeconds: 600 });
    assert.equal(decodeJws(before).header.kid, first);
    await verifier.verify(before, { repo: REPO, digest: DIGEST });

    time.advance(15 * 60_000);
    assert.equal(one.active().kid, created, 'active after the activation delay');
    assert.equal(two.active().kid, created);
    const after = grantFor(signer);
    assert.equal(decodeJws(after).header.kid, created);
    await verifier.verify(after, { repo: REPO, digest: DIGEST });
    // A grant the old key signed just before the switch still verifies for its whole life.
    time.advance(-1);
    const last = grantFor(signer, { ttlSeconds: 600 });
    assert.equal(decodeJws(last).header.kid, first);
    time.advance(1 + 599_000);
    await verifier.verify(last, { repo: REPO, digest: DIGEST });
    time.advance(-599_000);

    // The old key stays published retireAfterMs after the new one became active, then goes.
    time.advance(20 * 60_000 - 1);
    assert.deepEqual((await one.maintain()).retired, []);
    time.advance(1);
    assert.deepEqual((await one.maintain()).retired, [first]);
    assert.deepEqual((await two.maintain()).retired, [], 'already deleted by the other server');
    assert.deepEqual(two.jwks().keys.map((k) => k.kid), [created]);
    assert.deepEqual(readdirSync(dir), [`${created}.pem`]);
  });

  test('maintain() keeps the loaded keys when the directory holds a bad file, and says why', async () => {
    const dir = tempDir();
    const store = await GrantKeyStore.open({ dir });
    const kid = store.active().kid;
    writeFileSync(join(dir, 'junk.pem'), 'not a key');
    await assert.rejects(store.maintain(), /junk\.pem: not a PEM private key/);
    assert.equal(store.active().kid, kid);
    assert.equal(store.jwks().keys.length, 1);
  });

  test('the default grace period outlasts the longest grant', async () => {
    const { signer, verifier, store, time } = await setup();
    const oldGrant = grantFor(signer, { ttlSeconds: MAX_GRANT_TTL_SECONDS });
    await store.rotate();
    time.advance(MAX_GRANT_TTL_SECONDS * 1000 + 29_000);
    await verifier.verify(oldGrant, { repo: REPO, digest: DIGEST });
    assert.equal(store.jwks().keys.length, 2);
    time.advance(MAX_GRANT_TTL_SECONDS * 1000);
    assert.equal(store.jwks().keys.length, 1);
  });

  test('two rotations in the same millisecond still order the keys', async () => {
    const { store } = await setup();
    const a = await store.rotate();
    const b = await store.rotate();
    assert.equal(store.active().kid, b.kid);
    assert.ok(b.createdAt > a.createdAt);
    const reopened = await GrantKeyStore.open({ dir: join(b.file, '..'), now: () => START });
    assert.equal(reopened.active().kid, b.kid);
  });

  test('an operator key dropped in the directory becomes active when it is the newest file', async () => {
    const dir = tempDir();
    const store = await GrantKeyStore.open({ dir });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const file = join(dir, 'operator.pem');
    writeFileSync(file, privateKey.export({ type: 'sec1', format: 'pem' }), { mode: 0o600 });
    const later = (Date.now() + 5000) / 1000;
    utimesSync(file, later, later);
    const reopened = await GrantKeyStore.open({ dir });
    assert.equal(reopened.active().kid, jwkThumbprint(privateKey));
    assert.equal(reopened.jwks().keys[1]?.kid, store.active().kid);
  });

  test('a file that is not an EC P-256 key stops open() with its name', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'bad.pem'), 'not a key');
    await assert.rejects(GrantKeyStore.open({ dir }), (err: Error) => err.message.includes(join(dir, 'bad.pem')) && /not a PEM private key/.test(err.message));
    const rsaDir = tempDir();
    writeFileSync(join(rsaDir, 'rsa.pem'), generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await assert.rejects(GrantKeyStore.open({ dir: rsaDir }), /rsa\.pem: expected an EC P-256 key for ES256, got rsa/);
  });

  test('temporary files left by a crash are removed; other files are ignored', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, '.abc.pem.tmp-0123abcd'), 'half');
    writeFileSync(join(dir, 'README'), 'keys live here');
    const store = await GrantKeyStore.open({ dir });
    assert.deepEqual(readdirSync(dir).sort(), [`${store.active().kid}.pem`, 'README'].sort());
  });
});

/** A JWKS server on 127.0.0.1:0 whose answer the test controls, counting requests. */
async function jwksServer(t: { after(fn: () => unknown): void }, answer: () => { status: number; body: string }) {
  const server = await startFakeRegistry({
    hook: ({ req, res }) => {
      if (req.url !== '/api/v0/keys') return false;
      const { status, body } = answer();
      res.writeHead(status, { 'content-type': 'application/json' }).end(body);
      return true;
    },
  });
  let closed: Promise<void> | undefined;
  const close = () => (closed ??= server.stop());
  t.after(close);
  return { url: server.url, requests: () => server.requests.length, close };
}

describe('RemoteJwks', () => {
  test('fetches once for known kids, refetches an unknown kid at most once per minRefetchMs', async (t) => {
    const { signer, store, time } = await setup();
    const server = await jwksServer(t, () => ({ status: 200, body: JSON.stringify(store.jwks()) }));
    const remote = new RemoteJwks({ urls: [`${server.url}/`], now: time.now, logger: silent });
    const verifier = new GrantVerifier({ issuer: ISSUER, acceptAudiences: ['cache-eu'], keys: remote, now: time.now });

    const [a, b] = await Promise.all([verifier.verify(grantFor(signer), { repo: REPO, digest: DIGEST }), verifier.verify(grantFor(signer), { repo: REPO, digest: DIGEST })]);
    assert.equal(a.sub, 'alice');
    assert.equal(b.sub, 'alice');
    assert.equal(server.requests(), 1, 'concurrent first uses share one fetch');
    for (let i = 0; i < 5; i++) await verifier.verify(grantFor(signer), { repo: REPO, digest: DIGEST });
    assert.equal(server.requests(), 1);

    // Forged kids: one refetch, then refused without asking again until minRefetchMs has passed.
    time.advance(10_000);
    const forged = grantFor((await setup()).signer);
    await rejects(verifier.verify(forged, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /does not publish/, forged);
    assert.equal(server.requests(), 2);
    await Promise.all(Array.from({ length: 20 }, () => rejects(verifier.verify(forged, { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /does not publish/)));
    assert.equal(await remote.getKey('no-such-kid'), undefined);
    assert.equal(server.requests(), 2, 'throttled');
    time.advance(9_999);
    assert.equal(await remote.getKey('no-such-kid'), undefined);
    assert.equal(server.requests(), 2);
    time.advance(1);
    assert.equal(await remote.getKey('no-such-kid'), undefined);
    assert.equal(server.requests(), 3);
  });

  test('a rotation on the server is picked up by the unknown-kid refetch', async (t) => {
    const { signer, store, time } = await setup();
    const server = await jwksServer(t, () => ({ status: 200, body: JSON.stringify(store.jwks()) }));
    const remote = new RemoteJwks({ urls: [server.url], now: time.now });
    const verifier = new GrantVerifier({ issuer: ISSUER, acceptAudiences: ['cache-eu'], keys: remote, now: time.now });
    const oldGrant = grantFor(signer);
    await verifier.verify(oldGrant, { repo: REPO, digest: DIGEST });
    time.advance(10_000);
    await store.rotate();
    await verifier.verify(grantFor(signer), { repo: REPO, digest: DIGEST });
    assert.equal(server.requests(), 2);
    await verifier.verify(oldGrant, { repo: REPO, digest: DIGEST });
    assert.equal((await remote.jwks()).keys.length, 2);
  });

  test('a stale set is refreshed in the background; a retired key disappears', async (t) => {
    const { signer, store, time } = await setup({ retireAfterMs: 1000 });
    const server = await jwksServer(t, () => ({ status: 200, body: JSON.stringify(store.jwks()) }));
    const remote = new RemoteJwks({ urls: [server.url], now: time.now, maxAgeMs: 60_000 });
    const oldKid = store.active().kid;
    await new GrantVerifier({ issuer: ISSUER, acceptAudiences: ['cache-eu'], keys: remote, now: time.now }).verify(grantFor(signer), { repo: REPO, digest: DIGEST });
    await store.rotate();
    time.advance(60_000);
    // Served from the stale set at once; the refresh runs behind it.
    assert.ok(await remote.getKey(oldKid));
    await remote.refresh();
    assert.equal(server.requests(), 2);
    assert.equal(await remote.getKey(oldKid), undefined);
  });

  test('the last good set is used while the upstream is down or answers garbage', async (t) => {
    const { signer, store, time } = await setup();
    let answer = { status: 200, body: JSON.stringify(store.jwks()) };
    const server = await jwksServer(t, () => answer);
    const remote = new RemoteJwks({ urls: [server.url], now: time.now, maxAgeMs: 60_000 });
    const verifier = new GrantVerifier({ issuer: ISSUER, acceptAudiences: ['cache-eu'], keys: remote, now: time.now });
    await verifier.verify(grantFor(signer), { repo: REPO, digest: DIGEST });

    for (const bad of [
      { status: 500, body: 'oops' },
      { status: 200, body: 'not json' },
      { status: 200, body: '{"keys":[]}' },
      { status: 200, body: JSON.stringify({ keys: [{ kty: 'RSA', kid: 'r', n: 'x', e: 'AQAB' }] }) },
      { status: 200, body: JSON.stringify({ keys: store.jwks().keys.map((k) => ({ ...k, alg: 'HS256' })) }) },
      { status: 200, body: JSON.stringify({ keys: [{ ...store.jwks().keys[0], x: 'A'.repeat(43) }] }) },
      { status: 200, body: JSON.stringify({ keys: store.jwks().keys, pad: 'x'.repeat(100_000) }) },
    ]) {
      answer = bad;
      time.advance(60_000);
      assert.equal(await remote.refresh(), false, bad.body.slice(0, 40));
      await verifier.verify(grantFor(signer), { repo: REPO, digest: DIGEST });
    }
    assert.equal(remote.stats.failures, 7);

    await server.close();
    time.advance(60_000);
    await verifier.verify(grantFor(signer), { repo: REPO, digest: DIGEST });
    assert.equal(await remote.refresh(), false);
    await verifier.verify(grantFor(signer), { repo: REPO, digest: DIGEST });
    assert.equal((await remote.jwks()).keys[0]?.kid, store.active().kid, 're-published from the last good set');
  });

  test('tries the next URL when one is down; nothing known and nothing reachable refuses', async (t) => {
    const { signer, store, time } = await setup();
    const dead = await jwksServer(t, () => ({ status: 200, body: '' }));
    await dead.close();
    const live = await jwksServer(t, () => ({ status: 200, body: JSON.stringify(store.jwks()) }));
    const remote = new RemoteJwks({ urls: [dead.url, live.url], now: time.now });
    assert.ok(await remote.getKey(store.active().kid));

    const lonely = new RemoteJwks({ urls: [dead.url], now: time.now });
    const verifier = new GrantVerifier({ issuer: ISSUER, acceptAudiences: ['cache-eu'], keys: lonely, now: time.now });
    await rejects(verifier.verify(grantFor(signer), { repo: REPO, digest: DIGEST }), 'UNAUTHORIZED', /does not publish/);
    assert.deepEqual(await lonely.jwks(), { keys: [] });
    assert.equal(lonely.stats.fetches, 1, 'jwks() within minRefetchMs does not fetch again');
  });

  test('LocalJwks answers from the store', async () => {
    const { store } = await setup();
    const local: JwksSource = new LocalJwks(store);
    const key = (await local.getKey(store.active().kid)) as KeyObject;
    assert.equal(jwkThumbprint(key), store.active().kid);
    assert.equal(await local.getKey('nope'), undefined);
  });
});

describe('GrantAuthorizer', () => {
  const blobPath = (digest = DIGEST, repo = REPO) => `/v2/${repo}/blobs/${digest}`;
  const pull = (name = REPO): Access[] => [{ type: 'repository', name, actions: ['pull'] }];

  test('statuses', async () => {
    const { signer, verifier } = await setup();
    const auth = new GrantAuthorizer(verifier);
    const grant = grantFor(signer);

    // Blob GET/HEAD: the grant in the query, or in the header.
    assert.deepEqual(await auth.authorize({}, pull(), blobPath(), { grant }), { user: 'alice' });
    assert.deepEqual(await auth.authorize({ [GRANT_HEADER]: grant }, pull(), blobPath()), { user: 'alice' });
    assert.deepEqual(await auth.authorize({ [GRANT_HEADER]: grant }, pull(), blobPath(), { grant }), { user: 'alice' });
    assert.deepEqual(await auth.authorize({}, pull(), blobPath(), { grant: grantFor(signer, { user: '' }) }), {}, 'anonymous');

    // /v2/: 401 with the challenge without a grant, fine with any valid one.
    for (const path of ['/v2/', '/v2']) {
      await assert.rejects(auth.authorize({}, [], path), (err: unknown) => {
        assert.ok(isRegistryError(err, 'UNAUTHORIZED'));
        assert.equal(err.status, 401);
        assert.equal(err.headers['WWW-Authenticate'], 'Bearer realm="cascade-grant"');
        assert.match(err.message, /pull through the server/);
        return true;
      });
    }
    assert.deepEqual(await auth.authorize({}, [], '/v2/', { grant }), { user: 'alice' });
    await rejects(auth.authorize({}, [], '/v2/', { grant: `${grant}x` }), 'UNAUTHORIZED', /invalid grant/);

    // Blobs without a grant, with a bad one, or a grant for something else.
    await rejects(auth.authorize({}, pull(), blobPath()), 'UNAUTHORIZED', /pull through the server/);
    await rejects(auth.authorize({}, pull(), blobPath(), { grant: '' }), 'UNAUTHORIZED', /pull through the server/);
    await rejects(auth.authorize({}, pull(), blobPath(), { grant: 'garbage' }), 'UNAUTHORIZED', /invalid grant/);
    await rejects(auth.authorize({}, pull(), blobPath(OTHER_DIGEST), { grant }), 'DENIED', /another blob/);
    await rejects(auth.authorize({}, pull('team/other'), blobPath(DIGEST, 'team/other'), { grant }), 'DENIED', /another repository/);
    await rejects(auth.authorize({}, pull(), blobPath(), { grant: [grant, grantFor(signer)] }), 'UNAUTHORIZED', /more than one grant/);
    await rejects(auth.authorize({ [GRANT_HEADER]: grantFor(signer) }, pull(), blobPath(), { grant }), 'UNAUTHORIZED', /more than one grant/);

    // Everything but blob pulls is denied, grant or not.
    const denied: Array<[Access[], string]> = [
      [pull(), `/v2/${REPO}/manifests/latest`],
      [pull(), `/v2/${REPO}/manifests/${DIGEST}`],
      [pull(), `/v2/${REPO}/tags/list`],
      [pull(), `/v2/${REPO}/referrers/${DIGEST}`],
      [[{ type: 'registry', name: 'catalog', actions: ['*'] }], '/v2/_catalog'],
      [[{ type: 'repository', name: REPO, actions: ['pull', 'push'] }], `/v2/${REPO}/blobs/uploads/`],
      [[{ type: 'repository', name: REPO, actions: ['delete'] }], blobPath()],
      [pull('team/other'), blobPath()],
    ];
    for (const [access, path] of denied) {
      await rejects(auth.authorize({}, access, path, { grant }), 'DENIED', /this cache serves blobs only with a server grant/);
    }
  });

  test('through the registry app: the ?grant= query reaches the authorizer', async (t) => {
    const { signer, verifier } = await setup();
    const driver = new InMemoryDriver();
    await driver.recover();
    const namespace = new StorageNamespace(driver);
    const open = await listen(createRegistryApp({ namespace, logger: silent }).callback(), { addr: '127.0.0.1:0' }, silent);
    t.after(() => open.close());
    const data = Buffer.from('layer one');
    const pushed = await fetch(`${open.url}/v2/${REPO}/blobs/uploads/?digest=${DIGEST}`, { method: 'POST', body: data, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(pushed.status, 201);

    const cache = await listen(createRegistryApp({ namespace, logger: silent, authorizer: new GrantAuthorizer(verifier) }).callback(), { addr: '127.0.0.1:0' }, silent);
    t.after(() => cache.close());
    const grant = grantFor(signer);
    const ok = await fetch(`${cache.url}${blobPath()}?grant=${grant}`);
    assert.equal(ok.status, 200);
    assert.deepEqual(Buffer.from(await ok.arrayBuffer()), data);
    assert.equal((await fetch(`${cache.url}${blobPath()}?grant=${grant}`, { method: 'HEAD' })).status, 200);
    const none = await fetch(`${cache.url}${blobPath()}`);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="cascade-grant"');
    assert.equal(((await none.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAUTHORIZED');
    assert.equal((await fetch(`${cache.url}/v2/?grant=${grant}`)).status, 200);
    assert.equal((await fetch(`${cache.url}/v2/`)).status, 401);
    const manifest = await fetch(`${cache.url}/v2/${REPO}/manifests/latest?grant=${grant}`);
    assert.equal(manifest.status, 403);
    assert.equal(((await manifest.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'DENIED');
    assert.equal((await fetch(`${cache.url}${blobPath(OTHER_DIGEST)}?grant=${grant}`)).status, 403);
  });
});
