/**
 * Canaries: files with a random secret outside every storage root (one in the test's folder, laid out as
 * a distribution blob too, and one in its own folder under /tmp), and TCP listeners on 127.0.0.1 and [::1]
 * that no node may ever connect to. A listener counts every connection it accepts and answers with a
 * registry-looking 200 that carries its own secret, so a node that relays it would also leak it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Canary {
  /** Every secret: none may appear in an answer. */
  readonly secrets: readonly string[];
  /** Folders nothing may be opened in. */
  readonly dirs: readonly string[];
  /** The canary files. */
  readonly files: readonly string[];
  /** The digest of the canary laid out as a blob (its bytes are a secret). */
  readonly blobDigest: string;
  /** `127.0.0.1:P` and, when IPv6 loopback works, `[::1]:Q`. */
  readonly hosts: readonly string[];
  /** Connections accepted by the listeners, with the first bytes each sent. */
  readonly connections: Array<{ listener: string; from: string; firstBytes: string }>;
  close(): Promise<void>;
}

async function listen(host: string, secret: string, connections: Canary['connections']): Promise<{ server: Server; port: number } | undefined> {
  const server = createServer((socket) => {
    const entry = { listener: host, from: `${socket.remoteAddress}:${socket.remotePort}`, firstBytes: '' };
    connections.push(entry);
    socket.on('error', () => undefined);
    socket.once('data', (chunk: Buffer) => {
      entry.firstBytes = chunk.subarray(0, 300).toString('latin1').replace(/\r\n/g, '\\r\\n');
      const body = JSON.stringify({ canary: secret, errors: [{ code: 'CANARY', message: secret }] });
      socket.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDocker-Distribution-API-Version: registry/2.0\r\nWWW-Authenticate: Bearer realm="http://${host}/${secret}"\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    });
    setTimeout(() => socket.destroy(), 2000).unref();
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => resolve());
    });
  } catch {
    return undefined;
  }
  const addr = server.address();
  return { server, port: typeof addr === 'object' && addr ? addr.port : 0 };
}

/** Lays out the canaries; `dir` is the test's folder. */
export async function startCanary(dir: string): Promise<Canary> {
  const secret = () => `CANARY-${randomBytes(16).toString('hex')}`;
  const secrets = [secret(), secret(), secret(), secret()];
  const local = join(dir, 'canary');
  const outside = await mkdtemp(join(tmpdir(), 'cascade-fuzz-canary-'));
  const blobBytes = Buffer.from(secrets[1]!);
  const hex = createHash('sha256').update(blobBytes).digest('hex');
  const blobFile = join(local, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
  await mkdir(join(blobFile, '..'), { recursive: true });
  const files = [join(local, 'secret.txt'), blobFile, join(outside, 'secret.txt')];
  await writeFile(files[0]!, `${secrets[0]}\n`);
  await writeFile(blobFile, blobBytes);
  await writeFile(files[2]!, `${secrets[2]}\n`);
  const connections: Canary['connections'] = [];
  const servers: Server[] = [];
  const hosts: string[] = [];
  const v4 = await listen('127.0.0.1', secrets[3]!, connections);
  if (!v4) throw new Error('canary: cannot listen on 127.0.0.1');
  servers.push(v4.server);
  hosts.push(`127.0.0.1:${v4.port}`);
  const v6 = await listen('::1', secrets[3]!, connections);
  if (v6) {
    servers.push(v6.server);
    hosts.push(`[::1]:${v6.port}`);
  }
  return {
    secrets,
    dirs: [local, outside],
    files,
    blobDigest: `sha256:${hex}`,
    hosts,
    connections,
    async close() {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      await rm(outside, { recursive: true, force: true });
    },
  };
}
