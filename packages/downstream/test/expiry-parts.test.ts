/**
 * Unit tests of the expiry index's parts, each on its own through its interface (the index as a whole is
 * tested in expiry.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Digest, InMemoryDriver, isPathNotFound, paths, type StorageDriver } from '@cascade/registry-core';
import { DigestFilter } from '../src/expiry/digest-filter.js';
import { Journals } from '../src/expiry/journal.js';
import { parseLine, readLines } from '../src/expiry/lines.js';
import { AccessRecorder } from '../src/expiry/recorder.js';
import { Totals } from '../src/expiry/totals.js';

const BUCKET = 1000;

function journals(driver: StorageDriver, signal = new AbortController().signal): Journals {
  return new Journals({ driver, bucketMs: BUCKET, maxFiles: 256, signal, log: undefined });
}

async function text(driver: StorageDriver, path: string): Promise<string | undefined> {
  try {
    return (await driver.getContent(path)).toString('latin1');
  } catch (err) {
    if (isPathNotFound(err)) return undefined;
    throw err;
  }
}

async function allLines(driver: StorageDriver, path: string, offset = 0): Promise<{ text: string; end: number }[]> {
  const out: { text: string; end: number }[] = [];
  for await (const batch of readLines(driver, path, offset)) out.push(...batch);
  return out;
}

const a = Digest.of('a');
const b = Digest.of('b');

describe('expiry journal lines', () => {
  it('reads complete lines only, with the offset past each', async () => {
    const driver = new InMemoryDriver();
    await driver.putContent('/f', Buffer.from(`${a} 1\n\n${b} 2\n${a} 3`));
    const lines = await allLines(driver, '/f');
    assert.deepEqual(
      lines.map((l) => l.text),
      [`${a} 1`, '', `${b} 2`],
    );
    assert.equal(lines[2]?.end, `${a} 1\n\n${b} 2\n`.length);
    assert.deepEqual(await allLines(driver, '/f', lines[1]?.end ?? 0), [lines[2]]);
    assert.deepEqual(await allLines(driver, '/missing'), []);
  });

  it('parses a digest and a size, and nothing else', () => {
    const line = (t: string) => parseLine({ text: t, end: 0 });
    assert.equal(line(`${a} 12`).digest?.toString(), a.toString());
    assert.equal(line(`${a} 12`).key, a.toString());
    assert.equal(line(`${a}`).digest, undefined);
    assert.equal(line(`${a} -1`).digest, undefined);
    assert.equal(line(`${a.toString().slice(0, 20)} 1`).digest, undefined, 'a torn digest');
    assert.equal(line('').digest, undefined);
  });
});

describe('expiry Journals', () => {
  it('appends after a torn last line without joining it to the new line', async () => {
    const driver = new InMemoryDriver();
    const file = journals(driver).forBucket(journals(driver).bucketOf(2500));
    assert.equal(file.start, 2000);
    assert.equal(file.end, 3000);
    await driver.putContent(file.path, Buffer.from(`${a} 1\n${b.toString().slice(0, 30)}`));
    // A new process does not know the journal's end is torn.
    await journals(driver).append(file, `${b} 2\n`);
    const lines = (await allLines(driver, file.path)).map((l) => parseLine(l).digest?.toString());
    assert.deepEqual(lines, [a.toString(), undefined, b.toString()]);
  });

  it('records a head after a partial consume, deletes a journal consumed whole', async () => {
    const driver = new InMemoryDriver();
    const j = journals(driver);
    const file = j.forBucket(0);
    await j.append(file, `${a} 1\n${b} 2\n`);
    const first = `${a} 1\n`.length;
    await j.consume(file, 0, first, []);
    assert.equal(await j.readHead(file), first);
    assert.deepEqual((await allLines(driver, file.path, first)).map((l) => l.text), [`${b} 2`]);

    await j.consume(file, first, first, [`${b} 2`]);
    assert.deepEqual((await allLines(driver, file.path, first)).map((l) => l.text), [`${b} 2`, `${b} 2`], 'kept lines are re-appended');

    const size = (await driver.stat(file.path)).size;
    await j.consume(file, first, size, []);
    assert.equal(await text(driver, file.path), undefined);
    assert.equal(await text(driver, file.headPath), undefined);
    assert.deepEqual(await j.list(false), []);
  });

  it('ignores a head past the end of its journal, and tidies heads without a journal', async () => {
    const driver = new InMemoryDriver();
    const j = journals(driver);
    const file = j.forBucket(0);
    await j.append(file, `${a} 1\n`);
    await driver.putContent(file.headPath, Buffer.from('999'));
    assert.equal(await j.readHead(file), 0);
    const orphan = j.forBucket(BUCKET);
    await driver.putContent(orphan.headPath, Buffer.from('0'));
    assert.deepEqual((await j.list(true)).map((f) => f.name), [file.name]);
    assert.equal(await text(driver, orphan.headPath), undefined);
  });

  it('compacts the past journals into one that spans them, keeping the lines of present blobs in order', async () => {
    const driver = new InMemoryDriver();
    const j = new Journals({ driver, bucketMs: BUCKET, maxFiles: 2, signal: new AbortController().signal, log: undefined });
    const gone = Digest.of('gone');
    for (const [i, d] of [a, gone, b].entries()) {
      await j.append(j.forBucket(i * BUCKET), `${d} 1\n`);
      if (d !== gone) {
        await driver.putContent(paths.blobData(d), Buffer.from('x'));
        await driver.touch(paths.blobData(d), new Date(i * BUCKET));
      }
    }
    await j.compact(10 * BUCKET);
    const files = await j.list(false);
    assert.equal(files.length, 2);
    const merged = files.find((f) => f.end - f.start === 2 * BUCKET);
    assert.ok(merged, 'two neighbours were merged');
    const all = [];
    for (const f of files) all.push(...(await allLines(driver, f.path)).map((l) => l.text));
    assert.deepEqual(all, [`${a} 1`, `${b} 1`]);
  });
});

describe('expiry AccessRecorder', () => {
  it('journals a hit once per bucket and a fill every time; an access is unsettled until flushed', async () => {
    const driver = new InMemoryDriver();
    const clock = { now: 5 * BUCKET };
    const j = journals(driver);
    const recorder = new AccessRecorder({
      driver,
      journals: j,
      flushDelayMs: 60_000,
      maxTouchedPerBucket: 100,
      now: () => clock.now,
      signal: new AbortController().signal,
      log: undefined,
    });
    await driver.putContent(paths.blobData(a), Buffer.from('a'));
    recorder.record(a, 1, 'hit');
    recorder.record(a, 1, 'hit');
    recorder.record(a, 1, 'fill');
    assert.ok(recorder.isUnsettled(a.toString()));
    const settled = new Set<string>();
    const unwatch = recorder.watchSettled(settled);
    await recorder.flush();
    unwatch();
    assert.equal(recorder.isUnsettled(a.toString()), false);
    assert.deepEqual([...settled], [a.toString()]);
    assert.equal(await text(driver, j.forBucket(5 * BUCKET).path), `${a} 1\n${a} 1\n`);
    assert.equal((await driver.stat(paths.blobData(a))).modTime.getTime(), 5 * BUCKET);

    recorder.forget(a.toString());
    recorder.record(a, 1, 'hit');
    clock.now = 6 * BUCKET;
    recorder.record(a, 1, 'hit');
    await recorder.flush();
    assert.equal(await text(driver, j.forBucket(5 * BUCKET).path), `${a} 1\n${a} 1\n${a} 1\n`);
    assert.equal(await text(driver, j.forBucket(6 * BUCKET).path), `${a} 1\n`);
  });

  it('ignores accesses once the index stops', async () => {
    const driver = new InMemoryDriver();
    const stop = new AbortController();
    const recorder = new AccessRecorder({
      driver,
      journals: journals(driver),
      flushDelayMs: 10,
      maxTouchedPerBucket: 100,
      now: () => 0,
      signal: stop.signal,
      log: undefined,
    });
    stop.abort();
    recorder.record(a, 1, 'fill');
    assert.equal(recorder.isUnsettled(a.toString()), false);
    await recorder.flush();
    assert.deepEqual(await journals(driver).list(false), []);
  });
});

describe('expiry Totals', () => {
  it('keeps, through a walk, the adjustments of blobs the walk had passed, not of those ahead of it', () => {
    const totals = new Totals();
    const [first, second] = [a, b].sort((x, y) => (paths.blobData(x) < paths.blobData(y) ? -1 : 1)) as [Digest, Digest];
    totals.adjust(first, 100);
    totals.beginWalk();
    totals.walked(paths.blobData(first));
    totals.adjust(first, -40); // behind the cursor: the walk counted the blob before it shrank
    totals.adjust(second, 7); // ahead: the walk will count it
    totals.completeWalk(50);
    totals.endWalk();
    assert.equal(totals.bytes, 10);
    totals.adjust(first, -1000);
    assert.equal(totals.bytes, 0, 'never below 0');
  });
});

describe('expiry DigestFilter', () => {
  it('has every added digest and few others', () => {
    const filter = new DigestFilter(1000, 3);
    const added = Array.from({ length: 1000 }, (_, i) => Digest.of(`in ${i}`).toString());
    for (const key of added) filter.add(key);
    assert.ok(added.every((key) => filter.has(key)));
    const others = Array.from({ length: 2000 }, (_, i) => Digest.of(`out ${i}`).toString()).filter((k) => filter.has(k));
    assert.ok(others.length < 60, `${others.length} false positives of 2000`);
  });
});
