/** Binding an app to `http.addr`, with TLS from `http.tls`. */
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server, type RequestListener } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { errorEnvelope, RegistryError } from '../errors.js';

/** Where and how to listen. */
export interface ListenOptions {
  /** distribution's `http.addr`: `:5000`, `127.0.0.1:0`, `[::1]:5000`, or a socket path with `net: unix`. */
  readonly addr: string;
  readonly net?: 'tcp' | 'unix';
  /** PEM files of `http.tls`. */
  readonly tls?: { readonly certificate: string; readonly key: string };
  /** Role name for the log line ("registry", "cache", "server"). */
  readonly role?: string;
}

/** A listening server. */
export interface RunningServer {
  /** Base URL clients use, e.g. `http://127.0.0.1:5000`. */
  readonly url: string;
  readonly server: Server;
  /** Stops accepting connections and waits for open requests, at most `drainMs` (then closes them). */
  close(drainMs?: number): Promise<void>;
}

/** Splits `host:port` as distribution accepts it (`:5000` means every interface). */
export function parseAddr(addr: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr.trim());
  if (!m) throw new Error(`invalid http.addr ${JSON.stringify(addr)}: expected host:port or :port`);
  const host = m[1] ?? m[2];
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`invalid http.addr ${JSON.stringify(addr)}: port must be at most 65535`);
  return { host: host === '' ? undefined : host, port };
}

/**
 * `handler` for requests whose target is in origin form (`/path?query`, RFC 9112 §3.2.1) only. Any other
 * form is answered 400 REQUEST_INVALID here, before any role sees it: an absolute-form target
 * (`GET http://other-host/v2/ HTTP/1.1`) names a host, and a node that built an upstream URL from it would
 * relay the request there (an open proxy); asterisk-form (`OPTIONS *`) has no resource. The connection is
 * closed after the answer (the client speaks to a proxy, not to us). CONNECT never reaches a handler: Node
 * closes the socket of a CONNECT that no 'connect' listener takes.
 */
export function originFormOnly(handler: RequestListener): RequestListener {
  return (req, res) => {
    if (req.url?.startsWith('/')) {
      handler(req, res);
      return;
    }
    const body = JSON.stringify(errorEnvelope(new RegistryError('REQUEST_INVALID', 'the request target must be a path (origin form): this server is not a proxy')));
    req.resume();
    res.shouldKeepAlive = false;
    res.writeHead(400, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0', connection: 'close' });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

/** Listens with `handler` and logs `{msg: "listening", url}` once bound. */
export async function listen(handler: RequestListener, options: ListenOptions, logger: Logger): Promise<RunningServer> {
  const tls = options.tls;
  const server: Server = tls
    ? createHttpsServer({ cert: await readFile(tls.certificate), key: await readFile(tls.key) }, originFormOnly(handler))
    : createHttpServer(originFormOnly(handler));
  // Blob uploads and downloads can take longer than Node's default 5-minute request timeout.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 65_000;
  const scheme = tls ? 'https' : 'http';
  let url: string;
  if (options.net === 'unix') {
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(options.addr, () => resolve()));
    url = `unix:${options.addr}`;
  } else {
    const { host, port } = parseAddr(options.addr);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (host === undefined) server.listen(port, () => resolve());
      else server.listen(port, host, () => resolve());
    });
    const bound = server.address() as AddressInfo;
    const shown = host === undefined || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : bound.family === 'IPv6' ? `[${bound.address}]` : host;
    url = `${scheme}://${shown}:${bound.port}`;
  }
  logger.info({ url, role: options.role ?? 'registry', tls: Boolean(tls) }, 'listening');
  return {
    url,
    server,
    close: (drainMs = 5000) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), drainMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
