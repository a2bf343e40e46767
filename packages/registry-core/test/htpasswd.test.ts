import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import bcrypt from 'bcryptjs';
import { pino } from 'pino';
import { HtpasswdAuthenticator, HtpasswdFileError, parseHtpasswd, type HtpasswdOptions } from '../src/auth/htpasswd.js';

/** Cost 4, the minimum, keeps the tests fast; the code does not depend on the cost. */
const hash = (password: string): string => bcrypt.hashSync(password, 4);
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

function tempFile(t: TestContext, content: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cascade-htpasswd-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'htpasswd');
  writeFileSync(file, content);
  return file;
}

/** Rewrites the file and moves its mtime, so that the change is seen even within one mtime tick. */
function rewrite(file: string, content: string, mtimeSeconds: number): void {
  writeFileSync(file, content);
  utimesSync(file, mtimeSeconds, mtimeSeconds);
}

/** An authenticator with a hand-moved clock and a counted bcrypt. */
function counted(file: string, extra: Partial<HtpasswdOptions> = {}) {
  let now = 1_000_000;
  const calls = { compare: 0 };
  const auth = new HtpasswdAuthenticator({
    realm: 'Cascade',
    path: file,
    now: () => now,
    compare: async (password, h) => {
      calls.compare++;
      return bcrypt.compare(password, h);
    },
    ...extra,
  });
  return { auth, calls, advance: (ms: number) => (now += ms) };
}

const ALICE = `# users of the test registry\n\nalice:${hash('wonderland')}\n  \nbob:${hash('builder')}\n`;

describe('HtpasswdAuthenticator', () => {
  test('accepts the right password and rejects the rest', async (t) => {
    const { auth } = counted(tempFile(t, ALICE));
    assert.deepEqual(await auth.authenticate(basic('alice', 'wonderland')), { user: 'alice' });
    assert.deepEqual(await auth.authenticate(basic('bob', 'builder')), { user: 'bob' });
    assert.equal(await auth.authenticate(basic('alice', 'builder')), undefined);
    assert.equal(await auth.authenticate(basic('alice', '')), undefined);
    assert.equal(await auth.authenticate(basic('carol', 'wonderland')), undefined);
  });

  test('rejects missing and malformed headers', async (t) => {
    const { auth, calls } = counted(tempFile(t, ALICE));
    const malformed = [
      undefined,
      '',
      'Basic',
      'Basic ',
      'Bearer abc.def.ghi',
      'Basic !!!not-base64!!!',
      `Basic ${Buffer.from('alice').toString('base64')}`,
      `Basic ${Buffer.from(':wonderland').toString('base64')}`,
      `${basic('alice', 'wonderland')} trailing`,
    ];
    for (const header of malformed) assert.equal(await auth.authenticate(header), undefined, String(header));
    assert.equal(calls.compare, 0, 'malformed headers never reach bcrypt');
    assert.deepEqual(await auth.authenticate(`basic   ${Buffer.from('alice:wonderland').toString('base64')}`), { user: 'alice' }, 'the scheme is case-insensitive');
  });

  test('passwords may contain colons and non-ASCII characters', async (t) => {
    const { auth } = counted(tempFile(t, `dave:${hash('p:ä:ß')}\n`));
    assert.deepEqual(await auth.authenticate(basic('dave', 'p:ä:ß')), { user: 'dave' });
  });

  test('challenge is Basic with the realm', (t) => {
    const { auth } = counted(tempFile(t, ALICE));
    assert.equal(auth.challenge(), 'Basic realm="Cascade"');
    const quoted = new HtpasswdAuthenticator({ realm: 'the "registry"', path: tempFile(t, ALICE) });
    assert.equal(quoted.challenge(), 'Basic realm="the \\"registry\\""');
  });

  test('a successful check is cached for 60 s; failures are not cached', async (t) => {
    const { auth, calls, advance } = counted(tempFile(t, ALICE));
    await auth.authenticate(basic('alice', 'wonderland'));
    await auth.authenticate(basic('alice', 'wonderland'));
    await auth.authenticate(basic('alice', 'wonderland'));
    assert.equal(calls.compare, 1, 'cache hits do not run bcrypt');

    await auth.authenticate(basic('alice', 'wrong'));
    await auth.authenticate(basic('alice', 'wrong'));
    assert.equal(calls.compare, 3, 'every wrong password runs bcrypt');

    advance(59_000);
    await auth.authenticate(basic('alice', 'wonderland'));
    assert.equal(calls.compare, 3, 'still cached after 59 s');
    advance(2_000);
    assert.deepEqual(await auth.authenticate(basic('alice', 'wonderland')), { user: 'alice' });
    assert.equal(calls.compare, 4, 'checked again after 61 s');
  });

  test('concurrent requests with the same credentials share one bcrypt run', async (t) => {
    const { auth, calls } = counted(tempFile(t, ALICE));
    const results = await Promise.all(Array.from({ length: 20 }, () => auth.authenticate(basic('alice', 'wonderland'))));
    assert.ok(results.every((r) => r?.user === 'alice'));
    assert.equal(calls.compare, 1);
  });

  test('a cache hit is much faster than bcrypt at the default cost', async (t) => {
    const auth = new HtpasswdAuthenticator({ realm: 'Cascade', path: tempFile(t, `alice:${bcrypt.hashSync('wonderland', 10)}\n`) });
    let start = performance.now();
    assert.deepEqual(await auth.authenticate(basic('alice', 'wonderland')), { user: 'alice' });
    const cold = performance.now() - start;
    start = performance.now();
    for (let i = 0; i < 10; i++) await auth.authenticate(basic('alice', 'wonderland'));
    const warm = (performance.now() - start) / 10;
    assert.ok(warm * 20 < cold, `cold ${cold.toFixed(1)} ms, warm ${warm.toFixed(3)} ms`);
  });

  test('the cache is bounded, oldest entries first', async (t) => {
    const { auth, calls } = counted(tempFile(t, ALICE), { maxCacheEntries: 1 });
    await auth.authenticate(basic('alice', 'wonderland'));
    await auth.authenticate(basic('bob', 'builder'));
    assert.equal(calls.compare, 2);
    await auth.authenticate(basic('bob', 'builder'));
    assert.equal(calls.compare, 2, 'bob is cached');
    await auth.authenticate(basic('alice', 'wonderland'));
    assert.equal(calls.compare, 3, 'alice was evicted');
  });

  test('reloads the file when it changes, checking at most once per second', async (t) => {
    const file = tempFile(t, ALICE);
    const { auth, advance } = counted(file);
    assert.deepEqual(await auth.authenticate(basic('alice', 'wonderland')), { user: 'alice' });

    rewrite(file, `alice:${hash('looking-glass')}\n`, 2_000_000_000);
    advance(500);
    assert.deepEqual(await auth.authenticate(basic('alice', 'wonderland')), { user: 'alice' }, 'not re-checked within a second');
    advance(600);
    assert.equal(await auth.authenticate(basic('alice', 'wonderland')), undefined, 'the old password no longer works, although it was cached');
    assert.deepEqual(await auth.authenticate(basic('alice', 'looking-glass')), { user: 'alice' });
    assert.equal(await auth.authenticate(basic('bob', 'builder')), undefined, 'a removed user is rejected');
  });

  test('a file broken after start-up fails closed until it is fixed', async (t) => {
    const file = tempFile(t, ALICE);
    const logged: string[] = [];
    const logger = {
      info: (obj: object, msg: string) => void logged.push(`${msg} ${JSON.stringify(obj)}`),
      error: (obj: object, msg: string) => void logged.push(`${msg} ${JSON.stringify(obj)}`),
    };
    const { auth, advance } = counted(file, { logger });
    assert.deepEqual(await auth.authenticate(basic('alice', 'wonderland')), { user: 'alice' });

    rewrite(file, 'alice:wonderland\n', 2_000_000_000);
    advance(1_001);
    assert.equal(await auth.authenticate(basic('alice', 'wonderland')), undefined);

    rmSync(file);
    advance(1_001);
    assert.equal(await auth.authenticate(basic('alice', 'wonderland')), undefined);

    rewrite(file, ALICE, 2_000_000_100);
    advance(1_001);
    assert.deepEqual(await auth.authenticate(basic('alice', 'wonderland')), { user: 'alice' });

    assert.equal(logged.length, 3);
    for (const line of logged) assert.doesNotMatch(line, /wonderland|\$2[aby]\$\d\d\$/, 'no password or hash in the log');
  });

  test('rejects other hash types at load time, naming the file and line', (t) => {
    const kinds: Array<[string, RegExp]> = [
      ['$apr1$Vd1ktcB5$tLhi1qO5l0fXHbKrNbkKA1', /Apache MD5 \(\$apr1\$\)/],
      ['{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=', /SHA-1 \(\{SHA\}\)/],
      ['$6$salt$hash', /SHA-512-crypt/],
      ['plaintext', /crypt\(3\) hash or a plain-text password/],
      ['$2y$10$short', /malformed bcrypt hash/],
    ];
    for (const [bad, kind] of kinds) {
      const file = tempFile(t, `# header\nalice:${hash('x')}\ncarol:${bad}\n`);
      assert.throws(
        () => new HtpasswdAuthenticator({ realm: 'r', path: file }),
        (e: unknown) => {
          assert.ok(e instanceof HtpasswdFileError);
          assert.equal(e.file, file);
          assert.equal(e.line, 3);
          assert.ok(e.message.startsWith(`${file}:3: expected a bcrypt hash`), e.message);
          assert.match(e.message, /for user "carol"/);
          assert.match(e.message, kind);
          assert.ok(!e.message.includes(bad), 'the hash is not printed');
          return true;
        },
      );
    }
  });

  test('rejects lines that are not user:hash, and a missing file', (t) => {
    assert.throws(() => parseHtpasswd('alice\n', 'f'), /^HtpasswdFileError: f:1: expected <user>:<bcrypt hash>, got a line without ":"$/);
    assert.throws(() => parseHtpasswd('\n:x\n', 'f'), /f:2: expected <user>:<bcrypt hash>, got an empty user name/);
    const missing = join(tmpdir(), 'cascade-no-such-htpasswd');
    assert.throws(() => new HtpasswdAuthenticator({ realm: 'r', path: missing }), (e: unknown) => e instanceof HtpasswdFileError && e.message.startsWith(`${missing}: cannot read htpasswd file: ENOENT`));
    assert.ok(t);
  });

  test('accepts $2a$, $2b$ and $2y$ hashes; the last line of a user wins, as in distribution', async (t) => {
    const b = hash('pw');
    const a = b.replace(/^\$2b\$/, '$2a$');
    const y = b.replace(/^\$2b\$/, '$2y$');
    const { auth } = counted(tempFile(t, `u1:${a}\nu2:${b}\r\nu3:${y}\nu3:${hash('other')}\n`));
    assert.deepEqual(await auth.authenticate(basic('u1', 'pw')), { user: 'u1' });
    assert.deepEqual(await auth.authenticate(basic('u2', 'pw')), { user: 'u2' });
    assert.equal(await auth.authenticate(basic('u3', 'pw')), undefined);
    assert.deepEqual(await auth.authenticate(basic('u3', 'other')), { user: 'u3' });
  });

  test('a file written by Apache htpasswd -B works', async (t) => {
    let line: string;
    try {
      line = execFileSync('htpasswd', ['-Bbn', 'user', 'pass'], { encoding: 'utf8' });
    } catch {
      t.skip('htpasswd (apache2-utils) is not installed');
      return;
    }
    const { auth } = counted(tempFile(t, line));
    assert.deepEqual(await auth.authenticate(basic('user', 'pass')), { user: 'user' });
    assert.equal(await auth.authenticate(basic('user', 'wrong')), undefined);
  });
});

test('a pino logger fits the logger option', (t) => {
  const logger = pino({ level: 'silent' });
  const auth = new HtpasswdAuthenticator({ realm: 'r', path: tempFile(t, ALICE), logger });
  assert.equal(auth.challenge(), 'Basic realm="r"');
});
