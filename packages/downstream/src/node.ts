/**
 * The roles a registry config can give a node, each set up in one place: a cache node (the `downstream`
 * middleware), a mirror (a `proxy` section) or a plain registry. A command loads a node's config with
 * {@link loadNodeConfig} (or {@link parseNodeConfig}), which validates it and parses the role's options once,
 * CA files included, and starts the node through {@link createNode}.
 *
 * @example
 * const node = loadNodeConfig(file, process.env);
 * const running = await startRegistry({ config: node.config, logger, ...createNode(node, logger) });
 */
import type { Logger } from 'pino';
import {
  createAuth,
  loadConfig,
  parseConfig,
  type Authorizer,
  type ExtraRoute,
  type LoadConfigOptions,
  type LoadedConfig,
  type NamespaceMiddleware,
  type RegistryConfig,
} from '@cascade/registry-core';
import { CaStore } from './ca-trust.js';
import { DOWNSTREAM, downstreamMiddleware, grantAuthorizationOf } from './middleware.js';
import { parseDownstreamOptions, type CaFileSettings, type DownstreamOptions, type ParseDownstreamSettings } from './options.js';
import { mirrorGrantAuthorizer, mirrorMiddleware } from './mirror/middleware.js';
import { CacheWarmTarget, warmRoute } from './warm.js';
import { parseMirrorOptions, type MirrorOptions } from './mirror/options.js';

/** A node's config, loaded: the registry config, its warnings, and the options of its role, parsed once. */
export interface NodeConfig extends LoadedConfig {
  /** The options of the (first enabled) `downstream` entry of `middleware.registry`: the node is a cache node. */
  readonly cache?: DownstreamOptions;
  /** The options of the `proxy` section: the node is a mirror. */
  readonly mirror?: MirrorOptions;
  /** The certificates of the CA files the options name, read while the config was loaded. */
  readonly cas: CaStore;
}

/**
 * Reads and validates a node's config file as the registry-core loader does (`REGISTRY_*` overrides
 * included), with the `downstream` middleware's options and the mirror's `proxy` checks; each is parsed once,
 * and the CA files are read once.
 * @throws ConfigError listing every problem.
 */
export function loadNodeConfig(file: string, env: NodeJS.ProcessEnv = process.env, settings: CaFileSettings = {}): NodeConfig {
  return loadNode((options) => loadConfig(file, env, options), { ...settings, env });
}

/** {@link loadNodeConfig} from text; `file` is only used in messages. */
export function parseNodeConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env, settings: CaFileSettings = {}): NodeConfig {
  return loadNode((options) => parseConfig(text, file, env, options), { ...settings, env });
}

/**
 * The loader's validators keep what they parse: a `downstream` entry's options by key, the mirror's options,
 * and the certificates of the CA files, so that nothing is parsed or read twice.
 */
function loadNode(load: (options: LoadConfigOptions) => LoadedConfig, settings: ParseDownstreamSettings): NodeConfig {
  const withStore = { ...settings, cas: settings.cas ?? new CaStore() };
  const caches = new Map<string, DownstreamOptions>();
  let mirror: MirrorOptions | undefined;
  const { config, warnings } = load({
    middleware: {
      [DOWNSTREAM]: (raw, key, config) => {
        const { options, errors } = parseDownstreamOptions(raw, key, config, withStore);
        if (options) caches.set(key, options);
        return errors;
      },
    },
    checks: [
      (config) => {
        const parsed = parseMirrorOptions(config, withStore);
        mirror = parsed.options;
        return parsed.errors;
      },
    ],
  });
  const index = config.middleware.registry.findIndex((m) => m.name === DOWNSTREAM && !m.disabled);
  const cache = index < 0 ? undefined : caches.get(`middleware.registry[${index}].options`);
  return { config, warnings, ...(cache ? { cache } : {}), ...(mirror ? { mirror } : {}), cas: withStore.cas };
}

/** What a role adds to `startRegistry`'s options: its name, its middleware and, when it has its own, its authorizer and routes. */
export interface NodeRole {
  readonly role: 'registry' | 'cache' | 'mirror';
  readonly middleware: NamespaceMiddleware[];
  /** Replaces the authorizer of the config's `auth` section (a cache's or a mirror's grants). */
  readonly authorizer?: Authorizer;
  /** Endpoints outside `/v2/` (a cache's `/api/v0/keys`, a mirror's token endpoint). */
  readonly extraRoutes?: ExtraRoute[];
  /** The storage folder is shared with the other nodes of a region (see `StartRegistryOptions.sharedStorage`). */
  readonly sharedStorage?: boolean;
}

/** A config that asks for two roles at once. */
export class NodeRoleError extends Error {
  override readonly name: string = 'NodeRoleError';
}

/**
 * A cache node with `options`: the middleware, and in `auth: grant` mode the grant authorizer, the
 * `/api/v0/keys` route and the warm route (`POST /api/v0/warm`, the server's warm on push). `cas` holds the
 * CA files' certificates (those not in it are read here, once).
 */
export function createCacheNode(options: DownstreamOptions, logger: Logger, cas: CaStore = new CaStore()): NodeRole {
  const shared = options.region ? { sharedStorage: true } : {};
  if (options.auth !== 'grant') return { role: 'cache', middleware: [downstreamMiddleware(options, cas)], ...shared };
  const grant = grantAuthorizationOf(options, logger, cas);
  const warm = new CacheWarmTarget();
  return { role: 'cache', middleware: [downstreamMiddleware(options, cas, warm)], authorizer: grant.authorizer, extraRoutes: [...grant.routes, warmRoute(warm, grant.verifier)], ...shared };
}

/**
 * A mirror with `options`. With `proxy.grants` (the mirror is registered as a cache at the server) it takes
 * the server's grants for blob GETs and the `auth` section of `config` for the rest, whose routes (a token
 * endpoint) it keeps. `cas` holds the CA files' certificates (those not in it are read here, once).
 */
export function createMirrorNode(options: MirrorOptions, config: RegistryConfig, logger: Logger, cas: CaStore = new CaStore()): NodeRole {
  const middleware = [mirrorMiddleware(options, { cas })];
  // In a region the folder is shared: per-node notification queues, and a start-up that leaves others' files alone.
  const shared = options.region ? { sharedStorage: true } : {};
  if (!options.grants) return { role: 'mirror', middleware, ...shared };
  const auth = createAuth(config, logger);
  return { role: 'mirror', middleware, authorizer: mirrorGrantAuthorizer(options.grants, auth.authorizer, logger, cas), extraRoutes: auth.routes, ...shared };
}

/**
 * The role of a loaded config: a cache node, a mirror, or a plain registry (no middleware, the config's `auth`).
 * @throws NodeRoleError when the config asks for a cache node and a mirror at once.
 */
export function createNode(node: NodeConfig, logger: Logger): NodeRole {
  if (node.cache && node.mirror) {
    throw new NodeRoleError('the config has both a downstream middleware (a cache node) and a proxy section (a mirror): a node is one or the other');
  }
  if (node.cache) return createCacheNode(node.cache, logger, node.cas);
  if (node.mirror) return createMirrorNode(node.mirror, node.config, logger, node.cas);
  return { role: 'registry', middleware: [] };
}
