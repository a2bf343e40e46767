/**
 * A tiny stand-in for the DTR-style server, for pulling "through the chain" with a real client before
 * the server role exists: a node:http server on 127.0.0.1:0 that proxies `/v2/`, manifests, tags and blob
 * HEADs to a real origin (Cascade or distribution), and answers every blob GET with
 * `307 Location: <cache URL>/v2/<name>/blobs/<digest>`, so the client fetches the bytes from the cache.
 */
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { Socket } from 'node:net';

export interface RedirectingOrigin {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly host: string;
  /** The Locations of the redirects sent, in order. */
  readonly redirects: string[];
  /** Requests proxied to the origin: `METHOD path -> status`. */
  readonly proxied: string[];
  stop(): Promise<void>;
}

const BLOB_PATH = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;

/** Starts the front: `origin` gets everything but blob GETs, which are redirected to `cache`. */
export async function startRedirectingOrigin(options: { origin: string; cache: string }): Promise<RedirectingOrigin> {
  const origin = new URL(options.origin);
  const redirects: string[] = [];
  const proxied: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '/';
    const path = url.split('?')[0]!;
    const m = BLOB_PATH.exec(path);
    if (m && req.method === 'GET') {
      req.resume();
      const location = `${options.cache}/v2/${m[1]}/blobs/${m[2]}`;
      redirects.push(location);
      res.writeHead(307, { location, 'content-length': 0, 'docker-distribution-api-version': 'registry/2.0' });
      res.end();
      return;
    }
    const headers = { ...req.headers, host: origin.host };
    const up = httpRequest({ hostname: origin.hostname, port: origin.port, method: req.method, path: url, headers }, (upRes) => {
      proxied.push(`${req.method} ${path} -> ${upRes.statusCode}`);
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', (err) => {
      proxied.push(`${req.method} ${path} -> error ${err.message}`);
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`redirecting origin: ${err.message}`);
    });
    req.pipe(up);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((res, rej) => server.once('error', rej).listen(0, '127.0.0.1', () => res()));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('redirecting origin: no address');
  const host = `127.0.0.1:${address.port}`;
  return {
    url: `http://${host}`,
    host,
    redirects,
    proxied,
    async stop() {
      const closed = new Promise<void>((res) => server.close(() => res()));
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
