/**
 * `cascade prefetch`: warms a cache node ahead of time (see docs/prefetch.md).
 *
 *     cascade prefetch IMAGE... --cache URL [--platform os/arch[/variant]]... [--ca FILE]
 *                      [--user USER:PASS | --token TOKEN] [--concurrency N]
 *
 * Each IMAGE (`team/app:v1`, `team/app@sha256:...`) is resolved through the cache: its manifest (and, for
 * an index, the manifest of every platform chosen) is fetched with GET, then every config and layer blob
 * is fetched with GET and read to the end, hashed, and checked against its digest. The GET is what makes
 * the cache fill a blob it lacks (a HEAD on a miss does not), and a blob the cache already has is served
 * from its disk, so a second run costs the upstream nothing: re-running is how an interrupted prefetch is
 * resumed.
 *
 * Problems are thrown as {@link PrefetchError} (exit 1) or {@link PrefetchUsageError} (exit 64);
 * `runPrefetch` prints them as one line, `cascade: <message>`, and returns the exit code. An interrupted
 * run (SIGINT, SIGTERM) prints what was done and returns 130 (143 for SIGTERM).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { basicAuthorization, BodyTooLargeError, readBounded, RegistryClient, TokenCache, tokenRealmOf, type TokenRealm } from '@cascade/downstream';
import { INDEX_MEDIA_TYPES, MediaType, NON_DISTRIBUTABLE_LAYER_TYPES, RegistryError, isValidTag, validateName } from '@cascade/registry-core';

/** A failure of `cascade prefetch` that is not a usage error (the cache, the image, a blob): exit code 1. */
export class PrefetchError extends Error {
  override readonly name: string = 'PrefetchError';
}

/** A wrong command line: exit code 64, as the other `cascade` usage errors. */
export class PrefetchUsageError extends PrefetchError {
  override readonly name: string = 'PrefetchUsageError';
}

const USAGE = `Usage: cascade prefetch IMAGE... --cache URL [options]

Warms a cache node: fetches every blob of each IMAGE through the cache, so that the
cache fills the ones it lacks. Safe to run again: blobs already cached are read
from the cache's disk, which is also how an interrupted run is resumed.

  IMAGE                    team/app:v1 or team/app@sha256:<hex>, the repository as the
                           cache knows it (no tag: latest)

Options:
  --cache URL              The cache node's base URL (http:// or https://); required
  --platform OS/ARCH[/V]   Only this platform of an index (repeatable, or comma-separated;
                           default: every platform)
  --ca FILE                PEM file of the CA to trust for an https cache
  --user USER:PASS         Basic credentials (or set CASCADE_PREFETCH_AUTH=USER:PASS);
                           exchanged for a token when the registry asks for one
  --token TOKEN            A bearer token instead
  --concurrency N          Blobs fetched at once (default 4)
  --debug                  Print stack traces of unexpected errors
  -h, --help               Print this help

Exit status: 0 when every blob was fetched and verified, 1 when something failed
(the other blobs are still fetched), 64 for a wrong command line, 130 when interrupted.
`;

/** Environment variable holding `USER:PASS` when `--user` is not given. */
export const AUTH_ENV = 'CASCADE_PREFETCH_AUTH';
export const DEFAULT_CONCURRENCY = 4;
const MAX_CONCURRENCY = 64;
/** Largest manifest read (distribution's limit). */
const MANIFEST_MAX_BYTES = 4 << 20;
/** A connection silent for this long is given up (the cache streams a fill as it arrives). */
const IDLE_TIMEOUT_MS = 120_000;
const MAX_REDIRECTS = 5;
/** Index nesting followed (an index of indexes is legal, if rare). */
const MAX_INDEX_DEPTH = 4;
const USER_AGENT = 'cascade-prefetch';

const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.DockerManifestList, MediaType.OciManifest, MediaType.DockerManifest].join(', ');

// ---------------------------------------------------------------------------------------------------
// Command line

/** An image to prefetch: a repository and a tag or digest. */
export interface ImageRef {
  /** The repository, `team/app`. */
  readonly name: string;
  /** The tag or the digest. */
  readonly reference: string;
  readonly kind: 'tag' | 'digest';
}

/** A platform asked for with `--platform`. */
export interface PlatformSpec {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** Credentials for the cache (and a token service it points to). */
export type Credentials = { readonly kind: 'basic'; readonly user: string; readonly password: string } | { readonly kind: 'bearer'; readonly token: string };

/** What the command line asks for. */
export interface PrefetchOptions {
  readonly images: ImageRef[];
  /** The cache's base URL, without a trailing slash. */
  readonly cache: URL;
  /** Empty: every platform. */
  readonly platforms: PlatformSpec[];
  readonly caFile?: string;
  readonly credentials?: Credentials;
  readonly concurrency: number;
}

/** How an image reference is printed: `team/app:v1`, `team/app@sha256:...`. */
export function formatImageRef(ref: ImageRef): string {
  return ref.kind === 'tag' ? `${ref.name}:${ref.reference}` : `${ref.name}@${ref.reference}`;
}

const DIGEST_GRAMMAR = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

/**
 * Parses `team/app:v1`, `team/app@sha256:<hex>` or `team/app:v1@sha256:<hex>` (the digest wins), and
 * `team/app` (tag `latest`).
 * @throws PrefetchUsageError saying what is wrong and what is expected.
 */
export function parseImageRef(text: string): ImageRef {
  const expected = 'expected repo/name:tag or repo/name@sha256:<64 hex>, the repository path as the cache knows it';
  const bad = (why: string) => new PrefetchUsageError(`bad image reference ${JSON.stringify(text)}: ${why}; ${expected}`);
  if (text === '') throw bad('empty');
  let rest = text;
  let digest: string | undefined;
  const at = text.indexOf('@');
  if (at >= 0) {
    digest = text.slice(at + 1);
    rest = text.slice(0, at);
    if (!DIGEST_GRAMMAR.test(digest)) throw bad(`${JSON.stringify(digest)} is not a sha256 or sha512 digest of lower-case hex`);
  }
  let name = rest;
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    name = rest.slice(0, colon);
    tag = rest.slice(colon + 1);
    if (!isValidTag(tag)) throw bad(`${JSON.stringify(tag)} is not a valid tag ([a-zA-Z0-9_][a-zA-Z0-9._-]{0,127})`);
  }
  if (/^[^/]*:\d+\//.test(name) || name.includes('://')) {
    throw bad('it starts with a registry host; give the repository alone (team/app:v1) and the cache with --cache');
  }
  try {
    validateName(name);
  } catch (err) {
    throw bad(err instanceof Error ? err.message : String(err));
  }
  if (digest !== undefined) return { name, reference: digest, kind: 'digest' };
  return { name, reference: tag ?? 'latest', kind: 'tag' };
}

const ARCH_ALIASES: Record<string, string> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64' };

/**
 * Parses `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`); `x86_64` and `aarch64` are taken for
 * `amd64` and `arm64`.
 * @throws PrefetchUsageError
 */
export function parsePlatform(text: string): PlatformSpec {
  const parts = text.trim().toLowerCase().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9][a-z0-9._-]*$/.test(p))) {
    throw new PrefetchUsageError(`--platform: expected os/arch[/variant], such as linux/amd64 or linux/arm64/v8, got ${JSON.stringify(text)}`);
  }
  const [os, arch, variant] = parts as [string, string, string | undefined];
  return { os, architecture: ARCH_ALIASES[arch] ?? arch, ...(variant !== undefined ? { variant } : {}) };
}

/** `linux/arm64/v8` */
export function formatPlatform(p: { os?: string; architecture?: string; variant?: string } | undefined): string {
  if (!p || !p.os || !p.architecture) return 'unknown';
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

function parseUserPass(value: string, where: string): Credentials {
  const colon = value.indexOf(':');
  // the value is never echoed: it holds a password
  if (colon <= 0) throw new PrefetchUsageError(`${where}: expected USER:PASSWORD (the value is not shown)`);
  return { kind: 'basic', user: value.slice(0, colon), password: value.slice(colon + 1) };
}

function parseCacheUrl(value: string): URL {
  const expected = 'expected the base URL of the cache node, such as https://cache-eu.example.com or http://127.0.0.1:5000';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new PrefetchUsageError(`--cache: ${expected}, got ${JSON.stringify(value)}${/^[\w.-]+(:\d+)?(\/.*)?$/.test(value) ? ` (add the scheme: "https://${value}")` : ''}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    // "cache.example.com:5000" parses as the scheme "cache.example.com:"
    const hint = /^[\w.-]+:\d+/.test(value) ? ` (add the scheme: "https://${value}")` : '';
    throw new PrefetchUsageError(`--cache: ${expected}, got ${JSON.stringify(value)}${hint}`);
  }
  if (url.username || url.password) throw new PrefetchUsageError('--cache: the URL holds credentials (not shown); give them with --user or CASCADE_PREFETCH_AUTH instead');
  if (url.search || url.hash) throw new PrefetchUsageError(`--cache: ${expected}, without query or fragment, got ${JSON.stringify(value)}`);
  url.pathname = url.pathname.replace(/\/+$/, '').replace(/\/v2$/, '');
  return url;
}

const VALUE_FLAGS = new Set(['--cache', '--platform', '--ca', '--user', '--token', '--concurrency']);

/**
 * Parses the arguments of `cascade prefetch` (after the command). `--flag value` and `--flag=value` are
 * both accepted. Returns `undefined` for `--help`.
 * @throws PrefetchUsageError for anything wrong, in one line.
 */
export function parsePrefetchArgs(args: readonly string[], env: NodeJS.ProcessEnv = {}): PrefetchOptions | undefined {
  const images: ImageRef[] = [];
  const platforms: PlatformSpec[] = [];
  let cache: URL | undefined;
  let caFile: string | undefined;
  let user: Credentials | undefined;
  let token: string | undefined;
  let concurrency = DEFAULT_CONCURRENCY;
  let optionsEnded = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (optionsEnded || !arg.startsWith('-') || arg === '-') {
      images.push(parseImageRef(arg));
      continue;
    }
    if (arg === '--') {
      optionsEnded = true;
      continue;
    }
    if (arg === '-h' || arg === '--help') return undefined;
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    if (!VALUE_FLAGS.has(flag)) {
      throw new PrefetchUsageError(`unknown option ${flag} for "cascade prefetch"; run "cascade prefetch --help" for the options`);
    }
    let value: string;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      const next = args[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) throw new PrefetchUsageError(`${flag} needs a value; run "cascade prefetch --help"`);
      value = next;
      i++;
    }
    switch (flag) {
      case '--cache':
        if (cache) throw new PrefetchUsageError('--cache given twice: prefetch warms one cache per run');
        cache = parseCacheUrl(value);
        break;
      case '--platform':
        for (const p of value.split(',')) platforms.push(parsePlatform(p));
        break;
      case '--ca':
        if (value === '') throw new PrefetchUsageError('--ca: expected the path of a PEM file');
        caFile = value;
        break;
      case '--user':
        user = parseUserPass(value, '--user');
        break;
      case '--token':
        if (value === '') throw new PrefetchUsageError('--token: expected a token');
        token = value;
        break;
      case '--concurrency': {
        const n = Number(value);
        if (!/^\d+$/.test(value) || n < 1 || n > MAX_CONCURRENCY) throw new PrefetchUsageError(`--concurrency: expected a whole number from 1 to ${MAX_CONCURRENCY}, got ${JSON.stringify(value)}`);
        concurrency = n;
        break;
      }
    }
  }
  if (images.length === 0) throw new PrefetchUsageError('no image given; usage: cascade prefetch team/app:v1 --cache https://cache.example.com (run "cascade prefetch --help")');
  if (!cache) throw new PrefetchUsageError('--cache URL is required: the base URL of the cache node to warm, such as --cache https://cache-eu.example.com');
  if (user && token) throw new PrefetchUsageError('--user and --token both given: use one');
  let credentials: Credentials | undefined = token !== undefined ? { kind: 'bearer', token } : user;
  const fromEnv = env[AUTH_ENV];
  if (!credentials && fromEnv) credentials = parseUserPass(fromEnv, AUTH_ENV);
  const seen = new Set<string>();
  const unique = images.filter((r) => !seen.has(formatImageRef(r)) && seen.add(formatImageRef(r)));
  const seenPlatforms = new Set<string>();
  const uniquePlatforms = platforms.filter((p) => !seenPlatforms.has(formatPlatform(p)) && seenPlatforms.add(formatPlatform(p)));
  return { images: unique, cache, platforms: uniquePlatforms, concurrency, ...(caFile !== undefined ? { caFile } : {}), ...(credentials ? { credentials } : {}) };
}

// ---------------------------------------------------------------------------------------------------
// Platforms

/** One entry of an image index. */
export interface IndexEntry {
  readonly mediaType?: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: { os?: string; architecture?: string; variant?: string };
  readonly annotations?: Record<string, string>;
}

/** The variant a platform has when it names none (as containerd normalises them). */
function normalVariant(architecture: string | undefined, variant: string | undefined): string | undefined {
  if (variant) return variant;
  if (architecture === 'arm64') return 'v8';
  if (architecture === 'arm') return 'v7';
  if (architecture === 'amd64') return 'v1';
  return undefined;
}

/**
 * True when an index entry's platform is `wanted`: same os and architecture, and, when `wanted` names a
 * variant, the same variant (`linux/arm64` is any arm64; `linux/arm64/v8` also matches an arm64 entry
 * without a variant).
 */
export function platformMatches(platform: IndexEntry['platform'], wanted: PlatformSpec): boolean {
  if (!platform || platform.os !== wanted.os) return false;
  const arch = platform.architecture ? (ARCH_ALIASES[platform.architecture] ?? platform.architecture) : undefined;
  if (arch !== wanted.architecture) return false;
  if (wanted.variant === undefined) return true;
  return normalVariant(arch, platform.variant) === normalVariant(wanted.architecture, wanted.variant);
}

/**
 * The entries of an index to prefetch: every one when `wanted` is empty, else those matching one of the
 * wanted platforms; `missing` lists the wanted platforms that matched nothing.
 */
export function selectPlatforms(entries: readonly IndexEntry[], wanted: readonly PlatformSpec[]): { selected: IndexEntry[]; missing: PlatformSpec[] } {
  if (wanted.length === 0) return { selected: [...entries], missing: [] };
  const selected = entries.filter((e) => wanted.some((w) => platformMatches(e.platform, w)));
  const missing = wanted.filter((w) => !entries.some((e) => platformMatches(e.platform, w)));
  return { selected, missing };
}

// ---------------------------------------------------------------------------------------------------
// Formatting and progress

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

function unitFor(bytes: number): number {
  let u = 0;
  while (u < UNITS.length - 1 && Math.abs(bytes) >= 1024 ** (u + 1)) u++;
  return u;
}

/** `512 B`, `12.0 MiB`, `1.5 GiB`. */
export function formatBytes(bytes: number): string {
  const u = unitFor(bytes);
  return u === 0 ? `${bytes} B` : `${(bytes / 1024 ** u).toFixed(1)} ${UNITS[u]}`;
}

/** `85.1 MiB/s` */
export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(Math.round(Number.isFinite(bytesPerSecond) ? bytesPerSecond : 0))}/s`;
}

/** `0.4 s`, `3.4 s`, `2 min 5 s`. */
export function formatDuration(ms: number): string {
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** `sha256:0123456789ab…` */
export function shortDigest(digest: string): string {
  const colon = digest.indexOf(':');
  return `${digest.slice(0, colon + 13)}…`;
}

/** What the progress line shows. */
export interface ProgressState {
  readonly doneBytes: number;
  readonly totalBytes: number;
  /** Bytes per second. */
  readonly rate: number;
  readonly blobsDone: number;
  readonly blobsTotal: number;
}

/** `[########............] 42% 120.3/285.0 MiB 85.1 MiB/s layers 3/7` */
export function renderProgressLine(s: ProgressState, barWidth = 20): string {
  const fraction = s.totalBytes > 0 ? Math.min(1, Math.max(0, s.doneBytes / s.totalBytes)) : s.blobsTotal > 0 ? s.blobsDone / s.blobsTotal : 1;
  const filled = Math.floor(fraction * barWidth);
  const u = Math.max(1, unitFor(s.totalBytes));
  const amount = `${(Math.max(0, s.doneBytes) / 1024 ** u).toFixed(1)}/${(s.totalBytes / 1024 ** u).toFixed(1)} ${UNITS[u]}`;
  return `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}] ${Math.floor(fraction * 100)}% ${amount} ${formatRate(s.rate)} layers ${s.blobsDone}/${s.blobsTotal}`;
}

/** `fetched sha256:abcd… 12.0 MiB in 0.4 s (30.0 MiB/s)` */
export function renderBlobLine(digest: string, bytes: number, ms: number): string {
  return `fetched ${shortDigest(digest)} ${formatBytes(bytes)} in ${formatDuration(ms)} (${formatRate(bytes / Math.max(ms, 1) * 1000)})`;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** What the final line reports. */
export interface Summary {
  readonly blobsDone: number;
  readonly blobsTotal: number;
  readonly bytesDone: number;
  readonly images: number;
  readonly failed: number;
  readonly ms: number;
  readonly interrupted?: boolean;
}

/** `prefetched 7 blobs (285.0 MiB) of 2 images in 3.4 s`, and the variants for failures and interruptions. */
export function renderSummary(s: Summary): string {
  const count = s.blobsDone === s.blobsTotal ? plural(s.blobsDone, 'blob') : `${s.blobsDone} of ${plural(s.blobsTotal, 'blob')}`;
  const line = `prefetched ${count} (${formatBytes(s.bytesDone)}) of ${plural(s.images, 'image')} in ${formatDuration(s.ms)}`;
  if (s.interrupted) return `interrupted: ${line}; run the same command again to finish (blobs already in the cache are read from its disk)`;
  if (s.failed > 0) return `${line}; ${s.failed} failed (see the errors above)`;
  return line;
}

/** Where progress is written: a terminal (`isTTY`) gets a redrawn bar, anything else plain lines. */
export interface ProgressStream {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/**
 * The progress display. On a terminal, one line redrawn at most every `intervalMs` (default 100 ms) with
 * the bytes, the rate over the last few seconds and the blobs; otherwise one line per blob completed.
 */
export class Progress {
  private doneBytes = 0;
  private totalBytes = 0;
  private blobsDone = 0;
  private blobsTotal = 0;
  private lastDraw = Number.NEGATIVE_INFINITY;
  private drawn = false;
  private started = 0;
  private samples: Array<{ t: number; bytes: number }> = [];
  private timer: NodeJS.Timeout | undefined;
  readonly tty: boolean;

  constructor(
    private readonly out: ProgressStream,
    private readonly options: { now?: () => number; intervalMs?: number; rateWindowMs?: number } = {},
  ) {
    this.tty = out.isTTY === true;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  /** Starts counting; on a terminal, draws the bar and redraws it while bytes are stalled. */
  start(totalBytes: number, blobsTotal: number): void {
    this.totalBytes = totalBytes;
    this.blobsTotal = blobsTotal;
    this.started = this.now();
    this.samples = [{ t: this.started, bytes: 0 }];
    if (this.tty) {
      this.draw();
      this.timer = setInterval(() => this.maybeDraw(), 500);
      this.timer.unref();
    }
  }

  /** Bytes received (negative to take back the bytes of a failed attempt). */
  add(bytes: number): void {
    this.doneBytes += bytes;
    this.maybeDraw();
  }

  /** A blob was fetched and verified. */
  blobDone(digest: string, bytes: number, ms: number): void {
    this.blobsDone += 1;
    if (this.tty) this.maybeDraw();
    else this.out.write(`${renderBlobLine(digest, bytes, ms)}\n`);
  }

  /** Writes `line` to `stream` (stderr, for errors) without garbling the bar. */
  note(line: string, stream: ProgressStream = this.out): void {
    if (this.tty && this.drawn) this.out.write('\r\x1b[K');
    stream.write(`${line}\n`);
    if (this.tty && this.drawn) this.draw();
  }

  /** Bytes per second over the last `rateWindowMs` (default 3 s). */
  rate(): number {
    const now = this.now();
    const window = this.options.rateWindowMs ?? 3000;
    this.samples.push({ t: now, bytes: this.doneBytes });
    while (this.samples.length > 2 && (this.samples[1] as { t: number }).t <= now - window) this.samples.shift();
    const first = this.samples[0] as { t: number; bytes: number };
    const dt = now - first.t;
    return dt > 0 ? ((this.doneBytes - first.bytes) / dt) * 1000 : 0;
  }

  /** The current line (without the carriage return). */
  line(): string {
    const text = renderProgressLine({ doneBytes: this.doneBytes, totalBytes: this.totalBytes, rate: this.rate(), blobsDone: this.blobsDone, blobsTotal: this.blobsTotal });
    const columns = this.out.columns;
    return columns && columns > 10 && text.length >= columns ? text.slice(0, columns - 1) : text;
  }

  private maybeDraw(): void {
    if (!this.tty || this.timer === undefined) return;
    if (this.now() - this.lastDraw < (this.options.intervalMs ?? 100)) return;
    this.draw();
  }

  private draw(): void {
    this.lastDraw = this.now();
    this.drawn = true;
    this.out.write(`\r${this.line()}\x1b[K`);
  }

  /** Stops redrawing; on a terminal, leaves the final bar on its line. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.tty && this.drawn) {
      this.draw();
      this.out.write('\n');
      this.drawn = false;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// HTTP

/** The HTTP side of a run: the registry client (connections, CA trust), credentials, tokens, cancellation. */
interface Client {
  readonly cache: URL;
  readonly registry: RegistryClient;
  readonly credentials?: Credentials;
  /** The token service each repository's challenge named, and the scope asked of it. */
  readonly realms: Map<string, { readonly realm: TokenRealm; readonly scope: string }>;
  /** Bearer tokens from those token services. */
  readonly tokens: TokenCache;
  readonly signal: AbortSignal;
}

/** A request that failed with an HTTP status. */
class HttpStatusError extends PrefetchError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A failure to talk to a host at all (connection, TLS, timeout): no point going on with the next image. */
class TransportError extends PrefetchError {}

const TLS_TRUST_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/** One line saying why `url` could not be reached and what to check. */
function describeTransportError(err: unknown, url: URL): string {
  const e = err as NodeJS.ErrnoException;
  const code = e?.code ?? '';
  const where = url.origin;
  const msg = e instanceof Error ? e.message : String(err);
  if (code === 'ECONNREFUSED') return `cannot reach ${where}: connection refused; check the URL given with --cache and that the cache is running`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `cannot reach ${where}: the host name does not resolve (${code}); check the URL given with --cache`;
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ETIMEDOUT') return `cannot reach ${where} (${code}); check the URL given with --cache and the network`;
  if (TLS_TRUST_CODES.has(code)) return `cannot reach ${where}: its TLS certificate is not trusted (${code}); give the CA that issued it with --ca FILE`;
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return `cannot reach ${where}: its TLS certificate is not valid now (${code}); check the cache's certificate and this machine's clock`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `cannot reach ${where}: its TLS certificate is not for this host name (${msg}); use the name the certificate was issued for in --cache`;
  if (code === 'EPROTO' || /wrong version number|packet length too long/i.test(msg)) {
    const reason = /wrong version number|packet length too long/i.test(msg) ? 'the server did not answer in TLS' : (msg.split('\n')[0] ?? msg);
    return `cannot reach ${where}: TLS handshake failed (${reason}); is the cache http:// rather than https://?`;
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') return `connection to ${where} reset (${code}); is the cache https:// rather than http://, or behind a proxy that cut it?`;
  return `cannot reach ${where}: ${msg}${code && !msg.includes(code) ? ` (${code})` : ''}`;
}

function isAbort(err: unknown): boolean {
  return (err as Error)?.name === 'AbortError' || (err as NodeJS.ErrnoException)?.code === 'ABORT_ERR';
}

/** The error a failed request or read is reported with: an abort as it is, a body over its bound, a host not reached. */
function failureOf(err: unknown, url: URL): unknown {
  if (err instanceof BodyTooLargeError) return tooLarge(err);
  const cause = err instanceof RegistryError && err.cause !== undefined ? err.cause : err;
  if (isAbort(cause)) return cause;
  if (err instanceof PrefetchError) return err;
  return new TransportError(describeTransportError(cause, url));
}

function tooLarge(err: BodyTooLargeError): PrefetchError {
  return new PrefetchError(`${err.what} is larger than ${formatBytes(err.limit)}`);
}

/** Sends one GET; resolves with the response headers (the body is left to the caller). */
async function send(client: Client, url: URL, headers: OutgoingHttpHeaders): Promise<IncomingMessage> {
  try {
    return await client.registry.requestUrl(url, { method: 'GET', headers, signal: client.signal });
  } catch (err) {
    throw failureOf(err, url);
  }
}

/** Reads a body of at most `limit` bytes. */
async function readBody(res: IncomingMessage, limit: number, what: string): Promise<Buffer> {
  try {
    return await readBounded(res, limit, what);
  } catch (err) {
    if (err instanceof BodyTooLargeError) throw tooLarge(err);
    const cause = err instanceof RegistryError ? err.cause : undefined;
    throw isAbort(cause) ? cause : err;
  }
}

/** The OCI error body's first message (`MANIFEST_UNKNOWN: manifest unknown`), or ''. */
function registryMessage(body: Buffer): string {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: string; message?: string }> };
    const first = parsed.errors?.[0];
    if (first) return [first.code, first.message].filter(Boolean).join(': ').slice(0, 300);
  } catch {
    /* not JSON */
  }
  return '';
}

/** The Authorization header for a request to the cache about `repo`. */
async function authorization(client: Client, repo: string): Promise<string | undefined> {
  const c = client.credentials;
  if (c?.kind === 'bearer') return `Bearer ${c.token}`;
  const asked = client.realms.get(repo);
  if (asked) return `Bearer ${await client.tokens.get(asked.realm, asked.scope, () => requestToken(client, asked.realm, asked.scope))}`;
  return c?.kind === 'basic' ? basicAuthorization(c.user, c.password) : undefined;
}

/**
 * After a 401 with a Bearer challenge whose realm is a URL: gets a pull token from that token service
 * (with the Basic credentials, if any). True when a token was obtained and the request is worth retrying.
 */
async function fetchToken(client: Client, challenge: string | undefined, repo: string): Promise<boolean> {
  if (client.credentials?.kind === 'bearer' || client.realms.has(repo)) return false;
  const parsed = tokenRealmOf(challenge);
  if (!parsed || !/^https?:\/\//i.test(parsed.realm)) return false;
  const realm: TokenRealm = { realm: parsed.realm, ...(parsed.service ? { service: parsed.service } : {}) };
  const scope = parsed.scope ?? `repository:${repo}:pull`;
  await client.tokens.get(realm, scope, () => requestToken(client, realm, scope));
  client.realms.set(repo, { realm, scope });
  return true;
}

/** One token request to `realm` for `scope`, with the Basic credentials if any. */
async function requestToken(client: Client, realm: TokenRealm, scope: string): Promise<{ token: string; expiresIn?: number }> {
  const where = new URL(realm.realm);
  const headers: OutgoingHttpHeaders = { 'user-agent': USER_AGENT };
  if (client.credentials?.kind === 'basic') headers.authorization = basicAuthorization(client.credentials.user, client.credentials.password);
  let res;
  try {
    res = await client.registry.requestToken(realm, scope, headers);
  } catch (err) {
    throw failureOf(err, where);
  }
  if (res.status === 401 || res.status === 403) {
    throw new HttpStatusError(401, `the token service ${where.origin} refused ${client.credentials ? 'the credentials' : 'an anonymous token'} (${res.status}); ${client.credentials ? 'check --user or CASCADE_PREFETCH_AUTH' : 'give credentials with --user USER:PASS or CASCADE_PREFETCH_AUTH=USER:PASS'}`);
  }
  if (res.status !== 200) throw new PrefetchError(`the token service ${where.origin} answered ${res.status} ${registryMessage(res.body)}`.trim());
  if (!res.answer || 'invalid' in res.answer) throw new PrefetchError(`the token service ${where.origin} sent no token`);
  return res.answer;
}

/**
 * GETs `path` on the cache for `repo`, following redirects (credentials are sent to the cache only) and
 * a token challenge. Resolves with a response whose status is not a redirect; the caller reads its body.
 */
async function get(client: Client, path: string, repo: string, accept?: string): Promise<IncomingMessage> {
  let url = new URL(`${client.cache.origin}${client.cache.pathname.replace(/\/+$/, '')}${path}`);
  let triedToken = false;
  for (let redirects = 0; ; ) {
    const toCache = url.origin === client.cache.origin;
    const headers: OutgoingHttpHeaders = { 'user-agent': USER_AGENT };
    if (accept) headers.accept = accept;
    const auth = toCache ? await authorization(client, repo) : undefined;
    if (auth) headers.authorization = auth;
    const res = await send(client, url, headers);
    const status = res.statusCode ?? 0;
    if ([301, 302, 303, 307, 308].includes(status) && res.headers.location) {
      res.resume();
      if (++redirects > MAX_REDIRECTS) throw new PrefetchError(`more than ${MAX_REDIRECTS} redirects from ${url.origin}${url.pathname}`);
      url = new URL(res.headers.location, url);
      continue;
    }
    if (status === 401 && toCache && !triedToken) {
      const challenge = res.headers['www-authenticate'];
      const body = await readBody(res, 1 << 20, 'the 401 answer');
      triedToken = true;
      if (await fetchToken(client, challenge, repo)) continue;
      throw new HttpStatusError(401, unauthorized(client, body));
    }
    return res;
  }
}

function unauthorized(client: Client, body: Buffer): string {
  const detail = registryMessage(body);
  const said = detail ? ` (401 ${detail})` : ' (401)';
  if (!client.credentials) return `the cache asks for credentials${said}; give them with --user USER:PASS, CASCADE_PREFETCH_AUTH=USER:PASS or --token TOKEN`;
  return `the cache refused the credentials${said}; check ${client.credentials.kind === 'basic' ? '--user or CASCADE_PREFETCH_AUTH' : '--token'}`;
}

/** Throws the error for a non-200 answer (reading its body for the registry's message). */
async function statusError(res: IncomingMessage, what: string, client: Client): Promise<never> {
  const body = await readBody(res, 1 << 20, 'the error answer').catch(() => Buffer.alloc(0));
  const status = res.statusCode ?? 0;
  const detail = registryMessage(body);
  const said = detail ? `: ${detail}` : '';
  if (status === 401) throw new HttpStatusError(401, unauthorized(client, body));
  if (status === 403) throw new HttpStatusError(403, `${what}: access denied (403)${said}; the user may not pull this repository`);
  if (status === 404) throw new HttpStatusError(404, `${what}: not found (404)${said}; check the repository path and reference as the cache (and its upstream) know them`);
  throw new HttpStatusError(status, `${what}: the cache answered ${status}${said}`);
}

// ---------------------------------------------------------------------------------------------------
// Resolving images

/** A blob to warm. */
interface BlobJob {
  readonly repo: string;
  readonly digest: string;
  readonly size: number;
}

/** A manifest fetched from the cache. */
interface FetchedManifest {
  readonly mediaType: string;
  readonly digest: string;
  readonly json: Record<string, unknown>;
}

function hashOf(digest: string): 'sha256' | 'sha512' {
  return digest.startsWith('sha512:') ? 'sha512' : 'sha256';
}

async function fetchManifest(client: Client, repo: string, reference: string, what: string): Promise<FetchedManifest> {
  const res = await get(client, `/v2/${repo}/manifests/${reference}`, repo, MANIFEST_ACCEPT);
  if (res.statusCode !== 200) await statusError(res, what, client);
  const bytes = await readBody(res, MANIFEST_MAX_BYTES, `the manifest of ${what}`);
  const algorithm = DIGEST_GRAMMAR.test(reference) ? hashOf(reference) : 'sha256';
  const digest = `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
  if (DIGEST_GRAMMAR.test(reference) && digest !== reference) throw new PrefetchError(`${what}: the manifest the cache sent hashes to ${digest}, not ${reference}`);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error('not an object');
  } catch {
    throw new PrefetchError(`${what}: the cache sent a manifest that is not a JSON object`);
  }
  const header = String(res.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
  const mediaType = typeof json.mediaType === 'string' ? json.mediaType : header;
  return { mediaType, digest, json };
}

function isIndex(m: FetchedManifest): boolean {
  return INDEX_MEDIA_TYPES.has(m.mediaType) || (Array.isArray(m.json.manifests) && !Array.isArray(m.json.layers));
}

function descriptorOf(value: unknown, where: string): { digest: string; size: number; mediaType?: string; urls?: unknown } {
  const d = value as { digest?: unknown; size?: unknown; mediaType?: unknown; urls?: unknown };
  if (!d || typeof d.digest !== 'string' || !DIGEST_GRAMMAR.test(d.digest) || typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw new PrefetchError(`${where}: a descriptor without a valid digest and size`);
  }
  return { digest: d.digest, size: d.size, ...(typeof d.mediaType === 'string' ? { mediaType: d.mediaType } : {}), urls: d.urls };
}

/** The blobs an image manifest references: its config and layers (foreign layers left out). */
function imageBlobs(m: FetchedManifest, repo: string, what: string): { blobs: BlobJob[]; skipped: number } {
  if (m.json.schemaVersion === 1 || Array.isArray(m.json.fsLayers)) throw new PrefetchError(`${what}: a Docker schema 1 manifest, which prefetch does not read; push the image again with a current client`);
  if (!Array.isArray(m.json.layers)) throw new PrefetchError(`${what}: the manifest (${m.mediaType || 'no media type'}) is neither an image manifest nor an index`);
  const blobs: BlobJob[] = [];
  let skipped = 0;
  if (m.json.config !== undefined) blobs.push({ repo, ...pick(descriptorOf(m.json.config, what)) });
  for (const layer of m.json.layers) {
    const d = descriptorOf(layer, what);
    if (d.mediaType && NON_DISTRIBUTABLE_LAYER_TYPES.has(d.mediaType) && Array.isArray(d.urls) && d.urls.length > 0) {
      skipped += 1;
      continue;
    }
    blobs.push({ repo, ...pick(d) });
  }
  return { blobs, skipped };
}

const pick = (d: { digest: string; size: number }) => ({ digest: d.digest, size: d.size });

/** One image argument, resolved. */
interface ResolvedImage {
  readonly ref: ImageRef;
  /** The image manifests (one per platform chosen). */
  readonly images: number;
  readonly blobs: BlobJob[];
  /** A line describing it. */
  readonly description: string;
  /** Platforms asked for and absent. */
  readonly missing: PlatformSpec[];
}

async function resolveImage(client: Client, ref: ImageRef, platforms: readonly PlatformSpec[], concurrency: number): Promise<ResolvedImage> {
  const what = formatImageRef(ref);
  const top = await fetchManifest(client, ref.name, ref.reference, what);
  const blobs: BlobJob[] = [];
  let skipped = 0;
  if (!isIndex(top)) {
    // A single image: its platform is in its config, which is read here (and so warmed) only when asked.
    const own = imageBlobs(top, ref.name, what);
    let missing: PlatformSpec[] = [];
    let platformText = '';
    if (platforms.length > 0) {
      const config = own.blobs[0];
      const platform = config ? await readConfigPlatform(client, ref.name, config, what) : undefined;
      missing = platforms.filter((p) => !platformMatches(platform, p));
      if (missing.length === platforms.length) {
        throw new PrefetchError(`${what}: a single-platform image for ${formatPlatform(platform)}, not ${platforms.map(formatPlatform).join(', ')}`);
      }
      platformText = ` (${formatPlatform(platform)})`;
    }
    const size = own.blobs.reduce((n, b) => n + b.size, 0);
    return {
      ref,
      images: 1,
      blobs: own.blobs,
      missing,
      description: `${what}: image ${shortDigest(top.digest)}${platformText}, ${plural(own.blobs.length, 'blob')}, ${formatBytes(size)}${own.skipped ? ` (${plural(own.skipped, 'foreign layer')} left out)` : ''}`,
    };
  }
  // An index: choose the platforms, then read each chosen manifest (nested indexes are followed).
  const entries = ((top.json.manifests as unknown[]) ?? []).map((e) => ({ ...(e as IndexEntry), ...pick(descriptorOf(e, what)) }));
  const { selected, missing } = selectPlatforms(entries, platforms);
  if (selected.length === 0) {
    const available = [...new Set(entries.map((e) => formatPlatform(e.platform)))].join(', ') || 'none';
    throw new PrefetchError(`${what}: no manifest for ${platforms.map(formatPlatform).join(', ')} in the index (it has ${available})`);
  }
  let images = 0;
  const chosen: string[] = [];
  const queue: Array<{ entry: IndexEntry; depth: number }> = selected.map((entry) => ({ entry, depth: 1 }));
  await pool(queue, concurrency, client.signal, async function visit({ entry, depth }): Promise<void> {
    const childWhat = `${what} (${formatPlatform(entry.platform)} ${shortDigest(entry.digest)})`;
    const child = await fetchManifest(client, ref.name, entry.digest, childWhat);
    if (isIndex(child)) {
      if (depth >= MAX_INDEX_DEPTH) throw new PrefetchError(`${childWhat}: indexes nested more than ${MAX_INDEX_DEPTH} deep`);
      const nested = ((child.json.manifests as unknown[]) ?? []).map((e) => ({ ...(e as IndexEntry), ...pick(descriptorOf(e, childWhat)) }));
      for (const e of selectPlatforms(nested, platforms).selected) await visit({ entry: e, depth: depth + 1 });
      return;
    }
    const own = imageBlobs(child, ref.name, childWhat);
    images += 1;
    skipped += own.skipped;
    chosen.push(formatPlatform(entry.platform));
    blobs.push(...own.blobs);
  });
  const unique = dedupe(blobs);
  const size = unique.reduce((n, b) => n + b.size, 0);
  const platformList = [...new Set(chosen)].sort().join(', ');
  return {
    ref,
    images,
    blobs: unique,
    missing,
    description: `${what}: index ${shortDigest(top.digest)}, ${images} of ${plural(entries.length, 'manifest')} (${platformList}), ${plural(unique.length, 'blob')}, ${formatBytes(size)}${skipped ? ` (${plural(skipped, 'foreign layer')} left out)` : ''}`,
  };
}

/** Reads a (small) config blob to learn the platform of a single-platform image. */
async function readConfigPlatform(client: Client, repo: string, config: BlobJob, what: string): Promise<IndexEntry['platform']> {
  const res = await get(client, `/v2/${repo}/blobs/${config.digest}`, repo);
  if (res.statusCode !== 200) await statusError(res, `${what}: config ${shortDigest(config.digest)}`, client);
  const bytes = await readBody(res, MANIFEST_MAX_BYTES, `the config of ${what}`);
  const algorithm = hashOf(config.digest);
  if (`${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}` !== config.digest) throw new PrefetchError(`${what}: the config blob the cache sent does not match its digest ${config.digest}`);
  try {
    const json = JSON.parse(bytes.toString('utf8')) as { os?: unknown; architecture?: unknown; variant?: unknown };
    return {
      ...(typeof json.os === 'string' ? { os: json.os } : {}),
      ...(typeof json.architecture === 'string' ? { architecture: json.architecture } : {}),
      ...(typeof json.variant === 'string' ? { variant: json.variant } : {}),
    };
  } catch {
    return undefined;
  }
}

function dedupe(blobs: readonly BlobJob[]): BlobJob[] {
  const seen = new Map<string, BlobJob>();
  // by repository and digest: a mirror may store the same digest once per remote
  for (const b of blobs) if (!seen.has(`${b.repo}@${b.digest}`)) seen.set(`${b.repo}@${b.digest}`, b);
  return [...seen.values()];
}

/** Runs `work` on every item, `concurrency` at a time; rejects with the first error once all settled. */
async function pool<T>(items: readonly T[], concurrency: number, signal: AbortSignal, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let firstError: unknown;
  const worker = async () => {
    while (next < items.length && !signal.aborted && firstError === undefined) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (err) {
        firstError ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  if (firstError !== undefined) throw firstError;
}

// ---------------------------------------------------------------------------------------------------
// Warming blobs

/** GETs a blob through the cache, reads it to the end and checks its digest and size. */
async function warmOnce(client: Client, blob: BlobJob, progress: Progress): Promise<void> {
  const what = `${blob.repo}@${blob.digest}`;
  const res = await get(client, `/v2/${blob.repo}/blobs/${blob.digest}`, blob.repo);
  if (res.statusCode !== 200) await statusError(res, what, client);
  const hash = createHash(hashOf(blob.digest));
  let received = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      hash.update(chunk);
      received += chunk.length;
      progress.add(chunk.length);
      if (received > blob.size) throw new PrefetchError(`${what}: the cache sent more than the ${blob.size} bytes the manifest gives`);
    }
    if (!res.complete) throw new PrefetchError(`${what}: the connection was cut after ${received} of ${blob.size} bytes`);
  } catch (err) {
    progress.add(-received);
    res.destroy();
    if (err instanceof PrefetchError || isAbort(err)) throw err;
    throw new PrefetchError(`${what}: the connection was cut after ${received} of ${blob.size} bytes (${(err as Error).message})`);
  }
  const actual = `${hashOf(blob.digest)}:${hash.digest('hex')}`;
  if (actual !== blob.digest || received !== blob.size) {
    progress.add(-received);
    throw new PrefetchError(`${what}: the ${received} bytes the cache sent hash to ${actual}${received !== blob.size ? ` (the manifest gives ${blob.size} bytes)` : ''}: digest mismatch`);
  }
}

// ---------------------------------------------------------------------------------------------------
// The command

/** Where `runPrefetch` writes, and what it reads (tests pass their own). */
export interface PrefetchIO {
  readonly out: ProgressStream;
  readonly err: ProgressStream;
  readonly env: NodeJS.ProcessEnv;
  /** Called once with a function that interrupts the run (default: SIGINT and SIGTERM handlers). */
  readonly onInterrupt?: (interrupt: (signal: NodeJS.Signals) => void) => () => void;
}

function signalHandlers(interrupt: (signal: NodeJS.Signals) => void): () => void {
  let count = 0;
  const handler = (signal: NodeJS.Signals) => {
    // a second Ctrl-C does not wait for the summary
    if (++count > 1) process.exit(signal === 'SIGTERM' ? 143 : 130);
    interrupt(signal);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

/** Runs `cascade prefetch ARGS...`; resolves with the exit code. */
export async function runPrefetch(args: string[], io: PrefetchIO = { out: process.stdout, err: process.stderr, env: process.env }): Promise<number> {
  try {
    const options = parsePrefetchArgs(args, io.env);
    if (!options) {
      io.out.write(USAGE);
      return 0;
    }
    return await prefetch(options, io);
  } catch (err) {
    if (!(err instanceof PrefetchError)) throw err;
    io.err.write(`cascade: ${err.message}\n`);
    return err instanceof PrefetchUsageError ? 64 : 1;
  }
}

/** Prefetches `options.images` into the cache; resolves with the exit code. */
export async function prefetch(options: PrefetchOptions, io: PrefetchIO): Promise<number> {
  let ca: string | undefined;
  if (options.caFile !== undefined) {
    try {
      ca = readFileSync(options.caFile, 'utf8');
    } catch (err) {
      throw new PrefetchUsageError(`--ca ${options.caFile}: cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new PrefetchUsageError(`--ca ${options.caFile}: contains no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  }
  const controller = new AbortController();
  let interruptedBy: NodeJS.Signals | undefined;
  const removeHandlers = (io.onInterrupt ?? signalHandlers)((signal) => {
    interruptedBy ??= signal;
    controller.abort();
  });
  const client: Client = {
    cache: options.cache,
    registry: new RegistryClient({
      url: options.cache.href,
      maxSockets: options.concurrency + 2,
      responseTimeoutMs: IDLE_TIMEOUT_MS,
      idleTimeoutMs: IDLE_TIMEOUT_MS,
      name: 'the cache',
      // --ca replaces the system's CAs for the run (docs/prefetch.md)
      ...(ca ? { ca: [ca], systemRoots: false } : {}),
    }),
    realms: new Map(),
    tokens: new TokenCache(),
    signal: controller.signal,
    ...(options.credentials ? { credentials: options.credentials } : {}),
  };
  const progress = new Progress(io.out);
  const started = Date.now();
  let failed = 0;
  let images = 0;
  let blobsDone = 0;
  let bytesDone = 0;
  const jobs: BlobJob[] = [];
  const fail = (message: string) => {
    failed += 1;
    progress.note(`cascade: ${message}`, io.err);
  };
  try {
    for (const ref of options.images) {
      if (controller.signal.aborted) break;
      try {
        const resolved = await resolveImage(client, ref, options.platforms, options.concurrency);
        images += resolved.images;
        jobs.push(...resolved.blobs);
        io.out.write(`${resolved.description}\n`);
        for (const p of resolved.missing) fail(`${formatImageRef(ref)}: no manifest for ${formatPlatform(p)}; the other platforms asked for are prefetched`);
      } catch (err) {
        if (isAbort(err) || controller.signal.aborted) break;
        // the cache itself is unreachable, or refuses us: the other images would fail the same way
        if (err instanceof TransportError || (err instanceof HttpStatusError && err.status === 401)) throw err;
        if (!(err instanceof PrefetchError)) throw err;
        fail(err.message);
      }
    }
    const unique = dedupe(jobs);
    progress.start(
      unique.reduce((n, b) => n + b.size, 0),
      unique.length,
    );
    if (!controller.signal.aborted) {
      await pool(unique, options.concurrency, controller.signal, async (blob) => {
        const t0 = Date.now();
        for (let attempt = 1; ; attempt++) {
          try {
            await warmOnce(client, blob, progress);
            blobsDone += 1;
            bytesDone += blob.size;
            progress.blobDone(blob.digest, blob.size, Date.now() - t0);
            return;
          } catch (err) {
            if (controller.signal.aborted || isAbort(err)) return;
            if (attempt >= 2 || (err instanceof HttpStatusError && err.status === 401)) {
              fail(err instanceof PrefetchError ? err.message : `${blob.repo}@${blob.digest}: ${(err as Error).message}`);
              return;
            }
          }
        }
      });
    }
    progress.stop();
    io.out.write(`${renderSummary({ blobsDone, blobsTotal: unique.length, bytesDone, images, failed, ms: Date.now() - started, interrupted: interruptedBy !== undefined })}\n`);
    if (interruptedBy) return interruptedBy === 'SIGTERM' ? 143 : 130;
    return failed > 0 ? 1 : 0;
  } finally {
    progress.stop();
    removeHandlers();
    client.registry.close();
  }
}
