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
 * ```
 *
 * The forms combine (remoteurl first, then remoteregistries, then remotes). Messages name the exact key.
 */
import type { RegistryConfig } from '@cascade/registry-core';
import { validateCaFiles } from '../ca-trust.js';

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
  /** CA files trusted for this remote's TLS (besides the public roots). */
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

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*$/;

/**
 * The mirror options of a config, or undefined when it has no `proxy` section.
 * @throws Error listing every problem (the config loader reports the same through {@link validateMirrorConfig}).
 */
export function mirrorOptionsOf(config: RegistryConfig): MirrorOptions | undefined {
  const { options, errors } = parseMirrorOptions(config);
  if (errors.length > 0) throw new Error(errors.join('\n'));
  return options;
}

/** The config loader's check of the `proxy` section (messages `<key>: expected <what>, got <what>`). */
export function validateMirrorConfig(config: RegistryConfig): string[] {
  return parseMirrorOptions(config).errors;
}

interface RawRemote {
  url: string;
  name?: string | undefined;
  aliases?: readonly string[] | undefined;
  username?: string | undefined;
  password?: string | undefined;
  revalidate?: number | undefined;
  cas?: readonly string[] | undefined;
  anonymous?: boolean | undefined;
  default?: boolean | undefined;
  key: string;
}

/** Parses and checks the `proxy` section; `options` is set only when there are no errors. */
export function parseMirrorOptions(config: RegistryConfig): { options?: MirrorOptions; errors: string[] } {
  const proxy = config.proxy;
  if (proxy === undefined) return { errors: [] };
  const errors: string[] = [];
  const raw: RawRemote[] = [];
  if (proxy.remoteurl) {
    raw.push({ url: proxy.remoteurl, username: proxy.username, password: proxy.password, key: 'proxy', default: true });
  } else if (proxy.username !== undefined || proxy.password !== undefined) {
    errors.push('proxy.username: expected proxy.remoteurl next to it (the registry these credentials are for), got credentials without a remote');
  }
  (proxy.remoteregistries ?? []).forEach((r, i) => raw.push({ url: r.url, username: r.username, password: r.password, key: `proxy.remoteregistries[${i}]` }));
  (proxy.remotes ?? []).forEach((r, i) => raw.push({ ...r, key: `proxy.remotes[${i}]` }));
  if (raw.length === 0) {
    errors.push(
      `proxy: expected at least one remote (proxy.remoteurl, proxy.remoteregistries or proxy.remotes): a mirror only contacts the registries it is configured for, got ${proxy.on ? 'on: true' : 'a proxy section'} without any`,
    );
    return { errors };
  }
  const clientAuth = Boolean(config.auth?.htpasswd || config.auth?.token || proxy.grants);
  if (proxy.grants) errors.push(...validateCaFiles(proxy.grants.cas ?? [], 'proxy.grants.cas'));
  const revalidateAll = proxy.revalidate ?? DEFAULT_REVALIDATE_MS;
  const remotes: MirrorRemote[] = [];
  const byName = new Map<string, string>();
  const byHost = new Map<string, string>();
  for (const r of raw) {
    const url = new URL(r.url);
    const host = url.host.toLowerCase();
    const dockerHub = (DOCKER_HUB_HOSTS as readonly string[]).includes(url.hostname.toLowerCase()) || (r.aliases ?? []).some((a) => (DOCKER_HUB_HOSTS as readonly string[]).includes(a.toLowerCase()));
    const name = r.name ?? (dockerHub ? 'docker.io' : host.replace(/:/g, '-'));
    if (!COMPONENT.test(name)) {
      errors.push(`${r.key}.name: expected a lower-case repository path component ([a-z0-9] separated by ".", "_" or "-"), got ${JSON.stringify(name)}${r.name === undefined ? ' (made from the URL: set name)' : ''}`);
    } else if (byName.has(name)) {
      errors.push(`${r.key}.name: expected a name no other remote has, got ${JSON.stringify(name)} (also ${byName.get(name)})`);
    } else byName.set(name, r.key);
    const hosts = [host, ...(dockerHub ? DOCKER_HUB_HOSTS : []), ...(r.aliases ?? []).map((a) => a.toLowerCase())].filter((h, i, all) => all.indexOf(h) === i);
    for (const h of hosts) {
      if (byHost.has(h) && byHost.get(h) !== r.key) errors.push(`${r.key}: expected registry hosts no other remote has, got ${h} (also ${byHost.get(h)})`);
      else byHost.set(h, r.key);
    }
    if ((r.username === undefined) !== (r.password === undefined)) {
      errors.push(`${r.key}.${r.username === undefined ? 'username' : 'password'}: expected it next to ${r.username === undefined ? 'password' : 'username'}, got only one of the two`);
    }
    const hasCredentials = r.username !== undefined && r.password !== undefined;
    const anonymous = r.anonymous ?? proxy.anonymous ?? false;
    if (hasCredentials && !anonymous && !clientAuth) {
      errors.push(
        `${r.key}.username: expected client authentication on this mirror (auth.htpasswd or auth.token) before it serves a remote's private content, or anonymous: true (${r.key === 'proxy' ? 'proxy.anonymous' : `${r.key}.anonymous`}) to serve it to anyone who can reach the mirror, got credentials and no auth section (or proxy.grants)`,
      );
    }
    const cas = [...(proxy.cas ?? []), ...(r.cas ?? [])];
    errors.push(...validateCaFiles(proxy.cas ?? [], 'proxy.cas'), ...validateCaFiles(r.cas ?? [], `${r.key}.cas`));
    remotes.push({
      name,
      url: r.url.replace(/\/+$/, ''),
      hosts,
      ...(hasCredentials ? { username: r.username as string, password: r.password as string } : {}),
      revalidateMs: r.revalidate ?? revalidateAll,
      cas,
      anonymous,
      dockerHub,
      key: r.key,
    });
  }
  const defaults = raw.map((r, i) => ({ r, remote: remotes[i] as MirrorRemote })).filter(({ r }) => r.default);
  if (defaults.length > 1) errors.push(`${defaults[1]?.r.key}.default: expected one default remote, got a second one (the first is ${defaults[0]?.r.key})`);
  let defaultRemote = defaults[0]?.remote;
  // sealer: Docker Hub when listed (`docker pull nginx`), else the first; one remote is always the default.
  if (!defaultRemote && (proxy.remotes ?? []).length === 0) defaultRemote = remotes.find((r) => r.dockerHub) ?? remotes[0];
  if (!defaultRemote && remotes.length === 1) defaultRemote = remotes[0];
  const local: string[] = [];
  (proxy.local ?? []).forEach((prefix, i) => {
    const p = prefix.replace(/\/+$/, '');
    if (!p.split('/').every((c) => COMPONENT.test(c))) {
      errors.push(`proxy.local[${i}]: expected a repository name prefix (lower-case components joined by "/"), got ${JSON.stringify(prefix)}`);
      return;
    }
    const first = p.split('/')[0] as string;
    if (byName.has(first) || byHost.has(first)) {
      errors.push(`proxy.local[${i}]: expected a prefix that is not a remote's name, got ${JSON.stringify(prefix)} (a name of the remote of ${byName.get(first) ?? byHost.get(first)})`);
      return;
    }
    local.push(p);
  });
  if (errors.length > 0) return { errors };
  const ttlMs = proxy.ttl > 0 ? proxy.ttl : undefined;
  const grants = proxy.grants ? { issuer: proxy.grants.issuer, name: proxy.grants.name, keys: proxy.grants.keys.replace(/\/+$/, ''), cas: proxy.grants.cas ?? [] } : undefined;
  return { options: { remotes, ...(defaultRemote ? { defaultRemote } : {}), local, ...(ttlMs !== undefined ? { ttlMs } : {}), clientAuth, ...(grants ? { grants } : {}) }, errors };
}
