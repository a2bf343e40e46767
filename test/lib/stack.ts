/**
 * The DTR stack for end-to-end tests: an origin with htpasswd (a Cascade registry or distribution's),
 * `cascade server` in front of it (alice is its admin, svc its service account), and two cache nodes in
 * `auth: grant` mode, chained region-b -> region-a -> server. Every process is stopped by `defer`.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { stringify } from 'yaml';
import { spawnCascade, startCascade, type CascadeProcess } from './cascade.js';
import { distributionRequests, startDistribution } from './peers.js';

/** The origin's users and passwords. */
export const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', svc: 'svc-pw' } as const;
export type StackUser = keyof typeof USERS;

/** The Basic Authorization header of a user. */
export const basic = (user: StackUser): string => `Basic ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`;

/** The server options the tests vary; the rest is fixed: admin alice, the origin account svc, state in `dir`. */
export interface ServerOptions {
  /** The origin's URL. */
  origin: string;
  /** svc's password at the origin. */
  password: string;
  /** `grants.issuer`. */
  issuer: string;
  /** `grants.ttl`. */
  ttl?: string;
  /** `healthcheck.interval`. */
  healthInterval?: string;
  /** `database` (default: SQLite in `dir/state.db`). */
  database?: { postgres: string };
  /** `grants.keysdir` (default `dir/keys`): servers that share a database share their signing keys too. */
  keysdir?: string;
  /** `authorization.tokenproxy` (default: the server's default, true). */
  tokenproxy?: boolean;
  /** `grants.keystore` (default: the server's default, folder). */
  keystore?: 'folder' | 'database';
  /** `http.addr` (default `127.0.0.1:0`, a free port). */
  addr?: string;
  /** More top-level sections of server.yml (`events`, `warm`). */
  extra?: Record<string, unknown>;
}

/** Writes `dir/server.yml` (listening on a free port) and starts `cascade server` with it. */
export async function startServer(dir: string, o: ServerOptions): Promise<CascadeProcess> {
  await mkdir(dir, { recursive: true });
  const file = join(dir, 'server.yml');
  await writeFile(
    file,
    stringify({
      http: { addr: o.addr ?? '127.0.0.1:0' },
      origin: { url: o.origin, username: 'svc', password: o.password },
      grants: { keysdir: o.keysdir ?? join(dir, 'keys'), issuer: o.issuer, ...(o.ttl ? { ttl: o.ttl } : {}), ...(o.keystore ? { keystore: o.keystore } : {}) },
      database: o.database ?? { sqlite: join(dir, 'state.db') },
      admins: ['alice'],
      ...(o.healthInterval ? { healthcheck: { interval: o.healthInterval } } : {}),
      ...(o.tokenproxy !== undefined ? { authorization: { tokenproxy: o.tokenproxy } } : {}),
      ...(o.extra ?? {}),
    }),
  );
  return spawnCascade(['server', file]);
}

/** The origin: a Cascade registry or distribution's, both with htpasswd. */
export interface StackOrigin {
  readonly url: string;
  /** Paths of the GET requests the origin served. */
  gets(): string[];
  /** Its log lines, to check that no secret was logged. */
  text(): string[];
}

export interface Stack {
  origin: StackOrigin;
  server: CascadeProcess;
  regionA: CascadeProcess;
  regionB: CascadeProcess;
}

export interface StackOptions {
  /** Default `cascade`. */
  originKind?: 'cascade' | 'distribution';
  /** The server's `healthcheck.interval` (default 1s). */
  healthInterval?: string;
  /** The grants' issuer (default `cascade-test`). */
  issuer?: string;
  /** The server's state database (default: SQLite in the stack's folder). */
  database?: { postgres: string };
  /** The server's `grants.keystore`. */
  keystore?: 'folder' | 'database';
  /** The server's `http.addr` (default: a free port chosen when it starts). */
  serverAddr?: string;
  /** More sections of the server's server.yml. */
  serverExtra?: Record<string, unknown>;
  /** The origin's `notifications` section (distribution's format). */
  originNotifications?: Record<string, unknown>;
}

/** Starts the origin, the server and the two chained caches; `defer` registers their stops. */
export async function startStack(dir: string, defer: (fn: () => unknown) => void, options: StackOptions = {}): Promise<Stack> {
  const issuer = options.issuer ?? 'cascade-test';
  await writeFile(join(dir, 'htpasswd'), Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 8)}`).join('\n') + '\n');
  let origin: StackOrigin;
  if ((options.originKind ?? 'cascade') === 'cascade') {
    const proc = await startCascade(join(dir, 'origin'), {
      storage: { filesystem: { rootdirectory: join(dir, 'origin-data') }, delete: { enabled: true } },
      auth: { htpasswd: { realm: 'origin', path: join(dir, 'htpasswd') } },
      ...(options.originNotifications ? { notifications: options.originNotifications } : {}),
    });
    defer(() => proc.stop());
    origin = {
      url: proc.url,
      gets: () => proc.requests().filter((r) => r.method === 'GET').map((r) => String(r.path)),
      text: () => [...proc.text, ...proc.logs.map((l) => JSON.stringify(l))],
    };
  } else {
    await mkdir(join(dir, 'origin-data'), { recursive: true });
    const dist = await startDistribution({
      rootdirectory: join(dir, 'origin-data'),
      deleteEnabled: true,
      htpasswd: join(dir, 'htpasswd'),
      ...(options.originNotifications ? { notifications: options.originNotifications } : {}),
    });
    defer(() => dist.stop());
    origin = {
      url: dist.url,
      gets: () => distributionRequests(dist.output).filter((r) => r.method === 'GET').map((r) => r.path),
      text: () => [...dist.output],
    };
  }
  const server = await startServer(dir, {
    origin: origin.url,
    password: USERS.svc,
    issuer,
    ttl: '60s',
    healthInterval: options.healthInterval ?? '1s',
    ...(options.database ? { database: options.database } : {}),
    ...(options.keystore ? { keystore: options.keystore } : {}),
    ...(options.serverAddr ? { addr: options.serverAddr } : {}),
    ...(options.serverExtra ? { extra: options.serverExtra } : {}),
  });
  defer(() => server.stop());
  const cacheConfig = (name: string, upstreams: Record<string, unknown>, downstreams: string[] = []) => ({
    storage: { filesystem: { rootdirectory: join(dir, `${name}-data`) }, delete: { enabled: true } },
    middleware: { registry: [{ name: 'downstream', options: { ...upstreams, auth: 'grant', name, issuer, downstreams, blobttl: '24h' } }] },
  });
  const regionA = await startCascade(join(dir, 'region-a'), cacheConfig('region-a', { originhost: server.url }, ['region-b']));
  defer(() => regionA.stop());
  const regionB = await startCascade(join(dir, 'region-b'), cacheConfig('region-b', { upstreams: [{ originhost: server.url, upstreamhosts: [regionA.url] }] }));
  defer(() => regionB.stop());
  return { origin, server, regionA, regionB };
}

/** Calls the server's API as `user` (or anonymously); answers the status and the parsed JSON body. */
export async function api(server: CascadeProcess, method: string, path: string, user: StackUser | undefined, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { ...(user ? { authorization: basic(user) } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as unknown) : undefined };
}

/** Registers caches at the server as alice (admin), each by name and URL, and answers their ids by name. */
export async function registerCaches(server: CascadeProcess, caches: Record<string, CascadeProcess>): Promise<Record<string, string>> {
  const ids: Record<string, string> = {};
  for (const [name, cache] of Object.entries(caches)) {
    const res = await api(server, 'POST', '/api/v0/content_caches', 'alice', { name, host: cache.url });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    ids[name] = (res.json as { id: string }).id;
  }
  return ids;
}
