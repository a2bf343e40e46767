/**
 * The native pump (native/pump.c): the rest of a body read from a real TCP connection, hashed and written to a
 * real file off the JavaScript thread. Exactly the body's bytes (the connection stays usable: what follows is
 * still there to read), every byte received is written and hashed whatever ends the transfer, and a cut, a
 * silent peer, a stop and a failing file each end it with their own reason.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { streamHash } from '../src/hashing.js';
import { canPump, MAX_PUMPS, pumpBody, type PumpOptions } from '../src/pump.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A server that runs `serve` on each connection; a client socket to it, its reading stopped as a fill's is. */
async function pair(serve: (s: Socket) => void): Promise<{ client: Socket; server: Server; fd: number }> {
  const server = createServer(serve);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  const client = connect({ host: '127.0.0.1', port });
  // Paused before it connects: Node reads nothing from it.
  client.pause();
  await new Promise<void>((r, j) => client.once('connect', r).once('error', j));
  const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
  return { client, server, fd };
}

describe('the native pump', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascade-pump-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const run = async (name: string, fd: number, opts: Partial<PumpOptions> & { length: number }, hash = streamHash('sha256'), flags = 'w+') => {
    const file = await open(join(dir, name), flags);
    const progress: number[] = [];
    try {
      const result = await pumpBody(hash, {
        socketFd: fd,
        fileFd: file.fd,
        position: 0,
        idleTimeoutMs: 5000,
        batchBytes: 1 << 20,
        gatherMs: 2,
        maxDelayMs: 20,
        onProgress: (n) => progress.push(n),
        ...opts,
      });
      return { result, progress, hash };
    } finally {
      await file.close();
    }
  };

  it('is available: the addon is built and a pool hash drives it', () => {
    assert.equal(canPump(streamHash('sha256')), true);
    assert.equal(canPump(streamHash('sha256', 'thread')), false);
  });

  it('reads exactly the body, hashes and writes every byte in order, and leaves what follows on the connection', async () => {
    const body = randomBytes((5 << 20) + 12_345);
    const trailer = Buffer.from('HTTP/1.1 200 OK\r\n');
    const { client, server, fd } = await pair((s) => {
      // Written in uneven pieces with pauses: full batches and gathered partial ones.
      void (async () => {
        for (let at = 0; at < body.length; ) {
          const n = Math.min(body.length - at, 700_000 + (at % 3) * 100_000);
          s.write(body.subarray(at, at + n));
          at += n;
          await new Promise((r) => setTimeout(r, 5));
        }
        s.write(trailer);
      })();
    });
    try {
      const { result, progress, hash } = await run('whole', fd, { length: body.length });
      assert.deepEqual(result, { received: body.length, written: body.length });
      assert.equal(progress.reduce((a, b) => a + b, 0), body.length);
      assert.ok(progress.every((n) => n > 0 && n <= 1 << 20), `batches of at most 1 MiB: ${progress.join(',')}`);
      assert.equal(hash.digest().hex, sha256(body));
      assert.ok((await readFile(join(dir, 'whole'))).equals(body));
      // The bytes after the body are still the connection's.
      const rest = await new Promise<Buffer>((resolve) => {
        client.once('data', resolve);
        client.resume();
      });
      assert.ok(rest.equals(trailer), `the connection's next bytes: ${JSON.stringify(rest.toString())}`);
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('a slow upstream that never pauses: each batch is written within its delay, not when full', async () => {
    const piece = randomBytes(4096);
    const pieces = 150;
    const { client, server, fd } = await pair((s) => {
      // 4 KiB every millisecond: never 2 ms of silence, and 1 MiB would take a quarter of a second.
      let n = 0;
      const timer = setInterval(() => {
        s.write(piece);
        if (++n === pieces) clearInterval(timer);
      }, 1);
      s.on('close', () => clearInterval(timer));
    });
    try {
      const at: number[] = [];
      const started = Date.now();
      const { result } = await run('trickle', fd, { length: piece.length * pieces, onProgress: () => at.push(Date.now() - started) });
      assert.equal(result.written, piece.length * pieces);
      const gaps = at.slice(1).map((t, i) => t - at[i]!);
      assert.ok(at.length >= 5, `several batches, not one: written at ${at.join(',')} ms`);
      assert.ok(Math.max(...gaps) <= 80, `no batch held much past its 20 ms: gaps ${gaps.join(',')} ms`);
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('writes from the given offset, after what is in the file', async () => {
    const body = randomBytes(300_000);
    const { client, server, fd } = await pair((s) => s.end(body));
    const name = join(dir, 'offset');
    const f = await open(name, 'w');
    await f.write(Buffer.from('prefix'));
    await f.close();
    try {
      const { result } = await run('offset', fd, { length: body.length, position: 6 }, streamHash('sha256'), 'r+');
      assert.equal(result.written, body.length);
      assert.ok((await readFile(name)).equals(Buffer.concat([Buffer.from('prefix'), body])));
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('a connection cut mid-body: the bytes that came are written and hashed, the reason is a read error', async () => {
    const sent = randomBytes(3_000_000);
    const { client, server, fd } = await pair((s) => s.end(sent));
    try {
      const { result, hash } = await run('cut', fd, { length: 8_000_000 });
      assert.equal(result.where, 'read');
      assert.equal(result.error?.code, 'ECONNRESET');
      assert.equal(result.received, sent.length);
      assert.equal(result.written, sent.length);
      assert.equal(hash.digest().hex, sha256(sent), 'the hash went on over exactly the bytes received');
      assert.ok((await readFile(join(dir, 'cut'))).equals(sent));
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('a peer that goes silent: the idle timeout ends the transfer, with what came written', async () => {
    const first = randomBytes(100_000);
    let peer: Socket | undefined;
    const { client, server, fd } = await pair((s) => {
      peer = s;
      s.write(first);
    });
    try {
      const started = Date.now();
      const { result } = await run('idle', fd, { length: 1_000_000, idleTimeoutMs: 300 });
      assert.equal(result.where, 'read');
      assert.equal(result.error?.code, 'ETIMEDOUT');
      assert.equal(result.written, first.length);
      assert.ok(Date.now() - started >= 290, 'not before the idle timeout');
    } finally {
      peer?.destroy();
      client.destroy();
      server.close();
    }
  });

  it('stops on its signal, and not before it', async () => {
    let peer: Socket | undefined;
    const { client, server, fd } = await pair((s) => {
      peer = s;
      s.write(randomBytes(50_000));
    });
    try {
      const stop = new AbortController();
      setTimeout(() => stop.abort(), 200);
      const started = Date.now();
      const { result } = await run('stop', fd, { length: 1_000_000, signal: stop.signal });
      assert.equal(result.where, 'stopped');
      assert.equal(result.written, 50_000);
      assert.ok(Date.now() - started >= 190);
      // A signal already aborted stops it at once.
      const { result: again } = await run('stop2', fd, { length: 1_000_000, signal: AbortSignal.abort() });
      assert.equal(again.where, 'stopped');
    } finally {
      peer?.destroy();
      client.destroy();
      server.close();
    }
  });

  it('a file it cannot write: the reason is the write, with its error code', async () => {
    const body = randomBytes(2_000_000);
    const { client, server, fd } = await pair((s) => s.on('error', () => undefined).end(body));
    const name = join(dir, 'readonly');
    await (await open(name, 'w')).close();
    try {
      const { result } = await run('readonly', fd, { length: body.length }, streamHash('sha256'), 'r');
      assert.equal(result.where, 'write');
      assert.equal(result.error?.code, 'EBADF');
      assert.equal(result.written, 0);
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('a progress callback that throws stops the pump, and its error is the result', async () => {
    const body = randomBytes(6 << 20);
    const { client, server, fd } = await pair((s) => s.on('error', () => undefined).end(body));
    try {
      const { result } = await run('throws', fd, {
        length: body.length,
        onProgress: () => {
          throw new Error('progress failed');
        },
      });
      assert.equal(result.where, 'stopped');
      assert.equal(result.error?.message, 'progress failed');
      assert.equal(result.received, result.written);
    } finally {
      client.destroy();
      server.close();
    }
  });

  it(`runs at most ${MAX_PUMPS} pumps at once: then canPump says no, until one ends`, async () => {
    const peers: Socket[] = [];
    const server = createServer((s) => peers.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const clients: Socket[] = [];
    const files = await Promise.all(Array.from({ length: MAX_PUMPS }, (_, i) => open(join(dir, `many-${i}`), 'w')));
    const stop = new AbortController();
    try {
      const pumps: Promise<unknown>[] = [];
      for (const file of files) {
        const client = connect({ host: '127.0.0.1', port });
        client.pause();
        await new Promise<void>((r, j) => client.once('connect', r).once('error', j));
        clients.push(client);
        assert.equal(canPump(streamHash('sha256')), true);
        const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
        pumps.push(pumpBody(streamHash('sha256'), { socketFd: fd, fileFd: file.fd, position: 0, length: 100, idleTimeoutMs: 10_000, batchBytes: 1 << 20, gatherMs: 2, maxDelayMs: 20, onProgress: () => undefined, signal: stop.signal }));
      }
      assert.equal(canPump(streamHash('sha256')), false, 'all pumps busy');
      stop.abort();
      await Promise.all(pumps);
      assert.equal(canPump(streamHash('sha256')), true, 'free again');
    } finally {
      stop.abort();
      for (const c of clients) c.destroy();
      for (const p of peers) p.destroy();
      await Promise.all(files.map((f) => f.close()));
      server.close();
    }
  });

  it('refuses a hash with an update pending, and the hash refuses calls while a pump runs', async () => {
    let peer: Socket | undefined;
    const { client, server, fd } = await pair((s) => (peer = s));
    try {
      const busy = streamHash('sha256');
      const file = await open(join(dir, 'busy'), 'w');
      const pending = busy.update([randomBytes(64 << 20)]);
      await assert.rejects(
        pumpBody(busy, { socketFd: fd, fileFd: file.fd, position: 0, length: 10, idleTimeoutMs: 5000, batchBytes: 1 << 20, gatherMs: 2, maxDelayMs: 20, onProgress: () => undefined }),
        /already running/,
      );
      await pending;
      await file.close();
      const hash = streamHash('sha256');
      const stop = new AbortController();
      const running = run('running', fd, { length: 10, signal: stop.signal }, hash);
      await new Promise((r) => setTimeout(r, 100));
      assert.throws(() => hash.digest(), /already running|pending/);
      stop.abort();
      assert.equal((await running).result.where, 'stopped');
      assert.equal(hash.digest().hex, sha256(Buffer.alloc(0)));
    } finally {
      peer?.destroy();
      client.destroy();
      server.close();
    }
  });
});
