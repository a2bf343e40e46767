/**
 * Black-box request fuzzer: real `cascade` processes, real sockets, seeded hostile HTTP.
 *
 * For each role (a registry, with and without htpasswd; a cache node in front of a registry; a mirror of
 * two registries with a local repository; the server in front of an htpasswd origin, first with no cache
 * registered, then with one; a cache in grant mode registered at such a server, fed the server's grants),
 * the node under test runs under strace (open/openat/openat2/connect, see
 * test/lib/syscalls.ts) with the process guard loaded, and gets FUZZ_REQUESTS (default 10,000) requests
 * written on raw TCP sockets (test/lib/raw-http.ts): random and garbage methods; absolute-form,
 * asterisk-form and protocol-relative targets naming a canary listener; `..`, `%2e%2e`, `%2f`, NUL and
 * CR-LF in paths; long names and tags; digests valid and not; bad Range; huge and many headers; Host
 * naming the canary; manifests valid, invalid, huge; chunked uploads with out-of-order and overlapping
 * PATCHes; Content-Length that lies; bad chunked framing; grants and Authorization headers of every
 * shape; `ns=` naming the canary; token realm requests naming the canary; mixed with valid pushes and
 * pulls so that deep code paths run (test/adversarial/lib/gen.ts).
 *
 * Pass criteria, each checked for every role:
 * - no answer with a status >= 500 (the upstreams are healthy, so no 502 is legitimate either);
 * - no crash: the guard sees no uncaught exception or unhandled rejection, the process is alive at the end
 *   and answers `GET /v2/` with 200 or 401; no request left unanswered by a node that then stops answering,
 *   and no well-formed request of a pull or push flow left unanswered for 5 s (requests whose framing is
 *   hostile go on their own half-closed connection, so a kept-alive connection only carries requests the
 *   node can read);
 * - the OCI spec where it is unambiguous: a manifest GET/HEAD by a reference that is neither a tag nor a
 *   digest answers 404;
 * - no file read outside storage: no answer holds a canary secret (canary files outside the storage root,
 *   in the test folder and under /tmp); in the strace record, every file opened inside the test folder is
 *   under the node's storage root or is a file the test wrote for it (config, htpasswd, server state and
 *   keys), and no open names a canary folder;
 * - a cache in grant mode answers no request for content (blobs, manifests, tags, catalog, warm) with a 2xx
 *   unless the request holds the server's grant for the repository and digest it names;
 * - no outgoing connection except to the configured upstreams: the canary listeners (127.0.0.1 and
 *   [::1]) accept no connection, and every AF_INET/AF_INET6 connect() in the strace record goes to an
 *   upstream's port on a loopback address.
 *
 * Environment: FUZZ_SEED (default below; printed with every failure), FUZZ_REQUESTS (per role),
 * FUZZ_CONCURRENCY (connections per role, default 4), FUZZ_SCENARIO=i[,j...] replays those scenarios only
 * (the seeds of scenarios are independent, so one scenario replays alone), FUZZ_ROLES=registry,server...,
 * FUZZ_LOG=file appends one line per request (role, scenario, status, request); FUZZ_DUMP_DIR=dir keeps each
 * node's log and strace record; FUZZ_CASCADE_BIN=path/to/bin/cascade.js fuzzes another build (an older
 * checkout, to see the suite fail on a defect that was fixed since).
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { test, type TestContext } from 'node:test';
import bcrypt from 'bcryptjs';
import { stringify } from 'yaml';
import { startCascadeOrigin, type Hop } from '../lib/cache.js';
import { startCascade, testScope, type CascadeProcess } from '../lib/cascade.js';
import { startServer } from '../lib/stack.js';
import { rawRequest } from '../lib/raw-http.js';
import { isUnder, straceUsable } from '../lib/syscalls.js';
import { startCanary, type Canary } from './lib/canary.js';
import { describeFindings, fuzz, statusSummary, type FuzzResult } from './lib/fuzzer.js';
import type { BlobRef, ManifestRef, Role, World } from './lib/gen.js';
import { seedImage } from './lib/seed.js';
import { spawnTraced, type TracedCascade } from './lib/traced.js';

const SEED = process.env.FUZZ_SEED ?? '20261206';
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 10_000);
const CONCURRENCY = Number(process.env.FUZZ_CONCURRENCY ?? 4);
const ONLY = process.env.FUZZ_SCENARIO ? process.env.FUZZ_SCENARIO.split(',').map(Number) : undefined;
const ROLES = process.env.FUZZ_ROLES ? new Set(process.env.FUZZ_ROLES.split(',')) : undefined;
const STRACE = straceUsable();

const USERS = { alice: 'alice-pw', bob: 'bob-pw', svc: 'svc-pw' } as const;
const basic = (user: keyof typeof USERS): string => `Basic ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`;
const EVENTS_SECRET = 'fuzz-events-secret-0123456789abcdef';

async function writeHtpasswd(file: string): Promise<void> {
  await writeFile(file, Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 6)}`).join('\n') + '\n');
}

function skipUnless(role: string): { skip?: string } {
  if (ROLES && !ROLES.has(role)) return { skip: `FUZZ_ROLES=${process.env.FUZZ_ROLES}` };
  return {};
}

/** Starts the node under test under strace, with its files in `home`. */
async function startTraced(home: string, role: 'registry' | 'server', config: Record<string, unknown>, file = 'config.yml'): Promise<TracedCascade> {
  assert.ok(STRACE, 'strace is missing or cannot trace here: the fuzzer checks what the node opens and connects to with it (scripts/install-peers.sh installs it)');
  await mkdir(home, { recursive: true });
  const path = join(home, file);
  await writeFile(path, stringify(config));
  return spawnTraced([role, path], { cwd: home, traceFile: join(home, '..', `${role}-${relative(join(home, '..'), home)}.strace`) });
}

/** Starts a cache node under test (the downstream middleware with `options`) under strace, its storage in `home/data`. */
async function startTracedCache(home: string, options: Record<string, unknown>): Promise<{ node: TracedCascade; root: string }> {
  const root = join(home, 'data');
  const node = await startTraced(home, 'registry', {
    version: '0.1',
    http: { addr: '127.0.0.1:0' },
    storage: { filesystem: { rootdirectory: root }, delete: { enabled: true } },
    middleware: { registry: [{ name: 'downstream', options }] },
  });
  return { node, root };
}

/** GET /v2/ on a fresh connection: the status, or 0 when the node does not answer within 5 s. */
async function ping(node: TracedCascade, auth?: string): Promise<number> {
  const { hostname, port } = new URL(node.url);
  const out = await rawRequest(hostname, Number(port), `GET /v2/ HTTP/1.1\r\nHost: ${node.host}\r\n${auth ? `Authorization: ${auth}\r\n` : ''}Connection: close\r\n\r\n`, { timeoutMs: 5000 });
  return out.kind === 'response' ? out.response.status : 0;
}

interface RoleSetup {
  readonly label: string;
  readonly node: TracedCascade;
  readonly world: World;
  readonly canary: Canary;
  /** The test's folder. */
  readonly dir: string;
  /** Inside `dir`, the node may open files only under these folders or these exact files. */
  readonly allowedRoots: readonly string[];
  readonly allowedFiles: readonly string[];
  /** Ports of the configured upstreams (connect() anywhere else is a finding). */
  readonly upstreamPorts: () => readonly number[];
  readonly pingAuth?: string;
  /** Other processes whose logs FUZZ_DUMP_DIR keeps. */
  readonly others?: ReadonlyArray<readonly [string, CascadeProcess]>;
}

/** Runs the fuzz (in phases, with `between` run after each but the last) and checks every criterion. */
async function fuzzAndCheck(t: TestContext, s: RoleSetup, requests: number, phases: Array<() => Promise<void>> = []): Promise<void> {
  const { hostname, port } = new URL(s.node.url);
  const results: FuzzResult[] = [];
  const perPhase = Math.ceil(requests / (phases.length + 1));
  let next = 0;
  for (let phase = 0; phase <= phases.length; phase++) {
    const r = await fuzz({
      seed: SEED,
      label: s.label,
      world: s.world,
      host: hostname,
      port: Number(port),
      requests: perPhase,
      concurrency: CONCURRENCY,
      secrets: s.canary.secrets,
      firstScenario: next,
      ...(ONLY ? { only: phase === 0 ? ONLY : [] } : {}),
      alive: async () => s.node.alive() && (await ping(s.node, s.pingAuth)) !== 0,
    });
    next = r.nextScenario;
    results.push(r);
    t.diagnostic(`${s.label} phase ${phase}: ${r.requests} requests, ${r.scenarios} scenarios in ${r.ms} ms; statuses ${statusSummary(r.statuses)}; closed without answer ${r.closed}, timeouts ${r.timeouts}${r.stoppedEarly ? `; stopped: ${r.stoppedEarly}` : ''}`);
    if (phase < phases.length) await phases[phase]!();
  }
  const problems: string[] = [];
  const findings = results.flatMap((r) => r.findings);
  const total = results.reduce((n, r) => n + r.requests, 0);
  if (!ONLY && total < requests) problems.push(`only ${total} of ${requests} requests were sent (${results.map((r) => r.stoppedEarly).filter(Boolean).join('; ')})`);
  problems.push(...describeFindings(findings, SEED, s.label));

  // Alive, and answering.
  const alive = s.node.alive();
  const status = alive ? await ping(s.node, s.pingAuth) : 0;
  if (!alive) problems.push(`${s.label}: the process is gone (exit ${s.node.child.exitCode}); last output:\n${s.node.text.slice(-10).join('\n')}`);
  else if (status !== 200 && status !== 401) problems.push(`${s.label}: GET /v2/ after the fuzz answered ${status || 'nothing'}`);

  // The canary listeners.
  if (s.canary.connections.length > 0) {
    problems.push(`${s.label}: ${s.canary.connections.length} connection(s) to canary listeners ${s.canary.hosts.join(', ')} (FUZZ_SEED=${SEED}); first requests they received:\n${s.canary.connections.slice(0, 5).map((c) => `  ${c.listener} <- ${c.firstBytes.slice(0, 200)}`).join('\n')}`);
  }

  // The strace record (complete once the process is gone).
  await s.node.stop();
  const trace = await s.node.trace();
  if (process.env.FUZZ_DUMP_DIR) {
    await mkdir(process.env.FUZZ_DUMP_DIR, { recursive: true });
    await writeFile(join(process.env.FUZZ_DUMP_DIR, `${s.label}.log`), [...s.node.logs.map((l) => JSON.stringify(l)), ...s.node.text].join('\n'));
    await copyFile(s.node.traceFile, join(process.env.FUZZ_DUMP_DIR, `${s.label}.strace`));
    for (const [name, p] of s.others ?? []) await writeFile(join(process.env.FUZZ_DUMP_DIR, `${s.label}-${name}.log`), [...p.logs.map((l) => JSON.stringify(l)), ...p.text].join('\n'));
  }
  assert.ok(trace.opens.length > 0, `${s.label}: the strace record ${s.node.traceFile} holds no open call: is strace recording?`);
  const canaryOpens = trace.opens.filter((o) => s.canary.dirs.some((d) => isUnder(o.requested, d) || (o.opened !== undefined && isUnder(o.opened, d))));
  if (canaryOpens.length) problems.push(`${s.label}: ${canaryOpens.length} open call(s) named a canary folder (FUZZ_SEED=${SEED}):\n${canaryOpens.slice(0, 5).map((o) => `  ${o.line.slice(0, 400)}`).join('\n')}`);
  const outside = trace.opens.filter((o) => o.opened !== undefined && isUnder(o.opened, s.dir) && !s.allowedRoots.some((r) => isUnder(o.opened!, r)) && !s.allowedFiles.includes(o.opened));
  if (outside.length) problems.push(`${s.label}: ${outside.length} file(s) opened in the test folder outside the storage root and the config files (FUZZ_SEED=${SEED}):\n${[...new Set(outside.map((o) => `  ${o.opened} (${o.line.slice(0, 300)})`))].slice(0, 8).join('\n')}`);
  const ports = new Set(s.upstreamPorts());
  const loopback = (a: string) => a === '::1' || a.startsWith('127.') || a === '::ffff:127.0.0.1';
  const stray = trace.connects.filter((c) => !ports.has(c.port) || !loopback(c.address));
  if (stray.length) problems.push(`${s.label}: ${stray.length} connect() call(s) to something other than the upstreams (ports ${[...ports].join(', ')}) (FUZZ_SEED=${SEED}):\n${[...new Set(stray.map((c) => `  ${c.family} ${c.address}:${c.port} = ${c.result}`))].slice(0, 8).join('\n')}`);
  t.diagnostic(`${s.label}: strace: ${trace.opens.length} opens, ${trace.connects.length} connects (${[...new Set(trace.connects.map((c) => `${c.address}:${c.port}`))].join(', ')}); unparsed lines: ${trace.unparsed.length}`);

  assert.equal(problems.length, 0, `${s.label}: FUZZ_SEED=${SEED} FUZZ_REQUESTS=${requests}\n${problems.join('\n')}`);
}

/** The parts of a world every role shares. */
function baseWorld(role: Role, node: TracedCascade, canary: Canary, storageRoot: string, content: { blobs: BlobRef[]; manifests: ManifestRef[] }): Omit<World, 'repos' | 'pushRepos' | 'goodAuth' | 'extraPaths' | 'nsHosts'> {
  return {
    role,
    nodeHost: node.host,
    canaryHosts: canary.hosts,
    canaryRelative: canary.files.map((f) => relative(storageRoot, f)),
    canaryAbsolute: canary.files,
    blobs: [...content.blobs, { repo: content.blobs[0]!.repo, digest: canary.blobDigest, size: 41 }],
    manifests: content.manifests,
    grants: [],
  };
}

async function seedAll(base: string, repos: Array<[string, string?]>, auth?: string): Promise<{ blobs: BlobRef[]; manifests: ManifestRef[] }> {
  const blobs: BlobRef[] = [];
  const manifests: ManifestRef[] = [];
  for (const [repo, as] of repos) {
    const r = await seedImage(base, repo, SEED, { ...(auth ? { auth } : {}), ...(as ? { as } : {}) });
    blobs.push(...r.blobs);
    manifests.push(...r.manifest);
  }
  return { blobs, manifests };
}

/** Registers a cache at the server (as the admin, alice) and makes it the default; its id. */
async function registerDefaultCache(server: string, name: string, host: string): Promise<string> {
  const admin = { authorization: basic('alice'), 'content-type': 'application/json' };
  const created = await fetch(`${server}/api/v0/content_caches`, { method: 'POST', headers: admin, body: JSON.stringify({ name, host }) });
  const body = (await created.json()) as { id?: string };
  assert.ok(created.status === 201 && body.id, `register the cache: ${created.status} ${JSON.stringify(body)}`);
  const def = await fetch(`${server}/api/v0/content_caches_default`, { method: 'PUT', headers: admin, body: JSON.stringify({ contentCacheUUID: body.id }) });
  assert.equal(def.status, 200, `set the default cache: ${def.status} ${await def.text()}`);
  return body.id;
}

const OPS_PATHS = ['/metrics', '/health', '/ready'];

/**
 * A notifications endpoint for the registry's fuzz: counts the events it is sent and keeps every envelope that
 * is not well-formed (JSON with an `events` list of objects each with an id, an action and a target).
 */
async function startEventSink(): Promise<{ url: string; port: number; events: () => number; malformed: string[]; close(): Promise<void> }> {
  let events = 0;
  const malformed: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        const body = JSON.parse(text) as { events?: unknown };
        if (!Array.isArray(body.events)) throw new Error('no events list');
        for (const e of body.events as Array<Record<string, unknown>>) {
          if (typeof e?.id !== 'string' || typeof e.action !== 'string' || typeof e.target !== 'object' || e.target === null) throw new Error('an event without id, action or target');
          events += 1;
        }
      } catch (err) {
        if (malformed.length < 5) malformed.push(`${(err as Error).message}: ${text.slice(0, 300)}`);
      }
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/events`, port, events: () => events, malformed, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

for (const variant of ['open', 'htpasswd'] as const) {
  const label = variant === 'open' ? 'registry' : 'registry-htpasswd';
  // The htpasswd variant is a shorter run on top of the role's 10,000 (bcrypt makes each checked password slow).
  const requests = variant === 'open' ? REQUESTS : Math.ceil(REQUESTS * 0.3);
  test(`fuzz: ${label}: ${requests} hostile requests, no 5xx, no crash, nothing read outside storage, no stray connection`, skipUnless('registry'), async (t) => {
    const { dir, defer } = await testScope(t, `adv-fuzz-${label}-`);
    const canary = await startCanary(dir);
    defer(() => canary.close());
    const home = join(dir, 'registry');
    const root = join(home, 'data');
    const htpasswd = join(dir, 'registry', 'htpasswd');
    if (variant === 'htpasswd') {
      await mkdir(home, { recursive: true });
      await writeHtpasswd(htpasswd);
    }
    // Every request that succeeds becomes an event: hostile Host headers, names and digests must still make
    // well-formed envelopes, sent only to the configured endpoint.
    const sink = await startEventSink();
    defer(() => sink.close());
    const node = await startTraced(home, 'registry', {
      version: '0.1',
      http: { addr: '127.0.0.1:0' },
      storage: { filesystem: { rootdirectory: root }, delete: { enabled: true } },
      ...(variant === 'htpasswd' ? { auth: { htpasswd: { realm: 'fuzz', path: htpasswd } } } : {}),
      notifications: { endpoints: [{ name: 'fuzz-sink', url: sink.url, timeout: '2s', threshold: 3, backoff: '200ms' }] },
    });
    defer(() => node.stop());
    const auth = variant === 'htpasswd' ? basic('alice') : undefined;
    const content = await seedAll(node.url, [['fuzz/alpha'], ['library/app'], ['team/x/y']], auth);
    const world: World = {
      ...baseWorld('registry', node, canary, root, content),
      repos: ['fuzz/alpha', 'library/app', 'team/x/y'],
      pushRepos: ['fuzz/alpha', 'fuzz/new', 'push/here'],
      goodAuth: variant === 'htpasswd' ? [basic('alice'), basic('bob')] : [],
      ...(auth ? { pushAuth: auth } : {}),
      extraPaths: OPS_PATHS,
      nsHosts: [],
    };
    await fuzzAndCheck(t, { label, node, world, canary, dir, allowedRoots: [root], allowedFiles: [join(home, 'config.yml'), htpasswd], upstreamPorts: () => [sink.port], ...(auth ? { pingAuth: auth } : {}) }, requests);
    assert.ok(sink.events() > 0, 'the pushes and pulls of the fuzz were notified');
    assert.deepEqual(sink.malformed, [], 'every envelope is well-formed');
  });
}

test(`fuzz: cache node: ${REQUESTS} hostile requests, no 5xx, no crash, nothing read outside storage, no stray connection`, skipUnless('cache'), async (t) => {
  const { dir, defer } = await testScope(t, 'adv-fuzz-cache-');
  const canary = await startCanary(dir);
  defer(() => canary.close());
  const origin: Hop = await startCascadeOrigin(dir, 'origin');
  defer(() => origin.stop());
  const content = await seedAll(origin.url, [['fuzz/alpha'], ['library/app'], ['team/x/y']]);
  const home = join(dir, 'cache');
  const { node, root } = await startTracedCache(home, { blobttl: '24h', upstreams: [{ originhost: origin.url }] });
  defer(() => node.stop());
  const world: World = {
    ...baseWorld('cache', node, canary, root, content),
    repos: ['fuzz/alpha', 'library/app', 'team/x/y'],
    pushRepos: ['fuzz/alpha', 'push/here'],
    goodAuth: [],
    extraPaths: [...OPS_PATHS, '/api/v0/keys'],
    nsHosts: [],
  };
  await fuzzAndCheck(t, { label: 'cache', node, world, canary, dir, allowedRoots: [root], allowedFiles: [join(home, 'config.yml')], upstreamPorts: () => [Number(new URL(origin.url).port)] }, REQUESTS);
});

test(`fuzz: mirror: ${REQUESTS} hostile requests, no 5xx, no crash, nothing read outside storage, no stray connection`, skipUnless('mirror'), async (t) => {
  const { dir, defer } = await testScope(t, 'adv-fuzz-mirror-');
  const canary = await startCanary(dir);
  defer(() => canary.close());
  const originA: Hop = await startCascadeOrigin(dir, 'origin-a');
  defer(() => originA.stop());
  const originB: Hop = await startCascadeOrigin(dir, 'origin-b');
  defer(() => originB.stop());
  const a = await seedAll(originA.url, [['fuzz/alpha', 'alpha/fuzz/alpha'], ['team/x/y', 'alpha/team/x/y']]);
  const b = await seedAll(originB.url, [['fuzz/beta'], ['library/tool']]);
  const home = join(dir, 'mirror');
  const root = join(home, 'data');
  const node = await startTraced(home, 'registry', {
    version: '0.1',
    http: { addr: '127.0.0.1:0' },
    storage: { filesystem: { rootdirectory: root }, delete: { enabled: true } },
    proxy: { local: ['local'], remotes: [{ url: originA.url, name: 'alpha' }, { url: originB.url, name: 'beta', default: true }] },
  });
  defer(() => node.stop());
  const local = await seedAll(node.url, [['local/app']]);
  const content = { blobs: [...a.blobs, ...b.blobs, ...local.blobs], manifests: [...a.manifests, ...b.manifests, ...local.manifests] };
  const world: World = {
    ...baseWorld('mirror', node, canary, root, content),
    repos: ['alpha/fuzz/alpha', 'alpha/team/x/y', 'fuzz/beta', 'beta/fuzz/beta', 'library/tool', 'tool', 'local/app'],
    pushRepos: ['local/app', 'local/new', 'alpha/fuzz/alpha', 'fuzz/beta'],
    goodAuth: [],
    extraPaths: OPS_PATHS,
    nsHosts: [originA.host, originB.host],
  };
  await fuzzAndCheck(t, { label: 'mirror', node, world, canary, dir, allowedRoots: [root], allowedFiles: [join(home, 'config.yml')], upstreamPorts: () => [Number(new URL(originA.url).port), Number(new URL(originB.url).port)] }, REQUESTS);
});

test(`fuzz: server: ${REQUESTS} hostile requests (no cache registered, then one), no 5xx, no crash, nothing read outside its files, no stray connection`, skipUnless('server'), async (t) => {
  const { dir, defer } = await testScope(t, 'adv-fuzz-server-');
  const canary = await startCanary(dir);
  defer(() => canary.close());
  const htpasswd = join(dir, 'htpasswd');
  await writeHtpasswd(htpasswd);
  const originRoot = join(dir, 'origin-data');
  const origin = await startCascade(join(dir, 'origin'), { storage: { filesystem: { rootdirectory: originRoot }, delete: { enabled: true } }, auth: { htpasswd: { realm: 'origin', path: htpasswd } } });
  defer(() => origin.stop());
  const content = await seedAll(origin.url, [['fuzz/alpha'], ['team/app'], ['library/app']], basic('alice'));
  const home = join(dir, 'server');
  const issuer = 'cascade-fuzz';
  const node = await startTraced(
    home,
    'server',
    {
      http: { addr: '127.0.0.1:0' },
      origin: { url: origin.url, username: 'svc', password: USERS.svc },
      grants: { keysdir: join(home, 'keys'), issuer, ttl: '60s' },
      database: { sqlite: join(home, 'state.db') },
      admins: ['alice'],
      healthcheck: { interval: '1s' },
      events: { tokens: [EVENTS_SECRET] },
      warm: { backoff: '200ms', attempts: 2 },
    },
    'server.yml',
  );
  defer(() => node.stop());
  const world: World = {
    ...baseWorld('server', node, canary, home, content),
    repos: ['fuzz/alpha', 'team/app', 'library/app'],
    pushRepos: ['fuzz/alpha', 'team/new'],
    goodAuth: [basic('alice'), basic('bob')],
    pushAuth: basic('alice'),
    adminAuth: basic('alice'),
    eventsAuth: `Bearer ${EVENTS_SECRET}`,
    extraPaths: [...OPS_PATHS, '/api/v0/keys', '/api/v0/content_caches', '/api/v0/content_caches_tree', '/api/v0/warm_rules', '/auth/token', '/ui/', '/ui/index.html', '/'],
    nsHosts: [],
  };
  const ports = [Number(new URL(origin.url).port)];
  // Phase 2: a cache registered and made the default, so that blob GETs are redirected with grants.
  const registerCache = async () => {
    const cache = await startCascade(join(dir, 'fuzz-cache'), {
      storage: { filesystem: { rootdirectory: join(dir, 'fuzz-cache', 'data') }, delete: { enabled: true } },
      middleware: { registry: [{ name: 'downstream', options: { originhost: node.url, auth: 'grant', name: 'fuzz-cache', issuer, blobttl: '24h' } }] },
    });
    defer(() => cache.stop());
    ports.push(Number(new URL(cache.url).port));
    const id = await registerDefaultCache(node.url, 'fuzz-cache', cache.url);
    // Pushes under every seeded namespace warm it, so events the fuzzer sends start real warm jobs.
    for (const ns of ['fuzz', 'team', 'library']) {
      const rule = await fetch(`${node.url}/api/v0/warm_rules/${ns}`, { method: 'PUT', headers: { authorization: basic('alice'), 'content-type': 'application/json' }, body: JSON.stringify({ contentCacheUUIDs: [id] }) });
      assert.equal(rule.status, 200, `warm rule ${ns}: ${rule.status} ${await rule.text()}`);
    }
  };
  await fuzzAndCheck(
    t,
    {
      label: 'server',
      node,
      world,
      canary,
      dir,
      allowedRoots: [join(home, 'keys')],
      // SQLite opens the database's folder to sync it after creating its journal.
      allowedFiles: [join(home, 'server.yml'), home, ...['', '-wal', '-shm', '-journal'].map((s) => join(home, `state.db${s}`))],
      upstreamPorts: () => ports,
      pingAuth: basic('bob'),
      others: [['origin', origin]],
    },
    REQUESTS,
    [registerCache],
  );
});

test(`fuzz: cache in grant mode: ${REQUESTS} hostile requests, no bytes without a grant for them, no 5xx, no crash, nothing read outside storage, no stray connection`, skipUnless('grant-cache'), async (t) => {
  const { dir, defer } = await testScope(t, 'adv-fuzz-grant-cache-');
  const canary = await startCanary(dir);
  defer(() => canary.close());
  const htpasswd = join(dir, 'htpasswd');
  await writeHtpasswd(htpasswd);
  const origin = await startCascade(join(dir, 'origin'), { storage: { filesystem: { rootdirectory: join(dir, 'origin-data') }, delete: { enabled: true } }, auth: { htpasswd: { realm: 'origin', path: htpasswd } } });
  defer(() => origin.stop());
  const content = await seedAll(origin.url, [['fuzz/alpha'], ['team/app'], ['library/app']], basic('alice'));
  const issuer = 'cascade-fuzz';
  // Grants long enough for the whole run: they are taken once, before it.
  const server = await startServer(join(dir, 'server'), { origin: origin.url, password: USERS.svc, issuer, ttl: '10m', healthInterval: '1s' });
  defer(() => server.stop());
  // The node under test: a cache that serves only what the server granted, registered and made the default.
  const home = join(dir, 'grant-cache');
  const { node, root } = await startTracedCache(home, { originhost: server.url, auth: 'grant', name: 'grant-cache', issuer, blobttl: '24h' });
  defer(() => node.stop());
  await registerDefaultCache(server.url, 'grant-cache', node.url);
  // A grant for every blob, from the server's redirect of an authorized GET, as a client gets it.
  const grantFor = new Map<string, string>();
  for (const b of content.blobs) {
    const res = await fetch(`${server.url}/v2/${b.repo}/blobs/${b.digest}`, { headers: { authorization: basic('bob') }, redirect: 'manual' });
    const grant = new URL(res.headers.get('location') ?? 'http://x.invalid/', server.url).searchParams.get('grant');
    assert.ok(res.status === 307 && grant, `a redirect with a grant for ${b.repo}@${b.digest}: ${res.status}`);
    grantFor.set(`${b.repo}@${b.digest}`, grant);
  }
  const world: World = {
    ...baseWorld('grant-cache', node, canary, root, content),
    repos: ['fuzz/alpha', 'team/app', 'library/app'],
    pushRepos: ['fuzz/alpha'],
    goodAuth: [],
    extraPaths: [...OPS_PATHS, '/api/v0/warm'],
    nsHosts: [],
    grants: [...grantFor.values()],
    grantFor,
  };
  await fuzzAndCheck(t, { label: 'grant-cache', node, world, canary, dir, allowedRoots: [root], allowedFiles: [join(home, 'config.yml')], upstreamPorts: () => [Number(new URL(server.url).port)], others: [['server', server], ['origin', origin]] }, REQUESTS);
});
