/**
 * An endpoint's durable, bounded queue of events, on the storage driver (so on disk with the filesystem
 * driver, in memory with `inmemory`), in `<dir>/`:
 *
 * - segments `<seq>.log`, one event's JSON per line, at most `segmentEvents` lines each, appended in group
 *   commits: events accepted while a commit runs go into the next one, each commit one write and one fsync;
 * - `head`, `<seq> <offset>`: where the first event not yet delivered starts. It is saved at most every
 *   {@link HEAD_SAVE_MS} and at close, so a crash sends the events delivered since again (at-least-once).
 *
 * Each run appends to new segments only, so a torn last line left by a crash stays in an old segment, where
 * readers skip it (as any line that is not JSON). When more than `limit` events are pending after a commit,
 * the oldest segments are dropped whole, and counted.
 */
import type { StorageDriver } from '../drivers/driver.js';
import { isPathNotFound } from '../drivers/driver.js';
import { deleteIfExists } from '../store/links.js';
import { Serial } from '../async.js';

/** How often at most the head is saved while events are delivered. */
export const HEAD_SAVE_MS = 200;

const SEGMENT_NAME = /^(\d{1,15})\.log$/;

/** Events read from the queue, to send, then {@link EventQueue.ack}. */
export interface QueueBatch {
  /** Each event's JSON. */
  readonly lines: readonly string[];
  readonly seq: number;
  readonly start: number;
  readonly end: number;
}

/** What the queue reports. */
export interface QueueListener {
  /** Events dropped: the bound was reached, or a stored line was unreadable. */
  dropped(count: number, reason: 'limit' | 'unreadable'): void;
}

interface Segment {
  readonly seq: number;
  /** Committed bytes. */
  size: number;
  /** Complete lines committed (this run), or read at start. */
  lines: number;
}

/** Options of {@link EventQueue.open}. */
export interface EventQueueOptions {
  readonly driver: StorageDriver;
  readonly dir: string;
  /** At most this many events pending; beyond, the oldest are dropped. */
  readonly limit: number;
  readonly listener?: QueueListener;
}

/** See the module comment. Not safe for two processes on one folder (one registry per storage root). */
export class EventQueue {
  readonly #driver: StorageDriver;
  readonly #dir: string;
  readonly #limit: number;
  readonly #segmentEvents: number;
  readonly #listener: QueueListener | undefined;
  readonly #segments: Segment[] = [];
  /** The segment this run appends to; none until the first commit (a new one after each full one). */
  #current: Segment | undefined;
  #nextSeq: number;
  #head: { seq: number; offset: number };
  #headSaved = '';
  #headTimer: NodeJS.Timeout | undefined;
  /** Lines of the head segment read from the head on, with their end offsets. */
  #readAhead: Array<{ text: string; end: number }> = [];
  #readAheadSeq = -1;
  #pendingOnDisk = 0;
  #buffer: string[] = [];
  #commit: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void } | undefined;
  #running: Promise<void> | undefined;
  readonly #serial = new Serial();
  #waiters: Array<() => void> = [];
  #closed = false;

  private constructor(options: EventQueueOptions, nextSeq: number, head: { seq: number; offset: number }) {
    this.#driver = options.driver;
    this.#dir = options.dir;
    this.#limit = options.limit;
    this.#listener = options.listener;
    // Dropping whole segments keeps at least 15/16 of the limit; one segment never exceeds half of it.
    this.#segmentEvents = Math.max(1, Math.min(1024, Math.floor(options.limit / 16)));
    this.#nextSeq = nextSeq;
    this.#head = head;
    this.#headSaved = `${head.seq} ${head.offset}`;
  }

  /** Opens the queue in `dir`, reading what a previous run left: segments, head, torn or unreadable lines. */
  static async open(options: EventQueueOptions): Promise<EventQueue> {
    const { driver, dir } = options;
    let names: string[] = [];
    try {
      names = await driver.list(dir);
    } catch (err) {
      if (!isPathNotFound(err)) throw err;
    }
    const seqs = names
      .map((p) => SEGMENT_NAME.exec(p.slice(dir.length + 1))?.[1])
      .filter((s): s is string => s !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
    let head = { seq: seqs[0] ?? 0, offset: 0 };
    try {
      const m = /^(\d+) (\d+)$/.exec((await driver.getContent(`${dir}/head`)).toString('latin1').trim());
      if (m) head = { seq: Number(m[1]), offset: Number(m[2]) };
    } catch (err) {
      // No head (first run, or lost in a crash): everything left is sent again.
      if (!isPathNotFound(err)) throw err;
    }
    const queue = new EventQueue(options, (seqs.at(-1) ?? 0) + 1, head);
    let unreadable = 0;
    for (const seq of seqs) {
      const path = queue.#segmentPath(seq);
      if (seq < head.seq) {
        await deleteIfExists(driver, path);
        continue;
      }
      const size = (await driver.stat(path)).size;
      const from = seq === head.seq ? Math.min(head.offset, size) : 0;
      const lines = await readLines(driver, path, from, size);
      const good = lines.filter((l) => isJson(l.text)).length;
      unreadable += lines.length - good;
      if (lines.length === 0 && seq !== head.seq) {
        await deleteIfExists(driver, path);
        continue;
      }
      queue.#segments.push({ seq, size, lines: good });
      queue.#pendingOnDisk += good;
    }
    if (queue.#segments.length > 0 && queue.#segments[0]?.seq !== head.seq) queue.#head = { seq: queue.#segments[0]?.seq ?? 0, offset: 0 };
    if (unreadable > 0) options.listener?.dropped(unreadable, 'unreadable');
    await queue.#serial.run(() => queue.#enforceLimit());
    return queue;
  }

  /** Events accepted and not yet acknowledged (on disk or waiting for the next commit). */
  get pending(): number {
    return this.#pendingOnDisk + this.#buffer.length;
  }

  /**
   * Accepts one event's JSON (one line, no newline); resolves once it is durable. Never blocks the caller:
   * the line waits in memory for the next group commit, which starts at once unless one is running.
   */
  append(line: string): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('notification queue closed'));
    this.#buffer.push(line);
    if (!this.#commit) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      // Callers that do not wait (pulls) must not see an unhandled rejection; the failure is logged once.
      promise.catch(() => undefined);
      this.#commit = { promise, resolve, reject };
      this.#kick();
    }
    return this.#commit.promise;
  }

  /**
   * Up to `max` of the oldest pending events, waiting for one when none is on disk; undefined once the
   * queue is closed or `signal` aborted.
   */
  async next(max: number, signal?: AbortSignal): Promise<QueueBatch | undefined> {
    for (;;) {
      if (this.#closed || signal?.aborted) return undefined;
      const batch = await this.#serial.run(() => this.#peek(max));
      if (batch) return batch;
      await new Promise<void>((resolve) => {
        // Closed or aborted while the queue was read: the wake-up was already given (an abort listener added
        // now would never fire), so the loop ends at once.
        if (this.#closed || signal?.aborted) return resolve();
        const wake = () => {
          signal?.removeEventListener('abort', wake);
          resolve();
        };
        this.#waiters.push(wake);
        signal?.addEventListener('abort', wake, { once: true });
      });
    }
  }

  /** Marks a batch delivered. A batch whose segment was dropped meanwhile changes nothing. */
  ack(batch: QueueBatch): Promise<void> {
    return this.#serial.run(async () => {
      if (this.#head.seq !== batch.seq || this.#head.offset !== batch.start) return;
      this.#head = { seq: batch.seq, offset: batch.end };
      this.#pendingOnDisk -= batch.lines.length;
      this.#readAhead.splice(0, batch.lines.length);
      this.#scheduleHeadSave();
    });
  }

  /** Commits what is buffered, saves the head and wakes the sender, which then sees the queue closed. */
  async close(): Promise<void> {
    if (this.#closed) return;
    while (this.#running) await this.#running;
    if (this.#buffer.length > 0) {
      this.#kick();
      while (this.#running) await this.#running;
    }
    this.#closed = true;
    clearTimeout(this.#headTimer);
    await this.#serial.run(() => this.#saveHead());
    for (const wake of this.#waiters.splice(0)) wake();
  }

  #kick(): void {
    if (this.#running) return;
    this.#running = (async () => {
      // Let the other events of this tick join the commit.
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (this.#buffer.length > 0) {
        const lines = this.#buffer;
        const commit = this.#commit;
        this.#buffer = [];
        this.#commit = undefined;
        try {
          await this.#serial.run(() => this.#write(lines));
          commit?.resolve();
        } catch (err) {
          // Not written: the events stay in memory, first in line for the next commit.
          this.#buffer = [...lines, ...this.#buffer];
          commit?.reject(err);
          // Tried again shortly, even if nothing else is appended.
          setTimeout(() => this.#kick(), 1000).unref();
          break;
        }
      }
      this.#running = undefined;
    })();
  }

  async #write(lines: string[]): Promise<void> {
    let i = 0;
    while (i < lines.length) {
      let seg = this.#current;
      if (!seg || seg.lines >= this.#segmentEvents) {
        seg = { seq: this.#nextSeq++, size: 0, lines: 0 };
        await this.#driver.putContent(this.#segmentPath(seg.seq), Buffer.alloc(0));
        this.#segments.push(seg);
        this.#current = seg;
      }
      const take = lines.slice(i, i + this.#segmentEvents - seg.lines);
      const bytes = Buffer.from(`${take.join('\n')}\n`);
      const writer = await this.#driver.writer(this.#segmentPath(seg.seq), { append: true });
      try {
        await writer.write(bytes);
        await writer.commit();
      } catch (err) {
        // Never cancel(): on an appending writer it deletes the file.
        await writer.close().catch(() => undefined);
        throw err;
      }
      seg.size += bytes.length;
      seg.lines += take.length;
      this.#pendingOnDisk += take.length;
      i += take.length;
    }
    await this.#enforceLimit();
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Drops the oldest segments while more than the limit is pending. Call with the lock held. */
  async #enforceLimit(): Promise<void> {
    while (this.#pendingOnDisk > this.#limit && this.#segments.length > 1) {
      const oldest = this.#segments.shift() as Segment;
      const remaining = oldest.seq === this.#head.seq ? await this.#remainingIn(oldest) : oldest.lines;
      await deleteIfExists(this.#driver, this.#segmentPath(oldest.seq));
      this.#pendingOnDisk -= remaining;
      this.#head = { seq: this.#segments[0]?.seq ?? this.#nextSeq, offset: 0 };
      this.#readAhead = [];
      this.#readAheadSeq = -1;
      this.#listener?.dropped(remaining, 'limit');
      this.#scheduleHeadSave();
    }
  }

  async #remainingIn(seg: Segment): Promise<number> {
    const lines = await readLines(this.#driver, this.#segmentPath(seg.seq), this.#head.offset, seg.size);
    return lines.filter((l) => isJson(l.text)).length;
  }

  /** The next batch from the head. Call with the lock held. */
  async #peek(max: number): Promise<QueueBatch | undefined> {
    for (;;) {
      const seg = this.#segments[0];
      if (!seg) return undefined;
      if (seg.seq !== this.#head.seq) this.#head = { seq: seg.seq, offset: 0 };
      if (this.#readAheadSeq !== seg.seq || this.#readAhead.length === 0) {
        const from = this.#head.offset;
        const lines = await readLines(this.#driver, this.#segmentPath(seg.seq), from, seg.size);
        this.#readAheadSeq = seg.seq;
        // Unreadable lines (a torn write from a crash) are skipped by moving past them; they were counted at open.
        this.#readAhead = [];
        let skipTo = from;
        for (const l of lines) {
          if (isJson(l.text)) this.#readAhead.push(l);
          else if (this.#readAhead.length === 0) skipTo = l.end;
        }
        if (skipTo !== from) this.#head = { seq: seg.seq, offset: skipTo };
      }
      if (this.#readAhead.length > 0) {
        const take = this.#readAhead.slice(0, max);
        return { lines: take.map((l) => l.text), seq: seg.seq, start: this.#head.offset, end: (take.at(-1) as { end: number }).end };
      }
      // Fully delivered: a finished segment goes; the one being appended to waits for more.
      if (seg === this.#current) return undefined;
      this.#segments.shift();
      await deleteIfExists(this.#driver, this.#segmentPath(seg.seq));
      const nextSeg = this.#segments[0];
      this.#head = { seq: nextSeg?.seq ?? this.#nextSeq, offset: 0 };
      this.#scheduleHeadSave();
    }
  }

  #scheduleHeadSave(): void {
    if (this.#headTimer || this.#closed) return;
    this.#headTimer = setTimeout(() => {
      this.#headTimer = undefined;
      void this.#serial.run(() => this.#saveHead()).catch(() => undefined);
    }, HEAD_SAVE_MS);
    this.#headTimer.unref();
  }

  async #saveHead(): Promise<void> {
    const text = `${this.#head.seq} ${this.#head.offset}`;
    if (text === this.#headSaved) return;
    await this.#driver.putContent(`${this.#dir}/head`, Buffer.from(text));
    this.#headSaved = text;
  }

  #segmentPath(seq: number): string {
    return `${this.#dir}/${String(seq).padStart(15, '0')}.log`;
  }

}

function isJson(text: string): boolean {
  if (!text.startsWith('{')) return false;
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** The complete lines of `path` between `from` and `to` (exclusive), with the offset after each. */
async function readLines(driver: StorageDriver, path: string, from: number, to: number): Promise<Array<{ text: string; end: number }>> {
  if (to <= from) return [];
  const chunks: Buffer[] = [];
  for await (const chunk of await driver.reader(path, { offset: from, end: to - 1 })) chunks.push(chunk as Buffer);
  const buf = Buffer.concat(chunks);
  const out: Array<{ text: string; end: number }> = [];
  let start = 0;
  for (let nl = buf.indexOf(10); nl >= 0; nl = buf.indexOf(10, start)) {
    const text = buf.toString('utf8', start, nl);
    start = nl + 1;
    if (text !== '') out.push({ text, end: from + start });
  }
  return out;
}
