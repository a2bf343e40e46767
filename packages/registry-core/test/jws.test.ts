/**
 * The JWS module shared by grants and registry tokens: one parser, so both refuse the same malformed
 * tokens in the same words, and one strict base64url, so a token has exactly one spelling.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { decodeJws, JwsError, JwsSigner, parseCompactJws, signJws, TokenInvalidError, TrustedKeys, verifyJwt } from '../src/index.js';

describe('jws (src/jws)', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: 'i', sub: 'alice', aud: 's', exp: now + 60, access: [] };
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  // 64 bytes are 86 characters; the last one carries 4 unused bits: flipping one keeps the decoded bytes.
  const respell = (t: string) => `${t.slice(0, -1)}${ALPHABET[ALPHABET.indexOf(t.at(-1) ?? 'A') ^ 1] ?? ''}`;

  test('a signature spelled with non-zero padding bits is refused by grants and registry tokens alike', () => {
    const grant = signJws({ a: 1 }, { privateKey, kid: 'k' });
    const token = new JwsSigner(privateKey).sign(claims);
    for (const t of [grant, token]) {
      assert.deepEqual(Buffer.from(respell(t).split('.')[2] ?? '', 'base64url'), Buffer.from(t.split('.')[2] ?? '', 'base64url'));
      assert.throws(() => parseCompactJws(respell(t), { algorithms: ['ES256'], maxLength: 8192 }), (e: unknown) => e instanceof JwsError && e.reason === 'malformed');
    }
    assert.throws(() => decodeJws(respell(grant)), JwsError);
    const keys = new TrustedKeys({ keys: [{ key: publicKey }] });
    assert.equal(verifyJwt(token, { keys, issuer: 'i', audience: 's' }).sub, 'alice');
    assert.throws(() => verifyJwt(respell(token), { keys, issuer: 'i', audience: 's' }), TokenInvalidError);
  });

  test('the same malformed token gets the same reason from both profiles', () => {
    const bad = 'a.b';
    assert.throws(() => decodeJws(bad), /token has 2 segments, not three/);
    assert.throws(() => verifyJwt(bad, { keys: new TrustedKeys({}), issuer: 'i', audience: 's' }), /token has 2 segments, not three/);
  });
});
