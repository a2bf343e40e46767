/**
 * The coordination of a region: several cache nodes (or mirrors: `proxy.region`) on one shared storage folder,
 * coordinated through one Redis (`region.redis`). Redis holds only short-lived facts, never data: a node's loss of
 * it is degraded service, not an outage, and nothing is lost when it restarts empty.
 *
 * Keys, below `cascade:region:<name>` (the name is `region.name`, or derived from the storage root):
 * - `:nodes` - sorted set of the live nodes, scored by the time their heartbeat expires.
 * - `:fill:<digest>` - the lease of the node filling a blob (`<node>/<fill>`), with a TTL the leader renews.
 * - `:fillp:<digest>` - the fill's progress, JSON {@link FillProgress}: where its partial file is, how many of
 *   its bytes are on storage (hashed: a node that takes the fill over resumes from there), its state, and for a
 *   mirror the remote and repository it fetches from.
 * - `:pins:<digest>` - sorted set of the nodes serving or filling a blob, scored by expiry: the sweeper of any
 *   node leaves it alone.
 * - `:sweeping` (lock of the running sweep) and `:sweepslot:<n>` (one sweep per interval for the region).
 * - `:bytes` - the region's byte total, for `maxsize`.
 *
 * Every Redis call has a short timeout and never throws out of here: a failure answers "unknown" and the caller
 * works alone (per-node single-flight, no sweep). The node logs once when Redis goes away and once when it is back.
 */
import { createHash, randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { z } from 'zod';
import { CASCADE_DIRS, type Digest } from '@cascade/registry-core';

/** How long a fill lease lasts without renewal: a dead leader's fill is taken over after this. */
export const DEFAULT_LEASE_MS = 5000;
/** How long a node stays in `:nodes` (and its pins in Redis) without a heartbeat. */
const HEARTBEAT_TTL_MS = 6000;
const HEARTBEAT_MS = 1000;
/** Progress keys outlive their fill a while, so that late followers learn how it ended. */
const PROGRESS_TTL_MS = 10 * 60_000;

/** What a fill's leader publishes for the other nodes. */
export interface FillProgress {
  /** The lease this progress belongs to (`<node>/<fill>`). */
  readonly token: string;
  readonly state: 'filling' | 'done' | 'failed';
  /** The partial file (storage path) the leader writes. */
  readonly partial: string;
  /** Bytes on storage in `partial`, each one received and hashed by the leader. */
  readonly written: number;
  readonly size?: number;
  /** Why the fill failed (`state: failed`). */
  readonly reason?: string;
  /**
   * Where the fill fetches from when not the nodes' one upstream set: a mirror's `<remote>/<repository>`. A node
   * taking the fill over resumes from the same remote (every node has the same config), and a mirror serves
   * the bytes of a fill for another repository only once that repository's remote confirmed it has them.
   */
  readonly source?: string;
}

/** Options of {@link RegionCoordinator}. */
export interface RegionCoordinatorOptions {
  /** `redis://` or `rediss://` URL. */
  readonly redis: string;
  /** Names the region's keys; nodes of one region must agree (default: derived from `storageRoot`). */
  readonly name?: string;
  /** The shared storage folder (default name source). */
  readonly storageRoot?: string;
  readonly logger: Logger;
  /** This node's id (default `<hostname>-<pid>-<random>`). */
  readonly nodeId?: string;
  readonly leaseMs?: number;
  /** How long the sweep lock outlives a sweeper that stopped renewing it (its node died; default 30 s). */
  readonly sweepLockMs?: number;
}

/** Counters of a node's part in its region (metrics). */
export interface RegionStats {
  fillsLed: number;
  fillsJoined: number;
  takeovers: number;
  /** Fills started without the region (Redis unreachable). */
  fillsAlone: number;
  sweeps: number;
  sweepsSkipped: number;
}

const LUA_CLAIM = `if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) return 1 end return 0`;
const LUA_RENEW = `local v = redis.call('GET', KEYS[1]) if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 elseif v then return 0 end return -1`;
const LUA_PUBLISH = `local v = redis.call('GET', KEYS[1]) if v == ARGV[1] or not v then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) return 1 end return 0`;
const LUA_INCR_IF_SET = `if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end return nil`;
const LUA_RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/** The key prefix of the region whose storage is at `storageRoot`, or named `name`. */
export function regionPrefix(name: string | undefined, storageRoot: string | undefined): string {
  const id = name ?? createHash('sha256').update(storageRoot ?? '').digest('hex').slice(0, 16);
  return `cascade:region:${id}`;
}

/** ioredis options that keep every call short and never queue while disconnected. */
function clientOptions(): RedisOptions {
  return {
    connectTimeout: 1000,
    commandTimeout: 500,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    lazyConnect: true,
  };
}

/** A node's link to its region's Redis (see the module comment). */
export class RegionCoordinator {
  readonly nodeId: string;
  readonly prefix: string;
  readonly leaseMs: number;
  readonly #sweepLockMs: number;
  readonly stats: RegionStats = { fillsLed: 0, fillsJoined: 0, takeovers: 0, fillsAlone: 0, sweeps: 0, sweepsSkipped: 0 };
  readonly #redis: Redis;
  readonly #log: Logger;
  #up = false;
  /** Whether the node has logged being down (so that the first connection is not "back"). */
  #reportedDown = false;
  #timer: NodeJS.Timeout | undefined;
  /** Digests this node pins (serving or filling), with their counts; refreshed in Redis by the heartbeat. */
  readonly #pins = new Map<string, number>();
  #liveNodes: string[] = [];
  #closed = false;

  constructor(options: RegionCoordinatorOptions) {
    this.nodeId = options.nodeId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.prefix = regionPrefix(options.name, options.storageRoot);
    this.leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    this.#sweepLockMs = options.sweepLockMs ?? 30_000;
    this.#log = options.logger.child({ region: this.prefix, node: this.nodeId });
    this.#redis = new Redis(options.redis, clientOptions());
    // ioredis reports every failed connection attempt; the up/down transitions are what the log needs.
    this.#redis.on('error', (err: Error) => this.#log.debug({ reason: err.message }, 'region: Redis error'));
    this.#redis.on('ready', () => this.#setUp(true));
    this.#redis.on('close', () => this.#setUp(false));
  }

  /** Tags this node's expiry journals (letters and digits of its id). */
  get journalTag(): string {
    return this.nodeId.replace(/[^A-Za-z0-9]/g, '');
  }

  /** Whether Redis answers: false means this node works alone (degraded). */
  get up(): boolean {
    return this.#up;
  }

  /** The nodes whose heartbeat is live, as of the last heartbeat. */
  get liveNodes(): readonly string[] {
    return this.#liveNodes;
  }

  /** Connects (without waiting longer than the connect timeout) and starts the heartbeat. Never throws. */
  async start(): Promise<void> {
    await this.#redis.connect().catch((err: unknown) => {
      this.#log.warn({ reason: describe(err) }, 'region: Redis unreachable at start-up; this node works alone until it answers (per-node fills, no expiry sweep)');
      this.#reportedDown = true;
    });
    await this.#heartbeat();
    this.#timer = setInterval(() => void this.#heartbeat(), HEARTBEAT_MS);
    this.#timer.unref();
  }

  /** Leaves the region (removes the node from `:nodes`, its pins) and disconnects. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    if (this.#up) {
      const pipeline = this.#redis.pipeline().zrem(this.key('nodes'), this.nodeId);
      for (const digest of this.#pins.keys()) pipeline.zrem(this.key(`pins:${digest}`), this.nodeId);
      await pipeline.exec().catch(() => undefined);
    }
    this.#redis.disconnect();
  }

  key(suffix: string): string {
    return `${this.prefix}:${suffix}`;
  }

  #setUp(up: boolean): void {
    if (up === this.#up) return;
    this.#up = up;
    if (this.#closed) return;
    if (up) {
      if (this.#reportedDown) this.#log.info('region: Redis is back; this node coordinates with its region again');
      void this.#heartbeat();
    } else {
      this.#reportedDown = true;
      this.#log.warn('region: Redis unreachable; this node works alone until it is back (per-node fills, no expiry sweep)');
    }
  }

  /** Runs a Redis call; undefined when Redis did not answer (the node is then degraded). */
  async #call<T>(fn: (r: Redis) => Promise<T>): Promise<T | undefined> {
    if (!this.#up || this.#closed) return undefined;
    try {
      return await fn(this.#redis);
    } catch (err) {
      this.#log.debug({ reason: describe(err) }, 'region: Redis call failed');
      return undefined;
    }
  }

  async #heartbeat(): Promise<void> {
    const now = Date.now();
    const nodes = this.key('nodes');
    const pipeline = () => {
      const p = this.#redis.pipeline().zadd(nodes, now + HEARTBEAT_TTL_MS, this.nodeId).zremrangebyscore(nodes, '-inf', now).zrangebyscore(nodes, now, '+inf');
      for (const digest of this.#pins.keys()) p.zadd(this.key(`pins:${digest}`), now + HEARTBEAT_TTL_MS, this.nodeId).pexpire(this.key(`pins:${digest}`), HEARTBEAT_TTL_MS);
      return p.exec();
    };
    const results = await this.#call(pipeline);
    const members = results?.[2]?.[1];
    if (Array.isArray(members)) this.#liveNodes = members.map(String);
  }

  // --- fills ---

  /**
   * Asks for the lease of `digest`'s fill, publishing `progress` with it: `led` (this node fills), `joined`
   * (another node does), or `alone` (Redis did not answer: fill without the region).
   */
  async claimFill(digest: Digest, progress: FillProgress): Promise<'led' | 'joined' | 'alone'> {
    const got = await this.#call((r) => r.eval(LUA_CLAIM, 2, this.key(`fill:${digest.toString()}`), this.key(`fillp:${digest.toString()}`), progress.token, this.leaseMs, JSON.stringify(progress), PROGRESS_TTL_MS));
    if (got === undefined) return 'alone';
    return got === 1 ? 'led' : 'joined';
  }

  /** Renews a lease: `ok`, `lost` (another node holds it, or it expired), `unknown` (Redis did not answer). */
  async renewFill(digest: Digest, token: string): Promise<'ok' | 'lost' | 'unknown'> {
    const key = this.key(`fill:${digest.toString()}`);
    let got = await this.#call((r) => r.eval(LUA_RENEW, 1, key, token, this.leaseMs));
    if (got === -1) {
      // Expired while Redis was away, and nobody took it: take it back.
      got = (await this.#call((r) => r.set(key, token, 'PX', this.leaseMs, 'NX'))) === 'OK' ? 1 : 0;
    }
    if (got === undefined) return 'unknown';
    return got === 1 ? 'ok' : 'lost';
  }

  /** Publishes a fill's progress (best effort), unless another lease than `progress.token` holds the fill. */
  async publishFill(digest: Digest, progress: FillProgress, token: string = progress.token): Promise<void> {
    await this.#call((r) => r.eval(LUA_PUBLISH, 2, this.key(`fill:${digest.toString()}`), this.key(`fillp:${digest.toString()}`), token, JSON.stringify(progress), PROGRESS_TTL_MS));
  }

  /** Ends a lease held with `token` (the fill is over). */
  async releaseFill(digest: Digest, token: string): Promise<void> {
    await this.#call((r) => r.eval(LUA_RELEASE, 1, this.key(`fill:${digest.toString()}`), token));
  }

  /** The lease holder and the progress of `digest`'s fill; undefined when Redis did not answer. */
  async peekFill(digest: Digest): Promise<{ leader?: string; progress?: FillProgress } | undefined> {
    const got = await this.#call((r) => r.mget(this.key(`fill:${digest.toString()}`), this.key(`fillp:${digest.toString()}`)));
    if (got === undefined) return undefined;
    const [leader, progress] = got;
    return { ...(leader ? { leader } : {}), ...(progress ? { progress: parseProgress(progress) } : {}) };
  }

  // --- pins ---

  /** Pins `digest` region-wide until the returned function is called (idempotent); pins nest. */
  pin(digest: Digest): () => void {
    const key = digest.toString();
    const n = this.#pins.get(key) ?? 0;
    this.#pins.set(key, n + 1);
    if (n === 0) void this.#call((r) => r.pipeline().zadd(this.key(`pins:${key}`), Date.now() + HEARTBEAT_TTL_MS, this.nodeId).pexpire(this.key(`pins:${key}`), HEARTBEAT_TTL_MS).exec());
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#pins.get(key) ?? 1) - 1;
      if (left > 0) return void this.#pins.set(key, left);
      this.#pins.delete(key);
      void this.#call((r) => r.zrem(this.key(`pins:${key}`), this.nodeId));
    };
  }

  /** Of `keys` (digests as text), those pinned by a live node; undefined when Redis did not answer. */
  async pinned(keys: readonly string[]): Promise<Set<string> | undefined> {
    if (keys.length === 0) return new Set();
    const now = Date.now();
    const results = await this.#call((r) => {
      const p = r.pipeline();
      for (const k of keys) p.zcount(this.key(`pins:${k}`), now, '+inf');
      return p.exec();
    });
    if (!results) return undefined;
    const out = new Set<string>();
    results.forEach(([err, count], i) => {
      if (err || Number(count) > 0) out.add(keys[i] as string);
    });
    return out;
  }

  // --- sweeps ---

  /**
   * Runs `sweep` if this node is the region's sweeper for this interval: one sweep per `intervalMs` slot in the
   * region, never two at once (the lock expires if its node dies, and is renewed while the sweep runs). Without
   * Redis no sweep runs (two nodes sweeping one folder alone is what the region forbids). Undefined when skipped.
   */
  async exclusiveSweep<T>(intervalMs: number, sweep: () => Promise<T>): Promise<T | undefined> {
    const slot = Math.floor(Date.now() / intervalMs);
    const lockKey = this.key('sweeping');
    const token = `${this.nodeId}/${randomBytes(4).toString('hex')}`;
    const lockMs = this.#sweepLockMs;
    const got = await this.#call(async (r) => {
      if ((await r.set(lockKey, token, 'PX', lockMs, 'NX')) !== 'OK') return false;
      if ((await r.set(this.key(`sweepslot:${slot}`), this.nodeId, 'PX', Math.max(intervalMs * 2, 1000), 'NX')) === 'OK') return true;
      await r.eval(LUA_RELEASE, 1, lockKey, token);
      return false;
    });
    if (!got) {
      this.stats.sweepsSkipped += 1;
      return undefined;
    }
    this.stats.sweeps += 1;
    const renew = setInterval(() => void this.#call((r) => r.eval(LUA_RENEW, 1, lockKey, token, lockMs)), lockMs / 3);
    renew.unref();
    try {
      return await sweep();
    } finally {
      clearInterval(renew);
      await this.#call((r) => r.eval(LUA_RELEASE, 1, lockKey, token));
    }
  }

  // --- byte total ---

  /**
   * Adds `delta` to the region's byte total (best effort). Only to a total that is there: after Redis lost it
   * (a restart), the deltas alone would pass for the total; the next sweep seeds it again (see {@link bytes}).
   */
  addBytes(delta: number): void {
    if (delta !== 0) void this.#call((r) => r.eval(LUA_INCR_IF_SET, 1, this.key('bytes'), Math.round(delta)));
  }

  /** Sets the region's byte total (a walk of the whole storage counted it). */
  setBytes(bytes: number): void {
    void this.#call((r) => r.set(this.key('bytes'), Math.max(0, Math.round(bytes))));
  }

  /** The region's byte total; undefined when unknown. */
  async bytes(): Promise<number | undefined> {
    const v = await this.#call((r) => r.get(this.key('bytes')));
    if (v === undefined || v === null) return undefined;
    const n = Number(v);
    return Number.isFinite(n) ? Math.max(0, n) : undefined;
  }
}

/**
 * A fill's progress as Redis holds it, checked: Redis is shared by every node, and what it says decides which
 * file a node reads bytes from, so a partial file outside the fills folder (or a path that climbs out of it) is
 * refused, as is anything malformed.
 */
const progressSchema = z.object({
  token: z.string().min(1).max(512),
  state: z.enum(['filling', 'done', 'failed']),
  partial: z
    .string()
    .max(1024)
    .refine((path) => path.startsWith(`${CASCADE_DIRS.fills}/`) && !path.split('/').some((segment) => segment === '..' || segment === '.'), 'a file of the fills folder'),
  written: z.number().int().nonnegative(),
  size: z.number().int().nonnegative().optional(),
  reason: z.string().max(4096).optional(),
  source: z.string().max(4096).optional(),
});

function parseProgress(text: string): FillProgress | undefined {
  try {
    const parsed = progressSchema.safeParse(JSON.parse(text));
    return parsed.success ? (parsed.data as FillProgress) : undefined;
  } catch {
    return undefined;
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What {@link checkRegion} found. */
export interface RegionCheck {
  readonly ok: boolean;
  readonly detail: string;
  /** The live nodes of every region on this Redis. */
  readonly nodes?: string[];
}

/**
 * Checks a region's Redis for `cascade doctor`: PING within `timeoutMs`, and the live nodes of the regions it
 * coordinates. Never throws; the detail never holds the URL's password.
 */
export async function checkRegion(redisUrl: string, options: { timeoutMs?: number } = {}): Promise<RegionCheck> {
  const timeoutMs = options.timeoutMs ?? 2000;
  let redis: Redis;
  try {
    redis = new Redis(redisUrl, { ...clientOptions(), connectTimeout: timeoutMs, commandTimeout: timeoutMs, retryStrategy: () => null, maxRetriesPerRequest: 0 });
  } catch (err) {
    return { ok: false, detail: `bad Redis URL: ${describe(err)}` };
  }
  // The connection's own error (refused, AUTH refused, TLS) says more than the command's "Connection is closed".
  let cause: string | undefined;
  redis.on('error', (err: Error) => (cause ??= err.message));
  const where = safeUrl(redisUrl);
  try {
    await redis.connect();
    const pong = await redis.ping();
    if (pong !== 'PONG') return { ok: false, detail: `${where} answered PING with ${pong}` };
    const now = Date.now();
    const nodes = new Set<string>();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', 'cascade:region:*:nodes', 'COUNT', 100);
      cursor = next;
      for (const key of keys) for (const n of await redis.zrangebyscore(key, now, '+inf')) nodes.add(n);
    } while (cursor !== '0');
    const list = [...nodes].sort();
    return { ok: true, detail: `${where} answers; ${list.length} live node${list.length === 1 ? '' : 's'}`, nodes: list };
  } catch (err) {
    return { ok: false, detail: `${where}: ${cause ?? describe(err)}`.replaceAll(password(redisUrl) ?? '\u0000', '***') };
  } finally {
    redis.disconnect();
  }
}

/** The password of a URL, when it has one (so that no message can show it). */
function password(url: string): string | undefined {
  try {
    const p = decodeURIComponent(new URL(url).password);
    return p === '' ? undefined : p;
  } catch {
    return undefined;
  }
}

/** A Redis URL without its credentials, for messages. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return 'the Redis URL';
  }
}
