/**
 * The fill's direct blob GET (upstream-direct.ts) against raw TCP upstreams that send exactly the bytes each
 * test wants: the body arrives whole and in order through the ring however slowly it is consumed, every
 * malformed answer is an error (never a crash, never a wrong byte), answers it does not read are handed back
 * for the general client, and connections are reused only after a clean answer.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { Digest, InMemoryDriver, paths } from '@cascade/registry-core';
import { startFakeRegistry } from '@cascade/testkit';
import { FillManager } from '../src/fill.js';
import { UpstreamPool } from '../src/upstream.js';
import { type ChunkSource, DirectClient, parseHead } from '../src/upstream-direct.js';

const silent = pino({ level: 'silent' });
const options = { connectTimeoutMs: 2000, responseTimeoutMs: 2000, idleTimeoutMs: 2000 };

/** A TCP server that runs `answer` on each request's socket; counts connections. */
async function rawUpstream(answer: (socket: Socket, request: string) => void): Promise<{ url: string; connections: () => number; server: Server }> {
  let connections = 0;
  const server = createServer((socket) => {
    connections += 1;
    socket.on('error', () => undefined);
    let head = '';
    socket.on('data', (d) => {
      head += d.toString('latin1');
      while (head.includes('\r\n\r\n')) {
        const end = head.indexOf('\r\n\r\n');
        const request = head.slice(0, end);
        head = head.slice(end + 4);
        answer(socket, request);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, connections: () => connections, server };
}

const servers: Server[] = [];
after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

async function upstream(answer: (socket: Socket, request: string) => void) {
  const u = await rawUpstream(answer);
  servers.push(u.server);
  return u;
}

/** Reads a chunk source to its end, releasing each chunk after `delayMs` (a slow disk). */
async function drain(chunks: ChunkSource, delayMs = 0): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (;;) {
    const c = await chunks.next();
    if (!c) return Buffer.concat(parts);
    parts.push(Buffer.from(c));
    if (delayMs > 0) await sleep(delayMs);
    chunks.release(c.length);
  }
}

describe('direct blob GET', () => {
  it('reads a 24 MiB body whole and in order through a 4 MiB ring, with a slow consumer, and reuses the connection', async () => {
    const body = randomBytes(24 << 20);
    const u = await upstream((socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nContent-Type: application/octet-stream\r\n\r\n`);
      socket.write(body);
    });
    const client = new DirectClient(options);
    try {
      for (let i = 0; i < 2; i++) {
        const a = await client.get(u.url, '/v2/a/blobs/x', { authorization: 'Bearer t' });
        assert.equal(a.kind, 'body');
        if (a.kind !== 'body') return;
        assert.equal(a.length, body.length);
        const got = await drain(a.chunks, i === 0 ? 1 : 0);
        assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(body).digest('hex'));
      }
      assert.equal(u.connections(), 1, 'the second GET used the first connection');
    } finally {
      client.close();
    }
  });

  it('an interim 100 answer is skipped; the first body bytes may arrive with the head', async () => {
    const u = await upstream((socket) => socket.end('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello'));
    const client = new DirectClient(options);
    const a = await client.get(u.url, '/x', {});
    assert.equal(a.kind, 'body');
    if (a.kind === 'body') assert.equal((await drain(a.chunks)).toString(), 'hello');
    client.close();
  });

  const malformed: [string, string, RegExp][] = [
    ['a head over 64 KiB', `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(100 << 10)}\r\n\r\n`, /head over 65536 bytes/],
    ['a malformed status line', 'HTTP/9 200 OK\r\nContent-Length: 1\r\n\r\nx', /malformed status line/],
    ['a header line without a colon', 'HTTP/1.1 200 OK\r\nContent-Length 1\r\n\r\nx', /malformed header line/],
    ['two different Content-Lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx', /invalid Content-Length/],
    ['a negative Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nx', /invalid Content-Length/],
    ['a connection closed before the head', 'HTTP/1.1 200 OK\r\nContent-Le', /closed the connection before its answer/],
  ];
  for (const [what, bytes, error] of malformed) {
    it(`${what}: an error, nothing else`, async () => {
      const u = await upstream((socket) => socket.end(bytes));
      const client = new DirectClient(options);
      await assert.rejects(client.get(u.url, '/x', {}), error);
      client.close();
    });
  }

  it('a body cut short: the reader gets the bytes sent, then an error', async () => {
    const u = await upstream((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n');
      socket.end(Buffer.alloc(300, 7));
    });
    const client = new DirectClient(options);
    const a = await client.get(u.url, '/x', {});
    assert.equal(a.kind, 'body');
    if (a.kind !== 'body') return;
    const first = await a.chunks.next();
    assert.equal(first?.length, 300);
    a.chunks.release(300);
    await assert.rejects(a.chunks.next(), /closed the connection after 300 of 1000 body bytes/);
    client.close();
  });

  it('bytes past the Content-Length are dropped and the connection is not reused', async () => {
    const u = await upstream((socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA'));
    const client = new DirectClient(options);
    for (let i = 0; i < 2; i++) {
      const a = await client.get(u.url, '/x', {});
      assert.equal(a.kind, 'body');
      if (a.kind === 'body') assert.equal((await drain(a.chunks)).toString(), 'abc');
    }
    assert.equal(u.connections(), 2);
    client.close();
  });

  it('chunked bodies and redirects are handed back (fallback); other statuses are reported', async () => {
    const answers = ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n', 'HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/x\r\nContent-Length: 0\r\n\r\n', 'HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}'];
    let i = 0;
    const u = await upstream((socket) => socket.write(answers[i++] as string));
    const client = new DirectClient(options);
    assert.deepEqual(await client.get(u.url, '/x', {}), { kind: 'fallback', reason: 'a chunked body' });
    assert.deepEqual(await client.get(u.url, '/x', {}), { kind: 'fallback', reason: 'a redirect (307)' });
    const notFound = await client.get(u.url, '/x', {});
    assert.equal(notFound.kind, 'status');
    assert.equal(notFound.kind === 'status' && notFound.status, 404);
    client.close();
  });

  it('a header value with CR or LF is refused before anything is sent', async () => {
    const u = await upstream(() => assert.fail('nothing may be sent'));
    const client = new DirectClient(options);
    await assert.rejects(client.get(u.url, '/x', { authorization: 'Bearer a\r\nX-Injected: 1' }), /invalid header "authorization"/);
    client.close();
  });

  it('an upstream that stops sending: the idle timeout ends the transfer with an error', async () => {
    const u = await upstream((socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab'));
    const client = new DirectClient({ ...options, idleTimeoutMs: 300 });
    const a = await client.get(u.url, '/x', {});
    assert.equal(a.kind, 'body');
    if (a.kind === 'body') await assert.rejects(drain(a.chunks), /no data for 300 ms/);
    client.close();
  });

  it('an abort stops a transfer waiting for its head', async () => {
    const u = await upstream(() => undefined);
    const client = new DirectClient(options);
    const abort = new AbortController();
    setTimeout(() => abort.abort(new Error('the fill gave up')), 100);
    await assert.rejects(client.get(u.url, '/x', {}, abort.signal), /the fill gave up/);
    client.close();
  });

  it('parseHead: names lower-cased, repeated headers as arrays', () => {
    assert.deepEqual(parseHead('HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/2\r\nVia: a\r\nvia: b'), {
      status: 206,
      headers: { 'content-range': 'bytes 0-1/2', via: ['a', 'b'] },
    });
  });
});

describe('fills through the direct path', () => {
  it('an upstream that redirects the blob GET elsewhere (a registry on S3): the fill follows it through the general client', async () => {
    const data = randomBytes((2 << 20) + 3);
    const digest = Digest.of(data);
    const storage = await startFakeRegistry({
      hook: ({ res }) => {
        res.writeHead(200, { 'content-length': data.length });
        res.end(data);
        return true;
      },
    });
    const origin = await upstream((socket) => socket.write(`HTTP/1.1 307 Temporary Redirect\r\nLocation: ${storage.url}/blob\r\nContent-Length: 0\r\n\r\n`));
    const driver = new InMemoryDriver();
    const pool = new UpstreamPool({ upstreamhosts: [], originhost: origin.url, logger: silent });
    try {
      const fills = new FillManager({ driver, upstreams: pool, logger: silent });
      const fill = fills.start('a/b', digest, {});
      await fill.finished;
      assert.equal(fill.state, 'done', String(fill.error));
      assert.deepEqual(await driver.getContent(paths.blobData(digest)), data);
    } finally {
      pool.close();
      await storage.stop();
    }
  });

  it('an upstream that sends the blob chunked: the fill reads it through the general client', async () => {
    const data = randomBytes((1 << 20) + 5);
    const digest = Digest.of(data);
    const origin = await startFakeRegistry({
      hook: ({ res }) => {
        res.writeHead(200, { 'transfer-encoding': 'chunked' });
        res.end(data);
        return true;
      },
    });
    const driver = new InMemoryDriver();
    const pool = new UpstreamPool({ upstreamhosts: [], originhost: origin.url, logger: silent });
    try {
      const fill = new FillManager({ driver, upstreams: pool, logger: silent }).start('a/b', digest, {});
      await fill.finished;
      assert.equal(fill.state, 'done', String(fill.error));
      assert.deepEqual(await driver.getContent(paths.blobData(digest)), data);
    } finally {
      pool.close();
      await origin.stop();
    }
  });
});

describe('direct blob GET: kept connections', () => {
  it('a kept connection the upstream closed as it was reused: the GET goes again on a new connection, once', async () => {
    let requests = 0;
    const u = await upstream((socket) => {
      requests += 1;
      // The first answer keeps the connection; the second request on it meets a close (an idle timeout's race).
      if (requests === 2) return socket.destroy();
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const client = new DirectClient(options);
    try {
      for (let i = 0; i < 2; i++) {
        const a = await client.get(u.url, '/x', {});
        assert.equal(a.kind, 'body');
        if (a.kind === 'body') assert.equal((await drain(a.chunks)).toString(), 'ok');
      }
      assert.equal(requests, 3, 'the reused connection failed once, then a new one answered');
      assert.equal(u.connections(), 2);
    } finally {
      client.close();
    }
  });

  it('a new connection closed before the answer is a failure, not retried', async () => {
    let requests = 0;
    const u = await upstream((socket) => {
      requests += 1;
      socket.destroy();
    });
    const client = new DirectClient(options);
    await assert.rejects(client.get(u.url, '/x', {}), /closed the connection before its answer/);
    assert.equal(requests, 1);
    client.close();
  });
});
