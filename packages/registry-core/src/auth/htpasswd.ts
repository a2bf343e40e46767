/**
 * Basic authentication against an Apache htpasswd file, as distribution's `auth.htpasswd` does: bcrypt
 * hashes only, the file reloaded when it changes, and the WWW-Authenticate challenge of the realm.
 *
 * bcrypt is deliberately slow (about 70-100 ms per check at cost 10 in JavaScript) and one image pull sends
 * dozens of requests with the same credentials, so successful checks are remembered for a short while,
 * keyed by a SHA-256 of the user, password and hash: the password itself is never kept.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync, type Stats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import bcrypt from 'bcryptjs';

/** A problem with the htpasswd file itself: unreadable, or a line that is not `user:bcrypt-hash`. */
export class HtpasswdFileError extends Error {
  /** The htpasswd file. */
  readonly file: string;
  /** 1-based line of the problem, when it is one line's. */
  readonly line: number | undefined;

  constructor(file: string, line: number | undefined, message: string) {
    super(`${file}${line === undefined ? '' : `:${line}`}: ${message}`);
    this.name = 'HtpasswdFileError';
    this.file = file;
    this.line = line;
  }
}

/** A bcrypt hash in the modular crypt format (`$2y$10$` + 22 salt + 31 hash characters). */
const BCRYPT_HASH = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;

/** Names the kind of a hash that is not bcrypt, without printing it. */
function describeHash(hash: string): string {
  if (hash === '') return 'an empty hash';
  if (hash.startsWith('$apr1$')) return 'an Apache MD5 ($apr1$) hash';
  if (hash.startsWith('{SHA}')) return 'a SHA-1 ({SHA}) hash';
  if (hash.startsWith('$1$')) return 'an MD5-crypt ($1$) hash';
  if (hash.startsWith('$5$')) return 'a SHA-256-crypt ($5$) hash';
  if (hash.startsWith('$6$')) return 'a SHA-512-crypt ($6$) hash';
  if (hash.startsWith('$2')) return 'a malformed bcrypt hash';
  return 'a crypt(3) hash or a plain-text password';
}

/**
 * Parses htpasswd text: one `user:hash` per line, blank lines and `#` comments allowed, bcrypt hashes only
 * (as distribution). When a user appears twice the last line wins, as in distribution.
 *
 * @returns user name to bcrypt hash.
 * @throws HtpasswdFileError naming `file` and the line of the first bad entry.
 */
export function parseHtpasswd(text: string, file: string): Map<string, string> {
  const users = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) throw new HtpasswdFileError(file, i + 1, 'expected <user>:<bcrypt hash>, got a line without ":"');
    const user = line.slice(0, colon).trim();
    const hash = line.slice(colon + 1).trim();
    if (user === '') throw new HtpasswdFileError(file, i + 1, 'expected <user>:<bcrypt hash>, got an empty user name');
    if (!BCRYPT_HASH.test(hash)) {
      throw new HtpasswdFileError(
        file,
        i + 1,
        `expected a bcrypt hash ($2y$, $2a$ or $2b$, as written by "htpasswd -B") for user ${JSON.stringify(user)}, got ${describeHash(hash)}`,
      );
    }
    users.set(user, hash);
  }
  return users;
}

/** The part of a pino logger the authenticator uses; it is never given credentials. */
export interface HtpasswdLogger {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** Options of {@link HtpasswdAuthenticator}. */
export interface HtpasswdOptions {
  /** The realm of the `WWW-Authenticate` challenge. */
  readonly realm: string;
  /** The htpasswd file. */
  readonly path: string;
  /** How long a successful check is remembered, in ms (default 60 000). */
  readonly cacheTtlMs?: number;
  /** At most this many remembered checks (default 10 000); the oldest are dropped first. */
  readonly maxCacheEntries?: number;
  /** The clock, in ms (default `Date.now`); tests move it to expire the cache and trigger reloads. */
  readonly now?: () => number;
  /** The password check (default `bcrypt.compare`); tests wrap it to count calls. */
  readonly compare?: (password: string, hash: string) => Promise<boolean>;
  /** Where reloads and reload failures are logged; credentials are never passed to it. */
  readonly logger?: HtpasswdLogger;
}

/** Compared against when the user is unknown, so that an unknown user costs as much as a wrong password. */
const UNKNOWN_USER_HASH = '$2b$10$ldRLhcLYbCqyCnDnKJ2KMuYP91QyeM5/MXjZF0Pi/hBfLYzBSLHbK';

/** How often, at most, the file's modification time is checked. */
const RELOAD_CHECK_MS = 1000;

function signatureOf(st: Stats): string {
  return `${st.mtimeMs}:${st.size}:${st.ino}`;
}

/** `Basic base64(user:password)` to its parts; undefined when the header is anything else. */
function parseBasic(header: string | undefined): { user: string; password: string } | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*basic\s+([A-Za-z0-9+/]+={0,2})\s*$/i.exec(header);
  const token = m?.[1];
  if (token === undefined || token.length % 4 === 1) return undefined;
  const decoded = Buffer.from(token, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * Checks Basic credentials against an htpasswd file.
 *
 * The constructor reads the file synchronously, so a missing or malformed file fails start-up with an
 * {@link HtpasswdFileError}. Afterwards the file is reloaded when its modification time (or size) changes,
 * checked at most once per second; while the file is missing or malformed every check fails (fail closed,
 * logged), because who may log in is then unknown.
 *
 * @example
 * const auth = new HtpasswdAuthenticator({ realm: 'Registry', path: '/auth/htpasswd' });
 * const who = await auth.authenticate(req.headers.authorization);
 * if (!who) res.setHeader('WWW-Authenticate', auth.challenge());
 */
export class HtpasswdAuthenticator {
  private readonly realm: string;
  private readonly path: string;
  private readonly cacheTtlMs: number;
  private readonly maxCacheEntries: number;
  private readonly now: () => number;
  private readonly compare: (password: string, hash: string) => Promise<boolean>;
  private readonly logger: HtpasswdLogger | undefined;

  /** undefined while the file is missing or malformed. */
  private users: Map<string, string> | undefined;
  private signature: string;
  private lastCheck: number;
  private reloading: Promise<void> | undefined;
  /** SHA-256 key of (user, password, hash) to the time the success expires, oldest first. */
  private readonly verified = new Map<string, number>();
  /** Checks in progress, so that concurrent requests with the same credentials share one bcrypt run. */
  private readonly inflight = new Map<string, Promise<boolean>>();

  /** @throws HtpasswdFileError when the file cannot be read or has a bad line. */
  constructor(options: HtpasswdOptions) {
    this.realm = options.realm;
    this.path = options.path;
    this.cacheTtlMs = options.cacheTtlMs ?? 60_000;
    this.maxCacheEntries = options.maxCacheEntries ?? 10_000;
    this.now = options.now ?? Date.now;
    this.compare = options.compare ?? ((password, hash) => bcrypt.compare(password, hash));
    this.logger = options.logger;
    let text: string;
    let st: Stats;
    try {
      st = statSync(this.path);
      text = readFileSync(this.path, 'utf8');
    } catch (e) {
      throw new HtpasswdFileError(this.path, undefined, `cannot read htpasswd file: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.users = parseHtpasswd(text, this.path);
    this.signature = signatureOf(st);
    this.lastCheck = this.now();
  }

  /**
   * Resolves with the user when `authorizationHeader` carries Basic credentials that match the file, and
   * with undefined when it is missing, malformed, names an unknown user or has a wrong password. Never
   * rejects.
   */
  async authenticate(authorizationHeader: string | undefined): Promise<{ user: string } | undefined> {
    const credentials = parseBasic(authorizationHeader);
    if (credentials === undefined) return undefined;
    await this.refresh();
    const users = this.users;
    if (users === undefined) return undefined;
    const hash = users.get(credentials.user);
    const ok = await this.verify(credentials.user, credentials.password, hash ?? UNKNOWN_USER_HASH);
    return ok && hash !== undefined ? { user: credentials.user } : undefined;
  }

  /** The `WWW-Authenticate` header value of a 401: `Basic realm="<realm>"`. */
  challenge(): string {
    return `Basic realm="${this.realm.replace(/["\\]/g, '\\$&')}"`;
  }

  private async verify(user: string, password: string, hash: string): Promise<boolean> {
    const key = createHash('sha256').update(JSON.stringify([user, password, hash])).digest('hex');
    const now = this.now();
    const expires = this.verified.get(key);
    if (expires !== undefined) {
      if (expires > now) return true;
      this.verified.delete(key);
    }
    let pending = this.inflight.get(key);
    if (pending === undefined) {
      pending = this.compare(password, hash)
        .catch(() => false)
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    const ok = await pending;
    // Failures are not remembered: a wrong password always costs a full check.
    if (ok) this.remember(key, this.now());
    return ok;
  }

  private remember(key: string, now: number): void {
    this.verified.delete(key);
    for (const [k, expires] of this.verified) {
      if (this.verified.size < this.maxCacheEntries && expires > now) break;
      this.verified.delete(k);
    }
    this.verified.set(key, now + this.cacheTtlMs);
  }

  private refresh(): Promise<void> {
    if (this.reloading !== undefined) return this.reloading;
    const now = this.now();
    if (now - this.lastCheck < RELOAD_CHECK_MS) return Promise.resolve();
    this.lastCheck = now;
    this.reloading = this.reload().finally(() => {
      this.reloading = undefined;
    });
    return this.reloading;
  }

  private async reload(): Promise<void> {
    let st: Stats;
    try {
      st = await stat(this.path);
    } catch (e) {
      if (this.signature !== 'missing') {
        this.logger?.error({ path: this.path, err: e instanceof Error ? e.message : String(e) }, 'htpasswd file unreadable; every login fails until it is restored');
      }
      this.users = undefined;
      this.signature = 'missing';
      return;
    }
    const signature = signatureOf(st);
    if (signature === this.signature) return;
    this.signature = signature;
    try {
      this.users = parseHtpasswd(await readFile(this.path, 'utf8'), this.path);
      this.logger?.info({ path: this.path, users: this.users.size }, 'htpasswd file reloaded');
    } catch (e) {
      this.users = undefined;
      this.logger?.error({ path: this.path, err: e instanceof Error ? e.message : String(e) }, 'htpasswd file invalid; every login fails until it is fixed');
    }
  }
}
