/**
 * The conformance suite every {@link StorageDriver} must pass, after distribution's
 * `registry/storage/driver/testsuites`. A driver's test file calls {@link runDriverConformance} once; the suite
 * registers `node:test` tests, so it is imported only from tests (package export `./conformance`).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { type FileInfo, InvalidPathError, PathNotFoundError, type StorageDriver } from './driver.js';

/** What a conformance factory returns: a fresh, empty driver and a function that disposes of it. */
export interface DriverUnderTest {
  driver: StorageDriver;
  cleanup: () => Promise<void>;
}

const MiB = 1024 * 1024;

/**
 * Registers, under `describe(name)`, the tests every storage driver must pass. `factory` is called before each
 * test and must return an empty driver; `cleanup` is called after it, whether the test passed or not.
 *
 * @example
 * ```ts
 * runDriverConformance('inmemory', async () => ({ driver: new InMemoryDriver(), cleanup: async () => {} }));
 * ```
 */
export function runDriverConformance(name: string, factory: () => Promise<DriverUnderTest>): void {
  describe(`storage driver conformance: ${name}`, () => {
    let current: DriverUnderTest | undefined;
    const driver = (): StorageDriver => {
      if (current === undefined) throw new Error('driver factory did not run');
      return current.driver;
    };

    beforeEach(async () => {
      current = await factory();
    });
    afterEach(async () => {
      const done = current;
      current = undefined;
      await done?.cleanup();
    });

    describe('content', () => {
      it('round-trips putContent and getContent, creating parent directories', async () => {
        const d = driver();
        const content = randomBytes(4096);
        await d.putContent('/a/b/c/file', content);
        assert.deepEqual(await d.getContent('/a/b/c/file'), content);
        assert.deepEqual(await d.list('/a/b'), ['/a/b/c']);
      });

      it('stores empty content', async () => {
        const d = driver();
        await d.putContent('/empty', new Uint8Array(0));
        assert.equal((await d.getContent('/empty')).length, 0);
        assert.equal((await d.stat('/empty')).size, 0);
      });

      it('replaces content on overwrite, also with shorter content', async () => {
        const d = driver();
        await d.putContent('/f', Buffer.from('a much longer first version'));
        await d.putContent('/f', Buffer.from('short'));
        assert.equal((await d.getContent('/f')).toString(), 'short');
        assert.equal((await d.stat('/f')).size, 5);
      });

      it('keeps stored content independent of the buffers passed in and returned', async () => {
        const d = driver();
        const input = Buffer.from('original');
        await d.putContent('/f', input);
        input.fill(0);
        const output = await d.getContent('/f');
        output.fill(0);
        assert.equal((await d.getContent('/f')).toString(), 'original');
      });
    });

    describe('errors', () => {
      const missing = '/no/such/path';
      const calls: Record<string, (d: StorageDriver, path: string) => Promise<unknown>> = {
        getContent: (d, p) => d.getContent(p),
        reader: (d, p) => d.reader(p),
        'writer(append)': (d, p) => d.writer(p, { append: true }),
        stat: (d, p) => d.stat(p),
        list: (d, p) => d.list(p),
        'move(source)': (d, p) => d.move(p, '/elsewhere'),
        delete: (d, p) => d.delete(p),
        walk: (d, p) => d.walk(p, () => undefined),
        touch: (d, p) => d.touch(p, new Date()),
      };

      it('rejects with PathNotFoundError naming the path, for every method', async () => {
        const d = driver();
        await d.putContent('/file', Buffer.from('x'));
        for (const [method, call] of Object.entries(calls)) {
          for (const path of [missing, '/file/below-a-file']) {
            await assert.rejects(call(d, path), (err: unknown) => {
              assert.ok(err instanceof PathNotFoundError, `${method}(${path}) rejected with ${String(err)}`);
              assert.equal(err.path, path);
              return true;
            });
          }
        }
        await assert.rejects(d.stat('/elsewhere'), PathNotFoundError, 'a failed move must not create its destination');
      });

      it('rejects invalid paths with InvalidPathError, for every method', async () => {
        const d = driver();
        const invalid = ['', 'a', 'a/b', '/a/', '//a', '/a//b', '/a/./b', '/a/../b', '/..', '/a b', '/a:b', '/a\\b', '/é'];
        const all: Record<string, (d: StorageDriver, path: string) => Promise<unknown>> = {
          ...calls,
          putContent: (d, p) => d.putContent(p, Buffer.from('x')),
          writer: (d, p) => d.writer(p),
          'move(dest)': async (d, p) => {
            await d.putContent('/source', Buffer.from('x'));
            await d.move('/source', p);
          },
        };
        for (const [method, call] of Object.entries(all)) {
          for (const path of invalid) {
            await assert.rejects(call(d, path), InvalidPathError, `${method}(${JSON.stringify(path)})`);
          }
        }
      });

      it('refuses to write, move or delete the root', async () => {
        const d = driver();
        await d.putContent('/f', Buffer.from('x'));
        await assert.rejects(d.putContent('/', Buffer.from('x')), InvalidPathError);
        await assert.rejects(d.writer('/'), InvalidPathError);
        await assert.rejects(d.delete('/'), InvalidPathError);
        await assert.rejects(d.move('/', '/x'), InvalidPathError);
        await assert.rejects(d.move('/f', '/'), InvalidPathError);
        assert.deepEqual(await d.list('/'), ['/f']);
      });
    });

    describe('reader', () => {
      it('reads whole files and ranges, end inclusive', async () => {
        const d = driver();
        const content = randomBytes(1000);
        await d.putContent('/r', content);
        const cases: Array<[{ offset?: number; end?: number }, Buffer]> = [
          [{}, content],
          [{ offset: 0 }, content],
          [{ offset: 10 }, content.subarray(10)],
          [{ offset: 10, end: 19 }, content.subarray(10, 20)],
          [{ end: 0 }, content.subarray(0, 1)],
          [{ offset: 999 }, content.subarray(999)],
          [{ offset: 990, end: 5000 }, content.subarray(990)],
          [{ offset: 1000 }, Buffer.alloc(0)],
          [{ offset: 5000 }, Buffer.alloc(0)],
          [{ offset: 20, end: 19 }, Buffer.alloc(0)],
        ];
        for (const [options, expected] of cases) {
          assert.deepEqual(await readAll(await d.reader('/r', options)), expected, JSON.stringify(options));
        }
      });

      it('reads a 5 MiB file in ranges', async () => {
        const d = driver();
        const content = randomBytes(5 * MiB);
        await d.putContent('/big', content);
        const ranges: Array<[number, number]> = [
          [0, MiB - 1],
          [MiB - 1, MiB],
          [MiB + 7, 3 * MiB],
          [3 * MiB + 1, 4 * MiB - 2],
          [4 * MiB, 5 * MiB - 1],
        ];
        for (const [offset, end] of ranges) {
          const got = await readAll(await d.reader('/big', { offset, end }));
          assert.ok(got.equals(content.subarray(offset, end + 1)), `range ${offset}-${end}`);
        }
        const tail = await readAll(await d.reader('/big', { offset: 5 * MiB - 3 }));
        assert.ok(tail.equals(content.subarray(5 * MiB - 3)));
      });

      it('rejects negative or fractional offsets with RangeError', async () => {
        const d = driver();
        await d.putContent('/r', Buffer.from('abc'));
        await assert.rejects(d.reader('/r', { offset: -1 }), RangeError);
        await assert.rejects(d.reader('/r', { offset: 1.5 }), RangeError);
        await assert.rejects(d.reader('/r', { end: -1 }), RangeError);
      });

      it('keeps streaming the old content when the file is replaced after the reader opened', async () => {
        const d = driver();
        const old = randomBytes(3 * MiB);
        await d.putContent('/r', old);
        const stream = await d.reader('/r');
        await d.putContent('/r', Buffer.from('new'));
        assert.ok((await readAll(stream)).equals(old));
        assert.equal((await d.getContent('/r')).toString(), 'new');
      });
    });

    describe('writer', () => {
      it('makes content visible only at commit, replacing the old content', async () => {
        const d = driver();
        await d.putContent('/w', Buffer.from('old'));
        const w = await d.writer('/w');
        await w.write(Buffer.from('new '));
        await w.write(Buffer.from('content'));
        assert.equal(w.size, 11);
        assert.equal((await d.getContent('/w')).toString(), 'old');
        const fresh = await d.writer('/fresh/file');
        await fresh.write(Buffer.from('x'));
        await assert.rejects(d.stat('/fresh/file'), PathNotFoundError);
        await w.commit();
        await fresh.commit();
        assert.equal((await d.getContent('/w')).toString(), 'new content');
        assert.equal((await d.getContent('/fresh/file')).toString(), 'x');
      });

      it('leaves the old content, or nothing, after cancel', async () => {
        const d = driver();
        await d.putContent('/w', Buffer.from('old'));
        const w = await d.writer('/w');
        await w.write(Buffer.from('new'));
        await w.cancel();
        assert.equal((await d.getContent('/w')).toString(), 'old');
        const fresh = await d.writer('/fresh/file');
        await fresh.write(Buffer.from('x'));
        await fresh.cancel();
        await assert.rejects(d.stat('/fresh/file'), PathNotFoundError);
      });

      it('commits an empty writer as an empty file', async () => {
        const d = driver();
        const w = await d.writer('/empty');
        assert.equal(w.size, 0);
        await w.commit();
        assert.equal((await d.stat('/empty')).size, 0);
      });

      it('throws on every call after commit, cancel or close', async () => {
        const d = driver();
        for (const end of ['commit', 'cancel', 'close'] as const) {
          await d.putContent('/w', Buffer.from('x'));
          const w = await d.writer('/w', { append: end === 'close' });
          await w[end]();
          await assert.rejects(w.write(Buffer.from('y')), Error, `write after ${end}`);
          await assert.rejects(w.commit(), Error, `commit after ${end}`);
          await assert.rejects(w.cancel(), Error, `cancel after ${end}`);
          await assert.rejects(w.close(), Error, `close after ${end}`);
        }
      });

      it('rejects close() on a non-appending writer and stays usable', async () => {
        const d = driver();
        const w = await d.writer('/w');
        await w.write(Buffer.from('abc'));
        await assert.rejects(w.close(), Error);
        await w.write(Buffer.from('def'));
        await w.commit();
        assert.equal((await d.getContent('/w')).toString(), 'abcdef');
      });

      it('copies written chunks, so the caller may reuse its buffer', async () => {
        const d = driver();
        const w = await d.writer('/w');
        const chunk = Buffer.from('abc');
        await w.write(chunk);
        chunk.fill(0x7a);
        await w.write(chunk);
        await w.commit();
        assert.equal((await d.getContent('/w')).toString(), 'abczzz');
      });

      it('writes gathered chunks in order with writev, between single writes, in every writer mode', async () => {
        const d = driver();
        const pieces = [Buffer.alloc(0), Buffer.from('ab'), Buffer.alloc(3 << 20, 0x61), Buffer.from('c'), Buffer.alloc(0)];
        const whole = Buffer.concat([Buffer.from('<'), ...pieces, Buffer.from('>')]);
        for (const mode of [{}, { append: true }, { create: true }]) {
          if (mode.append) await d.putContent('/v', Buffer.alloc(0));
          const w = await d.writer('/v', mode);
          // Not awaited one by one: the writer keeps calls in order.
          const writes = [w.write(Buffer.from('<')), w.writev(pieces), w.write(Buffer.from('>'))];
          await Promise.all(writes);
          assert.equal(w.size, whole.length, `size (${JSON.stringify(mode)})`);
          await w.commit();
          assert.ok((await d.getContent('/v')).equals(whole), `content (${JSON.stringify(mode)})`);
          await d.delete('/v');
        }
      });

      it('resumes an appending writer across close and reopen', async () => {
        const d = driver();
        await d.putContent('/upload/data', new Uint8Array(0));
        const first = await d.writer('/upload/data', { append: true });
        assert.equal(first.size, 0);
        await first.write(Buffer.from('hello '));
        assert.equal(first.size, 6);
        await first.close();
        assert.equal((await d.getContent('/upload/data')).toString(), 'hello ');
        const second = await d.writer('/upload/data', { append: true });
        assert.equal(second.size, 6);
        await second.write(Buffer.from('world'));
        assert.equal(second.size, 11);
        await second.commit();
        assert.equal((await d.getContent('/upload/data')).toString(), 'hello world');
        assert.equal((await d.stat('/upload/data')).size, 11);
      });

      it('creates a file in place with `create`: readable as it grows, replacing an old one, removed on cancel', async () => {
        const d = driver();
        await d.putContent('/fills/a/partial', Buffer.from('old content'));
        const w = await d.writer('/fills/a/partial', { create: true });
        assert.equal(w.size, 0);
        assert.equal((await d.stat('/fills/a/partial')).size, 0, 'the old content is gone at once');
        await w.write(Buffer.from('grow'));
        assert.equal((await d.getContent('/fills/a/partial')).toString(), 'grow', 'written bytes are visible before commit');
        if (d.openForRead) {
          const r = await d.openForRead('/fills/a/partial');
          await w.write(Buffer.from('ing'));
          await d.move('/fills/a/partial', '/blobs/final');
          const buf = Buffer.alloc(7);
          assert.equal(await r.read(buf, 0), 7, 'an open reader follows the file through a move');
          assert.equal(buf.toString(), 'growing');
          await r.close();
          await w.commit();
          assert.equal((await d.getContent('/blobs/final')).toString(), 'growing');
        } else {
          await w.commit();
        }
        const x = await d.writer('/fills/b/partial', { create: true });
        await x.write(Buffer.from('nope'));
        await x.cancel();
        await assert.rejects(d.stat('/fills/b/partial'), PathNotFoundError);
      });

      it('deletes the file when an appending writer is cancelled', async () => {
        const d = driver();
        await d.putContent('/upload/data', Buffer.from('partial'));
        const w = await d.writer('/upload/data', { append: true });
        assert.equal(w.size, 7);
        await w.write(Buffer.from(' more'));
        await w.cancel();
        await assert.rejects(d.stat('/upload/data'), PathNotFoundError);
      });

      it('commits concurrent writers to one path whole: the result is exactly one of them', async () => {
        const d = driver();
        const a = Buffer.alloc(64 * 1024, 0x61);
        const b = Buffer.alloc(64 * 1024, 0x62);
        const wa = await d.writer('/race');
        const wb = await d.writer('/race');
        for (let i = 0; i < 8; i++) await Promise.all([wa.write(a), wb.write(b)]);
        await Promise.all([wa.commit(), wb.commit()]);
        const got = await d.getContent('/race');
        assert.equal(got.length, 8 * a.length);
        const first = got[0];
        assert.ok(first === 0x61 || first === 0x62);
        assert.ok(got.every((byte) => byte === first), 'content mixes both writers');
      });

      it('streams a 32 MiB file in and out unchanged (sha256)', async () => {
        const d = driver();
        const block = randomBytes(MiB);
        const written = createHash('sha256');
        const w = await d.writer('/large');
        for (let i = 0; i < 32; i++) {
          // Vary each block so that a reader returning the wrong block cannot match.
          block.writeUInt32BE(i, 0);
          written.update(block);
          await w.write(block);
        }
        assert.equal(w.size, 32 * MiB);
        await w.commit();
        assert.equal((await d.stat('/large')).size, 32 * MiB);
        const read = createHash('sha256');
        let bytes = 0;
        for await (const chunk of await d.reader('/large')) {
          assert.ok(chunk instanceof Uint8Array);
          read.update(chunk);
          bytes += chunk.byteLength;
        }
        assert.equal(bytes, 32 * MiB);
        assert.equal(read.digest('hex'), written.digest('hex'));
      });
    });

    describe('tree', () => {
      it('stats files and directories', async () => {
        const d = driver();
        const before = Date.now();
        await d.putContent('/dir/file', Buffer.from('12345'));
        const file = await d.stat('/dir/file');
        assert.deepEqual([file.path, file.size, file.isDir], ['/dir/file', 5, false]);
        assert.ok(file.modTime instanceof Date);
        assert.ok(file.modTime.getTime() >= before - 2000 && file.modTime.getTime() <= Date.now() + 2000);
        const dir = await d.stat('/dir');
        assert.deepEqual([dir.path, dir.size, dir.isDir], ['/dir', 0, true]);
      });

      it('lists the direct children of a directory, sorted, as full paths', async () => {
        const d = driver();
        for (const p of ['/l/c', '/l/a', '/l/B', '/l/b/x', '/l/a.b', '/top']) await d.putContent(p, Buffer.from('x'));
        assert.deepEqual(await d.list('/l'), ['/l/B', '/l/a', '/l/a.b', '/l/b', '/l/c']);
        assert.deepEqual(await d.list('/'), ['/l', '/top']);
        assert.deepEqual(await d.list('/l/b'), ['/l/b/x']);
      });

      it('keeps a directory, empty, after its last child is deleted or moved away', async () => {
        const d = driver();
        await d.putContent('/d/one', Buffer.from('1'));
        await d.putContent('/d/two', Buffer.from('2'));
        await d.delete('/d/one');
        await d.move('/d/two', '/e/two');
        assert.deepEqual(await d.list('/d'), []);
        assert.equal((await d.stat('/d')).isDir, true);
      });

      it('moves a file, replacing the destination and creating its parents', async () => {
        const d = driver();
        await d.putContent('/src', Buffer.from('source'));
        await d.putContent('/dst', Buffer.from('destination'));
        await d.move('/src', '/dst');
        assert.equal((await d.getContent('/dst')).toString(), 'source');
        await assert.rejects(d.stat('/src'), PathNotFoundError);
        await d.move('/dst', '/deep/new/parent/file');
        assert.equal((await d.getContent('/deep/new/parent/file')).toString(), 'source');
        await assert.rejects(d.stat('/dst'), PathNotFoundError);
      });

      it('moves a directory with its contents', async () => {
        const d = driver();
        await d.putContent('/m/a/1', Buffer.from('1'));
        await d.putContent('/m/a/b/2', Buffer.from('2'));
        await d.move('/m/a', '/n/a');
        assert.equal((await d.getContent('/n/a/1')).toString(), '1');
        assert.equal((await d.getContent('/n/a/b/2')).toString(), '2');
        await assert.rejects(d.stat('/m/a'), PathNotFoundError);
      });

      it('rejects a move of a missing source and leaves the destination alone', async () => {
        const d = driver();
        await d.putContent('/dst', Buffer.from('kept'));
        await assert.rejects(d.move('/missing', '/dst'), PathNotFoundError);
        await assert.rejects(d.move('/missing', '/new/parent/dst'), PathNotFoundError);
        assert.equal((await d.getContent('/dst')).toString(), 'kept');
        await assert.rejects(d.stat('/new'), PathNotFoundError);
      });

      it('deletes a file, and a directory with everything below it', async () => {
        const d = driver();
        for (const p of ['/t/a/1', '/t/a/2', '/t/a/deeper/3', '/t/b/4', '/t/c']) await d.putContent(p, Buffer.from('x'));
        await d.delete('/t/c');
        await d.delete('/t/a');
        for (const p of ['/t/a', '/t/a/1', '/t/a/deeper/3', '/t/c']) await assert.rejects(d.stat(p), PathNotFoundError, p);
        assert.deepEqual(await d.list('/t'), ['/t/b']);
        assert.equal((await d.getContent('/t/b/4')).toString(), 'x');
        await assert.rejects(d.delete('/t/a'), PathNotFoundError);
      });

      it('walks depth first in lexical order, a directory before its children', async () => {
        const d = driver();
        for (const p of ['/w/b/2', '/w/a/z', '/w/a/y/1', '/w/c', '/w/a.txt', '/x']) {
          await d.putContent(p, Buffer.from(p));
        }
        const seen: FileInfo[] = [];
        await d.walk('/w', (info) => {
          seen.push(info);
        });
        assert.deepEqual(
          seen.map((i) => `${i.path}${i.isDir ? '/' : ''}`),
          ['/w/a/', '/w/a/y/', '/w/a/y/1', '/w/a/z', '/w/a.txt', '/w/b/', '/w/b/2', '/w/c'],
        );
        const c = seen.find((i) => i.path === '/w/c');
        assert.equal(c?.size, '/w/c'.length);
        const all: string[] = [];
        await d.walk('/', (info) => {
          all.push(info.path);
        });
        assert.equal(all[0], '/w');
        assert.equal(all.at(-1), '/x');
      });

      it("skips a directory's children when the visitor returns 'skip'", async () => {
        const d = driver();
        for (const p of ['/s/a/1', '/s/a/2/3', '/s/b/4', '/s/c']) await d.putContent(p, Buffer.from('x'));
        const seen: string[] = [];
        await d.walk('/s', async (info) => {
          seen.push(info.path);
          return info.path === '/s/a' ? 'skip' : undefined;
        });
        assert.deepEqual(seen, ['/s/a', '/s/b', '/s/b/4', '/s/c']);
      });

      it('lets a visitor delete entries it has not reached yet', async () => {
        const d = driver();
        for (const p of ['/v/a', '/v/b', '/v/c']) await d.putContent(p, Buffer.from('x'));
        const seen: string[] = [];
        await d.walk('/v', async (info) => {
          seen.push(info.path);
          if (info.path === '/v/a') await d.delete('/v/b');
        });
        assert.deepEqual(seen, ['/v/a', '/v/c']);
      });

      it('sets the modification time with touch', async () => {
        const d = driver();
        await d.putContent('/t', Buffer.from('x'));
        const time = new Date('2001-02-03T04:05:06Z');
        await d.touch('/t', time);
        assert.equal((await d.stat('/t')).modTime.getTime(), time.getTime());
        const later = new Date('2030-01-01T00:00:00Z');
        await d.touch('/t', later);
        assert.equal((await d.stat('/t')).modTime.getTime(), later.getTime());
        assert.equal((await d.getContent('/t')).toString(), 'x');
      });
    });

    describe('recover', () => {
      it('removes what an interrupted writer left, and the driver keeps working', async () => {
        const d = driver();
        const abandoned = await d.writer('/crash/file');
        await abandoned.write(randomBytes(1024));
        // The process "crashes" here: nothing commits or cancels the writer before recover().
        await d.recover();
        await assert.rejects(d.stat('/crash/file'), PathNotFoundError);
        assert.deepEqual(await d.list('/'), []);
        await d.putContent('/after', Buffer.from('ok'));
        assert.equal((await d.getContent('/after')).toString(), 'ok');
        // Releases what a real crash would have released (a file descriptor, for the filesystem driver).
        await abandoned.cancel();
        await d.recover();
      });
    });
  });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) {
    assert.ok(chunk instanceof Uint8Array, 'readers emit bytes');
    parts.push(Buffer.from(chunk));
  }
  return Buffer.concat(parts);
}
