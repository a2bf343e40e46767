/**
 * Fills against an upstream that answers from memory: blobs of either digest algorithm are stored once their
 * digest matches, and wrong bytes store nothing, fail the followers before their last byte and blame the upstream.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { readSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Digest, FilesystemDriver, InMemoryDriver, PathNotFoundError, paths, type DigestAlgorithm, type FileSegment, type PositionalReader } from '@cascade/registry-core';
import { FILLS_DIR, FillManager } from '../src/fill.js';
import type { UpstreamPool } from '../src/upstream.js';

const silent = pino({ level: 'silent' });

/** `data` in chunks of random sizes, empty ones included. */
function* chunks(data: Buffer): Generator<Buffer> {
  for (let at = 0; at < data.length; ) {
    const n = Math.min(data.length - at, randomInt(0, 200 << 10));
    yield data.subarray(at, at + n);
    at += n;
  }
}

/** An upstream pool that sends `body` for every blob and records what it was blamed for. */
function upstreamSending(body: Buffer): { upstreams: UpstreamPool; blamed: string[] } {
  const blamed: string[] = [];
  const upstreams = {
    fetch: async () => ({ host: { url: 'http://upstream.test' }, status: 200, size: body.length, headers: {}, body: Readable.from(chunks(body)) }),
    markFailed: (_host: unknown, reason: string) => void blamed.push(reason),
  } as unknown as UpstreamPool;
  return { upstreams, blamed };
}

async function collect(stream: Readable): Promise<{ data: Buffer; error: Error | undefined }> {
  const parts: Buffer[] = [];
  try {
    for await (const part of stream) parts.push(part as Buffer);
    return { data: Buffer.concat(parts), error: undefined };
  } catch (err) {
    return { data: Buffer.concat(parts), error: err as Error };
  }
}

describe('fills', () => {
  for (const algorithm of ['sha256', 'sha512'] as DigestAlgorithm[]) {
    it(`stores a blob whose ${algorithm} matches`, async () => {
      const data = randomBytes((5 << 20) + 7);
      const digest = Digest.of(data, algorithm);
      const driver = new InMemoryDriver();
      const { upstreams, blamed } = upstreamSending(data);
      const fills = new FillManager({ driver, upstreams, logger: silent });
      const fill = fills.start('a/b', digest, {});
      const followed = collect(fill.body(0, data.length - 1).stream());
      await fill.finished;
      assert.equal(fill.state, 'done');
      assert.deepEqual((await followed).data, data);
      assert.deepEqual(await driver.getContent(paths.blobData(digest)), data);
      assert.deepEqual(blamed, []);
    });
  }

  it('stores nothing when the bytes do not match the digest; followers never get the last byte', async () => {
    const data = randomBytes((3 << 20) + 5);
    const digest = Digest.of(data);
    const wrong = Buffer.from(data);
    wrong.writeUInt8(wrong.readUInt8(1000) ^ 1, 1000);
    const driver = new InMemoryDriver();
    const { upstreams, blamed } = upstreamSending(wrong);
    const failed: string[] = [];
    const fills = new FillManager({ driver, upstreams, logger: silent, onFailed: (_d, reason) => failed.push(reason) });
    const fill = fills.start('a/b', digest, {});
    const followed = collect(fill.body(0, data.length - 1).stream());
    await fill.finished;
    assert.equal(fill.state, 'failed');
    assert.equal((fill.error as { status?: number }).status, 502);
    const { data: got, error } = await followed;
    assert.ok(error, 'the follower gets an error');
    assert.ok(got.length < data.length, `the follower got ${got.length} of ${data.length} bytes`);
    await assert.rejects(driver.stat(paths.blobData(digest)), 'nothing stored');
    assert.deepEqual(await driver.list(`${FILLS_DIR}/sha256`).catch(() => []), [], 'no partial file left');
    assert.equal(failed.length, 1);
    assert.match(failed[0] as string, /sent content with digest sha256:[a-f0-9]{64}/);
    assert.equal(blamed.length, 1, 'the upstream is blamed');
  });

  it('creates its partial file while the upstream answers, and removes it when the upstream fails', async () => {
    // Creating the file takes two turns of the thread pool: done after the upstream's answer, every hop of a
    // chain added them to its clients' time to first byte.
    const data = randomBytes(1 << 20);
    const digest = Digest.of(data);
    const driver = new InMemoryDriver();
    // Each GET waits until the test answers it.
    let answer!: { resolve: () => void; reject: (err: Error) => void };
    let asked!: () => void;
    let wasAsked = new Promise<void>((r) => (asked = r));
    const upstreams = {
      fetch: () =>
        new Promise<unknown>((resolve, reject) => {
          answer = {
            resolve: () => resolve({ host: { url: 'http://upstream.test' }, status: 200, size: data.length, headers: {}, body: Readable.from(chunks(data)) }),
            reject,
          };
          asked();
        }),
      markFailed: () => undefined,
    } as unknown as UpstreamPool;
    const failed: string[] = [];
    const fills = new FillManager({ driver, upstreams, logger: silent, onFailed: (_d, _r, why) => failed.push(String(why)) });
    const partials = () => driver.list(`${FILLS_DIR}/sha256`).catch(() => []);
    const partialCreated = async () => {
      for (let i = 0; i < 100 && (await partials()).length === 0; i++) await sleep(5);
    };
    // A fill whose upstream never answers: the file is there while it waits, and gone once the upstream failed.
    const fill = fills.start('a/b', digest, {});
    await wasAsked;
    await partialCreated();
    assert.equal((await partials()).length, 1, 'the partial file exists before the upstream answered');
    answer.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    await fill.finished;
    assert.equal(fill.state, 'failed');
    assert.deepEqual(await partials(), [], 'no partial file left');
    assert.deepEqual(failed, ['upstream']);
    // A new fill's file, created as early, takes the bytes once the upstream answers.
    wasAsked = new Promise<void>((r) => (asked = r));
    const again = fills.start('a/b', digest, {});
    await wasAsked;
    await partialCreated();
    answer.resolve();
    await again.finished;
    assert.equal(again.state, 'done');
    assert.deepEqual(await driver.getContent(paths.blobData(digest)), data);
    assert.deepEqual(await partials(), []);
  });

  it('a follower opening its file when the fill fails gets the error, not a wait for ever', async (t) => {
    // The race seen in the adversarial suite: a fill with wrong bytes removes its partial file, then fails; a
    // follower that found the partial file gone and was still looking for the stored blob when the failure
    // was announced waited for a next event that never came (its client hung with the headers and no byte).
    const root = await mkdtemp(join(tmpdir(), 'cascade-fill-race-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    const data = randomBytes((2 << 20) + 3);
    const digest = Digest.of(data);
    const wrong = Buffer.from(data);
    wrong.writeUInt8(wrong.readUInt8(7) ^ 1, 7);
    const { upstreams } = upstreamSending(wrong);
    let finished: Promise<void> = Promise.resolve();
    let partialOpens = 0;
    // The follower's first open of the partial file misses (as when it was just moved or removed); its look
    // for the stored blob answers only after the fill has failed and said so.
    const driver = new (class extends FilesystemDriver {
      override async openForRead(path: string, signal?: AbortSignal): Promise<PositionalReader> {
        if (path === paths.blobData(digest)) {
          await finished;
          await sleep(10);
        } else if (partialOpens++ === 0) throw new PathNotFoundError(path);
        return super.openForRead(path, signal);
      }
    })({ rootDirectory: root });
    const fills = new FillManager({ driver, upstreams, logger: silent });
    const fill = fills.start('a/b', digest, {});
    finished = fill.finished;
    const file = fill.body(0, data.length - 1).file;
    assert.ok(file, 'a filesystem fill gives its body as files');
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(new Error('the follower still waits 5 s after the fill failed')), 5000);
    t.after(() => clearTimeout(timer));
    const outcome = (async () => {
      for await (const _ of file.segments(stop.signal)) {
        // a stretch may come before the failure: the error must still come
      }
    })();
    await assert.rejects(outcome, (err: Error) => {
      assert.match(err.message, /sent content with digest/);
      return true;
    });
    assert.equal(fill.state, 'failed');
  });
  it('gives its followers the first bytes from memory, before the rest arrives, and then the file', async (t) => {
    // A follower's first stretch used to wait for a file open and a sendfile turn: at every hop of a chain,
    // before the next hop saw its first byte. The first bytes now come with it, from memory.
    const root = await mkdtemp(join(tmpdir(), 'cascade-fill-head-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    const driver = new FilesystemDriver({ rootDirectory: root });
    /** A fill of `data` whose upstream sends `first` bytes, then waits for `more()` before the rest. */
    const gated = (data: Buffer, first: number) => {
      let more!: () => void;
      const gate = new Promise<void>((r) => (more = r));
      async function* body() {
        yield data.subarray(0, first);
        await gate;
        yield* chunks(data.subarray(first));
      }
      const upstreams = {
        fetch: async () => ({ host: { url: 'http://upstream.test' }, status: 200, size: data.length, headers: {}, body: Readable.from(body()) }),
        markFailed: () => undefined,
      } as unknown as UpstreamPool;
      return { fills: new FillManager({ driver, upstreams, logger: silent }), more };
    };
    /** The bytes of `segment`: its own, or read from its file. */
    const bytesOf = (segment: FileSegment): Buffer => {
      if (segment.bytes) return segment.bytes;
      const buf = Buffer.alloc(segment.length);
      assert.equal(readSync(segment.fd, buf, 0, segment.length, segment.offset), segment.length);
      return buf;
    };
    const data = randomBytes((3 << 20) + 11);
    const digest = Digest.of(data);
    const { fills, more } = gated(data, 200 << 10);
    const fill = fills.start('a/b', digest, {});
    const whole = fill.body(0, data.length - 1);
    const ranged = fill.body(1000, data.length - 1);
    const it = whole.file!.segments(new AbortController().signal)[Symbol.asyncIterator]();
    const first = (await it.next()).value as FileSegment;
    assert.ok(first.bytes, 'the first stretch is in memory');
    assert.ok(first.length > 0 && first.length <= 64 << 10, `the first stretch is the fill's first write (${first.length} bytes)`);
    assert.deepEqual(first.bytes, data.subarray(0, first.length));
    const rangedFirst = (await ranged.file!.segments(new AbortController().signal)[Symbol.asyncIterator]().next()).value as FileSegment;
    assert.deepEqual(rangedFirst.bytes, data.subarray(1000, first.length), 'a range that starts in the first bytes gets the rest of them');
    ranged.close(false);
    more();
    const parts: Buffer[] = [first.bytes];
    let fromFile = false;
    for (let next = await it.next(); !next.done; next = await it.next()) {
      // The first write's last byte may come in memory too, once more bytes made it sendable; then the file.
      if (next.value.bytes) assert.ok(!fromFile && Buffer.concat(parts).length + next.value.length <= 64 << 10, 'no stretch in memory after the first write');
      else fromFile = true;
      parts.push(bytesOf(next.value));
    }
    assert.ok(fromFile, 'the stretches after the first bytes come from the file');
    whole.close(true);
    assert.deepEqual(Buffer.concat(parts), data);
    await fill.finished;
    assert.equal(fill.state, 'done');

    // A blob smaller than the first write: in memory whole, but its last byte only once the digest matched,
    // and the same through the stream a TLS client reads.
    const small = randomBytes(5000);
    const smallFill = gated(small, small.length);
    const s = smallFill.fills.start('a/b', Digest.of(small), {});
    const streamed = collect(s.body(0, small.length - 1).stream());
    smallFill.more();
    const segs: FileSegment[] = [];
    for await (const seg of s.body(0, small.length - 1).file!.segments(new AbortController().signal)) segs.push(seg);
    assert.ok(segs.every((x) => x.bytes), 'every stretch of a small blob comes from memory');
    assert.ok(segs.length >= 2 && segs.at(-1)!.length === 1, 'the last byte comes on its own, after the digest');
    assert.deepEqual(Buffer.concat(segs.map(bytesOf)), small);
    assert.deepEqual((await streamed).data, small);
  });
  it('answers with the size before any write, once the disk has room; a disk without room is a 507 before any byte', async (t) => {
    const root = await mkdtemp(join(tmpdir(), 'cascade-fill-room-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    const data = randomBytes((1 << 20) + 9);
    const digest = Digest.of(data);
    let free: number | undefined = 1 << 30;
    let release!: () => void;
    let writesHeld = new Promise<void>((r) => (release = r));
    const writes: number[] = [];
    // The disk's writes wait until the test lets them through; its free space is what the test says.
    const driver = new (class extends FilesystemDriver {
      override async freeSpace(): Promise<number | undefined> {
        return free;
      }
      override async writer(path: string, options?: { append?: boolean; create?: boolean }) {
        const w = await super.writer(path, options);
        const writev = w.writev.bind(w);
        return Object.assign(w, {
          writev: async (chunks: readonly Uint8Array[]) => {
            await writesHeld;
            writes.push(chunks.reduce((n, c) => n + c.length, 0));
            return writev(chunks);
          },
        });
      }
    })({ rootDirectory: root });
    const { upstreams, blamed } = upstreamSending(data);
    const failed: string[] = [];
    const fills = new FillManager({ driver, upstreams, logger: silent, onFailed: (_d, _r, why) => failed.push(String(why)) });
    const fill = fills.start('a/b', digest, {});
    assert.equal(await fill.waitReady(), data.length, 'the size is known');
    assert.deepEqual(writes, [], 'before any byte was written');
    const first = (await fill.body(0, data.length - 1).file!.segments(new AbortController().signal)[Symbol.asyncIterator]().next()).value as FileSegment;
    assert.deepEqual(first.bytes, data.subarray(0, first.length), 'and the first bytes go out from memory meanwhile');
    release();
    await fill.finished;
    assert.equal(fill.state, 'done');
    assert.deepEqual(await driver.getContent(paths.blobData(digest)), data);

    // Less room than the blob needs: a 507 (STORAGE_FULL) instead of headers, nothing left, nobody blamed.
    free = data.length - 1;
    const other = randomBytes(data.length);
    const full = fills.start('a/b', Digest.of(other), {});
    await assert.rejects(full.waitReady(), (err: Error & { status?: number; code?: string }) => {
      assert.equal(err.status, 507);
      assert.equal(err.code, 'STORAGE_FULL');
      return true;
    });
    assert.deepEqual(failed, ['storage']);
    assert.deepEqual(blamed, []);
    assert.deepEqual(await driver.list(`${FILLS_DIR}/sha256`).catch(() => []), [], 'no partial file left');
    // Free space unknown (statfs failed): the fill goes on.
    free = undefined;
    writesHeld = Promise.resolve();
    const unknown = new FillManager({ driver, upstreams: upstreamSending(other).upstreams, logger: silent }).start('a/b', Digest.of(other), {});
    await unknown.finished;
    assert.equal(unknown.state, 'done');
  });
});
