/**
 * Mirror mode's configuration: distribution's `proxy` section, in any of three forms, turned into one list
 * of remotes.
 *
 * ```yaml
 * # distribution: one remote, the default for every repository
 * proxy: {remoteurl: https://registry-1.docker.io, username: u, password: p, ttl: 168h}
 *
 * # sealer: several remotes; Docker Hub (if listed) is the default, else the first
 * proxy:
 *   remoteregistries:
 *     - {url: https://registry-1.docker.io}
 *     - {url: https://reg.example.com, username: u, password: p}
 *
 * # Cascade: options per remote, local repositories that accept pushes, tag revalidation
 * proxy:
 *   revalidate: 1m
 *   local: [team, ci]
 *   remotes:
 *     - {url: https://registry-1.docker.io, default: true}
 *     - {url: https://ghcr.io, name: ghcr}
 *     - {url: https://registry.internal:5000, username: robot, password: secret, cas: [/etc/cascade/ca.pem]}
 *   region: {redis: redis://redis.example:6379/0}   # several mirrors on one shared folder, as a cache's region
 * ```
 *
 * The forms combine (remoteurl first, then remoteregistries, then remotes). Each key's type is checked by the
 * registry config's schema; {@link mirrorOptionsSchema} checks what holds across keys and remotes (names,
 * hosts, credentials, the default, local prefixes, the CA files, and `proxy.region` with the cache's region
 * schema and `CASCADE_REGION_REDIS`), parsed once into {@link MirrorOptions}. Messages name the exact key.
 */
import { z } from 'zod';
import type { AuthConfig, ProxyConfig, RegistryConfig } from '@cascade/registry-core';
import { fail, keyAt, optionMessages, readCaFiles, type KeyPath } from '../option-schema.js';
import { checkRegionStorage, regionOptionsOf, regionRedisFromEnv, regionSchema, withRegionEnv, type ParseDownstreamSettings, type RegionOptions } from '../options.js';

/** Registry hosts that mean Docker Hub; one-component names there live under `library/`. */
export const DOCKER_HUB_HOSTS = ['docker.io', 'index.docker.io', 'registry-1.docker.io'] as const;

/** How long a tag checked with its remote is served without asking again, unless configured (every request). */
export const DEFAULT_REVALIDATE_MS = 0;

/** One remote registry of a mirror. */
export interface MirrorRemote {
  /** Storage folder and path prefix (`/v2/<name>/...`): `docker.io`, `ghcr.io`, `127.0.0.1-5001`. */
  readonly name: string;
  /** Base URL without trailing slash. */
  readonly url: string;
  /** Lower-case `host[:port]` values that route to this remote by `?ns=` or `domain`: its own host and aliases. */
  readonly hosts: readonly string[];
  readonly username?: string;
  readonly password?: string;
  /** How long a tag is served without asking the remote again, in ms (0: ask on every request). */
  readonly revalidateMs: number;
  /** CA files trusted for this remote's TLS (besides the public roots): `proxy.cas`, then its own. */
  readonly cas: readonly string[];
  /** Content of a remote with credentials may be served to anonymous clients. */
  readonly anonymous: boolean;
  /** Docker Hub: `alpine` means `library/alpine`. */
  readonly dockerHub: boolean;
  /** The config key that defines the remote, for messages (`proxy.remotes[1]`). */
  readonly key: string;
}

/** The validated mirror configuration. */
export interface MirrorOptions {
  readonly remotes: readonly MirrorRemote[];
  /** Where repositories go that name no remote (by `ns`, `domain` or prefix). */
  readonly defaultRemote?: MirrorRemote;
  /** Name prefixes of local repositories, which accept pushes and are never proxied. */
  readonly local: readonly string[];
  /** Blob time to live after the last access, in ms; undefined: never expire. */
  readonly ttlMs?: number;
  /** The mirror authenticates its clients (auth.htpasswd or auth.token, or the server's grants). */
  readonly clientAuth: boolean;
  /** Accept the Cascade server's grants for blob GETs (the mirror is registered as a cache there). */
  readonly grants?: MirrorGrants;
  /** `proxy.region`: the mirrors on this shared folder fill each blob once and share one expiry state. */
  readonly region?: RegionOptions;
}

/** `proxy.grants`: the server whose grants a mirror accepts. */
export interface MirrorGrants {
  /** The server's `grants.issuer`. */
  readonly issuer: string;
  /** The mirror's name as registered at the server (the grants' audience). */
  readonly name: string;
  /** Where the server's keys are: its base URL (`/api/v0/keys` is appended). */
  readonly keys: string;
  readonly cas: readonly string[];
}

/** How {@link parseMirrorOptions} checks the CA files, and the environment it reads (`CASCADE_REGION_REDIS`), as for the cache's options. */
export type ParseMirrorSettings = ParseDownstreamSettings;

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*$/;

/**
 * What the mirror's options are read from: the loaded config's `proxy` section, its `auth` (does the mirror
 * authenticate clients) and its `storage` (a region's nodes share a folder).
 */
export interface MirrorSource {
  readonly auth: AuthConfig;
  readonly proxy: ProxyConfig;
  readonly storage: RegistryConfig['storage'];
}

/**
 * The schema of mirror mode: from the loaded config's `proxy` and `auth` sections to {@link MirrorOptions},
 * with every check across keys and remotes; issues are on the keys they name (`proxy.remotes[1].name`).
 * `settings` say how CA files are checked. Parse with {@link parseMirrorOptions}.
 */
export function mirrorOptionsSchema(settings: ParseMirrorSettings = {}) {
  return z
    .custom<MirrorSource>()
    .transform((source) => draftOf(source, regionRedisFromEnv(settings.env)))
    .superRefine((draft, ctx) => checkMirror(draft, ctx, settings))
    .transform(optionsOf);
}

/** Parses and checks the `proxy` section; `options` is set only when there are no errors (and there is a section). */
export function parseMirrorOptions(config: RegistryConfig, settings: ParseMirrorSettings = {}): { options?: MirrorOptions; errors: string[] } {
  if (config.proxy === undefined) return { errors: [] };
  const result = mirrorOptionsSchema(settings).safeParse({ auth: config.auth, proxy: config.proxy, storage: config.storage });
  return result.success ? { errors: [], options: result.data } : { errors: optionMessages(result.error.issues, '') };
}

/** The config loader's check of the `proxy` section (messages `<key>: expected <what>, got <what>`), CA files included. */
export function validateMirrorConfig(config: RegistryConfig): string[] {
  return parseMirrorOptions(config).errors;
}

/** A remote as written, in any of the forms, and what is made of it: its name, its hosts, its settings. */
interface RemoteDraft {
  /** Where it is written: `proxy` (distribution's form), `proxy.remoteregistries[i]` or `proxy.remotes[i]`. */
  readonly path: KeyPath;
  readonly key: string;
  readonly url: string;
  readonly name: string;
  /** The name is written, not made from the URL. */
  readonly named: boolean;
  readonly hosts: string[];
  readonly dockerHub: boolean;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly revalidateMs: number;
  /** Its own CA files (`proxy.cas` come before them). */
  readonly cas: readonly string[];
  readonly anonymous: boolean;
  readonly isDefault: boolean;
}

interface MirrorDraft {
  readonly proxy: ProxyConfig;
  readonly storage: RegistryConfig['storage'];
  readonly clientAuth: boolean;
  readonly remotes: readonly RemoteDraft[];
  /** `proxy.region` (with `CASCADE_REGION_REDIS` applied) parsed by the cache's region schema; undefined when not set. */
  readonly region?: ReturnType<ReturnType<typeof regionSchema>['safeParse']>;
}

type RemoteAsWritten = NonNullable<ProxyConfig['remotes']>[number] & { path: KeyPath };

/** The remotes of the three forms, in order. */
function draftOf({ auth, proxy, storage }: MirrorSource, envRedis: string | undefined): MirrorDraft {
  const rawRegion = (withRegionEnv(proxy, envRedis) as { region?: unknown }).region;
  const region = rawRegion === undefined || rawRegion === null ? undefined : regionSchema(envRedis !== undefined).safeParse(rawRegion);
  const written: RemoteAsWritten[] = [];
  if (proxy.remoteurl) written.push({ path: ['proxy'], url: proxy.remoteurl, username: proxy.username, password: proxy.password, default: true });
  (proxy.remoteregistries ?? []).forEach((r, i) => written.push({ path: ['proxy', 'remoteregistries', i], url: r.url, username: r.username, password: r.password }));
  (proxy.remotes ?? []).forEach((r, i) => written.push({ ...r, path: ['proxy', 'remotes', i] }));
  return {
    proxy,
    storage,
    ...(region ? { region } : {}),
    clientAuth: Boolean(auth.htpasswd || auth.token || proxy.grants),
    remotes: written.map((r) => {
      const url = new URL(r.url);
      const host = url.host.toLowerCase();
      const aliases = (r.aliases ?? []).map((a) => a.toLowerCase());
      const dockerHub = [url.hostname.toLowerCase(), ...aliases].some((h) => (DOCKER_HUB_HOSTS as readonly string[]).includes(h));
      return {
        path: r.path,
        key: keyAt('', r.path),
        url: r.url,
        name: r.name ?? (dockerHub ? 'docker.io' : host.replace(/:/g, '-')),
        named: r.name !== undefined,
        hosts: [host, ...(dockerHub ? DOCKER_HUB_HOSTS : []), ...aliases].filter((h, i, all) => all.indexOf(h) === i),
        dockerHub,
        username: r.username,
        password: r.password,
        revalidateMs: r.revalidate ?? proxy.revalidate ?? DEFAULT_REVALIDATE_MS,
        cas: r.cas ?? [],
        anonymous: r.anonymous ?? proxy.anonymous ?? false,
        isDefault: r.default ?? false,
      };
    }),
  };
}

/** Everything that must hold across keys and remotes, reported in config order. */
function checkMirror(draft: MirrorDraft, ctx: z.core.$RefinementCtx, settings: ParseMirrorSettings): void {
  const { proxy } = draft;
  if (!proxy.remoteurl && (proxy.username !== undefined || proxy.password !== undefined)) {
    fail(ctx, undefined, 'proxy.remoteurl next to it (the registry these credentials are for)', 'credentials without a remote', { path: ['proxy', 'username'] });
  }
  if (draft.remotes.length === 0) {
    const expected = 'at least one remote (proxy.remoteurl, proxy.remoteregistries or proxy.remotes): a mirror only contacts the registries it is configured for';
    fail(ctx, proxy, expected, `${proxy.on ? 'on: true' : 'a proxy section'} without any`, { path: ['proxy'] });
    return;
  }
  const readCas = (files: readonly string[], path: KeyPath): void => {
    if (settings.checkCaFiles !== false) readCaFiles(ctx, path, files, settings);
  };
  readCas(proxy.grants?.cas ?? [], ['proxy', 'grants', 'cas']);
  const byName = new Map<string, string>();
  const byHost = new Map<string, string>();
  draft.remotes.forEach((r, i) => {
    const at = (k: string): { path: KeyPath } => ({ path: [...r.path, k] });
    if (!COMPONENT.test(r.name)) {
      const got = `${JSON.stringify(r.name)}${r.named ? '' : ' (made from the URL: set name)'}`;
      fail(ctx, r.name, 'a lower-case repository path component ([a-z0-9] separated by ".", "_" or "-")', got, at('name'));
    } else if (byName.has(r.name)) {
      fail(ctx, r.name, 'a name no other remote has', `${JSON.stringify(r.name)} (also ${byName.get(r.name)})`, at('name'));
    } else byName.set(r.name, r.key);
    for (const h of r.hosts) {
      if (byHost.has(h) && byHost.get(h) !== r.key) fail(ctx, h, 'registry hosts no other remote has', `${h} (also ${byHost.get(h)})`, { path: r.path });
      else byHost.set(h, r.key);
    }
    if ((r.username === undefined) !== (r.password === undefined)) {
      const [missing, other] = r.username === undefined ? ['username', 'password'] : ['password', 'username'];
      fail(ctx, undefined, `it next to ${other}`, 'only one of the two', at(missing));
    }
    if (r.username !== undefined && r.password !== undefined && !r.anonymous && !draft.clientAuth) {
      fail(
        ctx,
        undefined,
        `client authentication on this mirror (auth.htpasswd or auth.token) before it serves a remote's private content, or anonymous: true (${r.key}.anonymous) to serve it to anyone who can reach the mirror`,
        'credentials and no auth section (or proxy.grants)',
        at('username'),
      );
    }
    // proxy.cas are every remote's: read with the first.
    if (i === 0) readCas(proxy.cas ?? [], ['proxy', 'cas']);
    readCas(r.cas, [...r.path, 'cas']);
  });
  const defaults = draft.remotes.filter((r) => r.isDefault);
  const [first, second] = defaults;
  if (first && second) fail(ctx, true, 'one default remote', `a second one (the first is ${first.key})`, { path: [...second.path, 'default'] });
  (proxy.local ?? []).forEach((prefix, i) => {
    const p = prefix.replace(/\/+$/, '');
    const path = ['proxy', 'local', i];
    if (!p.split('/').every((c) => COMPONENT.test(c))) {
      fail(ctx, prefix, 'a repository name prefix (lower-case components joined by "/")', JSON.stringify(prefix), { path });
      return;
    }
    const remote = byName.get(p.split('/')[0] as string) ?? byHost.get(p.split('/')[0] as string);
    if (remote !== undefined) fail(ctx, prefix, "a prefix that is not a remote's name", `${JSON.stringify(prefix)} (a name of the remote of ${remote})`, { path });
  });
  if (draft.region) {
    for (const issue of draft.region.error?.issues ?? []) ctx.addIssue({ ...issue, path: ['proxy', 'region', ...issue.path] } as z.core.$ZodRawIssue);
    checkRegionStorage(ctx, 'proxy.region', draft.storage);
  }
}

/** The options of a checked draft. */
function optionsOf(draft: MirrorDraft): MirrorOptions {
  const { proxy } = draft;
  const remotes: MirrorRemote[] = draft.remotes.map((r) => ({
    name: r.name,
    url: r.url.replace(/\/+$/, ''),
    hosts: r.hosts,
    ...(r.username !== undefined && r.password !== undefined ? { username: r.username, password: r.password } : {}),
    revalidateMs: r.revalidateMs,
    cas: [...(proxy.cas ?? []), ...r.cas],
    anonymous: r.anonymous,
    dockerHub: r.dockerHub,
    key: r.key,
  }));
  let defaultRemote = remotes[draft.remotes.findIndex((r) => r.isDefault)];
  // sealer: Docker Hub when listed (`docker pull nginx`), else the first; one remote is always the default.
  if (!defaultRemote && (proxy.remotes ?? []).length === 0) defaultRemote = remotes.find((r) => r.dockerHub) ?? remotes[0];
  if (!defaultRemote && remotes.length === 1) defaultRemote = remotes[0];
  const ttlMs = proxy.ttl > 0 ? proxy.ttl : undefined;
  const grants = proxy.grants ? { issuer: proxy.grants.issuer, name: proxy.grants.name, keys: proxy.grants.keys.replace(/\/+$/, ''), cas: proxy.grants.cas ?? [] } : undefined;
  return {
    remotes,
    ...(defaultRemote ? { defaultRemote } : {}),
    local: (proxy.local ?? []).map((p) => p.replace(/\/+$/, '')),
    ...(ttlMs !== undefined ? { ttlMs } : {}),
    clientAuth: draft.clientAuth,
    ...(grants ? { grants } : {}),
    ...(draft.region?.data ? { region: regionOptionsOf(draft.region.data, draft.storage) } : {}),
  };
}
