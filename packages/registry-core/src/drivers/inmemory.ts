/**
 * The `inmemory` storage driver: a tree of directories and byte buffers in the process, for tests and for
 * throw-away registries. Nothing survives the process.
 */
import { addAbortSignal, Readable } from 'node:stream';
import {
  checkPath,
  type FileInfo,
  type FileWriter,
  checkRange,
  InvalidPathError,
  PathNotFoundError,
  type ReadOptions,
  type StorageDriver,
} from './driver.js';

/** Size of the chunks a reader emits. */
const READ_CHUNK = 1024 * 1024;

interface FileNode {
  readonly kind: 'file';
  /** Capacity may exceed `length` so that appends do not copy the whole file each time. */
  data: Buffer;
  length: number;
  modTime: Date;
}

interface DirNode {
  readonly kind: 'dir';
  readonly children: Map<string, Node>;
  modTime: Date;
}

type Node = FileNode | DirNode;

/**
 * A {@link StorageDriver} in memory, with the same semantics as the filesystem driver: directories are created
 * by writes and moves and stay (empty) when their last child is deleted or moved away; a non-appending
 * writer's content becomes visible only at `commit`; an appending writer writes in place. Bytes a caller
 * passes in or gets back are copies, so neither side can change stored content by mutating a buffer.
 * {@link InMemoryDriver.recover} has nothing to recover.
 */
export class InMemoryDriver implements StorageDriver {
  readonly name = 'inmemory';
  readonly #root: DirNode = { kind: 'dir', children: new Map(), modTime: new Date() };

  async getContent(path: string): Promise<Buffer> {
    const node = this.#file(path);
    return Buffer.from(node.data.subarray(0, node.length));
  }

  async putContent(path: string, content: Uint8Array): Promise<void> {
    checkWritable(path);
    this.#install(path, Buffer.from(content));
  }

  async reader(path: string, options: ReadOptions = {}): Promise<Readable> {
    const node = this.#file(path);
    const { offset, end } = checkRange(options);
    // In-place appends only ever write past `length` and replacements swap the node, so the bytes below
    // the length seen now stay as they are for the life of this stream.
    const data = node.data;
    const stop = Math.min(node.length, end === undefined ? Infinity : end + 1);
    const stream = Readable.from(chunks(data, offset, stop), { objectMode: false });
    return options.signal ? addAbortSignal(options.signal, stream) : stream;
  }

  async writer(path: string, options: { append?: boolean; create?: boolean } = {}): Promise<FileWriter> {
    checkWritable(path);
    if (options.create) this.#install(path, Buffer.alloc(0));
    if (options.append || options.create) {
      const node = this.#file(path);
      return new InMemoryWriter(node.length, {
        kind: 'append',
        append: (chunk) => appendTo(node, chunk),
        remove: () => this.#removeIf(path, node),
      });
    }
    return new InMemoryWriter(0, { kind: 'replace', install: (data) => this.#install(path, data) });
  }

  async stat(path: string): Promise<FileInfo> {
    const node = this.#node(path);
    return info(path, node);
  }

  async list(path: string): Promise<string[]> {
    const dir = this.#dir(path);
    const prefix = path === '/' ? '/' : `${path}/`;
    return [...dir.children.keys()].sort().map((n) => prefix + n);
  }

  async move(source: string, dest: string): Promise<void> {
    checkWritable(source);
    checkWritable(dest);
    const node = this.#node(source);
    if (source === dest) return;
    if (dest.startsWith(`${source}/`)) throw systemError('EINVAL', `cannot move ${source} into itself (${dest})`);
    const [sourceParent, sourceName] = this.#parentOf(source, false);
    const [destParent, destName] = this.#parentOf(dest, true);
    const existing = destParent.children.get(destName);
    if (existing !== undefined) {
      if (existing.kind === 'dir' && node.kind === 'file') throw systemError('EISDIR', `${dest} is a directory`);
      if (existing.kind === 'file' && node.kind === 'dir') throw systemError('ENOTDIR', `${dest} is not a directory`);
      if (existing.kind === 'dir' && existing.children.size > 0) throw systemError('ENOTEMPTY', `${dest} is not empty`);
    }
    const now = new Date();
    sourceParent.children.delete(sourceName);
    sourceParent.modTime = now;
    destParent.children.set(destName, node);
    destParent.modTime = now;
  }

  async delete(path: string): Promise<void> {
    checkWritable(path);
    this.#node(path);
    const [parent, name] = this.#parentOf(path, false);
    parent.children.delete(name);
    parent.modTime = new Date();
  }

  async walk(path: string, visit: (info: FileInfo) => Promise<void | 'skip'> | void | 'skip'): Promise<void> {
    await walkDir(path, this.#dir(path), visit);
  }

  async touch(path: string, time: Date): Promise<void> {
    this.#node(path).modTime = new Date(time.getTime());
  }

  async recover(_options?: { olderThanMs?: number }): Promise<void> {}

  #node(path: string): Node {
    checkPath(path);
    let node: Node = this.#root;
    if (path === '/') return node;
    for (const name of path.slice(1).split('/')) {
      const next: Node | undefined = node.kind === 'dir' ? node.children.get(name) : undefined;
      if (next === undefined) throw new PathNotFoundError(path);
      node = next;
    }
    return node;
  }

  #file(path: string): FileNode {
    const node = this.#node(path);
    if (node.kind === 'dir') throw systemError('EISDIR', `${path} is a directory`);
    return node;
  }

  /** A directory; a file in its place is reported as missing, as ENOTDIR is by the filesystem driver. */
  #dir(path: string): DirNode {
    const node = this.#node(path);
    if (node.kind === 'file') throw new PathNotFoundError(path);
    return node;
  }

  /** The parent directory of a non-root path and the last component; `create` makes missing parents. */
  #parentOf(path: string, create: boolean): [DirNode, string] {
    const names = path.slice(1).split('/');
    const last = names.pop() ?? '';
    let dir = this.#root;
    for (const name of names) {
      const next = dir.children.get(name);
      if (next === undefined) {
        if (!create) throw new PathNotFoundError(path);
        const made: DirNode = { kind: 'dir', children: new Map(), modTime: new Date() };
        dir.children.set(name, made);
        dir.modTime = made.modTime;
        dir = made;
      } else if (next.kind === 'file') {
        throw systemError('ENOTDIR', `a parent of ${path} is a file`);
      } else {
        dir = next;
      }
    }
    return [dir, last];
  }

  /** Makes `data` the content of `path` in one step (the atomic replace of non-appending writes). */
  #install(path: string, data: Buffer): void {
    const [parent, name] = this.#parentOf(path, true);
    if (parent.children.get(name)?.kind === 'dir') throw systemError('EISDIR', `${path} is a directory`);
    const now = new Date();
    parent.children.set(name, { kind: 'file', data, length: data.length, modTime: now });
    parent.modTime = now;
  }

  /** Deletes `path` only if it still is `node`, so cancelling a stale appender cannot remove a newer file. */
  #removeIf(path: string, node: FileNode): void {
    let parent: DirNode;
    let name: string;
    try {
      [parent, name] = this.#parentOf(path, false);
    } catch {
      return;
    }
    if (parent.children.get(name) !== node) return;
    parent.children.delete(name);
    parent.modTime = new Date();
  }
}

type WriterTarget =
  | { readonly kind: 'replace'; readonly install: (data: Buffer) => void }
  | { readonly kind: 'append'; readonly append: (chunk: Uint8Array) => void; readonly remove: () => void };

class InMemoryWriter implements FileWriter {
  #size: number;
  #ended = false;
  readonly #chunks: Buffer[] = [];

  constructor(
    initialSize: number,
    private readonly target: WriterTarget,
  ) {
    this.#size = initialSize;
  }

  get size(): number {
    return this.#size;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.#assertOpen();
    this.#append(chunk);
  }

  async writev(chunks: readonly Uint8Array[]): Promise<void> {
    this.#assertOpen();
    for (const c of chunks) this.#append(c);
  }

  #append(chunk: Uint8Array): void {
    if (this.target.kind === 'append') this.target.append(chunk);
    else this.#chunks.push(Buffer.from(chunk));
    this.#size += chunk.byteLength;
  }

  async commit(): Promise<void> {
    this.#assertOpen();
    if (this.target.kind === 'replace') this.target.install(Buffer.concat(this.#chunks, this.#size));
    this.#end();
  }

  async cancel(): Promise<void> {
    this.#assertOpen();
    if (this.target.kind === 'append') this.target.remove();
    this.#end();
  }

  async close(): Promise<void> {
    this.#assertOpen();
    if (this.target.kind !== 'append') {
      throw new Error('close() is for appending writers only; use commit() or cancel()');
    }
    this.#end();
  }

  #assertOpen(): void {
    if (this.#ended) throw new Error('writer already committed, cancelled or closed');
  }

  #end(): void {
    this.#ended = true;
    this.#chunks.length = 0;
  }
}

function appendTo(node: FileNode, chunk: Uint8Array): void {
  const needed = node.length + chunk.byteLength;
  if (needed > node.data.length) {
    const grown = Buffer.allocUnsafe(Math.max(needed, node.data.length * 2));
    node.data.copy(grown, 0, 0, node.length);
    node.data = grown;
  }
  node.data.set(chunk, node.length);
  node.length = needed;
  node.modTime = new Date();
}

function* chunks(data: Buffer, start: number, stop: number): Generator<Buffer> {
  for (let at = start; at < stop; at += READ_CHUNK) {
    yield Buffer.from(data.subarray(at, Math.min(stop, at + READ_CHUNK)));
  }
}

async function walkDir(
  path: string,
  dir: DirNode,
  visit: (info: FileInfo) => Promise<void | 'skip'> | void | 'skip',
): Promise<void> {
  const prefix = path === '/' ? '/' : `${path}/`;
  for (const name of [...dir.children.keys()].sort()) {
    // A visitor may delete what it has not reached yet; such entries are skipped, as by the filesystem driver.
    const child = dir.children.get(name);
    if (child === undefined) continue;
    const childPath = prefix + name;
    const decision = await visit(info(childPath, child));
    if (child.kind === 'dir' && decision !== 'skip') await walkDir(childPath, child, visit);
  }
}

function info(path: string, node: Node): FileInfo {
  return {
    path,
    size: node.kind === 'file' ? node.length : 0,
    modTime: new Date(node.modTime.getTime()),
    isDir: node.kind === 'dir',
  };
}

/** The root can be neither replaced, moved nor deleted, matching the filesystem driver. */
function checkWritable(path: string): void {
  checkPath(path);
  if (path === '/') throw new InvalidPathError(path);
}


/** Errors shaped like Node's system errors, so callers handle both drivers' failures the same way. */
function systemError(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}
