/**
 * The upstreams of a cache node: `upstreamhosts` tried in round-robin order, `originhost` last, with
 * failover on connection errors, timeouts and 5xx, and a memory of dead hosts so that a host that just
 * failed is skipped for a while and retried later.
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { rootCertificates } from 'node:tls';
import { Readable } from 'node:stream';
import got, { type Got } from 'got';
import type { Logger } from 'pino';
import { RegistryError, type Digest, type ErrorCode } from '@cascade/registry-core';
import { type ChunkSource, chunksStream, DirectClient, streamChunks } from './upstream-direct.js';

/** One upstream host. */
export interface UpstreamHost {
  /** Base URL without trailing slash, e.g. `https://cache-a.example:5000`. */
  readonly url: string;
  /** `origin` is tried last. */
  readonly role: 'upstream' | 'origin';
}

/** Options of {@link UpstreamPool}. */
export interface UpstreamPoolOptions {
  readonly upstreamhosts: readonly string[];
  readonly originhost?: string;
  /** PEM CA certificates trusted for upstream TLS, in addition to Node's public root certificates. */
  readonly ca?: readonly string[];
  readonly logger: Logger;
  /** Connect timeout (default 5 s). */
  readonly connectTimeoutMs?: number;
  /** Time to response headers (default 30 s). */
  readonly responseTimeoutMs?: number;
  /** Longest silence on an open connection before the fetch fails (default 30 s). */
  readonly idleTimeoutMs?: number;
  /** How long a failed host is skipped (default 10 s, doubling per consecutive failure up to 5 min). */
  readonly deadForMs?: number;
  readonly now?: () => number;
  /** Authenticates the requests (a mirror's credentials for its remote); none: headers are sent as given. */
  readonly auth?: UpstreamAuth;
  /** Sees every request's time to the response headers (or to the failure), for metrics. */
  readonly onResult?: (host: UpstreamHost, outcome: 'ok' | 'error', seconds: number) => void;
}

/**
 * Credentials for the upstream requests of a pool: headers to add to each request, and what to do with a
 * 401 challenge (fetch a token, then the request is sent once more).
 */
export interface UpstreamAuth {
  /** Headers (Authorization) for `request` to `host`; empty when none are known yet. Never logged. */
  headers(request: UpstreamRequest, host: UpstreamHost): Promise<Record<string, string>>;
  /**
   * Called with the `WWW-Authenticate` of a 401; resolves true when the request should be sent again with
   * new {@link headers}, false when the 401 is final.
   * @throws RegistryError when the credentials cannot be obtained (token endpoint down, realm refused).
   */
  challenge(challenge: string | undefined, request: UpstreamRequest, host: UpstreamHost, sent: Readonly<Record<string, string>>): Promise<boolean>;
}

/** An upstream's successful answer to a blob request. */
export interface UpstreamBlobResponse {
  readonly host: UpstreamHost;
  readonly status: number;
  /** Total blob size when known (Content-Length of a 200, or the total of Content-Range of a 206). */
  readonly size: number | undefined;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The body; empty for HEAD. Destroy it to abort. */
  readonly body: Readable;
  /**
   * The body in the receiver's own buffers, for a `direct` request that took the direct path; reading
   * `body` instead copies the bytes out.
   */
  readonly chunks?: ChunkSource;
}

/** The body of `response` as chunks: the direct path's own, or the stream's. */
export function chunksOf(response: UpstreamBlobResponse): ChunkSource {
  return response.chunks ?? streamChunks(response.body);
}

/** The head of an upstream's answer, whichever client read it. */
interface Answer {
  readonly statusCode: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** A request to the upstreams. */
export interface UpstreamRequest {
  readonly method: 'GET' | 'HEAD';
  /** Path below the host, e.g. `/v2/team/app/blobs/sha256:...`. */
  readonly path: string;
  /** Headers to send (the client's Authorization, Range, Accept). Never logged. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
  /**
   * A blob GET whose body is read into reused buffers (see upstream-direct.ts): the answer's `chunks` give
   * the body; a fill sets it. Answers the direct path cannot read (redirects, chunked bodies) are fetched
   * again through the general client.
   */
  readonly direct?: boolean;
}

interface Health {
  /** Consecutive failures (reset by a success). */
  failures: number;
  /** Every failure since the start. */
  errors: number;
  deadUntil: number;
  lastError?: string;
}

/** Counters of one upstream host, for metrics. */
export interface UpstreamStats {
  readonly url: string;
  readonly role: 'upstream' | 'origin';
  readonly requests: number;
  /** Consecutive failures now. */
  readonly failures: number;
  /** Failures since the start. */
  readonly errors: number;
  readonly down: boolean;
  readonly lastError?: string;
}

const UNAUTHORIZED_STATUSES: Record<number, ErrorCode> = { 401: 'UNAUTHORIZED', 403: 'DENIED' };

/** The upstreams of one cache node. */
export class UpstreamPool {
  readonly hosts: readonly UpstreamHost[];
  private readonly health = new Map<string, Health>();
  private readonly requests = new Map<string, number>();
  private readonly clients = new Map<string, Got>();
  private readonly loggers = new Map<string, Logger>();
  private readonly agents: { http: HttpAgent; https: HttpsAgent };
  private readonly direct: DirectClient;
  private cursor = 0;
  private readonly now: () => number;

  constructor(private readonly options: UpstreamPoolOptions) {
    const upstreams: UpstreamHost[] = options.upstreamhosts.map((u) => ({ url: trimSlash(u), role: 'upstream' }));
    const origin: UpstreamHost[] = options.originhost ? [{ url: trimSlash(options.originhost), role: 'origin' }] : [];
    this.hosts = [...upstreams, ...origin];
    if (this.hosts.length === 0) throw new Error('downstream: no upstream host configured');
    this.now = options.now ?? Date.now;
    // Node's `ca` option replaces the public roots; DTR's `cas` adds the upstreams' CAs to them.
    const ca = options.ca && options.ca.length > 0 ? [...rootCertificates, ...options.ca] : undefined;
    const agentOptions = { keepAlive: true, maxSockets: 64, maxFreeSockets: 16, scheduling: 'lifo' as const };
    this.agents = { http: new HttpAgent(agentOptions), https: new HttpsAgent({ ...agentOptions, ...(ca ? { ca } : {}) }) };
    this.direct = new DirectClient({
      ...(ca ? { ca } : {}),
      connectTimeoutMs: options.connectTimeoutMs ?? 5000,
      responseTimeoutMs: options.responseTimeoutMs ?? 30_000,
      idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
    });
    for (const host of this.hosts) {
      const log = options.logger.child({ upstream: host.url, role: host.role });
      this.loggers.set(host.url, log);
      this.health.set(host.url, { failures: 0, errors: 0, deadUntil: 0 });
      this.requests.set(host.url, 0);
      this.clients.set(
        host.url,
        got.extend({
          prefixUrl: host.url,
          retry: { limit: 0 },
          throwHttpErrors: false,
          decompress: false,
          followRedirect: true,
          timeout: {
            connect: options.connectTimeoutMs ?? 5000,
            secureConnect: options.connectTimeoutMs ?? 5000,
            response: options.responseTimeoutMs ?? 30_000,
            socket: options.idleTimeoutMs ?? 30_000,
          },
          agent: this.agents,
          ...(ca ? { https: { certificateAuthority: ca } } : {}),
          hooks: {
            beforeRedirect: [
              (opts) => {
                const to = new URL(String(opts.url));
                const from = new URL(host.url);
                log.debug({ to: redactUrl(to.toString()) }, 'upstream redirect');
                // An https upstream may not send a fill to plain http (the bytes are checked, but the
                // credentials and grant would travel in clear text).
                if (from.protocol === 'https:' && to.protocol !== 'https:') throw new Error(`upstream ${host.url} redirected to ${to.protocol} (refused: https only)`);
                // Credentials are for the configured host only: got drops Authorization for another host, but
                // not for another scheme on the same host, nor the server's grant header.
                if (to.origin !== from.origin) {
                  delete opts.headers.authorization;
                  delete opts.headers['x-cascade-grant'];
                }
              },
            ],
          },
        }),
      );
    }
  }

  /**
   * The order to try hosts for the next request: the `upstreamhosts` rotated by one per call
   * (round-robin), live hosts before dead ones, and the origin last.
   */
  nextOrder(): UpstreamHost[] {
    const upstreams = this.hosts.filter((h) => h.role === 'upstream');
    const origin = this.hosts.filter((h) => h.role === 'origin');
    const start = upstreams.length === 0 ? 0 : this.cursor++ % upstreams.length;
    const rotated = [...upstreams.slice(start), ...upstreams.slice(0, start)];
    const now = this.now();
    const alive = (h: UpstreamHost) => (this.health.get(h.url)?.deadUntil ?? 0) <= now;
    return [...rotated.filter(alive), ...origin.filter(alive), ...rotated.filter((h) => !alive(h)), ...origin.filter((h) => !alive(h))];
  }

  /**
   * Sends `request` to the upstreams in {@link nextOrder}, failing over on connection errors, timeouts and
   * 5xx. 404 is final (BLOB_UNKNOWN / MANIFEST_UNKNOWN by `notFound`); 401 and 403 are final and relayed
   * with the upstream's `WWW-Authenticate`.
   * @throws RegistryError UNAVAILABLE (502) naming every host's failure when none could answer.
   */
  async fetch(request: UpstreamRequest, notFound: ErrorCode = 'BLOB_UNKNOWN'): Promise<UpstreamBlobResponse> {
    const failures: string[] = [];
    for (const host of this.nextOrder()) {
      if (request.signal?.aborted) throw new RegistryError('UNAVAILABLE', 'request aborted');
      const log = this.loggers.get(host.url) as Logger;
      const started = this.now();
      this.requests.set(host.url, (this.requests.get(host.url) ?? 0) + 1);
      let response: Answer;
      let body: Readable;
      let chunks: ChunkSource | undefined;
      try {
        let sent: Record<string, string>;
        ({ response, body, chunks, sent } = await this.send(host, request));
        const auth = this.options.auth;
        if (response.statusCode === 401 && auth) {
          const challenge = response.headers['www-authenticate'];
          body.resume();
          if (await auth.challenge(typeof challenge === 'string' ? challenge : undefined, request, host, sent)) {
            ({ response, body, chunks } = await this.send(host, request));
          }
        }
      } catch (err) {
        if (err instanceof RegistryError) throw err;
        // An abort is the fill giving up, not the host failing: no failover, no mark.
        if (request.signal?.aborted) throw new RegistryError('UNAVAILABLE', 'request aborted');
        const reason = describeError(err);
        this.options.onResult?.(host, 'error', (this.now() - started) / 1000);
        this.markFailed(host, reason);
        log.warn({ path: request.path, method: request.method, reason, duration: this.now() - started }, 'upstream request failed');
        failures.push(`${host.url}: ${reason}`);
        continue;
      }
      const status = response.statusCode;
      this.options.onResult?.(host, status >= 500 || status === 429 ? 'error' : 'ok', (this.now() - started) / 1000);
      log.info({ path: request.path, method: request.method, status, duration: this.now() - started }, 'upstream request');
      if (status === 508) {
        // The upstream saw this request come back to it (a mirror that is its own remote): not a failure to fail over from.
        body.resume();
        throw new RegistryError('REQUEST_LOOP', `request loop: ${host.url} received a request it had sent itself (508); check the mirror's remotes`);
      }
      if (status >= 500 || status === 429) {
        body.destroy();
        this.markFailed(host, `HTTP ${status}`);
        failures.push(`${host.url}: HTTP ${status}`);
        continue;
      }
      this.markHealthy(host);
      if (status === 200 || status === 206) {
        return { host, status, size: sizeOf(response), headers: response.headers, body, ...(chunks ? { chunks } : {}) };
      }
      body.resume();
      if (status === 404) throw new RegistryError(notFound, `not found upstream (${host.url})`);
      const authCode = UNAUTHORIZED_STATUSES[status];
      if (authCode) {
        const challenge = response.headers['www-authenticate'];
        throw new RegistryError(authCode, `upstream ${host.url} answered ${status}`, {
          headers: typeof challenge === 'string' ? { 'WWW-Authenticate': challenge } : {},
        });
      }
      if (status === 416) throw new RegistryError('RANGE_INVALID', `upstream ${host.url} cannot satisfy the range`);
      throw new RegistryError('UPSTREAM_FAILED', `upstream ${host.url} answered ${status}`);
    }
    throw new RegistryError('UPSTREAM_FAILED', `no upstream could answer: ${failures.join('; ')}`);
  }

  /** Records that a host failed after a response had started (a stream cut, wrong bytes). */
  markFailed(host: UpstreamHost, reason: string): void {
    const h = this.health.get(host.url);
    if (!h) return;
    h.failures += 1;
    h.errors += 1;
    h.lastError = reason;
    const base = this.options.deadForMs ?? 10_000;
    const wasAlive = h.deadUntil <= this.now();
    h.deadUntil = this.now() + Math.min(base * 2 ** (h.failures - 1), 300_000);
    if (wasAlive) this.loggers.get(host.url)?.warn({ reason, retryInMs: h.deadUntil - this.now() }, 'upstream marked down');
  }

  private markHealthy(host: UpstreamHost): void {
    const h = this.health.get(host.url);
    if (!h) return;
    if (h.failures > 0) this.loggers.get(host.url)?.info({}, 'upstream healthy again');
    h.failures = 0;
    h.deadUntil = 0;
  }

  /** Per-host counters. */
  stats(): UpstreamStats[] {
    const now = this.now();
    return this.hosts.map((host) => {
      const h = this.health.get(host.url) as Health;
      return {
        url: host.url,
        role: host.role,
        requests: this.requests.get(host.url) ?? 0,
        failures: h.failures,
        errors: h.errors,
        down: h.deadUntil > now,
        ...(h.lastError ? { lastError: h.lastError } : {}),
      };
    });
  }

  /**
   * Asks every host for `/v2/` (a registry answers 200, or 401 without credentials): whether it is
   * reachable now, and in how long. For `/ready` and `cascade doctor`; does not change the dead-host memory.
   */
  async probe(timeoutMs = 2000): Promise<{ url: string; ok: boolean; ms: number; detail?: string }[]> {
    return Promise.all(
      this.hosts.map(async (host) => {
        const started = this.now();
        try {
          const res = await (this.clients.get(host.url) as Got).get('v2/', { timeout: { request: timeoutMs }, headers: { 'user-agent': 'cascade-probe' } });
          const ok = res.statusCode === 200 || res.statusCode === 401;
          return { url: host.url, ok, ms: this.now() - started, ...(ok ? {} : { detail: `HTTP ${res.statusCode} on /v2/` }) };
        } catch (err) {
          return { url: host.url, ok: false, ms: this.now() - started, detail: describeError(err) };
        }
      }),
    );
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
    this.direct.close();
  }

  private async send(host: UpstreamHost, request: UpstreamRequest): Promise<{ response: Answer; body: Readable; chunks?: ChunkSource; sent: Record<string, string> }> {
    const client = this.clients.get(host.url) as Got;
    const auth = this.options.auth ? await this.options.auth.headers(request, host) : {};
    if (request.direct && request.method === 'GET') {
      const headers = { ...(request.headers ?? {}), ...auth };
      const answer = await this.direct.get(host.url, request.path, headers, request.signal);
      if (answer.kind === 'body') return { response: { statusCode: answer.status, headers: answer.headers }, body: chunksStream(answer.chunks), chunks: answer.chunks, sent: auth };
      if (answer.kind === 'status') return { response: { statusCode: answer.status, headers: answer.headers }, body: Readable.from([]), sent: auth };
      this.loggers.get(host.url)?.debug({ path: request.path, reason: answer.reason }, 'blob answer not readable directly: asking again through the general client');
    }
    const stream = client.stream(request.path.replace(/^\//, ''), {
      method: request.method,
      headers: { 'user-agent': 'cascade-downstream', ...(request.headers ?? {}), ...auth },
      ...(request.signal ? { signal: request.signal } : {}),
    });
    return new Promise((resolve, reject) => {
      let responded = false;
      // The listener stays for the stream's whole life: an upstream that cuts the body after the headers
      // makes got emit 'error' at once, maybe before the caller reads the body (while a fill opens its file)
      // or after it stopped listening (a body it resumed or destroyed), and an 'error' event nobody listens to
      // ends the process. Consumers still see the error: the stream is destroyed with it, so reading it
      // (async iteration, pipeline) rejects.
      stream.on('error', (err: Error) => {
        if (!responded) reject(err);
      });
      stream.once('response', (response: Answer) => {
        responded = true;
        resolve({ response, body: stream, sent: auth });
      });
    });
  }
}

function sizeOf(response: Answer): number | undefined {
  if (response.statusCode === 206) {
    const m = /\/(\d+)$/.exec(String(response.headers['content-range'] ?? ''));
    return m ? Number(m[1]) : undefined;
  }
  const len = response.headers['content-length'];
  return len === undefined ? undefined : Number(len);
}

/** A one-line reason for a failed upstream request, naming TLS problems plainly. */
export function describeError(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e.code ?? e.cause?.code;
  const message = e.message ?? String(err);
  if (code && /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|HOSTNAME|ALTNAME/i.test(code)) {
    return `TLS: ${message} (${code}); check the cas of the downstream middleware and the upstream certificate's names`;
  }
  if (code === 'ETIMEDOUT') return `timeout: ${message}`;
  return code ? `${code}: ${message}` : message;
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.search = '';
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return '[url]';
  }
}

/** The path of a blob on a registry. */
export function blobPath(name: string, digest: Digest): string {
  return `/v2/${name}/blobs/${digest.toString()}`;
}
