/**
 * Fills against an upstream that answers from memory: blobs of either digest algorithm are stored once their
 * digest matches, and wrong bytes store nothing, fail the followers before their last byte and blame the upstream.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Digest, FilesystemDriver, InMemoryDriver, PathNotFoundError, paths, type DigestAlgorithm, type PositionalReader } from '@cascade/registry-core';
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
});
