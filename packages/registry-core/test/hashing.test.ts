/**
 * Stream hashes on the thread pool (the native addon): the same digests as node:crypto for sha256 and sha512,
 * whatever the buffers and however updates are queued; a pending update forbids digest(); a finished hash
 * refuses more; the calling-thread fallback behaves alike.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { streamHash, whyHashingOnThread, type StreamHash } from '../src/hashing.js';
import type { DigestAlgorithm } from '../src/digest.js';

const expected = (algorithm: DigestAlgorithm, parts: readonly Buffer[]) => {
  const h = createHash(algorithm);
  for (const p of parts) h.update(p);
  return `${algorithm}:${h.digest('hex')}`;
};

/** Some buffers of awkward sizes, views into larger ones included. */
function pieces(): Buffer[] {
  const big = randomBytes(3 << 20);
  return [randomBytes(1), Buffer.alloc(0), big.subarray(7, (1 << 20) + 13), randomBytes(65_536), big.subarray(2 << 20), randomBytes(333)];
}

describe('stream hashes', () => {
  it('the addon is built on this machine: digests go to the thread pool', () => {
    assert.equal(whyHashingOnThread(), undefined);
  });

  for (const where of ['pool', 'thread'] as const) {
    for (const algorithm of ['sha256', 'sha512'] as const) {
      it(`${where}, ${algorithm}: updates queued at once are hashed in order`, async () => {
        const parts = pieces();
        const h = streamHash(algorithm, where);
        // Every update queued before the first is done: the pool takes them in batches, in order.
        await Promise.all(parts.map((p, i) => h.update(i % 2 === 0 ? [p] : [p, Buffer.alloc(0)])));
        assert.equal(h.digest().toString(), expected(algorithm, parts));
      });
    }

    it(`${where}: 150 buffers in one update, then synchronous updates`, async () => {
      const many = Array.from({ length: 150 }, (_, i) => randomBytes(100 + i));
      const h = streamHash('sha256', where);
      await h.update(many);
      const tail = randomBytes(4096);
      h.updateSync(tail);
      assert.equal(h.digest().toString(), expected('sha256', [...many, tail]));
    });

    it(`${where}: an empty stream`, () => {
      assert.equal(streamHash('sha256', where).digest().toString(), expected('sha256', []));
    });
  }

  it('pool: digest() and updateSync() refuse while an update is pending; a finished hash refuses updates', async () => {
    const h: StreamHash = streamHash('sha256', 'pool');
    const pending = h.update([randomBytes(8 << 20)]);
    assert.throws(() => h.digest(), /pending/);
    assert.throws(() => h.updateSync(Buffer.from('x')), /pending/);
    await pending;
    h.digest();
    await assert.rejects(h.update([Buffer.from('x')]), /finished/);
  });

  it('pool: many hashes at once, each its own digest', async () => {
    const inputs = Array.from({ length: 24 }, () => [randomBytes(200_000), randomBytes(1 << 20)]);
    const digests = await Promise.all(
      inputs.map(async (parts) => {
        const h = streamHash('sha256', 'pool');
        for (const p of parts) await h.update([p]);
        return h.digest().toString();
      }),
    );
    assert.deepEqual(digests, inputs.map((p) => expected('sha256', p)));
  });
});
