/**
 * Blob bodies sent with sendfile(2) (the native addon) over real sockets: the bytes and headers are the
 * same as when streamed, for whole blobs, ranges and many concurrent and kept-alive requests; a client that
 * leaves, stalls or reads slowly costs no descriptor and no wrong byte; TLS and a turned-off config stream.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import Koa from 'koa';
import { Agent, request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createRegistryApp } from '../src/http/app.js';
import { listen, type RunningServer } from '../src/http/listen.js';
import { loadSendfile, respondWithSendfile, type Sendfile } from '../src/http/sendfile.js';
import { filesBody, type FileSegments } from '../src/store/body.js';
import { FilesystemDriver } from '../src/drivers/filesystem.js';
import { StorageNamespace } from '../src/store/namespace.js';

const silent = pino({ level: 'silent' });
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const loaded = loadSendfile(2);
if (typeof loaded === 'string') throw new Error(`sendfile must be available on this machine: ${loaded}`);
const sendfile: Sendfile = loaded;

/** The real sendfile, counting transfers and their outcomes. */
function counting(stallMs?: number) {
  const counts = { sent: 0, failed: [] as string[] };
  const wrapped: Sendfile = {
    threads: sendfile.threads,
    async send(socket, fd, offset, length) {
      try {
        const n = await sendfile.send(socket, fd, offset, length, stallMs);
        counts.sent += 1;
        return n;
      } catch (err) {
        counts.failed.push((err as { code?: string }).code ?? String(err));
        throw err;
      }
    },
  };
  return { sendfile: wrapped, counts };
}

async function openFds(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

async function settle(probe: () => Promise<boolean> | boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** GET over node:http (an agent keeps connections alive); resolves with status, headers and body. */
function get(url: string, headers: Record<string, string> = {}, agent?: Agent): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, ...(agent ? { agent } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject).end();
  });
}

describe('blob bodies with sendfile', () => {
  let root: string;
  let server: RunningServer;
  let url: string;
  let counts: ReturnType<typeof counting>['counts'];
  const small = randomBytes(3 * 1024 * 1024 + 17);
  const big = randomBytes(64 * 1024 * 1024);
  let smallDigest: string;
  let bigDigest: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'cascade-sendfile-'));
    const c = counting(1500);
    counts = c.counts;
    const driver = new FilesystemDriver({ rootDirectory: join(root, 'data') });
    const app = createRegistryApp({ namespace: new StorageNamespace(driver), logger: silent, sendfile: c.sendfile });
    server = await listen(app.callback(), { addr: '127.0.0.1:0' }, silent);
    url = server.url;
    for (const data of [small, big]) {
      const res = await fetch(`${url}/v2/t/blobs/uploads/?digest=${sha(data)}`, { method: 'POST', body: data, headers: { 'content-type': 'application/octet-stream' } });
      assert.equal(res.status, 201);
    }
    smallDigest = sha(small);
    bigDigest = sha(big);
  });

  after(async () => {
    await server.close();
    await rm(root, { recursive: true, force: true });
  });

  it('sends whole blobs and ranges byte for byte, with the same headers as a streamed body', async () => {
    const before = counts.sent;
    const whole = await get(`${url}/v2/t/blobs/${bigDigest}`);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers['content-length'], String(big.length));
    assert.equal(whole.headers['docker-content-digest'], bigDigest);
    assert.equal(whole.headers['content-type'], 'application/octet-stream');
    assert.equal(sha(whole.body), bigDigest);
    for (const [start, end] of [[0, 0], [1, 65_536], [1_000_000, small.length - 1], [small.length - 5, small.length - 1]] as const) {
      const part = await get(`${url}/v2/t/blobs/${smallDigest}`, { range: `bytes=${start}-${end}` });
      assert.equal(part.status, 206);
      assert.equal(part.headers['content-range'], `bytes ${start}-${end}/${small.length}`);
      assert.ok(part.body.equals(small.subarray(start, end + 1)), `bytes ${start}-${end}`);
    }
    // The count moves when the addon reports back, a moment after the client may have the last byte.
    await settle(() => counts.sent - before >= 5, 'five transfers to be reported');
    assert.equal(counts.sent - before, 5, 'every body went out with sendfile');
    const head = await fetch(`${url}/v2/t/blobs/${bigDigest}`, { method: 'HEAD' });
    assert.equal(head.headers.get('content-length'), String(big.length));
  });

  it('serves 40 concurrent requests, and one kept-alive connection request after request', async () => {
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => get(`${url}/v2/t/blobs/${i % 4 === 0 ? bigDigest : smallDigest}`)));
    results.forEach((r, i) => assert.equal(sha(r.body), i % 4 === 0 ? bigDigest : smallDigest, `request ${i}`));
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const ports = new Set<number>();
      for (let i = 0; i < 6; i++) {
        const r = await new Promise<Buffer>((resolve, reject) => {
          const req = request(`${url}/v2/t/blobs/${smallDigest}`, { agent }, (res) => {
            ports.add(res.socket.localPort ?? -1);
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c)).on('end', () => resolve(Buffer.concat(chunks)));
          });
          req.on('error', reject).end();
        });
        assert.ok(r.equals(small), `request ${i} on the kept-alive connection`);
      }
      assert.equal(ports.size, 1, 'one connection for all six');
    } finally {
      agent.destroy();
    }
  });

  it('answers pipelined requests in order: a queued response waits for the connection', async () => {
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const order = [bigDigest, smallDigest, smallDigest, bigDigest];
    socket.write(order.map((d) => `GET /v2/t/blobs/${d} HTTP/1.1\r\nHost: x\r\n\r\n`).join(''));
    const expected = order.reduce((n, d) => n + (d === bigDigest ? big.length : small.length), 0);
    await settle(() => chunks.reduce((n, c) => n + c.length, 0) >= expected + order.length * 400, 'four responses', 20_000);
    await new Promise((r) => setTimeout(r, 200));
    socket.destroy();
    let all = Buffer.concat(chunks);
    for (const [i, digest] of order.entries()) {
      const end = all.indexOf('\r\n\r\n');
      assert.ok(end > 0, `headers of response ${i}`);
      const head = all.subarray(0, end).toString('latin1');
      assert.match(head, /^HTTP\/1\.1 200 /, `status line of response ${i}`);
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]);
      assert.equal(sha(all.subarray(end + 4, end + 4 + length)), digest, `body of response ${i}`);
      all = all.subarray(end + 4 + length);
    }
    assert.equal(all.length, 0, 'nothing after the last body');
  });

  it('a client that leaves mid-transfer costs no descriptor; one that stalls is cut off; a slow one gets every byte', async () => {
    const baseline = await openFds();
    const failed = counts.failed.length;
    // Leaves after the headers and a little of the body.
    await new Promise<void>((resolve, reject) => {
      const req = request(`${url}/v2/t/blobs/${bigDigest}`, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined).end();
      req.on('close', () => resolve());
      setTimeout(() => reject(new Error('no body')), 5000);
    });
    await settle(async () => counts.failed.length > failed && (await openFds()) <= baseline, 'the transfer to end and its descriptors to close');
    assert.match(counts.failed.at(-1) ?? '', /ECANCELED|EPIPE|ECONNRESET/);

    // Never reads: the transfer stalls once the socket buffers are full and is ended (stall limit 1.5 s here).
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    socket.pause();
    socket.write(`GET /v2/t/blobs/${bigDigest} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await settle(() => counts.failed.length > failed + 1, 'the stalled transfer to be ended', 10_000);
    assert.equal(counts.failed.at(-1), 'ETIMEDOUT');
    await settle(() => socket.destroyed || socket.readableEnded || socket.closed, 'the server to close the stalled connection', 5000).catch(() => undefined);
    socket.destroy();
    await settle(async () => (await openFds()) <= baseline, 'descriptors back to the baseline');

    // Reads slowly: pauses between chunks, still every byte.
    const body = await new Promise<Buffer>((resolve, reject) => {
      const req = request(`${url}/v2/t/blobs/${smallDigest}`, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          res.pause();
          setTimeout(() => res.resume(), 5);
        });
        res.on('end', () => resolve(Buffer.concat(chunks)));
      });
      req.on('error', reject).end();
    });
    assert.ok(body.equals(small));
    assert.equal((await get(`${url}/v2/t/blobs/${smallDigest}`)).body.length, small.length, 'still serving');
  });

  it('streams over TLS and when turned off', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cascade-sendfile-tls-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
      const c = counting();
      const driver = new FilesystemDriver({ rootDirectory: join(root, 'data') });
      const app = createRegistryApp({ namespace: new StorageNamespace(driver), logger: silent, sendfile: c.sendfile });
      const tls = await listen(app.callback(), { addr: '127.0.0.1:0', tls: { certificate: join(dir, 'cert.pem'), key: join(dir, 'key.pem') } }, silent);
      try {
        const body = await new Promise<Buffer>((resolve, reject) => {
          const req = httpsRequest(`${tls.url}/v2/t/blobs/${smallDigest}`, { rejectUnauthorized: false }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (ch: Buffer) => chunks.push(ch)).on('end', () => resolve(Buffer.concat(chunks)));
          });
          req.on('error', reject).end();
        });
        assert.ok(body.equals(small));
        assert.equal(c.counts.sent + c.counts.failed.length, 0, 'TLS bodies are streamed');
      } finally {
        await tls.close();
      }
      const plain = createRegistryApp({ namespace: new StorageNamespace(driver), logger: silent });
      const off = await listen(plain.callback(), { addr: '127.0.0.1:0' }, silent);
      try {
        assert.ok((await get(`${off.url}/v2/t/blobs/${smallDigest}`)).body.equals(small));
      } finally {
        await off.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the addon refuses bad descriptors with a system error', async () => {
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    try {
      await assert.rejects(sendfile.send(socket, 987_654, 0, 10), /EBADF/);
    } finally {
      socket.destroy();
    }
  });
  it('sends a body whose first bytes are in memory and the rest in a file, in order, pipelined too', async () => {
    // A cache's fill gives its followers its first bytes from memory (written through the socket), then
    // stretches of its file (sendfile): the file's bytes must never overtake the memory's, nor the headers.
    const data = randomBytes((5 << 20) + 3);
    const split = 65_535;
    const path = join(root, 'split-body');
    await writeFile(path, data);
    const handle = await open(path, 'r');
    const c = counting();
    const app = new Koa();
    app.use((ctx) => {
      const source: FileSegments = {
        length: data.length,
        async *segments() {
          yield { bytes: data.subarray(0, split), length: split };
          yield { fd: handle.fd, offset: split, length: 1 << 20 };
          yield { fd: handle.fd, offset: split + (1 << 20), length: data.length - split - (1 << 20) };
        },
      };
      const body = filesBody(source, () => undefined);
      ctx.status = 200;
      ctx.length = data.length;
      if (ctx.query.stream !== undefined) ctx.body = body.stream();
      else respondWithSendfile(ctx, c.sendfile, body, source, (err) => assert.fail(err));
    });
    const srv = await listen(app.callback(), { addr: '127.0.0.1:0' }, silent);
    try {
      assert.ok((await get(`${srv.url}/x`)).body.equals(data), 'sendfile');
      assert.ok((await get(`${srv.url}/x?stream`)).body.equals(data), 'streamed (TLS, HTTP/2)');
      const socket = connect(Number(new URL(srv.url).port), '127.0.0.1');
      const chunks: Buffer[] = [];
      socket.on('data', (ch: Buffer) => chunks.push(ch));
      socket.write('GET /x HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(3));
      await settle(() => chunks.reduce((n, ch) => n + ch.length, 0) >= 3 * (data.length + 100), 'three responses', 20_000);
      await new Promise((r) => setTimeout(r, 100));
      socket.destroy();
      let all = Buffer.concat(chunks);
      for (let i = 0; i < 3; i++) {
        const end = all.indexOf('\r\n\r\n');
        assert.match(all.subarray(0, end).toString('latin1'), /^HTTP\/1\.1 200 /, `status line of response ${i}`);
        assert.ok(all.subarray(end + 4, end + 4 + data.length).equals(data), `body of response ${i}`);
        all = all.subarray(end + 4 + data.length);
      }
      assert.equal(all.length, 0, 'nothing after the last body');
      assert.equal(c.counts.sent, 2 * 4, 'the file stretches went out with sendfile');
    } finally {
      await srv.close();
      await handle.close();
    }
  });
});
