/**
 * The `filesystem` storage driver: driver paths map one to one below a root directory, exactly as in
 * distribution's filesystem driver, so the same folder can be served by Cascade and by distribution.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, stat, statfs, unlink, utimes } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { addAbortSignal, Readable } from 'node:stream';
import {
  checkPath,
  type FileInfo,
  type FileWriter,
  checkRange,
  InvalidPathError,
  isPathNotFound,
  PathNotFoundError,
  type PositionalReader,
  type ReadOptions,
  type StorageDriver,
} from './driver.js';

/** Options of {@link FilesystemDriver}. */
export interface FilesystemDriverOptions {
  /** The directory that holds the tree; driver path `/a/b` is `<rootDirectory>/a/b`. Created on first write. */
  rootDirectory: string;
}

/**
 * Top-level folder of the root reserved for Cascade's own bookkeeping. distribution only walks
 * `docker/registry/v2`, so it never sees it; this driver hides it from `list('/')` and `walk('/')` and rejects
 * driver paths below it with {@link InvalidPathError}.
 */
export const FILESYSTEM_RESERVED_DIRECTORY = '_cascade';

/** Folder, relative to the root, of every temporary file (the same filesystem as the tree, so rename is atomic). */
export const FILESYSTEM_TEMP_DIRECTORY = `${FILESYSTEM_RESERVED_DIRECTORY}/tmp`;

/** Read buffer of blob streams: large reads are what lets a warm blob stream near the disk limit. */
const READ_HIGH_WATER_MARK = 256 * 1024;

const RESERVED_PATH = `/${FILESYSTEM_RESERVED_DIRECTORY}`;

/**
 * A {@link StorageDriver} on a local directory, compatible with distribution's `filesystem` driver layout.
 *
 * Non-appending writes (`putContent`, `writer(path)`) go to a uniquely named file in
 * `<root>/_cascade/tmp/`, are fsynced, then renamed over the target and the directory entry fsynced, so a crash
 * at any moment leaves either the old file or the whole new one. {@link FilesystemDriver.recover} clears that
 * temporary directory. ENOENT and ENOTDIR on the path being read are reported as {@link PathNotFoundError};
 * every other system error (ENOSPC, EACCES, EISDIR, ...) propagates unchanged.
 */
export class FilesystemDriver implements StorageDriver {
  readonly name = 'filesystem';
  readonly #root: string;
  readonly #tempDirectory: string;

  constructor(options: FilesystemDriverOptions) {
    this.#root = resolve(options.rootDirectory);
    this.#tempDirectory = join(this.#root, FILESYSTEM_TEMP_DIRECTORY);
  }

  /** The absolute root directory. */
  get rootDirectory(): string {
    return this.#root;
  }

  async getContent(path: string): Promise<Buffer> {
    const file = this.#resolve(path);
    try {
      return await readFile(file);
    } catch (err) {
      throw notFound(path, err);
    }
  }

  async putContent(path: string, content: Uint8Array): Promise<void> {
    const writer = await this.writer(path);
    try {
      await writer.write(content);
      await writer.commit();
    } catch (err) {
      await writer.cancel().catch(() => undefined);
      throw err;
    }
  }

  async reader(path: string, options: ReadOptions = {}): Promise<Readable> {
    const file = this.#resolve(path);
    const { offset, end } = checkRange(options);
    const { handle, size } = await this.#openFile(path, { file });
    if (offset >= size || (end !== undefined && end < offset)) {
      await handle.close();
      return emptyStream();
    }
    // The stream owns the handle from here (autoClose), so an abandoned or destroyed stream releases the fd.
    const last = Math.min(end ?? size - 1, size - 1);
    const stream = handle.createReadStream({ start: offset, end: last, highWaterMark: READ_HIGH_WATER_MARK });
    return options.signal ? addAbortSignal(options.signal, stream) : stream;
  }

  async openForRead(path: string, signal?: AbortSignal): Promise<PositionalReader> {
    signal?.throwIfAborted();
    const { handle, size } = await this.#openFile(path, signal ? { signal } : {});
    return {
      fd: handle.fd,
      size,
      read: async (buffer, position) => (await handle.read(buffer, 0, buffer.length, position)).bytesRead,
      close: () => handle.close(),
    };
  }

  /** What `statfs` of the root says an unprivileged writer may still write; undefined before the root exists. */
  async freeSpace(): Promise<number | undefined> {
    try {
      const fs = await statfs(this.#root);
      return fs.bavail * fs.bsize;
    } catch {
      return undefined;
    }
  }

  /**
   * The file at `path` (already resolved: `file`) opened for reading (`flags` 'r') or for appending ('r+'), with
   * its size: one open and one fstat. A directory is EISDIR; the handle is closed when that check fails or
   * `signal` was aborted meanwhile.
   */
  async #openFile(path: string, o: { file?: string; flags?: 'r' | 'r+'; signal?: AbortSignal }): Promise<{ handle: FileHandle; size: number }> {
    const { file = this.#resolve(path), flags = 'r', signal } = o;
    let handle: FileHandle;
    try {
      handle = await open(file, flags);
    } catch (err) {
      throw notFound(path, err);
    }
    try {
      const info = await handle.stat();
      if (info.isDirectory()) throw systemError('EISDIR', `illegal operation on a directory: ${path}`);
      signal?.throwIfAborted();
      return { handle, size: info.size };
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
  }

  async writer(path: string, options: { append?: boolean; create?: boolean } = {}): Promise<FileWriter> {
    const file = this.#resolveWritable(path);
    if (options.create) {
      // A new file written in place: no temporary file, no sync until commit (a cache's partial fill). Its
      // folder is made only when missing: one turn of libuv's pool instead of two for every fill after the first.
      const handle = await open(file, 'w').catch(async (err: unknown) => {
        if (errorCode(err) !== 'ENOENT') throw err;
        await mkdir(dirname(file), { recursive: true });
        return open(file, 'w');
      });
      return new FilesystemWriter(handle, 0, { kind: 'append', file });
    }
    if (options.append) {
      const { handle, size } = await this.#openFile(path, { file, flags: 'r+' });
      return new FilesystemWriter(handle, size, { kind: 'append', file });
    }
    const temp = await this.#openTemp();
    return new FilesystemWriter(temp.handle, 0, {
      kind: 'replace',
      temp: temp.path,
      install: () => this.#install(temp.path, file),
    });
  }

  async stat(path: string): Promise<FileInfo> {
    const file = this.#resolve(path);
    try {
      const info = await stat(file);
      const isDir = info.isDirectory();
      return { path, size: isDir ? 0 : info.size, modTime: info.mtime, isDir };
    } catch (err) {
      throw notFound(path, err);
    }
  }

  async list(path: string): Promise<string[]> {
    const dir = this.#resolve(path);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      throw notFound(path, err);
    }
    if (path === '/') names = names.filter((n) => n !== FILESYSTEM_RESERVED_DIRECTORY);
    const prefix = path === '/' ? '/' : `${path}/`;
    return names.sort().map((n) => prefix + n);
  }

  async move(source: string, dest: string): Promise<void> {
    const from = this.#resolveWritable(source);
    const to = this.#resolveWritable(dest);
    let firstCreated: string | undefined;
    try {
      await rename(from, to);
    } catch (err) {
      const code = errorCode(err);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
      // The same codes mean either "no source" or "no parent for dest"; only the latter is fixed by a mkdir,
      // and checking first avoids leaving empty directories behind for a missing source.
      await stat(from).catch((e: unknown) => {
        throw notFound(source, e);
      });
      if (code === 'ENOTDIR') throw err;
      firstCreated = await mkdir(dirname(to), { recursive: true });
      try {
        await rename(from, to);
      } catch (e) {
        throw notFound(source, e);
      }
    }
    await syncNewEntries(dirname(to), firstCreated);
  }

  async delete(path: string): Promise<void> {
    const file = this.#resolveWritable(path);
    try {
      await rm(file, { recursive: true });
    } catch (err) {
      throw notFound(path, err);
    }
  }

  async walk(path: string, visit: (info: FileInfo) => Promise<void | 'skip'> | void | 'skip'): Promise<void> {
    await this.#walkChildren(await this.list(path), visit);
  }

  async touch(path: string, time: Date): Promise<void> {
    const file = this.#resolve(path);
    try {
      await utimes(file, time, time);
    } catch (err) {
      throw notFound(path, err);
    }
  }

  async recover(options: { olderThanMs?: number } = {}): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.#tempDirectory);
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return;
      throw err;
    }
    const { olderThanMs } = options;
    const cutoff = olderThanMs === undefined ? undefined : Date.now() - olderThanMs;
    await Promise.all(
      names.map(async (n) => {
        const path = join(this.#tempDirectory, n);
        // A write in progress elsewhere touches its file all the time; a missing one was finished meanwhile.
        if (cutoff !== undefined && ((await stat(path).catch(() => undefined))?.mtimeMs ?? -Infinity) >= cutoff) return;
        await rm(path, { recursive: true, force: true });
      }),
    );
  }

  async #walkChildren(
    children: readonly string[],
    visit: (info: FileInfo) => Promise<void | 'skip'> | void | 'skip',
  ): Promise<void> {
    for (const child of children) {
      // Entries removed while the walk runs (garbage collection, finished uploads) are skipped, not errors.
      let info: FileInfo;
      try {
        info = await this.stat(child);
      } catch (err) {
        if (isPathNotFound(err)) continue;
        throw err;
      }
      const decision = await visit(info);
      if (!info.isDir || decision === 'skip') continue;
      let grandchildren: string[];
      try {
        grandchildren = await this.list(child);
      } catch (err) {
        if (isPathNotFound(err)) continue;
        throw err;
      }
      await this.#walkChildren(grandchildren, visit);
    }
  }

  #resolve(path: string): string {
    checkPath(path);
    if (path === RESERVED_PATH || path.startsWith(`${RESERVED_PATH}/`)) throw new InvalidPathError(path);
    return path === '/' ? this.#root : join(this.#root, path);
  }

  /** Like {@link #resolve}, and also refuses the root, which can be neither replaced, moved nor deleted. */
  #resolveWritable(path: string): string {
    const file = this.#resolve(path);
    if (path === '/') throw new InvalidPathError(path);
    return file;
  }

  async #openTemp(): Promise<{ path: string; handle: FileHandle }> {
    const path = join(this.#tempDirectory, `${randomBytes(16).toString('hex')}.tmp`);
    try {
      return { path, handle: await open(path, 'wx') };
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
    }
    await mkdir(this.#tempDirectory, { recursive: true });
    return { path, handle: await open(path, 'wx') };
  }

  /** Renames a finished temporary file onto `file` and makes the new directory entries durable. */
  async #install(temp: string, file: string): Promise<void> {
    const parent = dirname(file);
    const firstCreated = await mkdir(parent, { recursive: true });
    await rename(temp, file);
    await syncNewEntries(parent, firstCreated);
  }
}

type WriterTarget =
  | { readonly kind: 'replace'; readonly temp: string; readonly install: () => Promise<void> }
  | { readonly kind: 'append'; readonly file: string };

/**
 * `open`: accepts every call. `failed`: a write or commit failed, so the content is unknown; only `cancel`
 * is accepted. `ended`: committed, cancelled or closed.
 */
type WriterState = 'open' | 'failed' | 'ended';

class FilesystemWriter implements FileWriter {
  #size: number;
  #state: WriterState = 'open';
  #failure: unknown;
  #handleOpen = true;
  // Calls are chained so that a caller who does not await each write still gets them in order.
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly handle: FileHandle,
    initialSize: number,
    private readonly target: WriterTarget,
  ) {
    this.#size = initialSize;
  }

  get size(): number {
    return this.#size;
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.writev([chunk]);
  }

  writev(chunks: readonly Uint8Array[]): Promise<void> {
    return this.#serialize(async () => {
      this.#assertOpen();
      try {
        await writevFully(this.handle, chunks, this.#size);
      } catch (err) {
        this.#fail(err);
        throw err;
      }
      for (const c of chunks) this.#size += c.byteLength;
    });
  }

  writeWith<T extends { readonly written: number; readonly writeError?: unknown }>(write: (fd: number, position: number) => Promise<T>): Promise<T> {
    let result!: T;
    return this.#serialize(async () => {
      this.#assertOpen();
      try {
        result = await write(this.handle.fd, this.#size);
      } catch (err) {
        // What `write` did to the file is unknown.
        this.#fail(err);
        throw err;
      }
      this.#size += result.written;
      if (result.writeError !== undefined) this.#fail(result.writeError);
    }).then(() => result);
  }

  commit(): Promise<void> {
    return this.#serialize(async () => {
      this.#assertOpen();
      try {
        await this.handle.sync();
        await this.#closeHandle();
        if (this.target.kind === 'replace') await this.target.install();
      } catch (err) {
        this.#fail(err);
        throw err;
      }
      this.#state = 'ended';
    });
  }

  cancel(): Promise<void> {
    return this.#serialize(async () => {
      if (this.#state === 'ended') throw endedError();
      this.#state = 'ended';
      await this.#closeHandle().catch(() => undefined);
      const file = this.target.kind === 'replace' ? this.target.temp : this.target.file;
      // recover() may already have removed a temporary file, and a committed-then-failed rename moved it.
      await unlink(file).catch((err: unknown) => {
        if (errorCode(err) !== 'ENOENT') throw err;
      });
    });
  }

  close(): Promise<void> {
    return this.#serialize(async () => {
      this.#assertOpen();
      if (this.target.kind !== 'append') {
        throw new Error('close() is for appending writers only; use commit() or cancel()');
      }
      this.#state = 'ended';
      await this.#closeHandle();
    });
  }

  #serialize(run: () => Promise<void>): Promise<void> {
    const result = this.#queue.then(run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  #assertOpen(): void {
    if (this.#state === 'ended') throw endedError();
    if (this.#state === 'failed') {
      throw new Error('writer failed earlier; only cancel() is possible', { cause: this.#failure });
    }
  }

  #fail(err: unknown): void {
    this.#state = 'failed';
    this.#failure = err;
  }

  async #closeHandle(): Promise<void> {
    if (!this.#handleOpen) return;
    this.#handleOpen = false;
    await this.handle.close();
  }
}

/** One `pwritev` for all of `chunks` (the kernel may take fewer bytes: the rest goes in further calls). */
async function writevFully(handle: FileHandle, chunks: readonly Uint8Array[], position: number): Promise<void> {
  let rest = chunks.filter((c) => c.byteLength > 0);
  while (rest.length > 0) {
    const { bytesWritten } = await handle.writev(rest as Uint8Array[], position);
    position += bytesWritten;
    let skip = bytesWritten;
    while (rest.length > 0 && skip >= rest[0]!.byteLength) {
      skip -= rest[0]!.byteLength;
      rest = rest.slice(1);
    }
    if (skip > 0) rest = [rest[0]!.subarray(skip), ...rest.slice(1)];
  }
}

/**
 * A rename is durable only once its directory is synced, and so is every directory `mkdir -p` created (in its
 * own parent): syncs `parent` and, when `firstCreated` (what `mkdir -p` returned) is set, the parents of
 * every directory from `firstCreated` down to `parent`.
 */
async function syncNewEntries(parent: string, firstCreated: string | undefined): Promise<void> {
  const dirs = [parent];
  if (firstCreated !== undefined) {
    const stop = dirname(firstCreated);
    for (let dir = parent; dir !== stop && dir !== dirname(dir); dir = dirname(dir)) dirs.push(dirname(dir));
  }
  for (const dir of dirs) {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}


function emptyStream(): Readable {
  return new Readable({
    read() {
      this.push(null);
    },
  });
}

function errorCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** ENOENT and ENOTDIR become {@link PathNotFoundError}; anything else is returned unchanged, to be rethrown. */
function notFound(path: string, err: unknown): unknown {
  const code = errorCode(err);
  return code === 'ENOENT' || code === 'ENOTDIR' ? new PathNotFoundError(path, { cause: err }) : err;
}

function systemError(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

function endedError(): Error {
  return new Error('writer already committed, cancelled or closed');
}
