/**
 * A tiny stand-in for the DTR-style server, for pulling "through the chain" with a real client before
 * the server role exists: a node:http server on 127.0.0.1:0 that proxies `/v2/`, manifests, tags and blob
 * HEADs to a real origin (Cascade or distribution), and answers every blob GET with
 * `307 Location: <cache URL>/v2/<name>/blobs/<digest>`, so the client fetches the bytes from the cache.
 */
import { request as httpRequest } from 'node:http';
import { startFakeRegistry } from '@cascade/testkit';

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

/** Starts the front (the testkit's fake registry, every request answered by its hook): `origin` gets everything but blob GETs, which are redirected to `cache`. */
export async function startRedirectingOrigin(options: { origin: string; cache: string }): Promise<RedirectingOrigin> {
  const origin = new URL(options.origin);
  const redirects: string[] = [];
  const proxied: string[] = [];
  const fake = await startFakeRegistry({
    hook({ req, res, record }) {
      if (record.kind === 'blob' && req.method === 'GET') {
        req.resume();
        const location = `${options.cache}/v2/${record.name}/blobs/${record.digest}`;
        redirects.push(location);
        res.writeHead(307, { location, 'content-length': 0, 'docker-distribution-api-version': 'registry/2.0' });
        res.end();
        return true;
      }
      const headers = { ...req.headers, host: origin.host };
      const up = httpRequest({ hostname: origin.hostname, port: origin.port, method: req.method, path: record.url, headers }, (upRes) => {
        proxied.push(`${req.method} ${record.path} -> ${upRes.statusCode}`);
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      });
      up.on('error', (err) => {
        proxied.push(`${req.method} ${record.path} -> error ${err.message}`);
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`redirecting origin: ${err.message}`);
      });
      req.pipe(up);
      return true;
    },
  });
  return { url: fake.url, host: fake.host, redirects, proxied, stop: () => fake.stop() };
}
