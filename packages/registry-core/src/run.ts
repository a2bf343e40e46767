/**
 * Starting a registry from a validated config: storage driver, recovery of interrupted writes, the
 * namespace (optionally wrapped by registry middleware such as the downstream cache), auth, and the
 * listener.
 */
import { randomUUID } from 'node:crypto';
import type { StatsFs } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { Gauge } from 'prom-client';
import type { Logger } from 'pino';
import { allowAll, type Authorizer } from './auth/authorizer.js';
import { HtpasswdAuthenticator } from './auth/htpasswd.js';
import { HtpasswdAuthorizer } from './auth/htpasswd-authorizer.js';
import { createTokenAuth } from './auth/token/setup.js';
import type { RegistryConfig } from './config/index.js';
import { whyHashingOnThread } from './hashing.js';
import { createRegistryApp, type ExtraRoute } from './http/app.js';
import { loadSendfile } from './http/sendfile.js';
import { listen, type RunningServer } from './http/listen.js';
import { createLogger } from './logger.js';
import { NodeObservability } from './metrics.js';
import { Notifier } from './notifications/notifier.js';
import type { Namespace } from './registry.js';
import type { StorageDriver } from './drivers/driver.js';
import { FilesystemDriver } from './drivers/filesystem.js';
import { InMemoryDriver } from './drivers/inmemory.js';
import { StorageNamespace } from './store/namespace.js';
import { CASCADE_DIRS } from './store/paths.js';

/** A namespace that holds resources (timers, connections) to release when the registry stops. */
export interface ClosableNamespace extends Namespace {
  close?(): Promise<void>;
}

/** Wraps the storage namespace, e.g. to serve blobs from upstreams on a miss. */
export type NamespaceMiddleware = (
  inner: StorageNamespace,
  deps: { config: RegistryConfig; logger: Logger; driver: StorageDriver; observability: NodeObservability },
) => ClosableNamespace | Promise<ClosableNamespace>;

/** Options of {@link startRegistry}. */
export interface StartRegistryOptions {
  readonly config: RegistryConfig;
  readonly logger?: Logger;
  /** Endpoints outside `/v2/` added by the role (a cache's `/api/v0/keys`). */
  readonly extraRoutes?: readonly ExtraRoute[];
  /** Registry middleware, applied in order. */
  readonly middleware?: NamespaceMiddleware[];
  /** Overrides the authorizer chosen from `auth` (the server's grants plug in here). */
  readonly authorizer?: Authorizer;
  readonly role?: string;
  /**
   * Other nodes share this node's storage folder (a region of cache nodes): what is the node's own there, its
   * notification queues, is kept under its own name (`<host>:<port>`).
   */
  readonly sharedStorage?: boolean;
}

/** A running registry. */
export interface RunningRegistry extends RunningServer {
  readonly namespace: Namespace;
  /** Its `/metrics` registry and `/ready` checks. */
  readonly observability: NodeObservability;
  readonly driver: StorageDriver;
  readonly logger: Logger;
}

/** The storage driver a config selects. */
export function createDriver(config: RegistryConfig): StorageDriver {
  const storage = config.storage;
  if (storage.filesystem) return new FilesystemDriver({ rootDirectory: storage.filesystem.rootdirectory });
  if (storage.inmemory !== undefined) return new InMemoryDriver();
  throw new Error('storage: no supported driver configured (filesystem or inmemory)');
}

/** What a config's `auth` section sets up: the authorizer, and the endpoints it serves outside `/v2/`. */
export interface RegistryAuth {
  readonly authorizer: Authorizer;
  /** The token endpoint of `auth.token` with `signingkey`; empty otherwise. */
  readonly routes: ExtraRoute[];
}

/**
 * The authorizer (and the token endpoint) a config's `auth` section selects. Reads the files `auth` names
 * (htpasswd, keys, certificates), synchronously.
 *
 * @throws Error naming the key (and file) when a file cannot be used, or when the scheme is not supported.
 */
export function createAuth(config: RegistryConfig, logger?: Logger): RegistryAuth {
  const auth = config.auth;
  if (auth?.htpasswd) {
    const logOptions = logger ? { logger } : {};
    return { authorizer: new HtpasswdAuthorizer(new HtpasswdAuthenticator({ realm: auth.htpasswd.realm, path: auth.htpasswd.path, ...logOptions })), routes: [] };
  }
  if (auth?.token) {
    const token = createTokenAuth(auth.token, logger ? { logger: logger.child({ component: 'token' }) } : {});
    return { authorizer: token.authorizer, routes: token.routes };
  }
  const other = Object.keys(auth ?? {}).filter((k) => k !== 'none');
  if (other.length > 0) throw new Error(`auth.${other[0]}: not supported by this version of Cascade; use auth.htpasswd, auth.token or no auth`);
  return { authorizer: allowAll, routes: [] };
}

/** How old a temporary file on shared storage must be to be taken for a crashed process's leftover. */
const SHARED_LEFTOVER_MS = 10 * 60_000;

/** Starts a registry and resolves once it listens. */
export async function startRegistry(options: StartRegistryOptions): Promise<RunningRegistry> {
  const { config } = options;
  const logger = options.logger ?? createLogger({ level: config.log.level, fields: config.log.fields });
  const driver = createDriver(config);
  // On a region's shared folder, the other nodes' writes in progress are theirs: only old leftovers go.
  await driver.recover(options.sharedStorage ? { olderThanMs: SHARED_LEFTOVER_MS } : {});
  const observability = new NodeObservability(options.role ?? 'registry');
  observeStorage(observability, driver, config.storage.filesystem?.rootdirectory);
  const storageNamespace = new StorageNamespace(driver);
  let namespace: ClosableNamespace = storageNamespace;
  const closers: Array<() => Promise<void>> = [];
  for (const mw of options.middleware ?? []) {
    const wrapped: ClosableNamespace = await mw(storageNamespace, { config, logger, driver, observability });
    if (wrapped.close) closers.push(() => (wrapped.close as () => Promise<void>).call(wrapped));
    namespace = wrapped;
  }
  // A given authorizer replaces the whole `auth` section, token endpoint included, as it always has.
  const auth: RegistryAuth = options.authorizer ? { authorizer: options.authorizer, routes: [] } : createAuth(config, logger);
  // Events a previous run left queued are sent before any new one (each endpoint keeps its order).
  const notifier = await Notifier.start({ config, driver, logger, observability, ...(options.sharedStorage ? { perNode: true } : {}) });
  const sendfile = config.http.sendfile.enabled ? loadSendfile(config.http.sendfile.threads) : 'turned off (http.sendfile.enabled: false)';
  if (typeof sendfile === 'string') logger.info({ reason: sendfile }, 'blob bodies are streamed, not sent with sendfile');
  else logger.info({ threads: sendfile.threads }, 'blob bodies from files are sent with sendfile (plain HTTP)');
  const onThread = whyHashingOnThread();
  if (onThread) logger.warn({ reason: onThread }, 'blob digests are computed on the main thread, not on the thread pool: cold fills are slower');
  const app = createRegistryApp({
    namespace,
    logger,
    authorizer: auth.authorizer,
    extraRoutes: [...auth.routes, ...(options.extraRoutes ?? []), ...observability.routes()],
    observability,
    deleteEnabled: config.storage.delete.enabled,
    headers: config.http.headers ?? {},
    prefix: config.http.prefix ?? '',
    accessLog: !config.log.accesslog?.disabled,
    ...(typeof sendfile === 'string' ? {} : { sendfile }),
    ...(notifier ? { events: notifier } : {}),
  });
  const tls = config.http.tls?.certificate && config.http.tls.key ? { certificate: config.http.tls.certificate, key: config.http.tls.key } : undefined;
  let running: RunningServer;
  try {
    running = await listen(app.callback(), { addr: config.http.addr, net: config.http.net === 'unix' ? 'unix' : 'tcp', ...(tls ? { tls } : {}), role: options.role ?? 'registry' }, logger);
  } catch (err) {
    await notifier?.close();
    throw err;
  }
  const port = URL.canParse(running.url) ? Number(new URL(running.url).port) : 0;
  if (notifier && port > 0) notifier.listeningOn(port);
  return {
    ...running,
    namespace,
    driver,
    logger,
    observability,
    async close(drainMs?: number) {
      await running.close(drainMs);
      // After the last request: every event accepted is on disk before the process exits.
      await notifier?.close();
      for (const close of closers.reverse()) await close();
    },
  };
}


/** Storage readiness (a small write and delete) and, on a filesystem, its capacity and free bytes. */
function observeStorage(observability: NodeObservability, driver: StorageDriver, rootdirectory: string | undefined): void {
  observability.addReadyCheck({
    name: 'storage writable',
    critical: true,
    async check() {
      // A file of its own per check: concurrent probes (several load balancers) must not delete each other's.
      const path = `${CASCADE_DIRS.ready}/${process.pid}-${randomUUID()}`;
      await driver.putContent(path, Buffer.from(String(Date.now())));
      await driver.delete(path);
      return undefined;
    },
  });
  if (rootdirectory === undefined) return;
  // One statfs per scrape serves both gauges: the first collect starts it, the second reuses it.
  let pending: Promise<StatsFs> | undefined;
  const fsStats = () => {
    if (!pending) {
      pending = statfs(rootdirectory);
      const clear = () => (pending = undefined);
      pending.then(() => setImmediate(clear), () => setImmediate(clear));
    }
    return pending;
  };
  new Gauge({
    name: 'cascade_storage_capacity_bytes',
    help: 'Size of the filesystem that holds the storage root directory.',
    registers: [observability.registry],
    async collect() {
      const s = await fsStats().catch(() => undefined);
      if (s) this.set(s.blocks * s.bsize);
    },
  });
  new Gauge({
    name: 'cascade_storage_free_bytes',
    help: 'Bytes available to the registry on the filesystem of the storage root directory.',
    registers: [observability.registry],
    async collect() {
      const s = await fsStats().catch(() => undefined);
      if (s) this.set(s.bavail * s.bsize);
    },
  });
}
