/**
 * The storage driver contract, after distribution's `storagedriver.StorageDriver`: a small filesystem-like
 * interface over paths. The registry's on-disk layout (see `store/paths.ts`) is built on it, so every driver
 * holds the same tree and a folder written by one driver (or by distribution) is read by another.
 *
 * Paths are absolute, `/`-separated, each component of `[A-Za-z0-9._-]+`, e.g.
 * `/docker/registry/v2/blobs/sha256/ab/abcd.../data`. Every driver passes the conformance suite in
 * `drivers/conformance.ts`.
 */
import type { Readable } from 'node:stream';

/** What {@link StorageDriver.stat} and {@link StorageDriver.walk} report of a path. */
export interface FileInfo {
  readonly path: string;
  /** Size in bytes; 0 for directories. */
  readonly size: number;
  readonly modTime: Date;
  readonly isDir: boolean;
}

/** Options of {@link StorageDriver.reader}. */
export interface ReadOptions {
  /** First byte to read (default 0). */
  offset?: number;
  /** Last byte to read, inclusive (default: end of file). */
  end?: number;
  /** Destroys the stream when aborted (a client that left): no more reads for nobody. */
  signal?: AbortSignal;
}

/**
 * A writer of one file, from {@link StorageDriver.writer}. Writes are sequential. Exactly one of
 * `commit`, `cancel` or `close` ends it; after that every call throws.
 */
export interface FileWriter {
  /** Bytes in the file so far, including content that was there before an appending writer opened it. */
  readonly size: number;
  /**
   * Appends `chunk`; resolves once the driver accepted it (backpressure). The driver does not keep `chunk`
   * after that: the caller may reuse it.
   */
  write(chunk: Uint8Array): Promise<void>;
  /** Appends `chunks` in order, as one write where the medium allows (a gathered write, without a copy). */
  writev(chunks: readonly Uint8Array[]): Promise<void>;
  /**
   * Makes the content durable (fsync where the medium has it) and visible at the writer's path. A writer
   * opened without `append` writes elsewhere and replaces the path atomically here: before `commit` readers
   * see the old content or nothing, never a partial file.
   */
  commit(): Promise<void>;
  /** Discards everything this writer wrote; a non-appending writer leaves the path as it was. */
  cancel(): Promise<void>;
  /**
   * Appending writers only: flushes and releases the file without committing, so that a later
   * `writer(path, {append: true})` resumes at `size` (chunked uploads across requests).
   */
  close(): Promise<void>;
  /**
   * Optional, file-backed writers: runs `write` with the open file's descriptor and the offset of the next
   * byte (`size`), in turn with the writer's other calls, and counts the bytes it reports written. A result
   * with `writeError` marks the writer failed (only `cancel` is accepted then). `write` must not close the
   * descriptor. A cache's fill hands it to the native pump (registry-core's `pumpBody`).
   */
  writeWith?<T extends { readonly written: number; readonly writeError?: unknown }>(write: (fd: number, position: number) => Promise<T>): Promise<T>;
}

/** A file open for positional reads (see {@link StorageDriver.openForRead}). */
export interface PositionalReader {
  /** The open file's descriptor: responses may send from it with sendfile. */
  readonly fd: number;
  /** The file's size when it was opened (a file still being written grows past it). */
  readonly size: number;
  /** Reads into `buffer` from `position`; resolves with the number of bytes read (0 at the end). */
  read(buffer: Buffer, position: number): Promise<number>;
  close(): Promise<void>;
}

/** The storage driver contract. Every method rejects with {@link PathNotFoundError} for a missing path. */
export interface StorageDriver {
  /** Driver name as used in config (`filesystem`, `inmemory`). */
  readonly name: string;
  /** The whole content of a file. Meant for small files (links, manifests). */
  getContent(path: string): Promise<Buffer>;
  /** Replaces the content of a file atomically, creating parent directories. */
  putContent(path: string, content: Uint8Array): Promise<void>;
  /** A stream of the file's bytes from `offset` to `end` inclusive. An offset at or past the size gives an empty stream. */
  reader(path: string, options?: ReadOptions): Promise<Readable>;
  /**
   * A writer for `path`; with `append`, resumes an existing file (which must exist) at its end; with
   * `create`, writes a new empty file in place (replacing any), its bytes readable as they are written and
   * synced by `commit` (a cache's partial fill, which is moved into place once verified).
   */
  writer(path: string, options?: { append?: boolean; create?: boolean }): Promise<FileWriter>;
  /**
   * Optional, for drivers of real files: the file opened for positional reads, and its descriptor for
   * sendfile(2). It stays readable when the path is moved afterwards (a cache follows a blob while it is
   * written, then moved into place). Opening is the one look at the disk a blob GET needs: it says whether
   * the file is there and how big it is. Drivers without it are read with {@link reader}. Rejects (and opens
   * nothing) once `signal` is aborted.
   */
  openForRead?(path: string, signal?: AbortSignal): Promise<PositionalReader>;
  /**
   * Optional: the bytes that may still be written to the storage (for a filesystem, what `statfs` gives an
   * unprivileged writer), or undefined when unknown. A cache checks it before it answers a miss with headers.
   */
  freeSpace?(): Promise<number | undefined>;
  stat(path: string): Promise<FileInfo>;
  /** Full paths of the direct children of a directory, sorted. */
  list(path: string): Promise<string[]>;
  /** Moves a file atomically, replacing `dest` if it exists and creating its parent directories. */
  move(source: string, dest: string): Promise<void>;
  /** Deletes a file, or a directory and everything below it. */
  delete(path: string): Promise<void>;
  /**
   * Visits every file and directory below `path` in lexical order, depth first, a directory before its
   * children. Returning `'skip'` for a directory skips its children.
   */
  walk(path: string, visit: (info: FileInfo) => Promise<void | 'skip'> | void | 'skip'): Promise<void>;
  /**
   * Sets a file's modification time (used for access-time bookkeeping). Drivers without times may no-op.
   */
  touch(path: string, time: Date): Promise<void>;
  /**
   * Removes leftovers of interrupted writes (temporary files); called once at start-up. With `olderThanMs`
   * (a storage other processes write to as well: a region's shared folder), only those untouched for that
   * long, so that another process's write in progress is left alone.
   */
  recover(options?: { olderThanMs?: number }): Promise<void>;
}

/** The path does not exist. */
export class PathNotFoundError extends Error {
  readonly code = 'PATH_NOT_FOUND';
  constructor(readonly path: string, options?: { cause?: unknown }) {
    super(`path not found: ${path}`, options);
    this.name = 'PathNotFoundError';
  }
}

/** The path is not a valid driver path. */
export class InvalidPathError extends Error {
  readonly code = 'INVALID_PATH';
  constructor(readonly path: string) {
    super(`invalid storage path: ${JSON.stringify(path)}`);
    this.name = 'InvalidPathError';
  }
}

const PATH_GRAMMAR = /^(?:\/[A-Za-z0-9._-]+)+$/;

/**
 * Checks a driver path: absolute, no empty, `.` or `..` components.
 * @throws InvalidPathError
 */
export function checkPath(path: string): string {
  if (path !== '/' && (!PATH_GRAMMAR.test(path) || path.split('/').some((c) => c === '.' || c === '..'))) {
    throw new InvalidPathError(path);
  }
  return path;
}

/**
 * Checks the offsets of {@link ReadOptions}: whole, non-negative numbers.
 * @throws RangeError
 */
export function checkRange(options: ReadOptions): { offset: number; end: number | undefined } {
  const offset = options.offset ?? 0;
  const end = options.end;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid read offset: ${offset}`);
  if (end !== undefined && (!Number.isSafeInteger(end) || end < 0)) throw new RangeError(`invalid read end: ${end}`);
  return { offset, end };
}

/** True when `err` is a {@link PathNotFoundError}. */
export function isPathNotFound(err: unknown): err is PathNotFoundError {
  return err instanceof PathNotFoundError;
}
