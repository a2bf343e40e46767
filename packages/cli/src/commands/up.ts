/**
 * `cascade up`: the whole DTR-style stack on localhost from embedded defaults, in one process:
 *
 *     origin registry (htpasswd)  <-  server  <-  region-a cache  <-  region-b cache
 *     remote registries           <-  mirror                          (with --mirror URL)
 *
 * with a ready-made admin and user (passwords generated on the first run and kept in the state
 * directory), the caches registered through the server's API and the user's cache set to region-b, so a
 * pull by the user is redirected to region-b, which fills from region-a, which fills from the server.
 * `--mirror URL` (repeatable) adds a pull-through mirror of those registries. Each node is assembled where
 * its role is: the server by `createServer`, the registries by `createNode`, from config files written to
 * the state directory. Logs go to `<dir>/logs/<node>.log`; the terminal shows a banner with where each node
 * listens and the commands to push and pull with skopeo.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import bcrypt from 'bcryptjs';
import { pino, type Logger } from 'pino';
import { stringify } from 'yaml';
import { createLogger, startRegistry, type RunningRegistry } from '@cascade/registry-core';
import { createNode, parseNodeConfig } from '@cascade/downstream';
import { createServer, parseServerConfig, type RunningCascadeServer } from '@cascade/server';

/** A mistake in the command line: one line, exit 64. */
export class UpUsageError extends Error {}

const USAGE = `Usage: cascade up [--dir DIR] [--port PORT] [--mirror URL]...

Runs the whole stack on 127.0.0.1: the server on PORT (default 5000), the origin registry on PORT+1, the
region-a cache on PORT+2 and the region-b cache on PORT+3. State (storage, keys, database, logs and the
generated passwords) goes to DIR (default ./cascade-up); a second run reuses it. Stop with Ctrl-C.

  --mirror URL   Also run a pull-through mirror of the registry at URL (such as
                 https://registry-1.docker.io) on PORT+4; repeat it for more registries (the first is
                 the default, the others are reached by their host as a path prefix; docs/mirror.md)
`;

/** Options of {@link startStack}. */
export interface UpOptions {
  readonly dir: string;
  /** The server's port; the others follow it. */
  readonly port: number;
  /** The remote registries of a mirror node on `port + 4` (none: no mirror). The first is the default. */
  readonly mirror?: readonly string[];
  /** Where logs go (default: one file per node under `<dir>/logs`). */
  readonly logger?: (node: string) => Logger;
}

/** The accounts of the stack. */
export interface UpCredentials {
  readonly admin: string;
  readonly user: string;
  /** The server's service account at the origin (fills for caches). */
  readonly service: string;
  /** The secret the origin's notifications carry to the server's `/api/v0/events` (warm on push). */
  readonly events: string;
}

/** A running stack. */
export interface RunningStack {
  readonly dir: string;
  readonly urls: { readonly server: string; readonly origin: string; readonly regionA: string; readonly regionB: string; readonly mirror?: string };
  /** The mirror's remote registries (empty without a mirror). */
  readonly mirrored: readonly string[];
  readonly passwords: UpCredentials;
  close(): Promise<void>;
}

const ISSUER = 'cascade-up';

/** Parses `cascade up` arguments. */
export function parseUpArgs(args: readonly string[]): { dir: string; port: number; mirror: string[] } | 'help' {
  let dir = 'cascade-up';
  let port = 5000;
  let portText: string | undefined;
  const mirror: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new UpUsageError(`${arg} needs a value; run "cascade up --help"`);
      return v;
    };
    if (arg === '--help' || arg === '-h') return 'help';
    else if (arg === '--dir') dir = value();
    else if (arg === '--port') {
      portText = value();
      port = Number(portText);
    } else if (arg === '--mirror') mirror.push(remoteUrl(value()));
    else throw new UpUsageError(`unknown option ${JSON.stringify(arg)} for "cascade up"; run "cascade up --help"`);
  }
  const ports = portsOf(mirror);
  if (portText !== undefined && (!/^\d+$/.test(portText) || port < 1 || port > 65536 - ports)) {
    throw new UpUsageError(`--port expects a port from 1 to ${65536 - ports} (${ports === 4 ? 'four' : 'five'} consecutive ports are used), got ${JSON.stringify(portText)}`);
  }
  return { dir: resolve(dir), port, mirror };
}

/** How many consecutive ports the stack takes: four, and one more for a mirror. */
function portsOf(mirror: readonly string[] | undefined): number {
  return mirror && mirror.length > 0 ? 5 : 4;
}

/** A `--mirror` value: an http(s) URL of a registry. */
function remoteUrl(value: string): string {
  const url = URL.canParse(value) ? new URL(value) : undefined;
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new UpUsageError(`--mirror expects the http:// or https:// URL of a registry, such as https://registry-1.docker.io, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** `cascade up`: starts the stack, prints the banner, and keeps running until a signal. */
export async function runUp(args: string[]): Promise<number | undefined> {
  const parsed = parseUpArgs(args);
  if (parsed === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const stack = await startStack(parsed);
  process.stdout.write(banner(stack));
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n${signal}: stopping the stack\n`);
    void stack.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return undefined;
}

/** Starts origin, server, the two caches and the mirror if asked for, registers the caches and picks region-b for the user. */
export async function startStack(options: UpOptions): Promise<RunningStack> {
  const { dir, port } = options;
  const mirrored = options.mirror ?? [];
  await mkdir(join(dir, 'logs'), { recursive: true });
  const passwords = await credentials(dir);
  const htpasswd = join(dir, 'origin', 'htpasswd');
  await mkdir(join(dir, 'origin'), { recursive: true });
  await writeFile(htpasswd, Object.entries(passwords).map(([user, pw]) => `${user}:${bcrypt.hashSync(pw, 10)}\n`).join(''), { mode: 0o600 });
  const loggerFor = options.logger ?? ((node: string) => createLogger({ level: 'info', fields: { node }, destination: pino.destination({ dest: join(dir, 'logs', `${node}.log`), mkdir: true, sync: false }) }));
  const url = (p: number) => `http://127.0.0.1:${p}`;
  const urls = { server: url(port), origin: url(port + 1), regionA: url(port + 2), regionB: url(port + 3), ...(mirrored.length > 0 ? { mirror: url(port + 4) } : {}) };
  const running: Array<{ close(): Promise<void> }> = [];
  const close = async () => {
    for (const r of running.reverse()) await r.close().catch(() => undefined);
  };
  try {
    running.push(
      await registry(dir, 'origin', loggerFor('origin'), {
        storage: { filesystem: { rootdirectory: join(dir, 'origin', 'data') }, delete: { enabled: true } },
        http: { addr: `127.0.0.1:${port + 1}` },
        auth: { htpasswd: { realm: 'cascade-up origin', path: htpasswd } },
        // Pushes reach the server's events endpoint, which warms the caches its warm rules name.
        notifications: {
          endpoints: [{ name: 'cascade-server', url: `${urls.server}/api/v0/events`, headers: { Authorization: [`Bearer ${passwords.events}`] }, timeout: '5s', threshold: 3, backoff: '2s' }],
        },
      }),
    );
    // Written out like the registries' config files (mode 0600: it holds the service account's password),
    // so that `cascade doctor` can check the server as it checks the caches.
    const serverFile = join(dir, 'server', 'server.yml');
    const serverText = stringify({
      http: { addr: `127.0.0.1:${port}` },
      origin: { url: urls.origin, username: 'service', password: passwords.service },
      grants: { keysdir: join(dir, 'server', 'keys'), issuer: ISSUER },
      database: { sqlite: join(dir, 'server', 'state.db') },
      admins: ['admin'],
      healthcheck: { interval: '5s' },
      events: { tokens: [passwords.events] },
    });
    await mkdir(join(dir, 'server'), { recursive: true });
    await writeFile(serverFile, serverText, { mode: 0o600 });
    const serverConfig = parseServerConfig(serverText, serverFile, {});
    const server: RunningCascadeServer = await createServer({ config: serverConfig, logger: loggerFor('server') });
    running.push(server);
    const cache = (name: string, p: number, upstream: Record<string, unknown>, downstreams: string[]) => ({
      storage: { filesystem: { rootdirectory: join(dir, name, 'data') }, delete: { enabled: true } },
      http: { addr: `127.0.0.1:${p}` },
      middleware: { registry: [{ name: 'downstream', options: { ...upstream, auth: 'grant', name, issuer: ISSUER, downstreams, blobttl: '168h' } }] },
    });
    running.push(await registry(dir, 'region-a', loggerFor('region-a'), cache('region-a', port + 2, { originhost: urls.server }, ['region-b'])));
    running.push(await registry(dir, 'region-b', loggerFor('region-b'), cache('region-b', port + 3, { upstreams: [{ originhost: urls.server, upstreamhosts: [urls.regionA] }] }, [])));
    if (mirrored.length > 0) {
      running.push(
        await registry(dir, 'mirror', loggerFor('mirror'), {
          storage: { filesystem: { rootdirectory: join(dir, 'mirror', 'data') }, delete: { enabled: true } },
          http: { addr: `127.0.0.1:${port + 4}` },
          proxy: { remotes: mirrored.map((remote, i) => ({ url: remote, ...(i === 0 ? { default: true } : {}) })) },
        }),
      );
    }
    await registerCaches(urls, passwords.admin, passwords.user);
    return { dir, urls, mirrored, passwords, close };
  } catch (err) {
    await close();
    const last = port + portsOf(mirrored) - 1;
    if ((err as { code?: string }).code === 'EADDRINUSE') throw new UpUsageError(`a port from ${port} to ${last} is in use: stop what listens there or pick others with --port`);
    throw err;
  }
}

/**
 * Starts one node from a config object, loaded as `cascade registry` loads a config file and in the role it
 * gives (a plain registry, a cache node or a mirror).
 */
async function registry(dir: string, node: string, logger: Logger, config: Record<string, unknown>): Promise<RunningRegistry> {
  const file = join(dir, node, 'config.yml');
  await mkdir(join(dir, node), { recursive: true });
  const text = stringify({ version: '0.1', log: { level: 'info' }, ...config });
  await writeFile(file, text);
  const loaded = parseNodeConfig(text, file, {});
  return startRegistry({ config: loaded.config, logger, ...createNode(loaded, logger) });
}

/** The accounts' passwords: generated on the first run, kept in `<dir>/credentials.json` (mode 0600). */
async function credentials(dir: string): Promise<UpCredentials> {
  const file = join(dir, 'credentials.json');
  let saved: Partial<UpCredentials> = {};
  try {
    saved = (JSON.parse(await readFile(file, 'utf8')) as Partial<UpCredentials> | null) ?? {};
  } catch {
    // first run
  }
  const make = () => randomBytes(9).toString('base64url');
  // A stack made before the events secret existed keeps its passwords and gains the secret.
  if (saved.admin && saved.user && saved.service && saved.events) return { admin: saved.admin, user: saved.user, service: saved.service, events: saved.events };
  const created = { admin: saved.admin ?? make(), user: saved.user ?? make(), service: saved.service ?? make(), events: saved.events ?? randomBytes(24).toString('base64url') };
  await writeFile(file, `${JSON.stringify(created, null, 2)}\n`, { mode: 0o600 });
  return created;
}

/** Registers region-a and region-b through the server's API (idempotent) and gives `user` region-b. */
async function registerCaches(urls: RunningStack['urls'], adminPassword: string, userPassword: string): Promise<void> {
  const auth = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;
  const api = async (method: string, path: string, user: string, pw: string, body?: unknown) => {
    const res = await fetch(`${urls.server}/api/v0${path}`, {
      method,
      headers: { authorization: auth(user, pw), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, json: text ? (JSON.parse(text) as unknown) : undefined };
  };
  const listed = await api('GET', '/content_caches', 'admin', adminPassword);
  if (listed.status !== 200) throw new Error(`the server's API answered ${listed.status} to the admin: ${JSON.stringify(listed.json)}`);
  const existing = listed.json as { id: string; name: string; host: string }[];
  const ids: Record<string, string> = {};
  for (const [name, host] of [
    ['region-a', urls.regionA],
    ['region-b', urls.regionB],
  ] as const) {
    const found = existing.find((c) => c.name === name);
    if (found && found.host === host) {
      ids[name] = found.id;
      continue;
    }
    if (found) await api('DELETE', `/content_caches/${found.id}`, 'admin', adminPassword);
    const created = await api('POST', '/content_caches', 'admin', adminPassword, { name, host });
    if (created.status !== 201) throw new Error(`registering ${name} failed: ${created.status} ${JSON.stringify(created.json)}`);
    ids[name] = (created.json as { id: string }).id;
  }
  const picked = await api('PATCH', '/accounts/user/settings', 'user', userPassword, { contentCacheUUID: ids['region-b'] });
  if (picked.status !== 200) throw new Error(`setting the user's cache failed: ${picked.status} ${JSON.stringify(picked.json)}`);
}

/** What the terminal shows once the stack is up. */
export function banner(stack: RunningStack): string {
  const { urls, passwords, dir } = stack;
  const host = new URL(urls.server).host;
  const mirror = urls.mirror ? `  mirror    ${urls.mirror}   pull-through mirror of ${stack.mirrored.join(', ')}\n` : '';
  const mirrorPull = urls.mirror
    ? `
Pull through the mirror (repositories of ${stack.mirrored[0]}; another remote's by its host as a prefix):
  skopeo copy --src-tls-verify=false docker://${new URL(urls.mirror).host}/REPOSITORY:TAG oci:./mirrored:TAG
`
    : '';
  return `
Cascade is up (state and logs in ${dir})

  server    ${urls.server}   <- push and pull here (manifests from the origin, blobs redirected to your cache)
  origin    ${urls.origin}   the origin registry (htpasswd)
  region-a  ${urls.regionA}   cache, fills from the server
  region-b  ${urls.regionB}   cache, fills from region-a; the cache of "user"
${mirror}
  accounts  admin:${passwords.admin}   (admin of the server's API; pushes)
            user:${passwords.user}    (pulls; its cache is region-b)

Push an image (any skopeo source works: docker-archive:, oci:, dir:, docker://):
  skopeo copy --dest-creds admin:${passwords.admin} --dest-tls-verify=false oci:./my-image:v1 docker://${host}/team/app:v1

Pull it as the user (blobs come from region-b):
  skopeo copy --src-creds user:${passwords.user} --src-tls-verify=false docker://${host}/team/app:v1 oci:./pulled:v1
${mirrorPull}
The caches:    curl -u admin:${passwords.admin} ${urls.server}/api/v0/content_caches
Metrics:       curl ${urls.regionB}/metrics
Logs:          tail -f ${join(dir, 'logs')}/*.log
Check a node:  npx cascade doctor ${join(dir, 'server', 'server.yml')}   (or region-a/config.yml, region-b/config.yml${urls.mirror ? ', mirror/config.yml' : ''})
Stop:          Ctrl-C

ready
`;
}
