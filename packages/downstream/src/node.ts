/**
 * The roles a registry config can give a node, each set up in one place: a cache node (the `downstream`
 * middleware), a mirror (a `proxy` section) or a plain registry. `cascade registry` and `cascade up` start
 * their nodes through {@link createNode}, and every command loads configs with {@link NODE_CONFIG_OPTIONS}.
 *
 * @example
 * const { config } = loadConfig(file, process.env, NODE_CONFIG_OPTIONS);
 * const running = await startRegistry({ config, logger, ...createNode(config, logger) });
 */
import type { Logger } from 'pino';
import { createAuth, type Authorizer, type ExtraRoute, type LoadConfigOptions, type NamespaceMiddleware, type RegistryConfig } from '@cascade/registry-core';
import { DOWNSTREAM, downstreamMiddleware, downstreamOptionsOf, grantAuthorizationOf } from './middleware.js';
import { validateDownstreamOptions, type DownstreamOptions } from './options.js';
import { mirrorGrantAuthorizer, mirrorMiddleware } from './mirror/middleware.js';
import { mirrorOptionsOf, validateMirrorConfig, type MirrorOptions } from './mirror/options.js';

/** The options every command loads a registry config with: the `downstream` middleware's validator and the mirror's checks. */
export const NODE_CONFIG_OPTIONS: LoadConfigOptions = { middleware: { [DOWNSTREAM]: validateDownstreamOptions }, checks: [validateMirrorConfig] };

/** What a role adds to `startRegistry`'s options: its name, its middleware and, when it has its own, its authorizer and routes. */
export interface NodeRole {
  readonly role: 'registry' | 'cache' | 'mirror';
  readonly middleware: NamespaceMiddleware[];
  /** Replaces the authorizer of the config's `auth` section (a cache's or a mirror's grants). */
  readonly authorizer?: Authorizer;
  /** Endpoints outside `/v2/` (a cache's `/api/v0/keys`, a mirror's token endpoint). */
  readonly extraRoutes?: ExtraRoute[];
}

/** A config that asks for two roles at once. */
export class NodeRoleError extends Error {
  override readonly name: string = 'NodeRoleError';
}

/**
 * The cache node of a config with the `downstream` middleware (undefined without it): the middleware, and in
 * `auth: grant` mode the grant authorizer and the `/api/v0/keys` route.
 */
export function createCacheNode(config: RegistryConfig, logger: Logger): NodeRole | undefined {
  const options = downstreamOptionsOf(config);
  return options && cacheNode(options, logger);
}

/**
 * The mirror of a config with a `proxy` section (undefined without it). With `proxy.grants` (the mirror is
 * registered as a cache at the server) it takes the server's grants for blob GETs and its own `auth` for
 * the rest, whose routes (a token endpoint) it keeps.
 */
export function createMirrorNode(config: RegistryConfig, logger: Logger): NodeRole | undefined {
  const options = mirrorOptionsOf(config);
  return options && mirrorNode(options, config, logger);
}

/**
 * The role of a loaded config: a cache node, a mirror, or a plain registry (no middleware, the config's `auth`).
 * @throws NodeRoleError when the config asks for a cache node and a mirror at once.
 */
export function createNode(config: RegistryConfig, logger: Logger): NodeRole {
  const downstream = downstreamOptionsOf(config);
  const mirror = mirrorOptionsOf(config);
  if (downstream && mirror) {
    throw new NodeRoleError('the config has both a downstream middleware (a cache node) and a proxy section (a mirror): a node is one or the other');
  }
  if (downstream) return cacheNode(downstream, logger);
  if (mirror) return mirrorNode(mirror, config, logger);
  return { role: 'registry', middleware: [] };
}

function cacheNode(options: DownstreamOptions, logger: Logger): NodeRole {
  const grant = options.auth === 'grant' ? grantAuthorizationOf(options, logger) : undefined;
  return { role: 'cache', middleware: [downstreamMiddleware(options)], ...(grant ? { authorizer: grant.authorizer, extraRoutes: grant.routes } : {}) };
}

function mirrorNode(options: MirrorOptions, config: RegistryConfig, logger: Logger): NodeRole {
  const middleware = [mirrorMiddleware(options)];
  if (!options.grants) return { role: 'mirror', middleware };
  const auth = createAuth(config, logger);
  return { role: 'mirror', middleware, authorizer: mirrorGrantAuthorizer(options.grants, auth.authorizer, logger), extraRoutes: auth.routes };
}
