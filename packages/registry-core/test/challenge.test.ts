/** The one `WWW-Authenticate` parser: the forms registries send, several challenges, quoting, junk. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseChallenge, parseChallenges } from '../src/auth/challenge.js';

describe('WWW-Authenticate challenges', () => {
  it("reads Docker Hub's Bearer challenge and a Basic one", () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'), {
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
    });
    assert.deepEqual(parseChallenge('Basic realm="Registry"'), { scheme: 'basic', params: { realm: 'Registry' } });
    assert.deepEqual(parseChallenge('basic   realm=x'), { scheme: 'basic', params: { realm: 'x' } });
  });

  it('has no answer for other schemes, nothing, or junk', () => {
    assert.equal(parseChallenge('Negotiate abc'), undefined);
    assert.equal(parseChallenge('Negotiate YWJjZA=='), undefined);
    assert.equal(parseChallenge(undefined), undefined);
    assert.equal(parseChallenge(''), undefined);
    assert.equal(parseChallenge('"""'), undefined);
  });

  it('unquotes escapes, lower-cases names, keeps spaces and commas inside quotes, takes unquoted URLs', () => {
    assert.deepEqual(parseChallenge('Bearer Realm="a \\"b\\", c", SERVICE = svc , scope="repository:x:pull,push"'), {
      scheme: 'bearer',
      params: { realm: 'a "b", c', service: 'svc', scope: 'repository:x:pull,push' },
    });
    assert.deepEqual(parseChallenge('Bearer realm=https://auth.example/token,service=registry'), { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry' } });
  });

  it('reads several challenges in one header, and finds the Basic or Bearer one among others', () => {
    const all = parseChallenges('Negotiate YWJjZA==, Basic realm="r1", Bearer realm="https://t/token",service="s"');
    assert.deepEqual(
      all.map((c) => [c.scheme, c.params]),
      [
        ['negotiate', { token68: 'YWJjZA==' }],
        ['basic', { realm: 'r1' }],
        ['bearer', { realm: 'https://t/token', service: 's' }],
      ],
    );
    assert.equal(parseChallenge('Negotiate YWJjZA==, Bearer realm="https://t/token"')?.scheme, 'bearer');
  });

  it('never throws on hostile input, and reads a long one in linear time', () => {
    for (const header of ['=', ',,,', 'Bearer realm="unterminated', 'Bearer =x', 'Bearer realm=", \\', '\u0000Bearer realm="x"', 'x'.repeat(100_000)]) {
      assert.doesNotThrow(() => parseChallenges(header), header.slice(0, 40));
    }
    const many = `Bearer ${Array.from({ length: 50_000 }, (_, n) => `p${n}=v`).join(',')}`;
    assert.equal(Object.keys(parseChallenge(many)?.params ?? {}).length, 50_000);
  });
});
