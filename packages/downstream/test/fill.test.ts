/**
 * Fills against an upstream that answers from memory: blobs of either digest algorithm are stored once their
 * digest matches, and wrong bytes store nothing, fail the followers before their last byte and blame the upstream.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Digest, InMemoryDriver, paths, type DigestAlgorithm } from '@cascade/registry-core';
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
});
