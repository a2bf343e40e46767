/**
 * The access journals of the expiry index on storage, one per time bucket:
 * `<EXPIRY_DIRECTORY>/<start>-<length>.log`, one line `<digest> <size>` per blob accessed in
 * `[start, start + length)`, and beside it `<start>-<length>.head`, the offset of the first line a sweep has not
 * consumed yet. The nodes of a region (one shared folder) each append to their own journals,
 * `<start>-<length>-<tag>.log`, so that no two processes append to one file; every sweep reads them all.
 {@link Journals} appends lines, consumes them, and merges journals when there are too many.
 *
 * Appends, the end of a sweep of a journal and the end of a merge take one lock, so that none sees another half
 * done. A crash can leave a torn last line; the next append starts with a newline, and readers skip the line.
 */
import { isPathNotFound, Serial, type FileWriter, type StorageDriver } from '@cascade/registry-core';
import { containsNewline, LINE_BATCH, parseLine, readLines, readTail, statBlob, type JournalLine } from './lines.js';
import { EXPIRY_DIRECTORY, type ExpiryLogger } from './options.js';

const JOURNAL_NAME = /^(\d+)-(\d+)(-[A-Za-z0-9]+)?\.log$/;
const HEAD_NAME = /^(\d+)-(\d+)(-[A-Za-z0-9]+)?\.head$/;

/** One journal: the accesses of `[start, end)`. */
export interface JournalFile {
  readonly name: string;
  readonly start: number;
  /** Exclusive. */
  readonly end: number;
  readonly path: string;
  readonly headPath: string;
}

function journalFile(start: number, length: number, tag?: string): JournalFile {
  const name = `${start}-${length}${tag ? `-${tag}` : ''}`;
  return {
    name,
    start,
    end: start + length,
    path: `${EXPIRY_DIRECTORY}/${name}.log`,
    headPath: `${EXPIRY_DIRECTORY}/${name}.head`,
  };
}

/** What {@link Journals} needs. */
export interface JournalsOptions {
  readonly driver: StorageDriver;
  /** Length of the bucket of a new journal. */
  readonly bucketMs: number;
  /** Journal files above which {@link Journals.compact} merges. */
  readonly maxFiles: number;
  /** Aborted when the index stops: compaction ends early. */
  readonly signal: AbortSignal;
  readonly log: ExpiryLogger | undefined;
  /** Tags this process's journal files (a node of a region: letters and digits). */
  readonly tag?: string;
}

/** The journals on storage (see the module comment). */
export class Journals {
  readonly #driver: StorageDriver;
  readonly #bucketMs: number;
  readonly #maxFiles: number;
  readonly #signal: AbortSignal;
  readonly #log: ExpiryLogger | undefined;
  readonly #tag: string | undefined;
  /** Journals whose end this process knows to be at a line boundary (no torn line from a crash). */
  readonly #clean = new Set<string>();
  /** Serializes appends with the final step of a sweep or merge on a file (re-append, head move, delete). */
  readonly #serial = new Serial();

  constructor(options: JournalsOptions) {
    this.#driver = options.driver;
    this.#bucketMs = options.bucketMs;
    this.#maxFiles = options.maxFiles;
    this.#signal = options.signal;
    this.#log = options.log;
    this.#tag = options.tag;
  }

  /** Start of the bucket that holds `time`. */
  bucketOf(time: number): number {
    return Math.floor(time / this.#bucketMs) * this.#bucketMs;
  }

  /** The journal of the bucket starting at `start` (which need not exist yet). */
  forBucket(start: number): JournalFile {
    return journalFile(start, this.#bucketMs, this.#tag);
  }

  /** The journals, oldest first. With `tidy`, deletes head files whose journal is gone (left by a crash). */
  async list(tidy: boolean): Promise<JournalFile[]> {
    let names: string[];
    try {
      names = await this.#driver.list(EXPIRY_DIRECTORY);
    } catch (err) {
      if (isPathNotFound(err)) return [];
      throw err;
    }
    const files: JournalFile[] = [];
    const logs = new Set<string>();
    const heads: string[] = [];
    for (const path of names) {
      const base = path.slice(EXPIRY_DIRECTORY.length + 1);
      const log = JOURNAL_NAME.exec(base);
      if (log) {
        const start = Number(log[1]);
        const length = Number(log[2]);
        const tag = log[3]?.slice(1);
        if (Number.isSafeInteger(start) && Number.isSafeInteger(length) && length > 0) {
          const file = journalFile(start, length, tag);
          files.push(file);
          logs.add(file.name);
        }
        continue;
      }
      const head = HEAD_NAME.exec(base);
      if (head) heads.push(`${head[1]}-${head[2]}${head[3] ?? ''}`);
    }
    if (tidy) {
      for (const name of heads) {
        if (!logs.has(name)) await deleteIfExists(this.#driver, `${EXPIRY_DIRECTORY}/${name}.head`);
      }
    }
    return files.sort((a, b) => a.start - b.start || a.end - b.end);
  }

  /** Where a journal's unconsumed lines start: its head file, or 0. */
  async readHead(file: JournalFile): Promise<number> {
    let head: number;
    try {
      head = Number((await this.#driver.getContent(file.headPath)).toString('latin1'));
    } catch (err) {
      if (isPathNotFound(err)) return 0;
      throw err;
    }
    if (!Number.isSafeInteger(head) || head < 0) return 0;
    try {
      // A head past the end belongs to an older journal of the same name: start over (lines are idempotent).
      return head <= (await this.#driver.stat(file.path)).size ? head : 0;
    } catch (err) {
      if (isPathNotFound(err)) return 0;
      throw err;
    }
  }

  /** The complete lines of a journal from `offset` (see {@link readLines}). */
  lines(file: JournalFile, offset: number): AsyncGenerator<JournalLine[]> {
    return readLines(this.#driver, file.path, offset);
  }

  /** Appends complete lines (`text` ends with a newline) to a journal, durably, creating it if needed. */
  append(file: JournalFile, text: string): Promise<void> {
    return this.#serial.run(() => this.#append(file, text));
  }

  /**
   * Ends a sweep of a journal read from `head` to `consumed`: re-appends the `keep` lines, then deletes the
   * journal when nothing is left past `consumed`, or records `consumed` as its head.
   */
  consume(file: JournalFile, head: number, consumed: number, keep: readonly string[]): Promise<void> {
    return this.#serial.run(async () => {
      let size: number;
      try {
        size = (await this.#driver.stat(file.path)).size;
      } catch (err) {
        if (isPathNotFound(err)) return;
        throw err;
      }
      // Past what was read: lines appended meanwhile, or a torn line from a crash (no newline), which is garbage.
      const tailHasLines = size > consumed && (await containsNewline(this.#driver, file.path, consumed));
      if (!tailHasLines && keep.length === 0) {
        await this.#delete(file);
        return;
      }
      if (keep.length > 0) await this.#append(file, keep.map((l) => `${l}\n`).join(''));
      if (consumed !== head) await this.#driver.putContent(file.headPath, Buffer.from(String(consumed)));
    });
  }

  /**
   * Keeps the number of journals bounded by merging the two neighbouring past journals (before the bucket of
   * `now`) with the fewest bytes, dropping the lines of missing or superseded blobs on the way. The merged
   * journal spans both ranges, so the index's invariant holds; its lines keep their order, so does LRU order.
   */
  async compact(now: number): Promise<void> {
    let files = await this.list(false);
    const current = this.bucketOf(now);
    while (!this.#signal.aborted && files.length > this.#maxFiles) {
      const past = files.filter((f) => f.end <= current);
      if (past.length < 2) return;
      const sizes = await Promise.all(past.map((f) => this.#driver.stat(f.path).then((i) => i.size, () => 0)));
      let best = 0;
      for (let i = 1; i + 1 < past.length; i += 1) {
        if ((sizes[i] ?? 0) + (sizes[i + 1] ?? 0) < (sizes[best] ?? 0) + (sizes[best + 1] ?? 0)) best = i;
      }
      const a = past[best];
      const b = past[best + 1];
      if (a === undefined || b === undefined) return;
      await this.#merge(a, b);
      files = await this.list(false);
    }
  }

  async #merge(a: JournalFile, b: JournalFile): Promise<void> {
    const start = Math.min(a.start, b.start);
    // In a region a merged journal gets a tag of its own: it must not be (or replace) a journal another node appends to.
    const merged = journalFile(start, Math.max(a.end, b.end) - start, this.#tag === undefined ? undefined : `${this.#tag}m${Date.now().toString(36)}`);
    const writer = await this.#driver.writer(merged.path);
    try {
      const consumed: number[] = [];
      let out: string[] = [];
      const emit = async (force: boolean): Promise<void> => {
        if (out.length === 0 || (!force && out.length < LINE_BATCH * 4)) return;
        await writer.write(Buffer.from(out.join('')));
        out = [];
      };
      for (const file of [a, b]) {
        let offset = await this.readHead(file);
        for await (const batch of this.lines(file, offset)) {
          const parsed = batch.map(parseLine);
          const infos = await Promise.all(parsed.map((p) => (p.digest ? statBlob(this.#driver, p.digest) : undefined)));
          for (const [i, p] of parsed.entries()) {
            const info = infos[i];
            offset = p.line.end;
            if (p.digest === undefined || info === undefined || info.modTime.getTime() >= merged.end) continue;
            out.push(`${p.line.text}\n`);
          }
          await emit(false);
        }
        consumed.push(offset);
      }
      await emit(true);
      await this.#serial.run(async () => {
        // Lines appended to either journal after it was read are copied as they are.
        for (const [i, file] of [a, b].entries()) {
          const tail = await readTail(this.#driver, file.path, consumed[i] ?? 0);
          const complete = tail.lastIndexOf(10);
          if (complete >= 0) await writer.write(tail.subarray(0, complete + 1));
        }
        await writer.commit();
        for (const file of [a, b]) {
          if (file.name !== merged.name) await this.#delete(file);
        }
        if (merged.name === a.name || merged.name === b.name) await deleteIfExists(this.#driver, merged.headPath);
        this.#clean.add(merged.name);
      });
      this.#log?.debug({ merged: merged.name, from: [a.name, b.name] }, 'expiry journals merged');
    } catch (err) {
      await writer.cancel().catch(() => undefined);
      throw err;
    }
  }


  /** Appends complete lines to a journal, creating it if needed. Call with the journal lock held. */
  async #append(file: JournalFile, text: string): Promise<void> {
    let writer: FileWriter;
    try {
      writer = await this.#driver.writer(file.path, { append: true });
    } catch (err) {
      if (!isPathNotFound(err)) throw err;
      await this.#driver.putContent(file.path, Buffer.from(text));
      this.#clean.add(file.name);
      return;
    }
    // A crash may have left a torn last line; a newline first keeps it from swallowing our first line.
    const prefix = writer.size > 0 && !this.#clean.has(file.name) ? '\n' : '';
    this.#clean.delete(file.name);
    try {
      await writer.write(Buffer.from(prefix + text));
      await writer.commit();
    } catch (err) {
      // Never cancel(): on an appending writer it deletes the whole journal.
      await writer.close().catch(() => undefined);
      throw err;
    }
    this.#clean.add(file.name);
  }

  /** Deletes a journal and its head. Call with the journal lock held. */
  async #delete(file: JournalFile): Promise<void> {
    // The head first: a crash between the two deletes leaves a journal read again from 0, which is harmless;
    // the other order could leave a stale head applied to a new journal of the same name.
    await deleteIfExists(this.#driver, file.headPath);
    await deleteIfExists(this.#driver, file.path);
    this.#clean.delete(file.name);
  }
}

async function deleteIfExists(driver: StorageDriver, path: string): Promise<void> {
  try {
    await driver.delete(path);
  } catch (err) {
    if (!isPathNotFound(err)) throw err;
  }
}
