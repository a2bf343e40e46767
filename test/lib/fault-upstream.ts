/**
 * A programmable fake upstream registry for the cache node's fault tests: a real node:http server on
 * 127.0.0.1:0 that answers `/v2/` and blob GET/HEAD (`/v2/<name>/blobs/<digest>`) the way the scenario set
 * for that digest says, and records every request (method, path, headers, Range) it receives.
 *
 * Scenarios:
 * - `ok`: 200 with Content-Length and Docker-Content-Digest, the right bytes (honours a single `Range`);
 * - `die`: headers with the full Content-Length (whatever Range was asked for), `afterBytes` bytes, then the
 *   socket is destroyed; with `times`, only the first `times` GETs of the digest die, and later ones are `ok`;
 * - `wrong-bytes`: the right length, wrong content (the last byte flipped, so the prefix looks right);
 * - `extra-bytes`: the right bytes followed by `extra` more, with a Content-Length that counts them;
 * - `slow`: the right bytes, `chunkBytes` every `intervalMs` (a trickle);
 * - `status`: any status with an OCI error body and extra headers (404, 401 + WWW-Authenticate, 500...);
 * - `hang`: reads the request and never answers.
 * Manifests and every other path answer 404 with an OCI error.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type Scenario =
  | { readonly kind: 'ok' }
  | { readonly kind: 'die'; readonly afterBytes: number; readonly times?: number }
  | { readonly kind: 'wrong-bytes' }
  | { readonly kind: 'extra-bytes'; readonly extra?: number }
  | { readonly kind: 'slow'; readonly chunkBytes: number; readonly intervalMs: number }
  | { readonly kind: 'status'; readonly status: number; readonly headers?: Record<string, string>; readonly code?: string }
  | { readonly kind: 'hang' };

/** One request the fake upstream received. */
export interface UpstreamRequest {
  readonly method: string;
  readonly path: string;
  /** The digest for blob requests. */
  readonly digest?: string;
  readonly headers: IncomingHttpHeaders;
  readonly at: number;
  /** When the connection closed before the response was complete (the client gave up, or the scenario cut it). */
  closedEarlyAt?: number;
}

export interface FaultUpstream {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly host: string;
  readonly requests: UpstreamRequest[];
  /** Serves `bytes` (under any repository name) with `scenario` (default ok); returns the digest. */
  addBlob(bytes: Buffer, scenario?: Scenario): string;
  /** Changes what a digest's next requests get. */
  setScenario(digest: string, scenario: Scenario): void;
  /** Requests for one digest (optionally one method). */
  count(digest: string, method?: string): number;
  /** Answers for `/v2/` (default 200 `{}`). */
  setPing(status: number, headers?: Record<string, string>): void;
  /** Closes the server and destroys every open connection. */
  stop(): Promise<void>;
}

const BLOB_PATH = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;

function sendError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}, head = false): void {
  const body = JSON.stringify({ errors: [{ code, message, detail: null }] });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0', ...headers });
  res.end(head ? undefined : body);
}

/** Starts a fake upstream on a free port of 127.0.0.1. */
export async function startFaultUpstream(): Promise<FaultUpstream> {
  const blobs = new Map<string, { bytes: Buffer; scenario: Scenario }>();
  /** GETs of each digest cut by a `die` scenario with `times`. */
  const deaths = new Map<string, number>();
  const requests: UpstreamRequest[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let ping: { status: number; headers: Record<string, string> } = { status: 200, headers: {} };

  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const m = BLOB_PATH.exec(path);
    const record: UpstreamRequest = { method: req.method ?? 'GET', path, ...(m ? { digest: m[2] } : {}), headers: req.headers, at: Date.now() };
    requests.push(record);
    res.on('close', () => {
      if (!res.writableFinished) record.closedEarlyAt = Date.now();
    });
    req.resume();
    const head = req.method === 'HEAD';
    if (path === '/v2/' || path === '/v2') {
      const body = ping.status === 200 ? '{}' : JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
      res.writeHead(ping.status, { 'content-type': 'application/json', 'content-length': body.length, 'docker-distribution-api-version': 'registry/2.0', ...ping.headers });
      res.end(head ? undefined : body);
      return;
    }
    if (!m || (req.method !== 'GET' && !head)) {
      sendError(res, 404, 'NOT_FOUND', `fault upstream: nothing at ${req.method} ${path}`, {}, head);
      return;
    }
    const digest = m[2]!;
    const entry = blobs.get(digest);
    if (!entry) {
      sendError(res, 404, 'BLOB_UNKNOWN', 'blob unknown to registry', {}, head);
      return;
    }
    const { bytes } = entry;
    let { scenario } = entry;
    if (scenario.kind === 'die' && scenario.times !== undefined && !head) {
      const died = deaths.get(digest) ?? 0;
      if (died >= scenario.times) scenario = { kind: 'ok' };
      else deaths.set(digest, died + 1);
    }
    const baseHeaders = { 'content-type': 'application/octet-stream', 'docker-content-digest': digest, 'docker-distribution-api-version': 'registry/2.0', 'accept-ranges': 'bytes' };
    switch (scenario.kind) {
      case 'hang':
        return;
      case 'status':
        sendError(res, scenario.status, scenario.code ?? (scenario.status === 404 ? 'BLOB_UNKNOWN' : scenario.status === 401 ? 'UNAUTHORIZED' : 'UNKNOWN'), `fault upstream: ${scenario.status}`, scenario.headers ?? {}, head);
        return;
      case 'ok': {
        const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
        if (range && !head) {
          const start = Number(range[1]);
          const end = range[2] ? Math.min(Number(range[2]), bytes.length - 1) : bytes.length - 1;
          if (start >= bytes.length || start > end) {
            res.writeHead(416, { ...baseHeaders, 'content-range': `bytes */${bytes.length}` });
            res.end();
            return;
          }
          res.writeHead(206, { ...baseHeaders, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${bytes.length}` });
          res.end(bytes.subarray(start, end + 1));
          return;
        }
        res.writeHead(200, { ...baseHeaders, 'content-length': bytes.length });
        res.end(head ? undefined : bytes);
        return;
      }
      case 'extra-bytes': {
        const extra = Buffer.alloc(scenario.extra ?? 16, 0x41);
        res.writeHead(200, { ...baseHeaders, 'content-length': bytes.length + extra.length });
        res.end(head ? undefined : Buffer.concat([bytes, extra]));
        return;
      }
      case 'wrong-bytes': {
        const wrong = Buffer.from(bytes);
        wrong[wrong.length - 1] = (wrong[wrong.length - 1] ?? 0) ^ 0xff;
        res.writeHead(200, { ...baseHeaders, 'content-length': bytes.length });
        res.end(head ? undefined : wrong);
        return;
      }
      case 'die': {
        res.writeHead(200, { ...baseHeaders, 'content-length': bytes.length });
        if (head) {
          res.end();
          return;
        }
        res.flushHeaders();
        res.write(bytes.subarray(0, scenario.afterBytes), () => {
          // give the bytes a moment to leave, then cut the connection without finishing the body
          const t = setTimeout(() => {
            timers.delete(t);
            res.socket?.destroy();
          }, 50);
          timers.add(t);
        });
        return;
      }
      case 'slow': {
        res.writeHead(200, { ...baseHeaders, 'content-length': bytes.length });
        if (head) {
          res.end();
          return;
        }
        res.flushHeaders();
        let off = 0;
        const tick = () => {
          if (res.destroyed) return;
          const next = Math.min(bytes.length, off + scenario.chunkBytes);
          const chunk = bytes.subarray(off, next);
          off = next;
          if (off >= bytes.length) {
            res.end(chunk);
            return;
          }
          res.write(chunk);
          const t = setTimeout(() => {
            timers.delete(t);
            tick();
          }, scenario.intervalMs);
          timers.add(t);
        };
        tick();
        return;
      }
    }
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((res, rej) => server.once('error', rej).listen(0, '127.0.0.1', () => res()));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('fault upstream: no address');
  const host = `127.0.0.1:${address.port}`;
  return {
    url: `http://${host}`,
    host,
    requests,
    addBlob(bytes, scenario = { kind: 'ok' }) {
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      blobs.set(digest, { bytes, scenario });
      return digest;
    },
    setScenario(digest, scenario) {
      const entry = blobs.get(digest);
      if (!entry) throw new Error(`fault upstream: unknown digest ${digest}`);
      entry.scenario = scenario;
      deaths.delete(digest);
    },
    count(digest, method) {
      return requests.filter((r) => r.digest === digest && (method === undefined || r.method === method)).length;
    },
    setPing(status, headers = {}) {
      ping = { status, headers };
    },
    async stop() {
      for (const t of timers) clearTimeout(t);
      const closed = new Promise<void>((res) => server.close(() => res()));
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/** A TCP listener that resets every connection at once and counts them (a dead upstream you can observe). */
export interface ResettingPeer {
  readonly port: number;
  /** Times at which connections arrived. */
  readonly connections: number[];
  stop(): Promise<void>;
}

/** Listens on 127.0.0.1:`port` (0 for any) and destroys every connection as soon as it is accepted. */
export async function startResettingPeer(port = 0): Promise<ResettingPeer> {
  const { createServer: createNetServer } = await import('node:net');
  const connections: number[] = [];
  const server = createNetServer((socket) => {
    connections.push(Date.now());
    socket.on('error', () => undefined);
    socket.resetAndDestroy();
  });
  await new Promise<void>((res, rej) => server.once('error', rej).listen(port, '127.0.0.1', () => res()));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('resetting peer: no address');
  return {
    port: address.port,
    connections,
    stop: () => new Promise<void>((res) => server.close(() => res())),
  };
}
