/**
 * The `notifications` section at run time: one {@link Endpoint} per enabled endpoint, each with its queue in
 * `CASCADE_DIRS.events/<name>/` (`CASCADE_DIRS.events/<host>:<port>/<name>/` on a region's shared storage), and
 * the node's metrics of them. It is the {@link EventSink} of every
 * request: an event goes to each endpoint that does not ignore it.
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { Counter, Gauge } from 'prom-client';
import type { Logger } from 'pino';
import type { RegistryConfig } from '../config/index.js';
import type { StorageDriver } from '../drivers/driver.js';
import type { NodeObservability } from '../metrics.js';
import { CASCADE_DIRS } from '../store/paths.js';
import { Endpoint, type postEnvelope } from './endpoint.js';
import type { EventSink, NotificationEvent, SourceRecord } from './event.js';
import { EventQueue } from './queue.js';

/**
 * The folder of an endpoint's queue: its name, with anything but `[A-Za-z0-9._-]` escaped as `%XX`; below the
 * node's own folder when the storage is shared (`perNode`).
 */
export function queueDirectory(name: string, node?: string): string {
  return node === undefined ? `${CASCADE_DIRS.events}/${pathSegment(name)}` : `${CASCADE_DIRS.events}/${pathSegment(node)}/${pathSegment(name)}`;
}

/** A name as one path segment: letters, digits, `_`, `-` and `.` kept (not `.` or `..` alone), the rest %-escaped. */
function pathSegment(name: string): string {
  return Array.from(Buffer.from(name, 'utf8'))
    .map((b) => (/[A-Za-z0-9_-]/.test(String.fromCharCode(b)) || (b === 0x2e && name !== '.' && name !== '..') ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`))
    .join('');
}

/** Options of {@link Notifier.start}. */
export interface NotifierOptions {
  readonly config: RegistryConfig;
  readonly driver: StorageDriver;
  readonly logger: Logger;
  readonly observability: NodeObservability;
  /** Replaces the HTTP POST (tests). */
  readonly post?: typeof postEnvelope;
  /**
   * The storage folder is shared with other nodes (a region): each node keeps its queues in a folder of its
   * own, named as `source.addr` (`<host>:<port>`), so that no two processes append to one queue.
   */
  readonly perNode?: boolean;
}

/** See the module comment. */
export class Notifier implements EventSink {
  readonly includeReferences: boolean;
  readonly relativeUrls: boolean;
  readonly baseUrl?: string;
  readonly endpoints: readonly Endpoint[];
  #source: SourceRecord;
  readonly #log: Logger;

  private constructor(config: RegistryConfig, endpoints: Endpoint[], logger: Logger) {
    this.includeReferences = config.notifications.events.includereferences;
    this.relativeUrls = config.http.relativeurls;
    if (config.http.host) this.baseUrl = config.http.host;
    this.endpoints = endpoints;
    this.#log = logger;
    // distribution: the host name and the configured port; the instance id changes with every start.
    const port = /:(\d+)$/.exec(config.http.addr)?.[1];
    this.#source = { addr: port ? `${hostname()}:${port}` : config.http.addr, instanceID: randomUUID() };
  }

  /**
   * The notifier of a config, its queues opened (events a previous run left are sent first), or undefined
   * when no endpoint is enabled.
   */
  static async start(options: NotifierOptions): Promise<Notifier | undefined> {
    const { config, driver, observability } = options;
    const log = options.logger.child({ component: 'notifications' });
    const enabled = config.notifications.endpoints.filter((e) => {
      if (e.disabled) log.info({ endpoint: e.name }, 'notification endpoint disabled, skipping');
      return !e.disabled;
    });
    if (enabled.length === 0) return undefined;
    const registers = [observability.registry];
    const events = new Counter({
      name: 'cascade_notifications_events_total',
      help: 'Notification events by endpoint and result: queued, sent (accepted by the endpoint), failed (per attempt that failed), dropped (queue bound reached, or unreadable on disk).',
      labelNames: ['endpoint', 'result'],
      registers,
    });
    const endpoints: Endpoint[] = [];
    for (const c of enabled) {
      const queue = await EventQueue.open({
        driver,
        dir: queueDirectory(c.name, options.perNode ? nodeName(config) : undefined),
        limit: c.queuelimit,
        listener: {
          dropped: (count, reason) => {
            events.labels(c.name, 'dropped').inc(count);
            log.warn({ endpoint: c.name, count, reason }, reason === 'limit' ? 'notification queue full: oldest events dropped' : 'unreadable notification events skipped');
          },
        },
      });
      const endpoint = new Endpoint({
        config: c,
        queue,
        logger: log,
        metrics: {
          queued: (n) => events.labels(c.name, 'queued').inc(n),
          sent: (n) => events.labels(c.name, 'sent').inc(n),
          failed: (n) => events.labels(c.name, 'failed').inc(n),
        },
        ...(options.post ? { post: options.post } : {}),
      });
      for (const result of ['queued', 'sent', 'failed', 'dropped']) events.labels(c.name, result).inc(0);
      // The URL's path and query may hold a secret; headers are never logged.
      log.info({ endpoint: c.name, url: new URL(c.url).origin, timeout: c.timeout, threshold: c.threshold, backoff: c.backoff, pending: queue.pending }, 'configuring notification endpoint');
      endpoints.push(endpoint);
    }
    new Gauge({
      name: 'cascade_notifications_pending',
      help: 'Notification events queued for an endpoint and not yet accepted by it.',
      labelNames: ['endpoint'],
      registers,
      collect() {
        for (const e of endpoints) this.labels(e.name).set(e.queue.pending);
      },
    });
    const notifier = new Notifier(config, endpoints, log);
    for (const e of endpoints) e.start();
    return notifier;
  }

  get source(): SourceRecord {
    return this.#source;
  }

  /** With `http.addr` port 0, the port the listener got. */
  listeningOn(port: number): void {
    if (this.#source.addr?.endsWith(':0')) this.#source = { ...this.#source, addr: `${hostname()}:${port}` };
  }

  write(event: NotificationEvent): Promise<void> {
    const json = JSON.stringify(event);
    const writes: Promise<void>[] = [];
    for (const e of this.endpoints) if (!e.ignores(event)) writes.push(e.enqueue(json));
    return Promise.all(writes).then(
      () => undefined,
      (err: unknown) => {
        this.#log.error({ err: { message: err instanceof Error ? err.message : String(err) } }, 'notification events not yet on disk; kept in memory and written again');
        throw err;
      },
    );
  }

  /** Stops the senders and writes every accepted event to disk (SIGTERM loses none). */
  async close(): Promise<void> {
    await Promise.all(this.endpoints.map((e) => e.close()));
  }
}

/**
 * This node's name among the nodes of a shared storage folder: `<host>:<port>`, stable across restarts (a
 * restarted node sends what its previous run left); with a port chosen at start (`:0`), the process id too.
 */
function nodeName(config: RegistryConfig): string {
  const port = /:(\d+)$/.exec(config.http.addr)?.[1];
  return port && port !== '0' ? `${hostname()}:${port}` : `${hostname()}-${process.pid}`;
}
