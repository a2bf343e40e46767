/**
 * Reading the expiry journals: their complete lines in batches, the parsing of a line (`<digest> <size>`), and
 * the stat of the blob a line names, which decides whether the line still counts (see `./index.ts`).
 */
import type { Readable } from 'node:stream';
import { Digest, isPathNotFound, paths, type FileInfo, type StorageDriver } from '@cascade/registry-core';

/** Lines handled together in a sweep: their stats and removals run concurrently. */
export const LINE_BATCH = 256;

/** One complete line of a journal. */
export interface JournalLine {
  /** Without its newline. */
  readonly text: string;
  /** Byte offset just past the line's newline. */
  readonly end: number;
}

/** A line with what it names; `digest` is undefined for a line that is torn or not `<digest> <size>`. */
export interface ParsedLine {
  readonly line: JournalLine;
  readonly digest: Digest | undefined;
  /** The line's first word: the digest as text when the line is valid. */
  readonly key: string;
}

export function parseLine(line: JournalLine): ParsedLine {
  const space = line.text.indexOf(' ');
  const key = space > 0 ? line.text.slice(0, space) : line.text;
  const size = space > 0 ? Number(line.text.slice(space + 1)) : Number.NaN;
  const digest = Number.isSafeInteger(size) && size >= 0 ? Digest.tryParse(key) : undefined;
  return { line, digest, key };
}

/**
 * The complete lines of a file from `offset`, in batches of at most {@link LINE_BATCH}; nothing for a missing
 * file. A last line without its newline (being appended, or torn by a crash) is not returned, so `end` of the
 * last line returned is where a later read must resume.
 */
export async function* readLines(driver: StorageDriver, path: string, offset: number): AsyncGenerator<JournalLine[]> {
  let stream: Readable;
  try {
    stream = await driver.reader(path, { offset });
  } catch (err) {
    if (isPathNotFound(err)) return;
    throw err;
  }
  let carry = Buffer.alloc(0);
  let position = offset;
  let batch: JournalLine[] = [];
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const buffer = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
      let from = 0;
      for (let nl = buffer.indexOf(10, from); nl !== -1; nl = buffer.indexOf(10, from)) {
        // Empty lines (left by the newline written after a torn line) are returned too, so offsets advance.
        batch.push({ text: buffer.toString('latin1', from, nl), end: position + nl + 1 });
        from = nl + 1;
        if (batch.length >= LINE_BATCH) {
          yield batch;
          batch = [];
        }
      }
      carry = Buffer.from(buffer.subarray(from));
      position += from;
    }
  } finally {
    stream.destroy();
  }
  if (batch.length > 0) yield batch;
}

/** The bytes of a file from `offset` to its end; empty for a missing file. */
export async function readTail(driver: StorageDriver, path: string, offset: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of (await driver.reader(path, { offset })) as AsyncIterable<Buffer>) parts.push(chunk);
  } catch (err) {
    if (isPathNotFound(err)) return Buffer.alloc(0);
    throw err;
  }
  return Buffer.concat(parts);
}

/** Whether a file has a newline at or after `offset`: whether a complete line follows it. */
export async function containsNewline(driver: StorageDriver, path: string, offset: number): Promise<boolean> {
  const stream = await driver.reader(path, { offset });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) if (chunk.includes(10)) return true;
    return false;
  } finally {
    stream.destroy();
  }
}

/** The stat of a blob's data file; undefined when the blob is gone. */
export async function statBlob(driver: StorageDriver, digest: Digest): Promise<FileInfo | undefined> {
  try {
    const info = await driver.stat(paths.blobData(digest));
    return info.isDir ? undefined : info;
  } catch (err) {
    if (isPathNotFound(err)) return undefined;
    throw err;
  }
}
