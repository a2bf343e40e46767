/**
 * The server's gateway against hostile request lines, in-process on real ports: a fake origin (the testkit's)
 * that counts what it is asked, and a canary listener that counts every connection it gets. The server must contact its
 * origin only, whatever host a request names, and answer an invalid grant with 401 even when no cache is
 * registered.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { startFakeRegistry, type FakeRegistry } from '@cascade/testkit';
import { parseServerConfig } from '../src/config.js';
import { createServer, type RunningCascadeServer } from '../src/create.js';

/** Sends `raw` on a new connection and resolves with the status line's code and the body. */
function rawRequest(url: string, raw: string): Promise<{ status: number; text: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      resolve({ status, text: data });
    });
    socket.setTimeout(5000, () => socket.destroy());
    socket.write(raw);
  });
}

describe('server gateway: only the origin is ever contacted', () => {
  let dir: string;
  let origin: FakeRegistry;
  let canary: TcpServer;
  let canaryHost: string;
  let canaryConnections = 0;
  let server: RunningCascadeServer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascade-front-'));
    origin = await startFakeRegistry({
      hook: ({ req, res }) => {
        req.resume();
        res.writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' }).end('{}');
        return true;
      },
    });
    canary = createTcpServer((s) => {
      canaryConnections += 1;
      s.destroy();
    });
    await new Promise<void>((r) => canary.listen(0, '127.0.0.1', () => r()));
    canaryHost = `127.0.0.1:${(canary.address() as AddressInfo).port}`;
    const file = join(dir, 'server.yml');
    const config = parseServerConfig(
      stringify({ http: { addr: '127.0.0.1:0' }, origin: { url: origin.url }, grants: { keysdir: join(dir, 'keys'), issuer: 'front-test' }, database: { sqlite: join(dir, 'state.db') } }),
      file,
      {},
    );
    server = await createServer({ config, logger: pino({ level: 'silent' }) });
  });

  after(async () => {
    await server?.close(100);
    await origin?.stop();
    canary?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const targets = () => [
    `http://${canaryHost}/v2/`,
    `http://${canaryHost}/v2/team/app/manifests/latest`,
    `http://${canaryHost}/v2/team/app/blobs/sha256:${'a'.repeat(64)}`,
    `http://${canaryHost}/v2/team/app/tags/list`,
    `https://${canaryHost}/v2/`,
    `http://user:pw@${canaryHost}/v2/`,
    '*',
  ];

  it('answers 400 REQUEST_INVALID to absolute-form and asterisk-form targets, and connects nowhere', async () => {
    const before = origin.requests.length;
    for (const target of targets()) {
      for (const method of ['GET', 'HEAD', 'OPTIONS', 'PUT']) {
        const res = await rawRequest(server.url, `${method} ${target} HTTP/1.1\r\nHost: ${canaryHost}\r\nAuthorization: Basic dXNlcjpwdw==\r\nContent-Length: 0\r\n\r\n`);
        assert.equal(res.status, 400, `${method} ${target}: ${res.text.slice(0, 300)}`);
        if (method !== 'HEAD') assert.match(res.text, /"code":"REQUEST_INVALID"/, `${method} ${target}`);
      }
    }
    assert.equal(canaryConnections, 0, 'no connection to the host the request named');
    assert.equal(origin.requests.length, before, 'nor to the origin');
  });

  it('sends a scheme-relative path (//host/...) to the origin, as a path', async () => {
    const res = await rawRequest(server.url, `GET //${canaryHost}/v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.ok(res.status > 0 && res.status < 500, res.text.slice(0, 300));
    assert.equal(canaryConnections, 0, 'no connection to the host in the path');
  });

  it("a GET with a body does not poison the pooled connection to the origin (the next request, maybe another user's, is answered)", async () => {
    for (const length of [5, 700]) {
      const res = await rawRequest(server.url, `GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n${'z'.repeat(length)}`);
      assert.equal(res.status, 200, res.text.slice(0, 300));
      for (let i = 0; i < 3; i++) {
        const next = await fetch(`${server.url}/v2/team/app/tags/list`, { signal: AbortSignal.timeout(3000) });
        assert.equal(next.status, 200, `request ${i} after a GET with a ${length}-byte body`);
        await next.arrayBuffer();
      }
    }
  });

  it('an upload the origin answers before reading its body leaves the client connection usable for its next request', async () => {
    const { hostname, port } = new URL(server.url);
    const body = Buffer.alloc(4 << 20, 0x61);
    const statuses = await new Promise<string[]>((resolve) => {
      const socket = connect(Number(port), hostname);
      let data = '';
      const done = () => {
        socket.destroy();
        resolve([...data.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1] as string));
      };
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => {
        data += chunk;
        if ((data.match(/HTTP\/1\.1 \d{3}/g) ?? []).length >= 2) done();
      });
      socket.on('error', done);
      socket.setTimeout(5000, done);
      socket.write(`PATCH /v2/a/../../blobs/uploads/x HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`);
      socket.write(body);
      socket.write('GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    assert.deepEqual(statuses, ['200', '200'], 'both requests on the connection are answered');
  });

  it('answers 401 to an invalid grant when no cache is registered (not 500)', async () => {
    const res = await rawRequest(server.url, `GET /v2/team/app/blobs/sha256:${'b'.repeat(64)}?grant=a.b.c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.equal(res.status, 401, res.text.slice(0, 400));
    assert.match(res.text, /"code":"UNAUTHORIZED"/);
  });
});
