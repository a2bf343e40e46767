/**
 * `cascade doctor CONFIG`: checks a node's configuration and its path to the origin, with real connections,
 * and prints one line per check with the fix for each failure (see docs/doctor.md).
 *
 *     cascade doctor [--timeout SECONDS] CONFIG.yml
 *
 * - the config loads as `cascade registry` loads it (same validators, same `REGISTRY_*` overrides);
 * - every CA file of `cas` (cache node) or `proxy.cas` / `proxy.remotes[].cas` (mirror) is read and checked
 *   with `loadCAs`: it exists, parses, is a CA, is valid now;
 * - every upstream (cache node: `upstreamhosts`, then `originhost`; mirror: each remote) is connected to:
 *   TCP (latency), TLS with the configured CAs added to Node's roots (as the cache does) and the host as
 *   server name, `GET /v2/` (200 or 401: a registry), and for `auth: grant` caches `GET /api/v0/keys` (a
 *   JWKS with at least one ES256 key);
 * - a node of a region (`region.redis`, or `CASCADE_REGION_REDIS`): Redis answers PING (else the node runs
 *   degraded), and the region's live nodes; the Redis URL is shown with its password masked;
 * - the storage `rootdirectory`: exists (or can be created), is writable, has free space (a warning under
 *   1 GiB, or under `maxsize`); a region's nodes all write there.
 *
 * The exit code is 0 when no check failed (warnings do not fail), 1 when one did, 64 for a wrong command line.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { constants as fsConstants, readFileSync } from 'node:fs';
import { access, open, stat, statfs, unlink } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { connect as netConnect, isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { connect as tlsConnect, rootCertificates, type PeerCertificate, type TLSSocket } from 'node:tls';
import { parse as parseYaml } from 'yaml';
import { ConfigError, loadSendfile, RegistryError, type RegistryConfig } from '@cascade/registry-core';
import { redactDatabaseUrl } from '@cascade/server';
import {
  BodyTooLargeError,
  CaError,
  checkRegion,
  DOWNSTREAM,
  JWKS_PATH,
  importPublicJwk,
  loadCAs,
  loadNodeConfig,
  readBounded,
  RegistryClient,
  type CaInfo,
  type DownstreamOptions,
  type MirrorOptions,
  type NodeConfig,
} from '@cascade/downstream';

/** The outcome of one check. `skip`: not run because an earlier check of the same host failed. */
export type CheckStatus = 'ok' | 'warn' | 'FAIL' | 'skip';

/** One line of the diagnosis. */
export interface CheckResult {
  readonly status: CheckStatus;
  /** What was checked: `config cache.yml`, `ca /certs/ca.pem`, `origin https://origin:5000`, `storage /var/lib/registry`. */
  readonly subject: string;
  /** What was found. */
  readonly message: string;
  /** How long it took, in ms, for checks of the network. */
  readonly ms?: number;
  /** How to fix it (failures and warnings). */
  readonly fix?: string;
}

/** Options of the checks. */
export interface DoctorOptions {
  /** Timeout of each network step (connect, TLS handshake, HTTP answer), in ms (default 5000). */
  readonly timeoutMs?: number;
  /** Environment for the config's `REGISTRY_*` overrides (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** The time certificates are checked against (default now). */
  readonly now?: Date;
}

/** Free space under which the storage check warns. */
export const LOW_DISK_BYTES = 1024 ** 3;
/** A certificate that ends within this many days gets a warning. */
export const EXPIRY_WARNING_DAYS = 14;
/** Timeout of each network step, in ms, unless `--timeout` says otherwise. */
export const DEFAULT_TIMEOUT_MS = 5000;
/** Largest body read from an upstream (a key set is a few hundred bytes). */
const MAX_BODY_BYTES = 64 * 1024;

const USAGE = `Usage: cascade doctor [--timeout SECONDS] CONFIG.yml

Checks a cache node, mirror or registry config and its path to the origin, with real connections:
the config, every CA file in cas, every upstream (TCP, TLS trust and names, GET /v2/, and for
auth: grant caches GET /api/v0/keys), and the storage rootdirectory (writable, free space).
With a server.yml: the config, the origin and its CA files, the service account, the grant keys,
the state database (SQLite or PostgreSQL, read only) and every registered cache.
Prints one line per check, with the fix for each failure. Exit code 0 when no check failed
(warnings do not fail), 1 when one did.

Options:
  --timeout SECONDS   Timeout of each network step (default 5)
`;

/** A wrong command line: exit code 64. */
export class DoctorUsageError extends Error {
  override readonly name: string = 'DoctorUsageError';
}

/**
 * Runs `cascade doctor ...` with the arguments after `doctor`: prints the diagnosis and resolves with the
 * exit code (0: no failure, 1: a check failed or the config file cannot be read, 64: bad command line).
 */
export async function runDoctor(args: string[]): Promise<number> {
  let file: string;
  let timeoutMs: number;
  try {
    if (args.includes('--help') || args.includes('-h') || args[0] === 'help') {
      process.stdout.write(USAGE);
      return 0;
    }
    ({ file, timeoutMs } = parseArgs(args));
  } catch (err) {
    if (!(err instanceof DoctorUsageError)) throw err;
    console.error(`cascade: ${err.message}`);
    return 64;
  }
  try {
    await access(file, fsConstants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    console.error(`cascade: doctor: cannot read the config file ${file} (${why})`);
    return 1;
  }
  const color = Boolean(process.stdout.isTTY) && process.env['NO_COLOR'] === undefined;
  const results: CheckResult[] = [];
  for await (const result of runChecks(file, { timeoutMs })) {
    results.push(result);
    console.log(formatResult(result, color));
  }
  console.log(summarize(file, results));
  return results.some((r) => r.status === 'FAIL') ? 1 : 0;
}

function parseArgs(args: readonly string[]): { file: string; timeoutMs: number } {
  const files: string[] = [];
  let timeoutMs = DEFAULT_TIMEOUT_MS;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--debug') continue;
    if (arg === '--timeout' || arg.startsWith('--timeout=')) {
      const value = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : args[++i];
      const seconds = Number(value);
      if (value === undefined || value === '' || !Number.isFinite(seconds) || seconds <= 0 || seconds > 600) {
        throw new DoctorUsageError(`doctor: --timeout: expected a number of seconds between 0 and 600, such as 5, got ${value === undefined ? 'nothing' : JSON.stringify(value)}`);
      }
      timeoutMs = Math.round(seconds * 1000);
    } else if (arg.startsWith('-')) {
      throw new DoctorUsageError(`doctor: unknown option ${arg.replace(/=.*$/, '')} (options: --timeout SECONDS); run "cascade doctor --help"`);
    } else files.push(arg);
  }
  if (files.length === 0) throw new DoctorUsageError('doctor: missing the config file: cascade doctor CONFIG.yml');
  if (files.length > 1) throw new DoctorUsageError(`doctor: takes one config file, got ${files.length} (${files.join(', ')})`);
  return { file: files[0] as string, timeoutMs };
}

/** One line: `ok    subject: message, 12 ms → fix: ...`. */
export function formatResult(result: CheckResult, color = false): string {
  const status = result.status.padEnd(5);
  const painted = !color ? status : `${{ ok: '\x1b[32m', warn: '\x1b[33m', FAIL: '\x1b[31;1m', skip: '\x1b[2m' }[result.status]}${status}\x1b[0m`;
  const ms = result.ms === undefined ? '' : `, ${result.ms} ms`;
  const fix = result.fix === undefined ? '' : ` → fix: ${result.fix}`;
  return `${painted} ${result.subject}: ${result.message}${ms}${fix}`;
}

/** The last line: how many checks passed, warned and failed. */
export function summarize(file: string, results: readonly CheckResult[]): string {
  const count = (s: CheckStatus) => results.filter((r) => r.status === s).length;
  const failed = count('FAIL');
  const warned = count('warn');
  const skipped = count('skip');
  const parts = [`${count('ok')} ok`, `${warned} warning${warned === 1 ? '' : 's'}`, `${failed} failed`, ...(skipped > 0 ? [`${skipped} skipped`] : [])];
  const verdict = failed > 0 ? `${failed} problem${failed === 1 ? '' : 's'} to fix (exit code 1)` : warned > 0 ? 'no failure, see the warnings' : 'all good';
  return `doctor ${file}: ${results.length} checks: ${parts.join(', ')}: ${verdict}`;
}

/** What doctor found in a config: the role, the CA lists and the upstreams to check. */
interface Plan {
  readonly config: RegistryConfig;
  readonly downstream?: { readonly options: DownstreamOptions; readonly key: string; readonly casKey: string; readonly caLists: readonly CaList[] };
  readonly mirror?: { readonly options: MirrorOptions; readonly caLists: readonly CaList[] };
}

/** A list of CA files and its config key (`middleware.registry[0].options.upstreams[0].cas`). */
interface CaList {
  readonly key: string;
  readonly files: readonly string[];
}

/**
 * Runs every check of `file` and yields the results in the order they are printed: the config, the CA files,
 * the upstreams (checked concurrently, yielded in config order), the storage.
 */
export async function* runChecks(file: string, options: DoctorOptions = {}): AsyncGenerator<CheckResult> {
  const env = options.env ?? process.env;
  const now = options.now ?? new Date();
  // A server.yml has its own checks (doctor-server.ts, imported here: it builds on this module's checks).
  const server = await import('./doctor-server.js');
  if (server.isServerConfig(readYaml(file))) {
    yield* server.runServerChecks(file, options);
    return;
  }
  const loaded = checkConfig(file, env);
  yield* loaded.results;
  const plan = loaded.plan;
  if (!plan) return;

  // The CA files, each once, in config order.
  const caLists = [...(plan.downstream?.caLists ?? []), ...(plan.mirror?.caLists ?? [])];
  const pemByFile = new Map<string, { pem: string[]; info: CaInfo[] } | undefined>();
  const caResults: CheckResult[] = [];
  for (const list of caLists) {
    list.files.forEach((caFile, i) => {
      if (pemByFile.has(caFile)) return;
      const { result, pem, certificates } = checkCaFile(caFile, `${list.key}[${i}]`, now);
      pemByFile.set(caFile, pem ? { pem, info: certificates ?? [] } : undefined);
      caResults.push(result);
    });
  }
  yield* caResults;

  const trusted = (files: readonly string[]) => {
    const loadedFiles = files.map((f) => pemByFile.get(f));
    return {
      pem: loadedFiles.flatMap((l) => l?.pem ?? []),
      names: loadedFiles.flatMap((l) => l?.info.map((c) => c.subject) ?? []),
      failed: files.filter((f) => pemByFile.get(f) === undefined),
    };
  };
  const targets: UpstreamTarget[] = [];
  if (plan.downstream) {
    const d = plan.downstream;
    const t = trusted(d.options.cas);
    const base = { ca: t.pem, caNames: t.names, unloadedCas: t.failed, casKey: d.casKey, grantKeys: d.options.auth === 'grant', timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS, now };
    for (const url of d.options.upstreamhosts) targets.push({ ...base, label: 'upstream', url });
    if (d.options.originhost) targets.push({ ...base, label: 'origin', url: d.options.originhost });
  }
  if (plan.mirror) {
    for (const remote of plan.mirror.options.remotes) {
      const t = trusted(remote.cas);
      targets.push({
        label: 'remote',
        url: remote.url,
        ca: t.pem,
        caNames: t.names,
        unloadedCas: t.failed,
        casKey: remote.key === 'proxy' ? 'proxy.cas' : `${remote.key}.cas`,
        grantKeys: false,
        timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        now,
      });
    }
  }
  // Concurrently (a dead host costs its timeouts once), printed in config order.
  const checks = targets.map((t) => checkUpstream(t));
  for (const check of checks) yield* await check;

  const region = plan.downstream?.options.region ?? plan.mirror?.options.region;
  if (region) yield* await checkRegionRedis(region.redis, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  yield* await checkStorage(plan.config, plan.downstream?.options.maxsizeBytes);
  yield checkSendfile(plan.config);
}

/** A Redis URL for output: the password masked as the server's database URL is (and a lone user name, which some write a password as). */
export function shownRedisUrl(url: string): string {
  const shown = redactDatabaseUrl(url);
  try {
    const u = new URL(shown);
    if (u.username && !u.password) {
      u.username = '***';
      return u.toString();
    }
  } catch {
    // redactDatabaseUrl said what it is
  }
  return shown;
}

/**
 * A region's Redis, as its node sees it: PING answered in time (else the node is degraded: it still serves
 * the blobs on the shared storage, but fills only once per node, not per region), and the live nodes.
 */
export async function checkRegionRedis(redisUrl: string, timeoutMs: number, check: typeof checkRegion = checkRegion): Promise<CheckResult[]> {
  const subject = `region ${shownRedisUrl(redisUrl)}`;
  // Whatever the answer quotes, the password never shows.
  const secrets = (() => {
    try {
      const u = new URL(redisUrl);
      return [u.password, u.username].filter((v) => v.length >= 3).map(decodeURIComponent);
    } catch {
      return [];
    }
  })();
  const scrub = (text: string) => secrets.reduce((t, secret) => t.replaceAll(secret, '***'), text);
  const started = Date.now();
  let answer: Awaited<ReturnType<typeof checkRegion>>;
  try {
    answer = await check(redisUrl, { timeoutMs });
  } catch (err) {
    answer = { ok: false, detail: (err as Error).message };
  }
  const ms = elapsed(started);
  if (!answer.ok) {
    return [
      {
        status: 'FAIL',
        subject,
        message: `degraded: Redis does not answer (${scrub(answer.detail)}); the node still serves the blobs on the shared storage, but each node fills on its own (a blob may be fetched once per node), the region-wide expiry waits, and the gauge cascade_region_redis_up is 0`,
        ms,
        fix: 'start Redis or make it reachable from this node (host, port, firewall); check region.redis or CASCADE_REGION_REDIS (password, rediss:// for TLS); the nodes recover on their own once it answers (docs/operations.md)',
      },
    ];
  }
  const results: CheckResult[] = [{ status: 'ok', subject, message: `answers PING${answer.detail ? ` (${scrub(answer.detail)})` : ''}`, ms }];
  const nodes = answer.nodes ?? [];
  if (nodes.length === 0) {
    results.push({ status: 'warn', subject, message: 'no live node of the region is registered in Redis', fix: 'start the nodes (this check does not register one); a running node registers within seconds' });
  } else {
    results.push({ status: 'ok', subject, message: `${nodes.length} live node${nodes.length === 1 ? '' : 's'}: ${nodes.map(scrub).join(', ')}` });
  }
  return results;
}

/** The YAML document of `file`, or undefined when it cannot be read or parsed (the config check says why). */
function readYaml(file: string): unknown {
  try {
    return parseYaml(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Whether blob bodies will go out with sendfile (`http.sendfile`): the native addon built, plain HTTP, files. */
export function checkSendfile(config: RegistryConfig): CheckResult {
  const subject = 'sendfile';
  if (!config.storage.filesystem) return { status: 'ok', subject, message: 'not used: the in-memory driver streams blob bodies' };
  if (!config.http.sendfile.enabled) return { status: 'ok', subject, message: 'turned off (http.sendfile.enabled: false): blob bodies are streamed' };
  const loaded = loadSendfile(config.http.sendfile.threads);
  if (typeof loaded === 'string') {
    return { status: 'warn', subject, message: `blob bodies will be streamed, not sent with sendfile, and a cache's fills hashed on its main thread: ${loaded}`, fix: 'run `npm rebuild @cascade/registry-core` (needs python3, make and a C compiler); bodies are correct either way, only slower' };
  }
  const tls = config.http.tls?.certificate ? ' (over TLS, which this node serves, bodies are streamed)' : '';
  return { status: 'ok', subject, message: `blob bodies from files go out with sendfile on ${loaded.threads} threads${tls}` };
}

/**
 * Loads the config as `cascade registry` does. A config that fails only because of its CA files is loaded
 * again without reading them, so the rest can still be checked (the CA files are checked one by one next).
 */
export function checkConfig(file: string, env: NodeJS.ProcessEnv = process.env): { results: CheckResult[]; plan?: Plan } {
  const subject = `config ${file}`;
  const results: CheckResult[] = [];
  let node: NodeConfig;
  try {
    node = loadNodeConfig(file, env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // Without reading the CA files: a config that only fails because of a CA file still gives its upstreams
    // and storage to check (and the CA files are checked one by one below, with their fixes).
    let lenient: NodeConfig | undefined;
    try {
      lenient = loadNodeConfig(file, env, { checkCaFiles: false });
    } catch {
      lenient = undefined;
    }
    if (!lenient) {
      for (const issue of err.issues) {
        results.push({ status: 'FAIL', subject, message: withoutFile(issue.message, file), fix: 'edit the key named (the message says what it expects); the node does not start until every problem is fixed' });
      }
      return { results };
    }
    results.push({
      status: 'FAIL',
      subject,
      message: 'refused at start-up because of its CA files (see the ca lines below); the rest of the file is valid',
      fix: 'fix the CA files below; the node does not start until they are',
    });
    node = lenient;
  }
  const plan = planOf(node);
  const role = plan.downstream ? `a cache node (auth: ${plan.downstream.options.auth})` : plan.mirror ? `a mirror of ${plan.mirror.options.remotes.length} remote${plan.mirror.options.remotes.length === 1 ? '' : 's'}` : 'a registry';
  if (results.length === 0) results.push({ status: 'ok', subject, message: `loads: ${role}` });
  if (plan.downstream && plan.mirror) {
    results.push({
      status: 'FAIL',
      subject,
      message: 'has both a downstream middleware (a cache node) and a proxy section (a mirror): a node is one or the other',
      fix: 'remove the proxy section or the downstream middleware entry',
    });
  }
  for (const w of node.warnings) results.push({ status: 'warn', subject, message: withoutFile(w, file) });
  return { results, plan };
}

/** A config message without its leading `file: ` (the line's subject names the file already). */
export function withoutFile(message: string, file: string): string {
  return message.startsWith(`${file}: `) ? message.slice(file.length + 2) : message;
}

/** The downstream options, CA lists (with the keys they are written at) and mirror remotes of a loaded config. */
function planOf(node: NodeConfig): Plan {
  const { config } = node;
  let downstream: Plan['downstream'];
  const index = config.middleware.registry.findIndex((m) => m.name === DOWNSTREAM && !m.disabled);
  if (node.cache && index >= 0) {
    const key = `middleware.registry[${index}].options`;
    const raw = (config.middleware.registry[index]?.options ?? {}) as Record<string, unknown>;
    const caLists: CaList[] = [];
    const flat = raw['cas'];
    if (Array.isArray(flat)) caLists.push({ key: `${key}.cas`, files: flat.filter((f): f is string => typeof f === 'string') });
    const upstreams = raw['upstreams'];
    const entry = Array.isArray(upstreams) && isRecord(upstreams[0]) ? upstreams[0] : undefined;
    const nested = entry?.['cas'];
    if (Array.isArray(nested)) caLists.push({ key: `${key}.upstreams[0].cas`, files: nested.filter((f): f is string => typeof f === 'string') });
    // Where a missing CA goes: beside the hosts, as the user wrote them.
    const casKey = caLists.at(-1)?.key ?? (entry ? `${key}.upstreams[0].cas` : `${key}.cas`);
    downstream = { options: node.cache, key, casKey, caLists };
  }
  let mirror: Plan['mirror'];
  const proxy = config.proxy;
  if (node.mirror && proxy) {
    const caLists: CaList[] = [];
    if (proxy.cas) caLists.push({ key: 'proxy.cas', files: proxy.cas });
    (proxy.remotes ?? []).forEach((r, i) => r.cas && caLists.push({ key: `proxy.remotes[${i}].cas`, files: r.cas }));
    mirror = { options: node.mirror, caLists };
  }
  return { config, ...(downstream ? { downstream } : {}), ...(mirror ? { mirror } : {}) };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Checks one CA file with `loadCAs` (exists, parses, every certificate is a CA and valid now). Warns when a
 * certificate ends within {@link EXPIRY_WARNING_DAYS} days.
 */
export function checkCaFile(file: string, key: string, now: Date = new Date()): { result: CheckResult; pem?: string[]; certificates?: CaInfo[] } {
  const subject = `ca ${file}`;
  try {
    const { pem, certificates } = loadCAs([file], now);
    const soonest = certificates.reduce((a, b) => (b.notAfter < a.notAfter ? b : a));
    const names = certificates.map((c) => `"${c.subject}"`).join(', ');
    const days = Math.floor((soonest.notAfter.getTime() - now.getTime()) / 86_400_000);
    if (days < EXPIRY_WARNING_DAYS) {
      return {
        pem,
        certificates,
        result: {
          status: 'warn',
          subject,
          message: `${names}: "${soonest.subject}" expires in ${days} day${days === 1 ? '' : 's'}, on ${isoDate(soonest.notAfter)}`,
          fix: `get the upstream's new CA certificate before then and put it in ${key} (a bundle of the old and new CAs works during the change)`,
        },
      };
    }
    return { pem, certificates, result: { status: 'ok', subject, message: `${names}, a CA valid until ${isoDate(soonest.notAfter)} (${key})` } };
  } catch (err) {
    if (!(err instanceof CaError)) throw err;
    // The reason ends with its fix ("...; check the path, or get the CA certificate ..."): split it off.
    const cut = err.reason.indexOf('; ');
    const message = cut < 0 ? err.reason : err.reason.slice(0, cut);
    const fix = cut < 0 ? `replace ${key} with the PEM file of the CA that signed the upstream's certificate` : err.reason.slice(cut + 2);
    return { result: { status: 'FAIL', subject, message: `${key}: ${message}`, fix } };
  }
}

/** One host to check, with the CAs its connections trust. */
export interface UpstreamTarget {
  /** `upstream` (upstreamhosts), `origin` (originhost), `remote` (a mirror's remote) or `cache NAME` (a server's cache). */
  readonly label: 'upstream' | 'origin' | 'remote' | `cache ${string}`;
  /** Base URL, `https://host:port`. */
  readonly url: string;
  /** PEM CA certificates added to Node's root certificates (as the cache does). */
  readonly ca: readonly string[];
  /** Subjects of those CAs, for messages. */
  readonly caNames: readonly string[];
  /** Configured CA files that could not be loaded (reported above). */
  readonly unloadedCas: readonly string[];
  /** The key a missing CA goes in. */
  readonly casKey: string;
  /** Also check `/api/v0/keys` (an `auth: grant` cache). */
  readonly grantKeys: boolean;
  readonly timeoutMs: number;
  readonly now: Date;
}

/** TCP, TLS (https), `GET /v2/` and, for grant caches, `GET /api/v0/keys` of one host; later steps are skipped after a failure. */
export async function checkUpstream(target: UpstreamTarget): Promise<CheckResult[]> {
  const subject = `${target.label} ${target.url}`;
  const { host, port, https } = hostOf(target.url);
  const results: CheckResult[] = [];
  const rest = ['GET /v2/', ...(target.grantKeys ? [`GET ${JWKS_PATH}`] : [])];
  const skip = (why: string) => results.push({ status: 'skip', subject, message: `${[...(https ? ['TLS'] : []), ...rest].filter((s) => !results.some((r) => r.message.startsWith(s))).join(', ')} not checked (${why})` });

  const tcp = await checkTcp(host, port, target.timeoutMs);
  results.push({ ...tcp, subject });
  if (tcp.status === 'FAIL') {
    skip('no connection');
    return results;
  }
  if (https) {
    const tls = await checkTls(target);
    results.push({ ...tls, subject });
    if (tls.status === 'FAIL') {
      results.push({ status: 'skip', subject, message: `${rest.join(', ')} not checked (the TLS handshake failed, as it does for the cache)` });
      return results;
    }
  }
  const v2 = await checkRegistry(target);
  results.push({ ...v2, subject });
  if (v2.status === 'FAIL' && target.grantKeys) {
    results.push({ status: 'skip', subject, message: `GET ${JWKS_PATH} not checked (not a working registry)` });
    return results;
  }
  if (target.grantKeys) results.push({ ...(await checkKeys(target)), subject });
  return results;
}

type Found = Omit<CheckResult, 'subject'>;

function hostOf(url: string): { host: string; port: number; https: boolean } {
  const u = new URL(url);
  const https = u.protocol === 'https:';
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port === '' ? (https ? 443 : 80) : Number(u.port), https };
}

const DEAD_FIX = (host: string, port: number) =>
  `check that the upstream runs and listens on ${host}:${port} (the host and port in the config), and that no firewall or security group blocks this machine from it`;

/** Opens a TCP connection: reachability and connect latency (DNS included). */
export async function checkTcp(host: string, port: number, timeoutMs: number = DEFAULT_TIMEOUT_MS): Promise<Found> {
  const started = performance.now();
  return new Promise((done) => {
    const socket = netConnect({ host, port });
    const finish = (found: Found) => {
      clearTimeout(timer);
      socket.destroy();
      done(found);
    };
    const timer = setTimeout(
      () =>
        finish({
          status: 'FAIL',
          message: `dead upstream: no answer to a TCP connection to ${host}:${port} within ${timeoutMs / 1000} s`,
          fix: `${DEAD_FIX(host, port)}; a firewall that drops packets looks like this`,
        }),
      timeoutMs,
    );
    socket.once('connect', () => finish({ status: 'ok', message: `TCP connect to ${host}:${port}`, ms: elapsed(started) }));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
        finish({ status: 'FAIL', message: `dead upstream: the host name ${host} does not resolve (${code})`, fix: `check the host name in the config, and this machine's DNS (getent hosts ${host})` });
      } else if (code === 'ECONNREFUSED') {
        finish({ status: 'FAIL', message: `dead upstream: connection refused by ${host}:${port} (nothing listens there)`, fix: DEAD_FIX(host, port) });
      } else {
        finish({ status: 'FAIL', message: `dead upstream: cannot connect to ${host}:${port} (${code || err.message})`, fix: DEAD_FIX(host, port) });
      }
    });
  });
}

const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/** What a server presented, read from a handshake that does not verify it. */
export interface PresentedCertificate {
  readonly subject: string;
  readonly issuer: string;
  readonly commonName: string | undefined;
  readonly issuerCommonName: string | undefined;
  readonly sans: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The certificates the server sent after its own, in order (subject, issuer, notAfter). */
  readonly chain: ReadonlyArray<{ subject: string; issuer: string; notAfter: Date; fingerprint256: string }>;
}

/**
 * The TLS handshake the cache makes: the configured CAs added to Node's roots, the URL's host as server
 * name and identity. On a certificate error, a second handshake without verification reads what the server
 * presents, to name it in the diagnosis.
 */
export async function checkTls(target: Pick<UpstreamTarget, 'url' | 'ca' | 'caNames' | 'unloadedCas' | 'casKey' | 'timeoutMs' | 'now'>): Promise<Found> {
  const { host, port } = hostOf(target.url);
  const ca = target.ca.length > 0 ? [...rootCertificates, ...target.ca] : undefined;
  const started = performance.now();
  const first = await handshake(host, port, ca, true, target.timeoutMs);
  const ms = elapsed(started);
  if (first.socketError === undefined && first.cert) {
    const cert = first.cert;
    const days = Math.floor((cert.notAfter.getTime() - target.now.getTime()) / 86_400_000);
    const what = `TLS trusted (${describeCert(cert)}, valid until ${isoDate(cert.notAfter)})`;
    if (days < EXPIRY_WARNING_DAYS) {
      return { status: 'warn', message: `${what}: the certificate expires in ${days} day${days === 1 ? '' : 's'}`, ms, fix: renewFix(cert, host) };
    }
    return { status: 'ok', message: what, ms };
  }
  const err = first.socketError ?? new Error('no certificate presented');
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (first.timedOut) {
    return {
      status: 'FAIL',
      message: `dead upstream: ${host}:${port} accepts connections but does not complete a TLS handshake within ${target.timeoutMs / 1000} s`,
      fix: 'check the port: it may be another service, or a proxy that holds connections; the upstream must serve TLS on it (http.tls)',
    };
  }
  const isCertError = UNTRUSTED.has(code) || code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID' || code === 'ERR_TLS_CERT_ALTNAME_INVALID' || /CERT/.test(code);
  if (!isCertError) {
    if (code === 'EPROTO' || /wrong version number|packet length too long|unknown protocol|http request/i.test(err.message)) {
      return {
        status: 'FAIL',
        message: `${host}:${port} does not speak TLS (${firstLine(err.message)})`,
        fix: `the upstream serves plain HTTP on this port: write http://${hostPort(host, port)} in the config, or give the upstream a certificate (http.tls) and keep https://`,
      };
    }
    return { status: 'FAIL', message: `TLS handshake failed (${code || firstLine(err.message)})`, fix: 'check that the upstream serves TLS on this port, and its logs for the handshake error' };
  }

  const seen = (await handshake(host, port, ca, false, target.timeoutMs)).cert;
  const presented = seen ? `presents ${describeCert(seen)}` : 'presents a certificate that could not be read';
  if (UNTRUSTED.has(code)) {
    const issuerName = seen ? (code === 'DEPTH_ZERO_SELF_SIGNED_CERT' ? seen.subject : topIssuer(seen)) : 'its issuer';
    const trusts = target.caNames.length > 0 ? `cas trusts ${target.caNames.map((n) => `"${n}"`).join(', ')} (and the public roots)` : 'cas is empty: only the public roots are trusted';
    const unloaded = target.unloadedCas.length > 0 ? `; note: ${target.unloadedCas.join(', ')} could not be loaded (see above)` : '';
    const sameName = seen && target.caNames.includes(topIssuer(seen)) ? `; note: a CA named "${topIssuer(seen)}" is in cas, but not the one that signed this certificate (a CA made again with the same name has another key): use the CA file the upstream's certificate was made with` : '';
    const selfSigned = code === 'DEPTH_ZERO_SELF_SIGNED_CERT'
      ? 'the upstream serves a self-signed certificate, which cas cannot hold (it takes CA certificates only): give the upstream a certificate signed by a CA ("cascade certs ca", then "cascade certs server") and add that CA to ' + target.casKey
      : `add the CA certificate that signed "${issuerName}" to ${target.casKey} (the ca.pem written by "cascade certs ca", or for DTR: curl -k ${target.url}/ca > /certs/ca.pem; compare its fingerprint with the upstream's before trusting it)`;
    return { status: 'FAIL', message: `untrusted certificate (${code}): the upstream ${presented}, and ${trusts}${unloaded}`, fix: `${selfSigned}${sameName}` };
  }
  if (code === 'CERT_HAS_EXPIRED') {
    const expired = seen ? [{ subject: seen.subject, notAfter: seen.notAfter }, ...seen.chain].find((c) => c.notAfter.getTime() < target.now.getTime()) : undefined;
    const which = expired && seen && expired.subject !== seen.subject ? `the CA certificate "${expired.subject}" in its chain` : 'the certificate';
    return {
      status: 'FAIL',
      message: `${which} expired${expired ? ` on ${isoDate(expired.notAfter)}` : ''} (CERT_HAS_EXPIRED): the upstream ${presented}`,
      fix: which === 'the certificate' && seen ? renewFix(seen, host) : 'make a new CA and new certificates ("cascade certs ca", "cascade certs server"), and put the new CA in cas',
    };
  }
  if (code === 'CERT_NOT_YET_VALID') {
    return {
      status: 'FAIL',
      message: `the certificate is not valid yet${seen ? ` (from ${isoDate(seen.notBefore)})` : ''} (CERT_NOT_YET_VALID): the upstream ${presented}`,
      fix: "check the clocks of this machine and of the machine that made the certificate (NTP)",
    };
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = seen && seen.sans.length > 0 ? seen.sans.join(', ') : 'none (no subjectAltName)';
    const plain = seen ? seen.sans.map((s) => s.replace(/^(DNS|IP Address):/, '')) : [];
    const wanted = [...plain, host].filter((n, i, all) => all.indexOf(n) === i).join(',');
    const other = plain.find((n) => !n.startsWith('*'));
    return {
      status: 'FAIL',
      message: `name mismatch (ERR_TLS_CERT_ALTNAME_INVALID): the certificate's names are ${names}; the config says ${host}`,
      fix: `reissue the certificate with ${host} among its names (cascade certs server --ca DIR --out DIR --name ${seen?.commonName ?? 'NAME'} --san ${wanted} --force), or write a name it lists in the config${other ? ` (${target.url.replace(/\/\/[^/:]+|\/\/\[[^\]]+\]/, `//${other}`)})` : ''}`,
    };
  }
  return { status: 'FAIL', message: `TLS: the certificate is refused (${code}: ${firstLine(err.message)}); the upstream ${presented}`, fix: `check the upstream's certificate, and ${target.casKey}` };
}

interface Handshake {
  readonly cert?: PresentedCertificate;
  readonly socketError?: Error;
  readonly timedOut?: boolean;
}

function handshake(host: string, port: number, ca: string[] | undefined, verify: boolean, timeoutMs: number): Promise<Handshake> {
  return new Promise((done) => {
    let socket: TLSSocket;
    const finish = (h: Handshake) => {
      clearTimeout(timer);
      socket.destroy();
      done(h);
    };
    const timer = setTimeout(() => finish({ socketError: new Error('TLS handshake timeout'), timedOut: true }), timeoutMs);
    // An IP address is not a valid SNI name; Node then checks the certificate against `host`.
    socket = tlsConnect({ host, port, ...(isIP(host) ? {} : { servername: host }), ...(ca ? { ca } : {}), rejectUnauthorized: verify });
    socket.once('secureConnect', () => finish({ cert: readPeer(socket.getPeerCertificate(true)) }));
    socket.once('error', (err) => finish({ socketError: err }));
  });
}

function readPeer(peer: PeerCertificate | undefined): PresentedCertificate | undefined {
  if (!peer || !peer.raw) return undefined;
  const x = new X509Certificate(peer.raw);
  const chain: Array<{ subject: string; issuer: string; notAfter: Date; fingerprint256: string }> = [];
  let next = (peer as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate;
  let prev: PeerCertificate = peer;
  while (next && next !== prev && next.raw && chain.length < 10) {
    const c = new X509Certificate(next.raw);
    chain.push({ subject: dn(c.subject), issuer: dn(c.issuer), notAfter: new Date(c.validTo), fingerprint256: c.fingerprint256 });
    prev = next;
    next = (next as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate;
  }
  return {
    subject: dn(x.subject),
    issuer: dn(x.issuer),
    commonName: cn(x.subject),
    issuerCommonName: cn(x.issuer),
    sans: (x.subjectAltName ?? '').split(/,\s*/).filter(Boolean),
    notBefore: new Date(x.validFrom),
    notAfter: new Date(x.validTo),
    chain,
  };
}

/** `CN=cache-a\nO=Example` (X509Certificate's format) as `CN=cache-a, O=Example`. */
function dn(text: string): string {
  return text.split('\n').filter(Boolean).join(', ');
}

function cn(text: string): string | undefined {
  return /^CN=(.*)$/m.exec(text)?.[1];
}

/** The issuer of the last certificate the server sent: the CA to trust (the chain's root when it sends it). */
function topIssuer(cert: PresentedCertificate): string {
  return cert.chain.at(-1)?.issuer ?? cert.issuer;
}

function describeCert(cert: PresentedCertificate): string {
  return `${cert.subject || '(no subject)'}, issuer ${cert.issuer || '(none)'}`;
}

function renewFix(cert: PresentedCertificate, host: string): string {
  const sans = cert.sans.map((s) => s.replace(/^(DNS|IP Address):/, ''));
  const list = (sans.length > 0 ? sans : [host]).join(',');
  return `renew the upstream's certificate (cascade certs server --ca DIR --out DIR --name ${cert.commonName ?? 'NAME'} --san ${list} --force) and restart the upstream with it`;
}

/** `GET /v2/`: 200 or 401 is a registry; anything else, or no answer, is a dead upstream. */
export async function checkRegistry(target: Pick<UpstreamTarget, 'url' | 'ca' | 'timeoutMs'>): Promise<Found> {
  const { host, port, https } = hostOf(target.url);
  const started = performance.now();
  let res: HttpAnswer;
  try {
    res = await get(target.url, '/v2/', target.ca, target.timeoutMs);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const plainToTls = !https && /parse error|ECONNRESET|HPE_/i.test(`${e.code ?? ''} ${e.message}`);
    return {
      status: 'FAIL',
      message: `dead upstream: GET /v2/ failed (${e.code ?? firstLine(e.message)})`,
      fix: plainToTls ? `the port may speak TLS: write https://${hostPort(host, port)} in the config` : DEAD_FIX(host, port),
    };
  }
  const ms = elapsed(started);
  const api = res.headers['docker-distribution-api-version'];
  if (res.status === 200 || res.status === 401) {
    const what = res.status === 200 ? '200 (a registry, open)' : '401 (a registry that asks for credentials)';
    return { status: 'ok', message: `GET /v2/ → ${what}${api ? `, ${String(api)}` : ''}`, ms };
  }
  if (res.status >= 300 && res.status < 400) {
    return {
      status: 'FAIL',
      message: `GET /v2/ → ${res.status} redirect to ${String(res.headers.location ?? '(no Location)')}`,
      fix: 'write the URL it redirects to in the config (a registry answers /v2/ itself)',
    };
  }
  if (res.status >= 500 || res.status === 429) {
    return { status: 'FAIL', message: `dead upstream: GET /v2/ → ${res.status}`, ms, fix: "the upstream is unhealthy or overloaded: check its logs (and those of a proxy in front of it)" };
  }
  return {
    status: 'FAIL',
    message: `dead upstream: GET /v2/ → ${res.status}: not a registry`,
    ms,
    fix: `check the host and port in the config: ${hostPort(host, port)} answers HTTP but is not a registry's API (another service, or a proxy without the /v2/ route)`,
  };
}

const NO_KEYS_FIX =
  'the upstream is not a Cascade server or a cache with auth: grant: point originhost at the Cascade server (not at the origin registry) and upstreamhosts at caches with auth: grant';

/**
 * `GET /api/v0/keys`: the server's grant keys, as the cache fetches them (no redirects, 64 KiB at most).
 * At least one EC P-256 (ES256) signing key must be there, or the cache refuses every grant.
 */
export async function checkKeys(target: Pick<UpstreamTarget, 'url' | 'ca' | 'timeoutMs'>): Promise<Found> {
  const started = performance.now();
  let res: HttpAnswer;
  try {
    res = await get(target.url, JWKS_PATH, target.ca, target.timeoutMs);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { status: 'FAIL', message: `no keys: GET ${JWKS_PATH} failed (${e.code ?? firstLine(e.message)})`, fix: NO_KEYS_FIX };
  }
  const ms = elapsed(started);
  if (res.status !== 200) return { status: 'FAIL', message: `no keys: GET ${JWKS_PATH} → ${res.status}`, ms, fix: NO_KEYS_FIX };
  if (res.truncated) return { status: 'FAIL', message: `wrong key: the key set is larger than ${MAX_BODY_BYTES} bytes (the cache refuses it)`, ms, fix: NO_KEYS_FIX };
  const { keys, problems, error } = inspectJwks(res.body.toString('utf8'));
  if (error) return { status: 'FAIL', message: `wrong key: ${error}`, ms, fix: NO_KEYS_FIX };
  if (keys.length === 0) {
    return {
      status: 'FAIL',
      message: `wrong key: the set holds no usable ES256 key${problems.length > 0 ? ` (${problems.join('; ')})` : ' (an empty set)'}; the cache would refuse every grant`,
      ms,
      fix:
        problems.length === 0
          ? `a cache publishes an empty set when it cannot fetch the keys from its own upstream: run cascade doctor on that cache's config; otherwise ${NO_KEYS_FIX}`
          : `grants are signed with EC P-256 keys (ES256), the only keys a Cascade server makes and publishes: ${NO_KEYS_FIX}`,
    };
  }
  const found = `${keys.length} ES256 key${keys.length === 1 ? '' : 's'} (kid ${keys.join(', ')})`;
  if (problems.length > 0) {
    return { status: 'warn', message: `${found}; ignored: ${problems.join('; ')}`, ms, fix: 'the server publishes keys the cache cannot use: check the key files in the server\'s key directory (EC P-256 only)' };
  }
  return { status: 'ok', message: `GET ${JWKS_PATH} → ${found}`, ms };
}

/** Reads a JWKS as the cache does: the kids of the usable ES256 keys, and why the others are not. */
export function inspectJwks(text: string): { keys: string[]; problems: string[]; error?: string } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { keys: [], problems: [], error: `the answer is not JSON (${JSON.stringify(text.slice(0, 40))}...)` };
  }
  const list = isRecord(body) ? body['keys'] : undefined;
  if (!Array.isArray(list)) return { keys: [], problems: [], error: 'the answer is not a key set (no "keys" array)' };
  const keys: string[] = [];
  const problems: string[] = [];
  for (const entry of list.slice(0, 32)) {
    try {
      keys.push(importPublicJwk(entry).kid);
    } catch (err) {
      problems.push(err instanceof Error ? err.message : String(err));
    }
  }
  return { keys, problems };
}

interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
  readonly truncated: boolean;
}

/**
 * One GET on the registry client, trusting the configured CAs as the cache does, without following
 * redirects, on a connection of its own; a body past {@link MAX_BODY_BYTES} is `truncated`. Fails with the
 * network's error (its `code`) when the host does not answer, or `ETIMEDOUT` when the whole exchange takes
 * longer than `timeoutMs`.
 */
async function get(base: string, path: string, ca: readonly string[], timeoutMs: number): Promise<HttpAnswer> {
  const client = new RegistryClient({ url: base, ca, maxSockets: 1, responseTimeoutMs: timeoutMs });
  const deadline = AbortSignal.timeout(timeoutMs);
  // The client's errors carry the network's as their cause: that is what a check reports.
  const cause = (err: unknown) => {
    if (deadline.aborted) return Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' });
    return err instanceof RegistryError && err.cause !== undefined ? err.cause : err;
  };
  try {
    const res = await client.requestUrl(new URL(path, base), { method: 'GET', headers: { accept: 'application/json', 'user-agent': 'cascade-doctor' }, signal: deadline }).catch((err: unknown) => {
      throw cause(err);
    });
    const answer = { status: res.statusCode ?? 0, headers: res.headers };
    try {
      return { ...answer, body: await readBounded(res, MAX_BODY_BYTES, `GET ${path}`), truncated: false };
    } catch (err) {
      if (err instanceof BodyTooLargeError) return { ...answer, body: Buffer.alloc(0), truncated: true };
      throw cause(err);
    }
  } finally {
    client.close();
  }
}

/**
 * The storage: for the filesystem driver, `rootdirectory` exists or can be created, is writable (a file is
 * written, synced and removed), and has free space (a warning under {@link LOW_DISK_BYTES}, or under
 * `maxsize` when the cache has one).
 */
export async function checkStorage(config: RegistryConfig, maxsizeBytes?: number): Promise<CheckResult[]> {
  const fsConfig = config.storage.filesystem;
  if (!fsConfig) {
    return [{ status: 'ok', subject: 'storage inmemory', message: 'content is kept in memory and lost at every restart; no disk to check' }];
  }
  return checkDirectory(fsConfig.rootdirectory, maxsizeBytes);
}

/** The checks of {@link checkStorage} for one directory. */
export async function checkDirectory(rootdirectory: string, maxsizeBytes?: number): Promise<CheckResult[]> {
  const dir = resolve(rootdirectory);
  const subject = `storage ${rootdirectory}`;
  const results: CheckResult[] = [];
  const user = typeof process.getuid === 'function' ? `uid ${process.getuid()}` : 'this user';
  let existing = dir;
  let info = await stat(dir).catch((err: NodeJS.ErrnoException) => err);
  if (info instanceof Error && info.code === 'ENOENT') {
    while (info instanceof Error && info.code === 'ENOENT' && dirname(existing) !== existing) {
      existing = dirname(existing);
      info = await stat(existing).catch((err: NodeJS.ErrnoException) => err);
    }
  }
  if (info instanceof Error) {
    return [{ status: 'FAIL', subject, message: `cannot be read (${info.code ?? info.message})`, fix: `make ${dir} readable and writable by the user the node runs as (${user})` }];
  }
  if (!info.isDirectory()) {
    return [{ status: 'FAIL', subject, message: `${existing} is not a directory`, fix: 'set storage.filesystem.rootdirectory to a directory' }];
  }
  const creates = existing !== dir;
  if (creates) {
    try {
      await access(existing, fsConstants.W_OK | fsConstants.X_OK);
      results.push({ status: 'ok', subject, message: `does not exist yet; the node creates it at start (${existing} is writable)` });
    } catch {
      results.push({
        status: 'FAIL',
        subject,
        message: `does not exist, and cannot be created: ${existing} is not writable by ${user}`,
        fix: `create it and give it to the node's user: mkdir -p ${dir} && chown ${user.replace('uid ', '')} ${dir}`,
      });
      return results;
    }
  } else {
    const probe = join(dir, `.cascade-doctor-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      const handle = await open(probe, 'wx', 0o600);
      try {
        await handle.write(randomBytes(4096));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await unlink(probe);
      results.push({ status: 'ok', subject, message: `writable by ${user} (a 4 KiB file written, synced and removed)` });
    } catch (err) {
      await unlink(probe).catch(() => undefined);
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      const fix =
        code === 'ENOSPC' || code === 'EDQUOT'
          ? 'the disk is full: free space, lower maxsize or blobttl, or move rootdirectory to a bigger disk'
          : code === 'EROFS'
            ? 'the filesystem is read-only: mount it read-write (in Kubernetes, a writable volume)'
            : `give the directory to the user the node runs as: chown -R ${user.replace('uid ', '')} ${dir} (the container image runs as uid 10001)`;
      results.push({ status: 'FAIL', subject, message: `not writable by ${user} (${code})`, fix });
    }
  }
  try {
    const fsStats = await statfs(existing);
    const free = fsStats.bavail * fsStats.bsize;
    const total = fsStats.blocks * fsStats.bsize;
    const what = `${formatBytes(free)} free of ${formatBytes(total)}${maxsizeBytes === undefined ? '' : `, maxsize ${formatBytes(maxsizeBytes)}`}`;
    if (free < LOW_DISK_BYTES) {
      results.push({ status: 'warn', subject, message: `${what}: under ${formatBytes(LOW_DISK_BYTES)}`, fix: `free disk space, or move rootdirectory to a bigger disk${maxsizeBytes === undefined ? '; set maxsize to bound what the cache keeps' : ''}` });
    } else if (maxsizeBytes !== undefined && free < maxsizeBytes) {
      results.push({
        status: 'warn',
        subject,
        message: `${what}: less free space than maxsize, so the disk may fill before eviction starts (unless the cache already holds the difference)`,
        fix: `lower maxsize under the free space plus what the cache holds, or give rootdirectory a bigger disk`,
      });
    } else {
      results.push({ status: 'ok', subject, message: what });
    }
  } catch (err) {
    results.push({ status: 'warn', subject, message: `free space unknown (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` });
  }
  return results;
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function elapsed(started: number): number {
  return Math.max(0, Math.round(performance.now() - started));
}

function isoDate(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function firstLine(text: string): string {
  return (text.split('\n')[0] ?? '').trim();
}
