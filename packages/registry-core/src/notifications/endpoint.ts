/**
 * One notification endpoint: its filter (distribution's `ignoredSink`), its durable queue, and the sender
 * that POSTs envelopes to it in order (distribution's `httpSink` behind its `retryingSink`):
 *
 * - an envelope is `{"events":[...]}` with Content-Type `application/vnd.docker.distribution.events.v1+json`,
 *   the configured headers added; any 2xx or 3xx answer accepts it (redirects are not followed: only the
 *   configured URL is contacted), anything else, a connection error or no answer within `timeout` fails it;
 * - a failed envelope is sent again at once until `threshold` failures in a row, then once per `backoff`,
 *   for as long as it takes; the events behind it wait (order is kept), on disk;
 * - the answer's body is never read: a hostile endpoint costs at most `timeout` per attempt.
 *
 * An outage is logged when it starts and when it ends, not per attempt; headers are never logged.
 */
import http from 'node:http';
import https from 'node:https';
import type { Logger } from 'pino';
import type { EndpointConfig } from '../config/index.js';
import { EVENTS_MEDIA_TYPE, type NotificationEvent } from './event.js';
import type { EventQueue, QueueBatch } from './queue.js';
import { pause } from '../async.js';

/** distribution's defaults for a zero or absent `timeout`, `threshold`, `backoff`. */
export const ENDPOINT_DEFAULTS = { timeoutMs: 1000, threshold: 10, backoffMs: 1000 } as const;

/** What an endpoint reports, for the node's metrics. */
export interface EndpointMetrics {
  queued(count: number): void;
  sent(count: number): void;
  failed(count: number): void;
}

/** The outcome of one POST. */
export type PostResult = { ok: true; status: number } | { ok: false; status?: number; error?: string };

/**
 * POSTs `body` to `url` with `headers` (names to lists of values, as Go's `http.Header`), on a fresh
 * connection; `signal` abandons it. Never rejects.
 */
export function postEnvelope(url: URL, body: Buffer, headers: Record<string, string[]>, timeoutMs: number, signal?: AbortSignal): Promise<PostResult> {
  return new Promise<PostResult>((resolve) => {
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    let abandon = (): void => undefined;
    const finish = (r: PostResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', abandon);
      resolve(r);
    };
    const outgoing: Record<string, string | string[]> = { 'content-type': EVENTS_MEDIA_TYPE, 'content-length': String(body.length) };
    for (const [name, values] of Object.entries(headers)) {
      const key = name.toLowerCase();
      if (key === 'content-length' || key === 'host' || key === 'connection' || key === 'transfer-encoding') continue;
      const prior = outgoing[key];
      outgoing[key] = prior === undefined ? [...values] : [...(Array.isArray(prior) ? prior : [prior]), ...values];
    }
    let req: http.ClientRequest;
    try {
      req = (url.protocol === 'https:' ? https : http).request(url, { method: 'POST', headers: outgoing, agent: false });
    } catch (err) {
      finish({ ok: false, error: err instanceof Error ? err.message : String(err) });
      return;
    }
    timer = setTimeout(() => {
      finish({ ok: false, error: `no answer within ${timeoutMs} ms` });
      req.destroy();
    }, timeoutMs);
    abandon = () => {
      finish({ ok: false, error: 'stopped' });
      req.destroy();
    };
    signal?.addEventListener('abort', abandon, { once: true });
    req.on('error', (err) => finish({ ok: false, error: err.message }));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      // The body is not wanted: whatever its size or pace, the connection goes now.
      res.on('error', () => undefined);
      res.destroy();
      req.destroy();
      finish(status >= 200 && status < 400 ? { ok: true, status } : { ok: false, status });
    });
    req.end(body);
  });
}

/** Options of {@link Endpoint}. */
export interface EndpointOptions {
  readonly config: EndpointConfig;
  readonly queue: EventQueue;
  readonly logger: Logger;
  readonly metrics: EndpointMetrics;
  /** Replaces {@link postEnvelope} (tests). */
  readonly post?: typeof postEnvelope;
}

/** One configured, enabled endpoint (see the module comment). */
export class Endpoint {
  readonly name: string;
  readonly queue: EventQueue;
  readonly #url: URL;
  readonly #headers: Record<string, string[]>;
  readonly #timeoutMs: number;
  readonly #threshold: number;
  readonly #backoffMs: number;
  readonly #batchSize: number;
  readonly #ignoredMediaTypes: ReadonlySet<string>;
  readonly #ignoredActions: ReadonlySet<string>;
  readonly #log: Logger;
  readonly #metrics: EndpointMetrics;
  readonly #post: typeof postEnvelope;
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;

  constructor(options: EndpointOptions) {
    const c = options.config;
    this.name = c.name;
    this.queue = options.queue;
    this.#url = new URL(c.url);
    this.#headers = c.headers;
    this.#timeoutMs = c.timeout || ENDPOINT_DEFAULTS.timeoutMs;
    this.#threshold = c.threshold || ENDPOINT_DEFAULTS.threshold;
    this.#backoffMs = c.backoff || ENDPOINT_DEFAULTS.backoffMs;
    this.#batchSize = c.batchsize;
    this.#ignoredMediaTypes = new Set([...c.ignore.mediatypes, ...c.ignoredmediatypes]);
    this.#ignoredActions = new Set(c.ignore.actions);
    this.#log = options.logger;
    this.#metrics = options.metrics;
    this.#post = options.post ?? postEnvelope;
  }

  /** True when the endpoint's ignore rules (media types, then actions) drop `event`. */
  ignores(event: NotificationEvent): boolean {
    return (event.target.mediaType !== undefined && this.#ignoredMediaTypes.has(event.target.mediaType)) || this.#ignoredActions.has(event.action);
  }

  /** Queues `json` (an event this endpoint does not ignore); resolves once it is durable. */
  enqueue(json: string): Promise<void> {
    this.#metrics.queued(1);
    return this.queue.append(json);
  }

  /** Starts sending. */
  start(): void {
    this.#loop ??= this.#run().catch((err: unknown) => {
      this.#log.error({ err: { message: err instanceof Error ? err.message : String(err) } }, 'notification sender stopped on an error; events stay queued until restart');
    });
  }

  /** Stops sending (an envelope in flight is abandoned, and sent again after restart), then closes the queue. */
  async close(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
    await this.queue.close();
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    let failures = 0;
    let outageStart = 0;
    let attempts = 0;
    while (!signal.aborted) {
      const batch = await this.queue.next(this.#batchSize, signal);
      if (!batch) return;
      const result = await this.#send(batch, signal);
      if (result.ok) {
        await this.queue.ack(batch);
        this.#metrics.sent(batch.lines.length);
        if (failures > 0 || attempts > 0) {
          this.#log.info({ endpoint: this.name, status: result.status, failedAttempts: attempts, outageMs: Date.now() - outageStart, pending: this.queue.pending }, 'notification endpoint accepts events again');
        }
        failures = 0;
        attempts = 0;
        continue;
      }
      if (signal.aborted) return;
      this.#metrics.failed(batch.lines.length);
      if (attempts === 0) {
        outageStart = Date.now();
        this.#log.warn(
          { endpoint: this.name, url: this.#url.origin + this.#url.pathname, ...(result.status ? { status: result.status } : {}), ...(result.error ? { error: result.error } : {}), pending: this.queue.pending },
          'notification endpoint failing: events are kept on disk and sent again until it accepts them',
        );
      }
      attempts++;
      failures++;
      // distribution's circuit breaker: at once until `threshold` failures in a row, then once per `backoff`.
      if (failures >= this.#threshold) await pause(this.#backoffMs, signal);
    }
  }

  #send(batch: QueueBatch, signal: AbortSignal): Promise<PostResult> {
    return this.#post(this.#url, Buffer.from(`{"events":[${batch.lines.join(',')}]}`), this.#headers, this.#timeoutMs, signal);
  }
}

