/**
 * The upstream pool against an upstream that misbehaves after its headers: a cut body must reach the
 * caller as an error on the body stream, whenever the caller reads it (or never), and never as an 'error'
 * event nobody listens to (which ends the process).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { startFakeRegistry, type FakeRegistry } from '@cascade/testkit';
import { UpstreamPool } from '../src/upstream.js';

const silent = pino({ level: 'silent' });

/** Answers every request with 200, a Content-Length of 1000, `bytes` bytes of body, then a destroyed socket. */
function cuttingUpstream(bytes: number): Promise<FakeRegistry> {
  return startFakeRegistry({
    hook: ({ res }) => {
      res.writeHead(200, { 'content-length': 1000, 'content-type': 'application/octet-stream' });
      res.flushHeaders();
      if (bytes > 0) res.write(Buffer.alloc(bytes, 1));
      res.socket?.destroy();
      return true;
    },
  });
}

describe('upstream pool: a body cut after the headers', () => {
  const upstreams: FakeRegistry[] = [];
  before(async () => {
    for (const n of [0, 1, 100]) upstreams.push(await cuttingUpstream(n));
  });
  after(() => Promise.all(upstreams.map((u) => u.stop())));

  for (const [i, n] of [0, 1, 100].entries()) {
    it(`after ${n} body bytes: the error waits on the body for a reader that comes later`, async () => {
      const pool = new UpstreamPool({ upstreamhosts: [], originhost: upstreams[i]!.url, logger: silent });
      try {
        const res = await pool.fetch({ method: 'GET', path: '/v2/a/blobs/sha256:00' });
        assert.equal(res.status, 200);
        // The caller is busy elsewhere (a fill opening its file) while the connection dies.
        await sleep(100);
        await assert.rejects(async () => {
          for await (const _ of res.body) {
            // drain
          }
        }, /aborted|ECONNRESET|socket hang up/i);
      } finally {
        pool.close();
      }
    });

    it(`after ${n} body bytes: a body nobody reads again (resumed) does not end the process`, async () => {
      const pool = new UpstreamPool({ upstreamhosts: [], originhost: upstreams[i]!.url, logger: silent });
      try {
        const res = await pool.fetch({ method: 'GET', path: '/v2/a/blobs/sha256:00' });
        res.body.resume();
        await sleep(100);
        assert.ok(res.body.destroyed, 'the cut body is destroyed');
      } finally {
        pool.close();
      }
    });
  }
});

describe('upstream pool: redirects', () => {
  it("follows a redirect to another host without the client's Authorization or the server's grant", async (t) => {
    const seen: Record<string, string | undefined>[] = [];
    const target = await startFakeRegistry({
      hook: ({ req, res }) => {
        seen.push({ authorization: req.headers.authorization, grant: req.headers['x-cascade-grant'] as string | undefined });
        res.writeHead(200, { 'content-length': 3 }).end('abc');
        return true;
      },
    });
    const upstream = await startFakeRegistry({
      hook: ({ req, res }) => {
        res.writeHead(307, { location: `${target.url}${req.url}` }).end();
        return true;
      },
    });
    t.after(() => Promise.all([target.stop(), upstream.stop()]));
    const pool = new UpstreamPool({ upstreamhosts: [], originhost: upstream.url, logger: silent });
    try {
      const res = await pool.fetch({ method: 'GET', path: '/v2/a/blobs/sha256:00', headers: { authorization: 'Basic c2VjcmV0', 'x-cascade-grant': 'a.b.c' } });
      res.body.resume();
      assert.equal(res.status, 200);
      assert.deepEqual(seen, [{ authorization: undefined, grant: undefined }]);
    } finally {
      pool.close();
    }
  });
});
