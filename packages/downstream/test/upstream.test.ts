/**
 * The upstream pool against an upstream that misbehaves after its headers: a cut body must reach the
 * caller as an error on the body stream, whenever the caller reads it (or never), and never as an 'error'
 * event nobody listens to (which ends the process).
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { UpstreamPool } from '../src/upstream.js';

const silent = pino({ level: 'silent' });

/** Answers every request with 200, a Content-Length of 1000, `bytes` bytes of body, then a destroyed socket. */
async function cuttingUpstream(bytes: number): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-length': 1000, 'content-type': 'application/octet-stream' });
    res.flushHeaders();
    if (bytes > 0) res.write(Buffer.alloc(bytes, 1));
    res.socket?.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('upstream pool: a body cut after the headers', () => {
  const upstreams: { url: string; server: Server }[] = [];
  before(async () => {
    for (const n of [0, 1, 100]) upstreams.push(await cuttingUpstream(n));
  });
  after(() => {
    for (const u of upstreams) u.server.close();
  });

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
    const target = createServer((req, res) => {
      seen.push({ authorization: req.headers.authorization, grant: req.headers['x-cascade-grant'] as string | undefined });
      res.writeHead(200, { 'content-length': 3 }).end('abc');
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
    const targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}`;
    const upstream = createServer((req, res) => {
      res.writeHead(307, { location: `${targetUrl}${req.url}` }).end();
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    t.after(() => {
      target.close();
      upstream.close();
    });
    const pool = new UpstreamPool({ upstreamhosts: [], originhost: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`, logger: silent });
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
