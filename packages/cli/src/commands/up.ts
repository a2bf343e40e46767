/**
 * `cascade up`: the whole DTR-style stack on localhost from embedded defaults, in one process:
 *
 *     origin registry (htpasswd)  <-  server  <-  region-a cache  <-  region-b cache
 *     remote registries           <-  mirror                          (with --mirror URL)
 *
 * with a ready-made admin and user (passwords generated on the first run and kept in the state
 * directory), the caches registered through the server's API and the user's cache set to region-b, so a
 * pull by the user is redirected to region-b, which fills from region-a, which fills from the server.
 * `--mirror URL` (repeatable) adds a pull-through mirror of those registries. `--region N` makes region-b a
 * region of N cache nodes on one storage folder (docs/operations.md): each node a `cascade registry` child
 * process, coordinated through a redis-server this command starts, behind a small round-robin balancer
 * (balancer.ts) on region-b's port, the one address the server knows. Each node is assembled where
 * its role is: the server by `createServer`, the registries by `createNode`, from config files written to
 * the state directory. Logs go to `<dir>/logs/<node>.log`; the terminal shows a banner with where each node
 * listens and the commands to push and pull with skopeo.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, createWriteStream } from 'node:fs';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { delimiter, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import bcrypt from 'bcryptjs';
import { pino, type Logger } from 'pino';
import { stringify } from 'yaml';
import { createLogger, startRegistry, type RunningRegistry } from '@cascade/registry-core';
import { createNode, parseNodeConfig } from '@cascade/downstream';
import { createServer, parseServerConfig, type RunningCascadeServer } from '@cascade/server';
import { startBalancer } from './balancer.js';

/** A mistake in the command line: one line, exit 64. */
export class UpUsageError extends Error {}

const USAGE = `Usage: cascade up [--dir DIR] [--port PORT] [--mirror URL]... [--region N]

Runs the whole stack on 127.0.0.1: the server on PORT (default 5000), the origin registry on PORT+1, the
region-a cache on PORT+2 and the region-b cache on PORT+3. State (storage, keys, database, logs and the
generated passwords) goes to DIR (default ./cascade-up); a second run reuses it. Stop with Ctrl-C.

  --mirror URL   Also run a pull-through mirror of the registry at URL (such as
                 https://registry-1.docker.io) on PORT+4; repeat it for more registries (the first is
                 the default, the others are reached by their host as a path prefix; docs/mirror.md)
  --region N     Make region-b a region of N cache nodes (2 to ${'$'}{MAX_REGION_NODES}) on one storage folder,
                 coordinated through Redis: the nodes listen on PORT+5 to PORT+4+N, a redis-server
                 (started here; install Debian's redis-server) on PORT+5+N, and a round-robin balancer
                 on PORT+3 stands for region-b (docs/operations.md)
`;

/** The most nodes `--region` starts. */
export const MAX_REGION_NODES = 9;

/** Options of {@link startStack}. */
export interface UpOptions {
  readonly dir: string;
  /** The server's port; the others follow it. */
  readonly port: number;
  /** The remote registries of a mirror node on `port + 4` (none: no mirror). The first is the default. */
  readonly mirror?: readonly string[];
  /** region-b as a region of this many nodes (absent: one node). */
  readonly region?: number;
  /** Where logs go (default: one file per node under `<dir>/logs`). */
  readonly logger?: (node: string) => Logger;
}

/** A node of region-b's region, a `cascade registry` child process. */
export interface RegionNode {
  readonly name: string;
  readonly url: string;
  readonly pid: number;
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
  /** With `--region`: region-b's nodes and its Redis (region-b's URL is then the balancer's). */
  readonly region?: { readonly nodes: readonly RegionNode[]; readonly redis: string };
  close(): Promise<void>;
}

const ISSUER = 'cascade-up';

/** Parses `cascade up` arguments. */
export function parseUpArgs(args: readonly string[]): { dir: string; port: number; mirror: string[]; region?: number } | 'help' {
  let dir = 'cascade-up';
  let port = 5000;
  let portText: string | undefined;
  let region: number | undefined;
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
    else if (arg === '--region') {
      const text = value();
      region = Number(text);
      if (!/^\d+$/.test(text) || region < 2 || region > MAX_REGION_NODES) throw new UpUsageError(`--region expects a number of nodes from 2 to ${MAX_REGION_NODES}, got ${JSON.stringify(text)}`);
    } else throw new UpUsageError(`unknown option ${JSON.stringify(arg)} for "cascade up"; run "cascade up --help"`);
  }
  const ports = portsOf(mirror, region);
  if (portText !== undefined && (!/^\d+$/.test(portText) || port < 1 || port > 65536 - ports)) {
    const words: Record<number, string> = { 4: 'four', 5: 'five' };
    throw new UpUsageError(`--port expects a port from 1 to ${65536 - ports} (${words[ports] ?? ports} consecutive ports are used), got ${JSON.stringify(portText)}`);
  }
  return { dir: resolve(dir), port, mirror, ...(region === undefined ? {} : { region }) };
}

/**
 * How many consecutive ports the stack takes: four, and one more for a mirror; a region of N nodes takes
 * PORT+4 (the mirror's, used or not) to PORT+5+N: its nodes and its Redis.
 */
function portsOf(mirror: readonly string[] | undefined, region?: number): number {
  if (region !== undefined) return 6 + region;
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
    const regionB = (p: number) => cache('region-b', p, { upstreams: [{ originhost: urls.server, upstreamhosts: [urls.regionA] }] }, []);
    let region: RunningStack['region'];
    if (options.region === undefined) running.push(await registry(dir, 'region-b', loggerFor('region-b'), regionB(port + 3)));
    else {
      const started = await startRegion({ dir, name: 'region-b', count: options.region, firstPort: port + 5, redisPort: port + 5 + options.region, balancerPort: port + 3, config: regionB, logger: loggerFor('region-b') });
      running.push(started);
      region = { nodes: started.nodes, redis: started.redis };
    }
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
    return { dir, urls, mirrored, passwords, ...(region ? { region } : {}), close };
  } catch (err) {
    await close();
    const last = port + portsOf(mirrored, options.region) - 1;
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

/** The `cascade` script, which runs each node of a region as a `cascade registry` child process. */
const CASCADE_BIN = fileURLToPath(new URL('../../../bin/cascade.js', import.meta.url));

/** What {@link startRegion} starts. */
interface RegionOptions {
  readonly dir: string;
  /** The cache's name (the nodes' `name` option and the prefix of their own names: region-b-1...). */
  readonly name: string;
  readonly count: number;
  /** Node i (from 0) listens on firstPort + i. */
  readonly firstPort: number;
  readonly redisPort: number;
  /** The balancer, on the address the server registers for the region. */
  readonly balancerPort: number;
  /** A node's config, given its port; `region` is added to its downstream options. */
  readonly config: (port: number) => Record<string, unknown>;
  /** The balancer's log (nodes skipped, nodes that exit). */
  readonly logger: Logger;
}

/**
 * A region: redis-server, `count` nodes on one storage folder (`<dir>/<name>/data`), each a `cascade
 * registry <dir>/<name>-<i>/config.yml` child process logging to `<dir>/logs/<name>-<i>.log`, and the
 * balancer in front. close() stops the balancer, then the nodes, then Redis.
 */
async function startRegion(o: RegionOptions): Promise<{ nodes: RegionNode[]; redis: string; close(): Promise<void> }> {
  const redisServer = await onPath('redis-server');
  if (!redisServer) throw new UpUsageError("--region needs redis-server, which is not on PATH: install Debian's redis-server (sudo apt-get install redis-server), or put a redis-server binary on PATH");
  const stops: Array<() => Promise<void>> = [];
  const close = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  };
  try {
    const redisDir = join(o.dir, o.name, 'redis');
    await mkdir(redisDir, { recursive: true });
    // Coordination state only (fills in flight, live nodes, expiry): nothing to keep across runs.
    const redis = await startChild('redis', redisServer, ['--bind', '127.0.0.1', '--port', String(o.redisPort), '--dir', redisDir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--protected-mode', 'yes'], join(o.dir, 'logs', 'redis.log'), {
      ready: () => ping(o.redisPort),
      inUse: /Address already in use/,
    });
    stops.push(redis.stop);
    const redisUrl = `redis://127.0.0.1:${o.redisPort}`;
    const storage = join(o.dir, o.name, 'data');
    const nodes: RegionNode[] = [];
    // Without the user's CASCADE_REGION_REDIS, which would override the Redis written in the configs.
    const env = { ...process.env };
    delete env['CASCADE_REGION_REDIS'];
    for (let i = 0; i < o.count; i++) {
      const node = `${o.name}-${i + 1}`;
      const p = o.firstPort + i;
      const config = o.config(p) as { storage: { filesystem: { rootdirectory: string } }; middleware: { registry: Array<{ options: Record<string, unknown> }> } };
      config.storage.filesystem.rootdirectory = storage;
      const entry = config.middleware.registry[0]!;
      entry.options = { ...entry.options, region: { redis: redisUrl } };
      const file = join(o.dir, node, 'config.yml');
      await mkdir(join(o.dir, node), { recursive: true });
      const text = stringify({ version: '0.1', log: { level: 'info', fields: { node } }, ...config });
      await writeFile(file, text);
      // Refused here, in this process, with the loader's message, rather than as a child's exit.
      parseNodeConfig(text, file, {});
      let listening = false;
      const child = await startChild(node, process.execPath, [CASCADE_BIN, 'registry', file], join(o.dir, 'logs', `${node}.log`), {
        env,
        ready: async (output) => (listening ||= output.includes('"msg":"listening"')),
        inUse: /EADDRINUSE/,
        onExit: (how) => o.logger.warn({ member: node, exit: how }, `${node} exited (${how}); the balancer skips it`),
      });
      stops.push(child.stop);
      nodes.push({ name: node, url: `http://127.0.0.1:${p}`, pid: child.pid });
    }
    const balancer = await startBalancer({
      host: '127.0.0.1',
      port: o.balancerPort,
      backends: nodes.map((n) => ({ host: '127.0.0.1', port: Number(new URL(n.url).port) })),
      onEvent: (message) => o.logger.warn({ balancer: true }, message),
    });
    stops.push(() => balancer.close());
    o.logger.info({ nodes: nodes.map((n) => n.url), redis: redisUrl, balancer: balancer.url }, `region ${o.name}: ${nodes.length} nodes behind the balancer`);
    return { nodes, redis: redisUrl, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** The first executable `name` on PATH. */
async function onPath(name: string): Promise<string | undefined> {
  for (const folder of (process.env['PATH'] ?? '').split(delimiter).filter(Boolean)) {
    const candidate = join(folder, name);
    if (await access(candidate, fsConstants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}

/**
 * Starts a child process whose output goes to `logFile`, and resolves once `ready` (given the output so far)
 * says so; rejects when it exits first (with an EADDRINUSE error when its output matches `inUse`) or is not
 * ready in 30 s. stop(): SIGTERM, SIGKILL after 10 s.
 */
async function startChild(
  what: string,
  command: string,
  args: string[],
  logFile: string,
  o: { env?: NodeJS.ProcessEnv; ready: (output: string) => Promise<boolean>; inUse: RegExp; onExit?: (how: string) => void },
): Promise<{ pid: number; stop(): Promise<void> }> {
  const log = createWriteStream(logFile, { flags: 'a' });
  const child: ChildProcess = spawn(command, args, { env: o.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk: Buffer) => {
    log.write(chunk);
    // The start-up lines are all the readiness check needs.
    if (output.length < 1 << 16) output += chunk.toString('utf8');
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let stopping = false;
  const exited = new Promise<string>((res) => {
    child.once('error', (err) => res(`could not start: ${err.message}`));
    child.once('exit', (code, signal) => res(signal ? `signal ${signal}` : `exit code ${code}`));
  });
  void exited.then((how) => {
    log.end();
    if (!stopping) o.onExit?.(how);
  });
  const stop = async () => {
    stopping = true;
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 30_000;
  let gone: string | undefined;
  void exited.then((how) => (gone = how));
  for (;;) {
    if (gone !== undefined) {
      stopping = true;
      const inUse = o.inUse.test(output);
      throw Object.assign(new Error(`${what} ${gone} before it was ready (${logFile}):\n${output.slice(-2000)}`), inUse ? { code: 'EADDRINUSE' } : {});
    }
    if (await o.ready(output).catch(() => false)) return { pid: child.pid!, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${what} was not ready after 30 s (${logFile}):\n${output.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether a Redis server answers PING on 127.0.0.1:`port` (RESP, without a client library). */
function ping(port: number): Promise<boolean> {
  return new Promise((resolvePing) => {
    const socket = connect({ host: '127.0.0.1', port });
    let answer = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolvePing(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('*1\r\n$4\r\nPING\r\n'));
    socket.on('data', (d) => {
      answer += d.toString('latin1');
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
  });
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
  const region = stack.region;
  const regionLines = region
    ? `  region-b  ${urls.regionB}   balancer (round-robin, local use only) of a region of ${region.nodes.length} cache nodes, which fill from region-a; the cache of "user"
${region.nodes.map((n) => `    ${n.name.padEnd(12)}${n.url}   pid ${n.pid}, storage ${join(dir, 'region-b', 'data')} (shared)\n`).join('')}    redis       ${region.redis}   the region's coordination (one fill per blob, live nodes)
`
    : `  region-b  ${urls.regionB}   cache, fills from region-a; the cache of "user"
`;
  const regionConfigs = region ? region.nodes.map((n) => `${n.name}/config.yml`).join(', ') : 'region-b/config.yml';
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
${regionLines}${mirror}
  accounts  admin:${passwords.admin}   (admin of the server's API; pushes)
            user:${passwords.user}    (pulls; its cache is region-b)

Push an image (any skopeo source works: docker-archive:, oci:, dir:, docker://):
  skopeo copy --dest-creds admin:${passwords.admin} --dest-tls-verify=false oci:./my-image:v1 docker://${host}/team/app:v1

Pull it as the user (blobs come from region-b):
  skopeo copy --src-creds user:${passwords.user} --src-tls-verify=false docker://${host}/team/app:v1 oci:./pulled:v1
${mirrorPull}
The caches:    curl -u admin:${passwords.admin} ${urls.server}/api/v0/content_caches
Metrics:       curl ${region ? region.nodes[0]!.url : urls.regionB}/metrics
Logs:          tail -f ${join(dir, 'logs')}/*.log
Check a node:  npx cascade doctor ${join(dir, 'server', 'server.yml')}   (or region-a/config.yml, ${regionConfigs}${urls.mirror ? ', mirror/config.yml' : ''})
Stop:          Ctrl-C

ready
`;
}
