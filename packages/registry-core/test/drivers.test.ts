import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { access, mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { InvalidPathError, PathNotFoundError } from '../src/drivers/driver.js';
import { runDriverConformance } from '../src/drivers/conformance.js';
import { FILESYSTEM_TEMP_DIRECTORY, FilesystemDriver } from '../src/drivers/filesystem.js';
import { InMemoryDriver } from '../src/drivers/inmemory.js';

async function tempRoot(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'cascade-storage-'));
}

runDriverConformance('inmemory', async () => ({ driver: new InMemoryDriver(), cleanup: async () => {} }));

runDriverConformance('filesystem', async () => {
  const root = await tempRoot();
  return {
    driver: new FilesystemDriver({ rootDirectory: root }),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});

describe('FilesystemDriver', () => {
  let root = '';
  let driver: FilesystemDriver;

  beforeEach(async () => {
    root = await tempRoot();
    driver = new FilesystemDriver({ rootDirectory: root });
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  const blob = '/docker/registry/v2/blobs/sha256/ab/abcdef/data';

  it('stores driver path /a/b at <root>/a/b, with no prefix (distribution layout)', async () => {
    await driver.putContent(blob, Buffer.from('blob bytes'));
    assert.equal(await readFile(join(root, 'docker/registry/v2/blobs/sha256/ab/abcdef/data'), 'utf8'), 'blob bytes');
    assert.deepEqual((await readdir(root)).sort(), ['_cascade', 'docker']);
  });

  it('reads a tree written by someone else (distribution)', async () => {
    const link = join(root, 'docker/registry/v2/repositories/library/alpine/_manifests/tags/latest/current');
    await mkdir(link, { recursive: true });
    await writeFile(join(link, 'link'), 'sha256:abcd');
    assert.equal(
      (await driver.getContent('/docker/registry/v2/repositories/library/alpine/_manifests/tags/latest/current/link')).toString(),
      'sha256:abcd',
    );
    assert.deepEqual(await driver.list('/docker/registry/v2/repositories/library'), ['/docker/registry/v2/repositories/library/alpine']);
  });

  it('writes through a temporary file under <root>/_cascade/tmp and renames it at commit', async () => {
    const temp = join(root, FILESYSTEM_TEMP_DIRECTORY);
    const w = await driver.writer(blob);
    await w.write(Buffer.from('pending'));
    const pending = await readdir(temp);
    assert.equal(pending.length, 1);
    assert.equal(await readFile(join(temp, pending[0] ?? ''), 'utf8'), 'pending');
    await assert.rejects(readFile(join(root, blob)), { code: 'ENOENT' });
    await w.commit();
    assert.deepEqual(await readdir(temp), []);
    assert.equal(await readFile(join(root, blob), 'utf8'), 'pending');

    const cancelled = await driver.writer(blob);
    await cancelled.write(Buffer.from('discarded'));
    await cancelled.cancel();
    assert.deepEqual(await readdir(temp), []);
    assert.equal(await readFile(join(root, blob), 'utf8'), 'pending');
  });

  it('writer({create}) writes in place: makes a missing folder, truncates a file that is there, passes other errors on', async () => {
    const partial = '/fills/sha256/abc-1';
    const first = await driver.writer(partial, { create: true });
    await first.write(Buffer.from('first bytes'));
    await first.commit();
    assert.equal(await readFile(join(root, partial), 'utf8'), 'first bytes');
    assert.deepEqual(await readdir(join(root, FILESYSTEM_TEMP_DIRECTORY)).catch(() => []), [], 'no temporary file');
    // The folder exists now: the file is created (or truncated) without making it again.
    const again = await driver.writer(partial, { create: true });
    await again.write(Buffer.from('2nd'));
    await again.commit();
    assert.equal(await readFile(join(root, partial), 'utf8'), '2nd');
    // A file where a folder should be: ENOTDIR, not a retry that hides it.
    await driver.putContent('/plain', Buffer.from('x'));
    await assert.rejects(driver.writer('/plain/child', { create: true }), { code: 'ENOTDIR' });
  });

  it('gives concurrent writers distinct temporary files', async () => {
    const writers = await Promise.all([1, 2, 3].map(() => driver.writer('/same')));
    assert.equal((await readdir(join(root, FILESYSTEM_TEMP_DIRECTORY))).length, 3);
    await Promise.all(writers.map((w) => w.cancel()));
  });

  it('recover() at start-up empties <root>/_cascade/tmp after a crash', async () => {
    const temp = join(root, FILESYSTEM_TEMP_DIRECTORY);
    const crashed = await driver.writer(blob);
    await crashed.write(Buffer.from('half a blob'));
    await writeFile(join(temp, 'left-by-an-older-run.tmp'), 'x');
    await mkdir(join(temp, 'a-directory'));
    assert.equal((await readdir(temp)).length, 3);

    const restarted = new FilesystemDriver({ rootDirectory: root });
    await restarted.recover();
    assert.deepEqual(await readdir(temp), []);
    await assert.rejects(restarted.stat(blob), PathNotFoundError);
    await crashed.cancel();
  });

  it('recover({olderThanMs}) on shared storage removes only leftovers untouched for that long', async () => {
    const temp = join(root, FILESYSTEM_TEMP_DIRECTORY);
    const other = await driver.writer(blob);
    await other.write(Buffer.from('another node writes this now'));
    await writeFile(join(temp, 'left-by-a-crash.tmp'), 'x');
    const old = new Date(Date.now() - 20 * 60_000);
    await utimes(join(temp, 'left-by-a-crash.tmp'), old, old);
    const restarted = new FilesystemDriver({ rootDirectory: root });
    await restarted.recover({ olderThanMs: 10 * 60_000 });
    const left = await readdir(temp);
    assert.equal(left.length, 1, 'the write in progress stays');
    assert.ok(!left.includes('left-by-a-crash.tmp'));
    await other.commit();
    assert.equal((await restarted.stat(blob)).size, 'another node writes this now'.length);
  });

  it('recover() on a fresh root does nothing', async () => {
    await driver.recover();
    assert.deepEqual(await readdir(root), []);
  });

  it('hides _cascade from list and walk of the root and rejects paths below it', async () => {
    await driver.putContent('/docker/x', Buffer.from('x'));
    assert.deepEqual(await driver.list('/'), ['/docker']);
    const seen: string[] = [];
    await driver.walk('/', (info) => {
      seen.push(info.path);
    });
    assert.deepEqual(seen, ['/docker', '/docker/x']);
    await assert.rejects(driver.stat('/_cascade'), InvalidPathError);
    await assert.rejects(driver.list('/_cascade/tmp'), InvalidPathError);
    await assert.rejects(driver.putContent('/_cascade/tmp/x', Buffer.from('x')), InvalidPathError);
    await assert.rejects(driver.delete('/_cascade'), InvalidPathError);
    // Only the top-level folder is reserved.
    await driver.putContent('/docker/_cascade', Buffer.from('fine'));
  });

  it('rejects a missing file from reader() before returning a stream', async () => {
    await assert.rejects(driver.reader(blob), (err: unknown) => err instanceof PathNotFoundError && err.cause instanceof Error);
  });

  it('propagates system errors other than ENOENT/ENOTDIR unchanged (ENOSPC from /dev/full)', async (t) => {
    // Appending writes in place, so a path that resolves to /dev/full provokes a real ENOSPC without root tricks.
    try {
      await access('/dev/full', constants.W_OK);
      await mkdir(join(root, 'dev'));
      await symlink('/dev/full', join(root, 'dev/full'));
    } catch {
      t.skip('no /dev/full on this system');
      return;
    }
    const w = await driver.writer('/dev/full', { append: true });
    await assert.rejects(w.write(Buffer.from('no room')), (err: unknown) => {
      assert.ok(err instanceof Error && !(err instanceof PathNotFoundError));
      assert.equal('code' in err ? err.code : undefined, 'ENOSPC');
      return true;
    });
    await assert.rejects(w.commit(), /only cancel\(\) is possible/);
    await w.cancel();
  });

  it('propagates EISDIR when reading a directory as a file', async () => {
    await driver.putContent('/dir/file', Buffer.from('x'));
    await assert.rejects(driver.getContent('/dir'), { code: 'EISDIR' });
    await assert.rejects(driver.reader('/dir'), { code: 'EISDIR' });
  });
});
