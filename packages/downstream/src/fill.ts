/**
 * Single-flight fills: the first miss for a blob starts one upstream fetch that writes to a partial file
 * while hashing; every request for that blob (the first one included) follows the partial file as it
 * grows, so N concurrent misses cost one upstream fetch and every client streams as bytes arrive. The
 * blob is moved into place only when its size and digest match; otherwise the partial file is removed
 * and followers see an error.
 *
 * A fill does not depend on its clients: when the last one goes away it keeps running for `fillTimeoutMs`
 * (so the next client gets a hit), then is aborted.
 *
 * In a region (several nodes on one shared folder, `region/coordinator.ts`), single-flight is the region's: the
 * node that gets the fill's lease leads it and publishes how many bytes of its partial file are on storage; the
 * others follow that file up to there (the last byte once the blob is committed), take the fill over when the
 * leader's lease expires (its published bytes hashed again and copied into a file of their own, the rest
 * fetched with a Range request), and fill alone when Redis does not answer. A leader that stops (shutdown, no
 * client left) hands the fill to the region instead of failing it. A mirror's fill publishes its key (the remote
 * and repository it fetches from): a node taking it over resumes from that remote with its own pool.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import {
  type BlobBody,
  CASCADE_DIRS,
  Digest,
  diskFullError,
  type FileSegment,
  type FileSegments,
  filesBody,
  isDiskFull,
  isPathNotFound,
  paths,
  RegistryError,
  type PositionalReader,
  type StorageDriver,
  streamBody,
  streamHash,
  type StreamHash,
  canPump,
  pumpBody,
  type PumpResult,
} from '@cascade/registry-core';
import { blobPath, chunksOf, describeError, type UpstreamBlobResponse, type UpstreamPool } from './upstream.js';
import type { FillProgress, RegionCoordinator } from './region/coordinator.js';
import type { ChunkSource } from './upstream-direct.js';

/** Bytes a fill may have received and not yet written before it stops reading from upstream. */
const WRITE_AHEAD = 4 << 20;
/**
 * Chunks gather into writes of this size (half the receive ring, so one batch is written and hashed while
 * the next is received). Each batch costs a turn of the pool for its write, one for its hash and a sendfile
 * per follower, and every turn wakes a thread: 2 MiB rather than 1 MiB took 4 % less CPU per cold GiB and
 * 2-6 % less time (docs/performance.md).
 */
const WRITE_BATCH = 2 << 20;
/** Longest a received chunk waits for its batch to fill before it is written anyway. */
const GATHER_MS = 2;
/**
 * The native pump writes a batch when it is full, when the upstream pauses for GATHER_MS, or this long after the
 * batch's first byte: at 1 Gbit/s a 2 MiB batch fills in ~17 ms, so batches stay whole (half the events per GiB
 * of 2 ms batches), and a slow upstream's followers still get each byte within this time.
 */
const PUMP_MAX_DELAY_MS = 20;
/**
 * Whether fills hand plain-HTTP bodies to the native pump (see `pumpRest`). `CASCADE_FILL_PUMP=0` keeps them on
 * the JavaScript path: a diagnostic switch (and the benchmark's A/B), not a setting.
 */
const PUMP = process.env.CASCADE_FILL_PUMP !== '0';
/**
 * The first write of a fill takes at most this much, and a copy of it stays in memory (the fill's `head`):
 * followers send it at once, then what is written. Writing a whole first receive block (1 MiB) into new
 * page-cache pages took 3–6 ms, at every hop, before the next hop saw a byte.
 */
const FIRST_WRITE = 64 << 10;

/** Times a fill resumes a transfer the network cut (with a Range request) before it gives up. */
const MAX_RESUMES = 3;

/** Where partial fills live in the driver (distribution ignores `_` folders; emptied at start-up). */
export const FILLS_DIR = CASCADE_DIRS.fills;

/** Where a fill fetches from when it is not the manager's upstream pool: a mirror's remote. */
export interface FillSource {
  readonly upstreams: UpstreamPool;
  /** Names the remote and repository, so that another repository joining the fill can tell. */
  readonly key: string;
}

/** How long a fill that failed on its upstream refuses range requests (downstream resumes) of its blob. */
export const FAILED_FILL_MEMORY_MS = 5000;

/** Options of {@link FillManager}. */
export interface FillManagerOptions {
  readonly driver: StorageDriver;
  readonly upstreams: UpstreamPool;
  readonly logger: Logger;
  /** How long a fill runs on with no client (default 10 min). */
  readonly fillTimeoutMs?: number;
  /** Called when a blob was committed (for the expiry index and metrics). */
  readonly onCommitted?: (digest: Digest, size: number) => void;
  /**
   * Called when a fill failed and stored nothing (metrics): `storage` when this node's own storage failed
   * (disk full, I/O error), `upstream` for everything else.
   */
  readonly onFailed?: (digest: Digest, reason: string, cause: 'upstream' | 'storage') => void;
  /** Called for every chunk received from upstream (metrics). */
  readonly onUpstreamBytes?: (n: number, pumped: boolean) => void;
  /**
   * The region this node belongs to: a fill is then led by one node of the region, followed by the others
   * through the shared storage, and taken over when its leader dies (see region/coordinator.ts).
   */
  readonly region?: RegionCoordinator;
  /**
   * The source a fill's key names (a mirror's `<remote>/<repository>`) and the repository's name at that remote:
   * a node of a region taking over another node's fill resumes from the same remote, with its own pool.
   */
  readonly resolveSource?: (key: string) => { readonly name: string; readonly source: FillSource } | undefined;
}

/** How often a node following another node's fill looks at its progress. */
const REMOTE_POLL_MS = 50;

/** Where a fill that was taken over resumes: the dead leader's partial file, its bytes hashed and on storage. */
interface Resume {
  readonly partial: string;
  /** This node's new partial file, which the fill uses once the verified bytes are copied into it. */
  readonly target: string;
  readonly offset: number;
  readonly size: number;
}

type FillState = 'filling' | 'done' | 'failed';

/** One blob being fetched from upstream. */
export class Fill extends EventEmitter {
  state: FillState = 'filling';
  /** Every byte was received and matches the digest; the file is being synced and moved into place. */
  verified = false;
  /** Bytes written to the partial file so far. */
  written = 0;
  /**
   * A copy of the blob's first bytes (the fill's first write, at most FIRST_WRITE), kept from the moment they
   * arrive: a client following the fill gets them from memory, not after a write, a file open and a sendfile,
   * which on a busy machine cost several ms at every hop of a chain before the next hop saw its first byte.
   */
  head: Buffer | undefined;
  size: number | undefined;
  error: Error | undefined;
  /** Resolves with the size once the upstream answered; rejects when it could not. */
  readonly ready: Promise<number>;
  /** Settles when the fill is over (committed or failed); never rejects. */
  readonly finished: Promise<void>;
  private followers = 0;
  /**
   * Counts the 'progress' events: a follower notes it before it looks at the fill (and awaits a file open),
   * and its wait ends at once when an event fired meanwhile. Without it, a fill that failed while a follower
   * was opening its file (the partial file removed, then the state set) left that follower waiting for ever.
   */
  private seq = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly controller = new AbortController();
  private resolveReady!: (size: number) => void;
  private rejectReady!: (err: Error) => void;
  private resolveFinished!: () => void;

  constructor(
    readonly digest: Digest,
    /** The file the bytes are written to; in a region it changes when another node takes the fill over. */
    public partialPath: string,
    private readonly driver: StorageDriver,
    private readonly fillTimeoutMs: number,
    /**
     * Where the fill fetches from, when not the node's one upstream set (a mirror's `remote/repository`); in a
     * region, a node following another node's fill takes that fill's key.
     */
    public key?: string,
  ) {
    super();
    this.setMaxListeners(0);
    this.ready = new Promise<number>((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    this.ready.catch(() => undefined);
    this.finished = new Promise<void>((res) => (this.resolveFinished = res));
  }

  /** Aborted when the fill must stop (idle too long, shutdown). */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** @internal */ setSize(size: number): void {
    this.size = size;
    this.resolveReady(size);
  }

  /** @internal */ progress(n: number): void {
    this.written += n;
    this.changed();
  }

  /** @internal Tells followers the fill changed (bytes, state or file): every 'progress' goes through here. */
  changed(): void {
    this.seq += 1;
    this.emit('progress');
  }

  /** @internal */ verify(): void {
    this.verified = true;
    this.changed();
  }

  /** @internal */ succeed(): void {
    this.state = 'done';
    this.clearIdle();
    this.resolveReady(this.written);
    this.changed();
    this.resolveFinished();
  }

  /** @internal */ fail(err: Error): void {
    this.state = 'failed';
    this.error = err;
    this.clearIdle();
    this.rejectReady(err);
    this.changed();
    this.resolveFinished();
  }

  /** Stops the fill (its followers get an error). */
  abort(reason: string): void {
    if (this.state === 'filling') this.controller.abort(new Error(reason));
  }

  /**
   * A body of bytes `start..end` (inclusive) of the blob, following the partial file as it grows: its stretches
   * are offered as they are written (sent with sendfile, or read into a stream), the last byte once the digest
   * is verified. Reading it errors if the fill fails before `end` was written. The client counts as reading
   * the fill until the body is closed.
   */
  body(start: number, end: number, onClose?: (complete: boolean) => void): BlobBody {
    this.attach();
    const length = end - start + 1;
    const release = (complete: boolean) => {
      this.detach(!complete);
      onClose?.(complete);
    };
    if (!this.driver.openForRead) return streamBody(length, () => this.followByReaders(start, end), release);
    let file: PositionalReader | undefined;
    let openedPath: string | undefined;
    const open = async (signal: AbortSignal): Promise<number> => {
      if (file && this.state === 'filling' && openedPath !== this.partialPath && openedPath !== paths.blobData(this.digest)) {
        // Another node took the fill over and writes a copy: the stretches still to come are read from it.
        void file.close().catch(() => undefined);
        file = undefined;
      }
      if (!file) ({ reader: file, path: openedPath } = await this.openFile(signal));
      return file.fd;
    };
    // One open at a time: the file is opened while the fill's first bytes go out from memory.
    let opening: Promise<number> | undefined;
    const fd = (signal: AbortSignal): Promise<number> => (opening ??= open(signal).finally(() => (opening = undefined)));
    const source: FileSegments = { length, segments: (signal) => this.stretches(start, end, signal, () => fd(signal)) };
    return filesBody(source, (complete) => {
      void file?.close().catch(() => undefined);
      file = undefined;
      release(complete);
    });
  }

  /** The bytes of the head a follower may send: all but the blob's last byte until the digest is verified. */
  private headAvailable(head: Buffer): number {
    if (this.state === 'done' || this.verified) return head.length;
    return Math.min(head.length, (this.size ?? head.length) - 1);
  }

  /** The bytes a follower may send: all of them once done; while filling, all but the last (held back until the digest is verified). */
  private available(): number {
    if (this.state === 'done') return this.size ?? this.written;
    return this.verified ? this.written : Math.max(0, this.written - 1);
  }

  /**
   * The file of this fill, opened once per body: the partial file stays readable through its move into place,
   * so one descriptor serves every stretch.
   */
  private async openFile(signal: AbortSignal): Promise<{ reader: PositionalReader; path: string }> {
    const driver = this.driver as Required<Pick<StorageDriver, 'openForRead'>>;
    const stored = paths.blobData(this.digest);
    for (;;) {
      const seen = this.seq;
      const path = this.state === 'done' ? stored : this.partialPath;
      try {
        return { reader: await driver.openForRead(path, signal), path };
      } catch (err) {
        // The partial file was just moved into place (or removed on failure): look at the state again.
        if (!isPathNotFound(err) || this.state === 'failed') throw this.state === 'failed' ? (this.error ?? err) : err;
        if (this.state === 'done') continue;
        // Moved into place (by this node, or by the node of the region that leads the fill)?
        try {
          return { reader: await driver.openForRead(stored, signal), path: stored };
        } catch (e) {
          if (!isPathNotFound(e)) throw e;
        }
        await this.nextProgress(signal, seen);
      }
    }
  }

  /** The written stretches of bytes `start..end` of the file (`fd()` opens it), each once its bytes are there. */
  private async *stretches(start: number, end: number, signal: AbortSignal, fd: () => Promise<number>): AsyncGenerator<FileSegment> {
    let pos = start;
    while (pos <= end) {
      signal.throwIfAborted();
      const seen = this.seq;
      if (this.state === 'failed') throw this.error ?? new Error('fill failed');
      const available = this.available();
      const head = this.head;
      const inHead = head ? this.headAvailable(head) : 0;
      if (head && pos < inHead) {
        // The first bytes, from memory (before they are on disk); the file is opened meanwhile for the rest.
        fd().catch(() => undefined);
        const bytes = head.subarray(pos, Math.min(inHead, end + 1));
        yield { bytes, length: bytes.length };
        pos += bytes.length;
        continue;
      }
      if (pos < available) {
        const length = Math.min(available, end + 1) - pos;
        yield { fd: await fd(), offset: pos, length };
        pos += length;
        continue;
      }
      if (this.state === 'done') throw new RegistryError('RANGE_INVALID', 'range beyond the end of the blob');
      await this.nextProgress(signal, seen);
    }
  }

  /** Following with a new reader per stretch of written bytes (drivers without positional reads). */
  private followByReaders(start: number, end: number): Readable {
    const fill = this;
    const finalPath = paths.blobData(this.digest);
    const stop = new AbortController();
    async function* chunks(): AsyncGenerator<Buffer> {
      let pos = start;
      while (pos <= end) {
        const seen = fill.seq;
        if (fill.state === 'failed') throw fill.error ?? new Error('fill failed');
        const available = fill.available();
        if (pos < available) {
          const upto = Math.min(end, available - 1);
          let reader: Readable;
          const path = fill.state === 'done' ? finalPath : fill.partialPath;
          try {
            reader = await fill.driver.reader(path, { offset: pos, end: upto, signal: stop.signal });
          } catch (err) {
            // The partial file was just moved into place (or removed on failure): look at the state again once
            // the fill has changed (at once if it did during the open). A stored blob that is gone is an error.
            if (isPathNotFound(err) && path !== finalPath) {
              await fill.nextProgress(stop.signal, seen);
              continue;
            }
            throw err;
          }
          for await (const chunk of reader) {
            pos += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
          continue;
        }
        if (fill.state === 'done') throw new RegistryError('RANGE_INVALID', 'range beyond the end of the blob');
        await fill.nextProgress(stop.signal, seen);
      }
    }
    const stream = Readable.from(chunks(), { objectMode: false, highWaterMark: 1 << 20 });
    stream.once('close', () => stop.abort());
    return stream;
  }

  /**
   * Waits for the blob size on behalf of a client; the client counts as reading the fill meanwhile, so a
   * client that gives up before the upstream even answered starts the `filltimeout` clock.
   */
  async waitReady(signal?: AbortSignal): Promise<number> {
    this.attach();
    let gaveUp = false;
    try {
      if (!signal) return await this.ready;
      return await new Promise<number>((resolve, reject) => {
        const onAbort = () => {
          gaveUp = true;
          reject(new RegistryError('UNAVAILABLE', 'the client went away'));
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        this.ready.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
      });
    } finally {
      this.detach(gaveUp);
    }
  }

  private attach(): void {
    this.followers += 1;
    this.clearIdle();
  }

  /** A client stopped reading; `early` when it left before it had what it asked for. */
  private detach(early: boolean): void {
    this.followers -= 1;
    // Only a client that left early starts the clock: one that is between stat and open will follow next.
    if (this.followers === 0 && early && this.state === 'filling') this.startIdle();
  }

  /**
   * Resolves at the fill's next progress (bytes written, verified, done or failed) after the moment the
   * caller noted `seen` (at once if there was one since); rejects when `signal` aborts.
   */
  private nextProgress(signal: AbortSignal, seen: number): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.seq !== seen) return resolve();
      const onAbort = () => {
        this.off('progress', onProgress);
        reject(signal.reason);
      };
      const onProgress = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      if (signal.aborted) return reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      this.once('progress', onProgress);
    });
  }

  private startIdle(): void {
    this.clearIdle();
    this.idleTimer = setTimeout(() => this.abort(`no client for ${this.fillTimeoutMs} ms (filltimeout)`), this.fillTimeoutMs);
    this.idleTimer.unref();
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}

/** Starts and tracks fills: at most one per digest in this process. */
export class FillManager {
  private readonly fills = new Map<string, Fill>();
  private readonly fillTimeoutMs: number;

  constructor(private readonly options: FillManagerOptions) {
    this.fillTimeoutMs = options.fillTimeoutMs ?? 600_000;
  }

  /**
   * True when a fill of `digest` failed on its upstream within the last {@link FAILED_FILL_MEMORY_MS}: it
   * already resumed as often as it may, so a downstream cache's resume (a range request) is refused at once
   * instead of starting a new fill, and one client request costs each hop's upstream at most one fill's
   * requests, however long the chain (without it, every hop's resumes start fills at the hop above, and a
   * chain of n hops multiplies the origin's requests by 4^n).
   */
  failedRecently(digest: Digest): boolean {
    const at = this.failedAt.get(digest.toString());
    return at !== undefined && Date.now() - at < FAILED_FILL_MEMORY_MS;
  }

  private readonly failedAt = new Map<string, number>();

  /**
   * Remembers that `fill` failed on its upstream with `err`. Not when it was aborted (a shutdown, no client
   * left), nor for a 404, 401 or 403: that is an answer, not a failure, and it depends on the repository,
   * not the digest.
   */
  private noteFailure(fill: Fill, err: unknown): void {
    if (fill.signal.aborted || (err instanceof RegistryError && err.status < 500)) return;
    const now = Date.now();
    if (this.failedAt.size >= 10_000) {
      for (const [key, at] of this.failedAt) if (now - at >= FAILED_FILL_MEMORY_MS) this.failedAt.delete(key);
    }
    this.failedAt.set(fill.digest.toString(), now);
  }

  /** The fill in progress for `digest`, if any. */
  get(digest: Digest): Fill | undefined {
    return this.fills.get(digest.toString());
  }

  /**
   * The fill of `digest` running on this node or, in a region, on another node (as far as Redis says): its
   * `key` (a mirror's `<remote>/<repository>`, undefined for a cache node's fills); undefined when none runs.
   */
  async runningKey(digest: Digest): Promise<{ key: string | undefined } | undefined> {
    const local = this.fills.get(digest.toString());
    if (local) return { key: local.key };
    const peek = await this.options.region?.peekFill(digest);
    const p = peek?.progress;
    if (!p || p.state !== 'filling' || peek.leader === undefined || p.token !== peek.leader) return undefined;
    return { key: p.source };
  }

  /** Number of fills in progress. */
  get inFlight(): number {
    return this.fills.size;
  }

  /**
   * The fill of `digest`, started if none is running. `name` and `headers` (the client's authorization)
   * are used for the upstream request of a new fill only.
   */
  start(name: string, digest: Digest, headers: Readonly<Record<string, string>>, source?: FillSource): Fill {
    const existing = this.fills.get(digest.toString());
    if (existing) return existing;
    const fill = new Fill(digest, partialPathOf(digest), this.options.driver, this.fillTimeoutMs, source?.key);
    this.fills.set(digest.toString(), fill);
    const upstreams = source?.upstreams ?? this.options.upstreams;
    const region = this.options.region;
    const work = region ? this.coordinate(region, fill, name, headers, upstreams) : this.run(fill, name, headers, upstreams);
    const settled = work.finally(() => {
      this.fills.delete(digest.toString());
      this.running.delete(settled);
    });
    this.running.add(settled);
    // With no follower yet, the idle clock starts at once; the first follow() stops it.
    return fill;
  }

  /** The work of every fill, until it settles (in a region: until its end is published and its lease released). */
  private readonly running = new Set<Promise<void>>();

  /** Aborts every fill (shutdown) and waits for them to settle (a region's leader hands its fills over). */
  async close(): Promise<void> {
    const all = [...this.fills.values()];
    for (const f of all) f.abort('shutting down');
    await Promise.all([...all.map((f) => f.finished), ...this.running]);
  }

  /**
   * Removes partial files left by a previous process. In a region the folder is shared: only the files nobody
   * wrote for {@link ABANDONED_PARTIAL_MS} go (a live fill writes all the time; a dead node's fill is taken over
   * within the lease).
   */
  async recover(): Promise<void> {
    const { driver, region } = this.options;
    try {
      if (!region) return await driver.delete(FILLS_DIR);
      const old = Date.now() - ABANDONED_PARTIAL_MS;
      const abandoned: string[] = [];
      await driver.walk(FILLS_DIR, (info) => {
        if (!info.isDir && info.modTime.getTime() < old) abandoned.push(info.path);
      });
      await Promise.all(abandoned.map((p) => driver.delete(p).catch(() => undefined)));
    } catch (err) {
      if (!isPathNotFound(err)) throw err;
    }
  }

  /** A fill in a region: led by this node, following another node's, or alone when Redis does not answer. */
  private async coordinate(region: RegionCoordinator, fill: Fill, name: string, headers: Readonly<Record<string, string>>, upstreams: UpstreamPool): Promise<void> {
    if (await this.adoptStored(fill)) return;
    const token = fillToken(region);
    const claim = await region.claimFill(fill.digest, { token, state: 'filling', partial: fill.partialPath, written: 0, ...sourceOf(fill) });
    if (claim === 'alone') {
      region.stats.fillsAlone += 1;
      return this.run(fill, name, headers, upstreams);
    }
    if (claim === 'led') {
      region.stats.fillsLed += 1;
      return this.lead(region, fill, token, name, headers, upstreams);
    }
    region.stats.fillsJoined += 1;
    return this.follow(region, fill, name, headers, upstreams);
  }

  /** Runs a fill as the region's leader: publishes its progress, renews its lease, publishes its end. */
  private async lead(region: RegionCoordinator, fill: Fill, token: string, name: string, headers: Readonly<Record<string, string>>, upstreams: UpstreamPool, resume?: Resume): Promise<void> {
    const digest = fill.digest;
    let lost = false;
    // A fill stopped here (shutdown, or no client of this node left) is handed to the region, not failed:
    // its partial file stays, and a node whose clients still follow it takes it over at once.
    const canHandOff = () => !lost && fill.written > 0 && fill.size !== undefined;
    const handingOff = () => fill.state === 'failed' && fill.signal.aborted && canHandOff();
    const snapshot = (): FillProgress => ({
      token,
      state: handingOff() ? 'filling' : fill.state,
      partial: fill.partialPath,
      written: fill.written,
      ...(fill.size !== undefined ? { size: fill.size } : {}),
      ...(fill.error && !handingOff() ? { reason: fill.error.message } : {}),
      ...sourceOf(fill),
    });
    // One publication at a time, the latest state each: as often as Redis answers, never queued up.
    let publishing: Promise<void> | undefined;
    let again = false;
    const publish = (): void => {
      if (publishing) {
        again = true;
        return;
      }
      publishing = (async () => {
        do {
          again = false;
          await region.publishFill(digest, snapshot());
        } while (again);
      })().finally(() => (publishing = undefined));
    };
    fill.on('progress', publish);
    const renew = setInterval(() => {
      void region.renewFill(digest, token).then((r) => {
        if (r !== 'lost') return;
        lost = true;
        fill.abort('another node of the region took this fill over (this node had lost its lease)');
      });
    }, Math.max(100, Math.floor(region.leaseMs / 3)));
    renew.unref();
    try {
      // A lost lease's file is the new leader's to copy from (and remove): it stays too.
      await this.run(fill, name, headers, upstreams, resume, () => lost || canHandOff());
    } finally {
      clearInterval(renew);
      fill.off('progress', publish);
      await publishing;
      const handoff = handingOff();
      if (!lost) await region.publishFill(digest, snapshot());
      await region.releaseFill(digest, token);
      // The dead leader's bytes were copied into this fill's own file (or could not be): its file is done with.
      if (resume) await this.options.driver.delete(resume.partial).catch(() => undefined);
      if (handoff) this.dropUnclaimed(region, fill, token);
    }
  }

  /** Removes a handed-off fill's partial file if no node took the fill over within a few leases. */
  private dropUnclaimed(region: RegionCoordinator, fill: Fill, token: string): void {
    const partial = fill.partialPath;
    const timer = setTimeout(() => {
      void region.peekFill(fill.digest).then(async (peek) => {
        if (peek && peek.progress?.token !== token) return; // taken over: the new leader removes it when done
        await this.options.driver.delete(partial).catch(() => undefined);
      });
    }, region.leaseMs * 3);
    timer.unref();
  }

  /**
   * Follows the fill another node of the region leads: its bytes are read from the leader's partial file up to
   * what the leader published, the last byte once the blob is committed. Takes the fill over when the leader's
   * lease expires; fills alone when Redis stops answering before any byte came.
   */
  private async follow(region: RegionCoordinator, fill: Fill, name: string, headers: Readonly<Record<string, string>>, upstreams: UpstreamPool): Promise<void> {
    const digest = fill.digest;
    const log = this.options.logger.child({ digest: digest.toString() });
    // Where this node fetches when it fills after all: for a mirror, the remote and repository of the region's
    // fill (its key, taken from the leader's progress), with this node's own pool.
    const origin = (): [string, UpstreamPool] => {
      const from = fill.key !== undefined ? this.options.resolveSource?.(fill.key) : undefined;
      return from ? [from.name, from.source.upstreams] : [name, upstreams];
    };
    for (;;) {
      if (fill.signal.aborted) {
        fill.fail(new RegistryError('UNAVAILABLE', `the fill stopped: ${String((fill.signal.reason as Error | undefined)?.message ?? 'aborted')}`));
        return;
      }
      if (await this.adoptStored(fill)) return;
      const peek = await region.peekFill(digest);
      if (peek === undefined) {
        // Redis is away. With nothing received yet, this node fills alone; else it follows the partial file.
        if (fill.written === 0 && fill.size === undefined) {
          region.stats.fillsAlone += 1;
          fill.partialPath = partialPathOf(digest);
          const [from, pool] = origin();
          return this.run(fill, from, headers, pool);
        }
        const onDisk = await this.options.driver.stat(fill.partialPath).then((i) => i.size, () => undefined);
        if (onDisk === undefined) {
          if (await this.adoptStored(fill)) return;
          fill.fail(new RegistryError('UPSTREAM_FAILED', 'the fill of another node of the region ended without storing the blob (Redis unreachable: cannot tell why)'));
          return;
        }
        if (onDisk > fill.written) fill.progress(onDisk - fill.written);
      } else {
        const p = peek.progress;
        if (p && (peek.leader === undefined || p.token === peek.leader)) {
          if (p.state === 'failed') {
            fill.fail(new RegistryError('UPSTREAM_FAILED', `the fill failed on another node of the region: ${p.reason ?? 'unknown reason'}`));
            return;
          }
          if (p.state === 'done') {
            if (await this.adoptStored(fill)) return;
            fill.fail(new RegistryError('UNAVAILABLE', 'the blob another node of the region filled is gone already'));
            return;
          }
          // A mirror's fill: the repository it fetches for is the region's fill's, whichever this node's client named.
          if (p.source !== undefined) fill.key = p.source;
          if (p.partial !== fill.partialPath) {
            fill.partialPath = p.partial;
            fill.changed();
          }
          if (p.size !== undefined && fill.size === undefined) fill.setSize(p.size);
          if (p.written > fill.written) fill.progress(p.written - fill.written);
        }
        if (peek.leader === undefined) {
          // The leader is gone (its lease expired, or it ended and its progress is not there): take the fill over.
          const partial = partialPathOf(digest);
          const resume = p && p.state === 'filling' && p.size !== undefined && p.written > 0 ? { partial: p.partial, target: partial, offset: p.written, size: p.size } : undefined;
          const token = fillToken(region);
          const claim = await region.claimFill(digest, { token, state: 'filling', partial: resume?.partial ?? partial, written: resume?.offset ?? 0, ...(resume ? { size: resume.size } : {}), ...sourceOf(fill) });
          if (claim === 'led') {
            region.stats.takeovers += 1;
            log.warn({ from: p?.token, offset: resume?.offset ?? 0, ...(fill.key !== undefined ? { source: fill.key } : {}) }, 'region: the node leading this fill is gone; this node takes it over');
            if (!resume) fill.partialPath = partial;
            // A mirror's fill resumes from the remote (and repository) the dead leader fetched from.
            const [from, pool] = origin();
            return this.lead(region, fill, token, from, headers, pool, resume);
          }
          continue;
        }
      }
      await sleep(REMOTE_POLL_MS, undefined, { signal: fill.signal }).catch(() => undefined);
    }
  }

  /** Succeeds `fill` when its blob is stored already (another fill committed it); true when it did. */
  private async adoptStored(fill: Fill): Promise<boolean> {
    const stored = await this.options.driver.stat(paths.blobData(fill.digest)).catch(() => undefined);
    if (!stored) return false;
    if (fill.size === undefined) fill.setSize(stored.size);
    fill.written = stored.size;
    fill.succeed();
    return true;
  }

  /**
   * Fetches the blob into the fill's partial file, from `resume.offset` for a fill taken over. A fill aborted
   * while `keepOnAbort()` says so keeps its partial file (a region's leader handing the fill over).
   */
  private async run(fill: Fill, name: string, headers: Readonly<Record<string, string>>, upstreams: UpstreamPool, resume?: Resume, keepOnAbort?: () => boolean): Promise<void> {
    const { driver, logger } = this.options;
    const digest = fill.digest;
    const log = logger.child({ digest: digest.toString() });
    // A fill that finished between the caller's look at the disk and this start has stored the blob:
    // serve that copy instead of fetching it again.
    if (await this.adoptStored(fill)) return;
    // The digest is computed on libuv's pool, beside this thread that receives (registry-core's hashing.ts):
    // each batch is hashed while it is written.
    const hash = streamHash(digest.algorithm);
    let writer: Awaited<ReturnType<StorageDriver['writer']>> | undefined;
    if (resume) {
      // Taken over from a dead node: its verified bytes are hashed again and copied into this fill's own file
      // (never written in place: the old leader may be cut off from Redis, not dead, and still writing).
      try {
        writer = await localStorage(driver.writer(resume.target, { create: true }));
        await copyPrefix(driver, resume, hash, writer);
      } catch (err) {
        if (writer) await writer.cancel().catch(() => undefined);
        await driver.delete(resume.target).catch(() => undefined);
        log.warn({ reason: describeError(err) }, 'region: could not take the fill over from the partial file of the node that led it');
        fill.fail(new RegistryError('UNAVAILABLE', 'the node that led this fill is gone and its partial file could not be read; retry'));
        return;
      }
      fill.partialPath = resume.target;
      if (fill.size === undefined) fill.setSize(resume.size);
      if (resume.offset > fill.written) fill.progress(resume.offset - fill.written);
      else fill.changed();
    }
    // The upstream request follows the fill's signal only while it runs: aborting a fill that is syncing its
    // file must not reach a finished response (got would emit an error nobody listens to any more).
    const request = new AbortController();
    const abortRequest = () => request.abort(fill.signal.reason);
    fill.signal.addEventListener('abort', abortRequest, { once: true });
    let response: UpstreamBlobResponse;
    const firstHeaders = resume ? { ...headers, range: `bytes=${resume.offset}-${resume.size - 1}` } : headers;
    // The partial file is created while the upstream answers, not after: creating it takes two turns of
    // libuv's pool (mkdir, open), 1-6 ms measured on a busy 2-core machine, and every hop of a chain would
    // add that to its clients' time to first byte. A failure to create it surfaces below, once the answer is in.
    const creating = writer ? undefined : localStorage(driver.writer(fill.partialPath, { create: true }));
    creating?.catch(() => undefined);
    // So is the look at the free space, which decides whether clients get headers or a 507.
    const space = driver.freeSpace?.().catch(() => undefined);
    try {
      response = await upstreams.fetch({ method: 'GET', path: blobPath(name, digest), headers: firstHeaders, signal: request.signal, direct: true });
    } catch (err) {
      writer ??= await creating?.catch(() => undefined);
      if (writer) await writer.cancel().catch(() => undefined);
      await driver.delete(fill.partialPath).catch(() => undefined);
      fill.signal.removeEventListener('abort', abortRequest);
      this.options.onFailed?.(digest, err instanceof Error ? err.message : String(err), 'upstream');
      this.noteFailure(fill, err);
      fill.fail(err as Error);
      return;
    }
    const expected = resume ? resume.size : response.size;
    // Clients get their headers (the size) once the partial file exists and the disk has room for the blob,
    // before any byte: a disk that cannot take it (full, read-only) is answered with an error status (507), not
    // a 200 cut short, and no hop of a chain waits for a write before its headers go on. A write that fails
    // later (another fill took the room, an I/O error) ends the clients' bodies short, as any failure mid-body.
    const ready = () => {
      if (fill.size === undefined && expected !== undefined) fill.setSize(expected);
    };
    const started = Date.now();
    // Bytes that wait for a batch to fill are written after GATHER_MS at most (a slow upstream, the tail).
    let gatherTimer: NodeJS.Timeout | undefined;
    try {
      writer ??= await (creating ?? localStorage(driver.writer(fill.partialPath, { create: true })));
      const free = await space;
      const needed = expected === undefined ? 0 : expected - (resume?.offset ?? 0);
      if (free !== undefined && free < needed) {
        throw new LocalStorageError(Object.assign(new Error(`ENOSPC: the blob needs ${needed} bytes, the disk has ${free} free`), { code: 'ENOSPC' }));
      }
      ready();
      // The body's bytes stay in the receiver's buffers until written: each write gives its bytes back.
      let source = chunksOf(response);
      const onAbort = () => source.destroy(fill.signal.reason instanceof Error ? fill.signal.reason : new Error('fill aborted'));
      fill.signal.addEventListener('abort', onAbort, { once: true });
      // Chunks are written while the next ones arrive (the writer keeps them in order): the socket keeps
      // flowing, and only when WRITE_AHEAD bytes wait for the disk does the fill wait for it.
      const w = writer;
      let received = resume?.offset ?? 0;
      let queuedBytes = 0;
      let writeFailed: unknown;
      const inFlight: Promise<void>[] = [];
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const flush = () => {
        clearTimeout(gatherTimer);
        gatherTimer = undefined;
        if (pendingBytes === 0) return;
        queue(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
      };
      // One gathered write (pwritev) per batch, straight from the receive buffers: no copy. The batch is hashed
      // on the pool at the same time; followers may send it once written (the last byte waits for the digest),
      // and its buffers go back to the receiver once both are done.
      const queue = (chunks: Buffer[], bytes: number) => {
        queuedBytes += bytes;
        const from = source;
        const written = localStorage(w.writev(chunks)).then(() => fill.progress(bytes));
        // A failed hash (OpenSSL out of memory) is this node's trouble, not the upstream's: a RegistryError.
        const hashed = hash.update(chunks).catch((err: unknown) => {
          throw new RegistryError('UNKNOWN', `this cache node could not hash the blob: ${describeError(err)}`);
        });
        const write = Promise.all([written, hashed]).then(() => {
          queuedBytes -= bytes;
          from.release(bytes);
        });
        // Awaited below; meanwhile the first failure is noted, so that a full disk stops the transfer at the
        // next chunk instead of after the whole blob was received.
        write.catch((err: unknown) => {
          writeFailed ??= err;
          // The receiver waits for its buffers to be given back, which a failed write never does: stop it.
          from.destroy(new Error('the fill stopped: this node could not write the blob'));
        });
        inFlight.push(write);
        void write.then(
          () => inFlight.splice(inFlight.indexOf(write), 1),
          () => undefined,
        );
      };
      // Bytes of the current response to drop before using any: an upstream that answered a resumed
      // request with the whole blob (200) instead of the range asked for resends what was already received.
      let skip = resume ? resumeOffset(response, resume.offset, resume.size) : 0;
      // One chunk of the body, in order: counted, checked against the length, and queued for its write.
      const take = async (chunks: ChunkSource, next: Buffer): Promise<void> => {
        let buf = next;
        this.options.onUpstreamBytes?.(buf.length, false);
        if (skip > 0) {
          const dropped = Math.min(skip, buf.length);
          skip -= dropped;
          chunks.release(dropped);
          if (dropped === buf.length) return;
          buf = buf.subarray(dropped);
        }
        received += buf.length;
        if (expected !== undefined && received > expected) {
          throw new Error(`upstream sent more than the ${expected} bytes it announced`);
        }
        // The first bytes are written at once, and few of them, and followers get a copy of them from memory
        // meanwhile (the receive buffers are reused); then chunks gather into writes of WRITE_BATCH: every write
        // is a pool thread's turn, and every written stretch a sendfile to each follower, so 64 KiB writes cost
        // several times the CPU of 1 MiB ones.
        if (fill.written + queuedBytes === 0 && pendingBytes === 0) {
          const first = buf.subarray(0, FIRST_WRITE);
          fill.head = Buffer.from(first);
          fill.changed();
          pending.push(first);
          pendingBytes += first.length;
          flush();
          buf = buf.subarray(first.length);
          if (buf.length === 0) return;
        }
        pending.push(buf);
        pendingBytes += buf.length;
        if (pendingBytes >= WRITE_BATCH) flush();
        else gatherTimer ??= setTimeout(flush, GATHER_MS);
        while (queuedBytes > WRITE_AHEAD && inFlight.length > 0) await inFlight[0];
      };
      // The rest of a plain-HTTP body goes to the native pump once its first bytes went through `take` (they
      // give followers the head from memory): its threads read the connection, hash and write, and this thread
      // only hears of each written batch (registry-core's pump.ts). Not for TLS, a chunked body, a driver without
      // files, a hash without the addon, or bytes still to skip.
      const pumpRest = async (chunks: ChunkSource): Promise<void> => {
        const stop = new AbortController();
        const body = chunks.handOver?.(() => stop.abort());
        if (!body) return;
        // What was received before the hand-over is written and hashed first; the pump goes on from there. The
        // connection is given back (`done`) whatever happens: until then nobody reads or closes it.
        try {
          for (const buf of body.queued) await take(chunks, buf);
          flush();
          await Promise.allSettled([...inFlight]);
          if (writeFailed !== undefined) throw writeFailed;
        } catch (err) {
          body.done(0, err as Error);
          throw err;
        }
        let result: PumpResult;
        try {
          result = await (w.writeWith as NonNullable<typeof w.writeWith>)(async (fd, position) => {
            const r = await pumpBody(hash, {
              socketFd: body.fd,
              fileFd: fd,
              position,
              length: body.remaining,
              idleTimeoutMs: body.idleTimeoutMs,
              batchBytes: WRITE_BATCH,
              gatherMs: GATHER_MS,
              maxDelayMs: PUMP_MAX_DELAY_MS,
              onProgress: (bytes) => {
                this.options.onUpstreamBytes?.(bytes, true);
                fill.progress(bytes);
              },
              signal: stop.signal,
            });
            return { ...r, writeError: r.where === 'write' ? r.error : undefined };
          });
        } catch (err) {
          // The pump could not start (no thread, no memory): nothing was read.
          body.done(0, err as Error);
          throw new RegistryError('UNKNOWN', `this cache node could not receive the blob: ${describeError(err)}`);
        }
        received += result.received;
        body.done(result.received, result.error);
        if (result.where === 'write') throw new LocalStorageError(result.error);
        if (result.where === 'hash') throw new RegistryError('UNKNOWN', `this cache node could not hash the blob: ${describeError(result.error)}`);
        // The body's end, a cut or a stop: the source says which at its next chunk.
      };
      const pumpable = PUMP && w.writeWith !== undefined;
      const receive = async (chunks: ChunkSource): Promise<void> => {
        for (;;) {
          let next: Buffer | undefined;
          try {
            next = await chunks.next();
          } catch (err) {
            if (writeFailed !== undefined) throw writeFailed;
            throw new ReceiveInterrupted(err);
          }
          if (writeFailed !== undefined) throw writeFailed;
          if (next === undefined) return;
          await take(chunks, next);
          if (pumpable && skip === 0 && canPump(hash)) await pumpRest(chunks);
        }
      };
      // A transfer cut by the network is resumed where it stopped, with a Range request (to another
      // upstream when there is one): the hash goes on over the new bytes, and followers see no gap.
      for (let resumes = 0; ; resumes++) {
        // What stopped the transfer: the network's error, or a body that ended early.
        let cut: unknown;
        try {
          await receive(source);
          if (expected !== undefined && received < expected) cut = new Error(`upstream ended the body after ${received} of ${expected} bytes`);
        } catch (err) {
          if (!(err instanceof ReceiveInterrupted)) throw err;
          cut = err.cause;
        }
        if (cut === undefined) break;
        if (fill.signal.aborted || expected === undefined || resumes >= MAX_RESUMES) throw cut;
        const interruption = describeError(cut);
        source.destroy();
        upstreams.markFailed(response.host, interruption);
        log.warn({ upstream: response.host.url, received, expected, reason: interruption, resume: resumes + 1 }, 'fill interrupted: resuming with a range request');
        response = await upstreams.fetch({ method: 'GET', path: blobPath(name, digest), headers: { ...headers, range: `bytes=${received}-${expected - 1}` }, signal: request.signal, direct: true });
        source = chunksOf(response);
        skip = resumeOffset(response, received, expected);
      }
      flush();
      while (inFlight.length > 0) await inFlight[0];
      fill.signal.removeEventListener('abort', onAbort);
      fill.signal.removeEventListener('abort', abortRequest);
      if (expected !== undefined && fill.written !== expected) {
        throw new Error(`upstream sent ${fill.written} of ${expected} bytes`);
      }
      const actual = hash.digest();
      if (!actual.equals(digest)) {
        throw new Error(`upstream ${response.host.url} sent content with digest ${actual.toString()}`);
      }
      // The bytes are right: followers may send the last byte now, while the file is synced and moved into
      // place (syncing 512 MiB takes longer than receiving it; a request meanwhile follows this fill).
      fill.verify();
      await localStorage(writer.commit());
      writer = undefined;
      if (fill.size === undefined) fill.setSize(fill.written);
      await localStorage(driver.move(fill.partialPath, paths.blobData(digest)));
      fill.succeed();
      this.options.onCommitted?.(digest, fill.written);
      log.info({ bytes: fill.written, upstream: response.host.url, duration: Date.now() - started }, 'fill complete');
    } catch (err) {
      clearTimeout(gatherTimer);
      response.body.destroy();
      const keep = fill.signal.aborted && keepOnAbort?.() === true;
      if (writer) await (keep ? writer.close() : writer.cancel()).catch(() => undefined);
      if (!keep) await driver.delete(fill.partialPath).catch(() => undefined);
      if (err instanceof LocalStorageError && !fill.signal.aborted) {
        // This node's own disk failed (full, read-only, I/O error): the upstream did nothing wrong and stays
        // in rotation; the client is told the truth (507 for a full disk).
        const reason = describeError(err.cause);
        log.error({ upstream: response.host.url, written: fill.written, expected, reason, code: err.code }, 'fill failed: local storage error, nothing stored (the upstream is not blamed)');
        this.options.onFailed?.(digest, reason, 'storage');
        fill.fail(isDiskFull(err.cause) ? diskFullError() : new RegistryError('UNKNOWN', 'this cache node could not write to its storage; see its log'));
        return;
      }
      const reason = fill.signal.aborted ? String((fill.signal.reason as Error | undefined)?.message ?? 'aborted') : describeError(err);
      if (!fill.signal.aborted && !(err instanceof RegistryError)) upstreams.markFailed(response.host, reason);
      log.warn({ upstream: response.host.url, written: fill.written, expected, reason }, 'fill failed: nothing stored');
      this.options.onFailed?.(digest, reason, 'upstream');
      this.noteFailure(fill, err);
      fill.fail(err instanceof RegistryError ? err : new RegistryError('UPSTREAM_FAILED', `fetching the blob from upstream failed: ${reason}`));
    }
  }
}

/** How long a partial file in a region's shared folder goes unwritten before a starting node removes it. */
const ABANDONED_PARTIAL_MS = 10 * 60_000;

/** A new partial file's path, unique to this process and moment. */
function partialPathOf(digest: Digest): string {
  return `${FILLS_DIR}/${digest.algorithm}/${digest.hex}-${process.pid}-${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

/** The `source` of a fill's progress record: its key, when it has one (a mirror's fill). */
function sourceOf(fill: Fill): { source?: string } {
  return fill.key !== undefined ? { source: fill.key } : {};
}

/** A fill lease's token: the node and the fill. */
function fillToken(region: RegionCoordinator): string {
  return `${region.nodeId}/${randomBytes(4).toString('hex')}`;
}

/** Copies the first `resume.offset` bytes of the old partial file into `writer`, hashing them. */
async function copyPrefix(driver: StorageDriver, resume: Resume, hash: StreamHash, writer: Awaited<ReturnType<StorageDriver['writer']>>): Promise<void> {
  const reader = await driver.reader(resume.partial, { offset: 0, end: resume.offset - 1 });
  let copied = 0;
  let batch: Buffer[] = [];
  let batchBytes = 0;
  for await (const chunk of reader) {
    const buf = chunk as Buffer;
    hash.updateSync(buf);
    copied += buf.length;
    batch.push(buf);
    batchBytes += buf.length;
    if (batchBytes >= WRITE_BATCH) {
      await localStorage(writer.writev(batch));
      batch = [];
      batchBytes = 0;
    }
  }
  if (batchBytes > 0) await localStorage(writer.writev(batch));
  if (copied !== resume.offset) throw new Error(`the partial file holds ${copied} of the ${resume.offset} bytes its leader published`);
}

/** This node's own storage failed during a fill (the disk, not the upstream). */
export class LocalStorageError extends Error {
  /** The system error code (ENOSPC, EDQUOT, EIO, EROFS...), when there is one. */
  readonly code: string | undefined;
  constructor(override readonly cause: unknown) {
    super(`local storage: ${describeError(cause)}`);
    this.code = (cause as { code?: string } | undefined)?.code;
  }
}

/** `operation` with its failure marked as this node's storage's. */
function localStorage<T>(operation: Promise<T>): Promise<T> {
  return operation.catch((err: unknown) => {
    throw err instanceof LocalStorageError ? err : new LocalStorageError(err);
  });
}

/** The upstream body stopped with an error (the network, not this node): the transfer may be resumed. */
class ReceiveInterrupted extends Error {
  constructor(override readonly cause: unknown) {
    super(describeError(cause));
  }
}

/**
 * Checks the answer to a resumed request for bytes `received..expected-1`: a 206 must cover exactly
 * that range of a blob of `expected` bytes; a 200 must be the whole blob, and its first `received` bytes are
 * dropped (what they were does not matter: the digest is checked over the bytes kept). Returns the bytes to
 * drop.
 */
export function resumeOffset(response: Pick<UpstreamBlobResponse, 'status' | 'headers' | 'size' | 'host'>, received: number, expected: number): number {
  if (response.status === 200) {
    if (response.size !== expected) throw new Error(`upstream ${response.host.url} answered a resumed request with ${response.size ?? 'an unknown number of'} bytes, not the ${expected} of the blob`);
    return received;
  }
  const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(response.headers['content-range'] ?? ''));
  const [start, end, total] = range ? [Number(range[1]), Number(range[2]), range[3]] : [];
  if (start !== received || end !== expected - 1 || (total !== '*' && Number(total) !== expected)) {
    throw new Error(`upstream ${response.host.url} answered a resumed request for bytes ${received}-${expected - 1} with Content-Range "${String(response.headers['content-range'] ?? '')}"`);
  }
  return 0;
}
