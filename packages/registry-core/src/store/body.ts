/**
 * What a blob store hands the HTTP layer to send: a {@link BlobBody}. A body is one range of one blob, either
 * as stretches of open files (sent with sendfile(2) by the HTTP layer, or read with positional reads when
 * sendfile cannot be used: TLS, HTTP/2) or as a plain stream (drivers without files, an upstream's answer).
 * A store opens what it serves once, answers the size and the body together, and the HTTP layer ends the
 * body exactly once with {@link BlobBody.close}: nothing is carried on streams as hidden properties.
 */
import { read as fsRead } from 'node:fs';
import { Readable } from 'node:stream';
import { isPathNotFound, type PositionalReader, type StorageDriver } from '../drivers/driver.js';
import type { ByteRange } from '../registry.js';

/**
 * A stretch of an open file, or bytes already in memory (`bytes`: a cache's fill keeps its first bytes, so that
 * a client following it gets them with its headers instead of after a file open and a sendfile turn).
 */
export type FileSegment =
  | { readonly fd: number; readonly offset: number; readonly length: number; readonly bytes?: undefined }
  | { readonly bytes: Buffer; readonly length: number };

/**
 * The `length` bytes of a body as stretches of open files, each yielded once its bytes are there (a cache's
 * file still being filled yields a stretch per write). Iterating stops with an error when `signal` aborts.
 */
export interface FileSegments {
  readonly length: number;
  segments(signal: AbortSignal): AsyncIterable<FileSegment>;
}

/** The bytes of one response body. */
export interface BlobBody {
  readonly length: number;
  /** Present when the bytes are in files: the HTTP layer may send them with sendfile instead of {@link stream}. */
  readonly file?: FileSegments;
  /** The bytes as a stream, for responses that do not use {@link file}. Called at most once. */
  stream(): Readable;
  /**
   * Ends the body: stops its stream, releases its files and whatever the store held for it (a fill it
   * follows, a pin against expiry). `complete` when every byte reached the client. Later calls do nothing.
   */
  close(complete: boolean): void;
}

/** What {@link BlobReader.serve} answers: the blob's size, the range served, and the body of a GET. */
export interface ServedBlob {
  readonly size: number;
  /** The range served; undefined for the whole blob. */
  readonly range?: ByteRange;
  /** Undefined for HEAD and for an empty body. */
  readonly body?: BlobBody;
}

/** Bytes read at a time when a body's files are read into a stream. */
const READ_CHUNK = 256 * 1024;

/**
 * A readable stream of `source`'s stretches, read with positional reads into fresh buffers (a pushed buffer
 * belongs to the consumer). Destroying the stream stops the iteration, even one waiting for bytes to come.
 */
export function segmentStream(source: FileSegments): Readable {
  const stop = new AbortController();
  let stretches: AsyncIterator<FileSegment> | undefined;
  let current: FileSegment | undefined;
  let pumping = false;
  const pump = async (): Promise<void> => {
    if (pumping) return;
    pumping = true;
    try {
      for (;;) {
        if (stream.destroyed) return;
        if (!current || current.length === 0) {
          const next = await (stretches ??= source.segments(stop.signal)[Symbol.asyncIterator]()).next();
          if (next.done) {
            stream.push(null);
            return;
          }
          current = next.value;
          continue;
        }
        if (current.bytes) {
          // Bytes in memory are never changed once given out: pushed as they are.
          const bytes = current.bytes;
          current = undefined;
          if (!stream.push(bytes)) return;
          continue;
        }
        const want = Math.min(READ_CHUNK, current.length);
        const buf = Buffer.allocUnsafe(want);
        const n = await pread(current.fd, buf, current.offset);
        if (n === 0) throw new Error(`the blob file ended at ${current.offset} bytes, before the ${current.offset + current.length} expected`);
        current = { fd: current.fd, offset: current.offset + n, length: current.length - n };
        if (!stream.push(n < want ? buf.subarray(0, n) : buf)) return;
      }
    } catch (err) {
      stream.destroy(err as Error);
    } finally {
      pumping = false;
    }
  };
  const stream: Readable = new Readable({
    highWaterMark: READ_CHUNK,
    read() {
      void pump();
    },
    destroy(err, callback) {
      stop.abort();
      callback(err);
    },
  });
  return stream;
}

function pread(fd: number, buffer: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) => fsRead(fd, buffer, 0, buffer.length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/**
 * A body of `length` bytes of an open file from `start`. The file is closed, and `onClose` called, when the
 * body is closed (the sendfile threads work on their own duplicate of the descriptor).
 */
function fileBody(file: PositionalReader, start: number, length: number, onClose?: (complete: boolean) => void): BlobBody {
  const source: FileSegments = {
    length,
    async *segments() {
      yield { fd: file.fd, offset: start, length };
    },
  };
  return filesBody(source, (complete) => {
    void file.close().catch(() => undefined);
    onClose?.(complete);
  });
}

/** A body whose bytes are `source`'s file stretches: sent with sendfile, or read into a stream. */
export function filesBody(source: FileSegments, release: (complete: boolean) => void): BlobBody {
  return closingBody({ length: source.length, file: source, stream: () => segmentStream(source) }, release);
}

/** A body that is a stream (`open` is called at most once, when the body is read). */
export function streamBody(length: number, open: () => Readable, onClose?: (complete: boolean) => void): BlobBody {
  return closingBody({ length, stream: open }, (complete) => onClose?.(complete));
}

/** `parts` with a `close` that destroys the stream it gave (if any) and runs `release`, once. */
export function closingBody(parts: Omit<BlobBody, 'close'>, release: (complete: boolean) => void): BlobBody {
  let stream: Readable | undefined;
  let closed = false;
  return {
    length: parts.length,
    ...(parts.file ? { file: parts.file } : {}),
    stream() {
      stream = parts.stream();
      return stream;
    },
    close(complete) {
      if (closed) return;
      closed = true;
      if (stream && !stream.destroyed) stream.destroy();
      release(complete);
    },
  };
}

/** A stored file opened once for serving: its size, and bodies of any of its ranges. */
export interface StoredFile {
  readonly size: number;
  /** A body of `range` (the whole file when undefined); the file is released when that body is closed. */
  body(range: ByteRange | undefined, onClose?: (complete: boolean) => void): BlobBody;
  /** Releases the file when no body is wanted (a HEAD, an empty range). */
  close(): void;
}

/**
 * The file at `path`, opened with one look at the disk: with positional reads when the driver has them (the
 * open descriptor gives the size and is what sendfile sends from), else with `stat` and a reader opened when
 * the body is read. Undefined when there is no such file; other errors propagate.
 */
export async function openStored(driver: StorageDriver, path: string, signal?: AbortSignal): Promise<StoredFile | undefined> {
  if (driver.openForRead) {
    let file: PositionalReader;
    try {
      file = await driver.openForRead(path, signal);
    } catch (err) {
      if (isPathNotFound(err)) return undefined;
      throw err;
    }
    return {
      size: file.size,
      body: (range, onClose) => (range ? fileBody(file, range.start, range.end - range.start + 1, onClose) : fileBody(file, 0, file.size, onClose)),
      close: () => void file.close().catch(() => undefined),
    };
  }
  let size: number;
  try {
    size = (await driver.stat(path)).size;
  } catch (err) {
    if (isPathNotFound(err)) return undefined;
    throw err;
  }
  return {
    size,
    body: (range, onClose) => {
      const length = range ? range.end - range.start + 1 : size;
      const options = { ...(range ? { offset: range.start, end: range.end } : {}), ...(signal ? { signal } : {}) };
      return streamBody(length, () => lazyStream(() => driver.reader(path, options)), onClose);
    },
    close: () => undefined,
  };
}

/** A stream whose source is opened on first read (a reader's open is async; a body's stream is not). */
function lazyStream(open: () => Promise<Readable>): Readable {
  return Readable.from(
    (async function* () {
      yield* await open();
    })(),
    { objectMode: false },
  );
}
