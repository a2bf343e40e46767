/**
 * Blob bodies sent with sendfile(2): nginx's way of serving static files. The native addon
 * (`native/sendfile.c`, built by node-gyp on install) sends a file range to a socket from its own worker
 * threads, so the bytes go from the page cache to the socket inside the kernel and the JavaScript thread
 * only starts and ends the transfer. Plain-TCP HTTP/1 responses whose body is in files (a {@link BlobBody}
 * with `file`: a stored blob, or the growing file of a cache's fill, sent stretch by stretch as it is
 * written) take this path; TLS, other drivers and other platforms stream the body.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { getSystemErrorName } from 'node:util';
import type Koa from 'koa';
import { loadAddon } from '../native.js';
import type { BlobBody, FileSegments } from '../store/body.js';

interface Addon {
  available(): boolean;
  init(dispatch: (id: number, errno: number, sent: number) => void, threads: number): void;
  /** A transfer's id, or a negative errno when a descriptor cannot be duplicated. */
  send(socketFd: number, fileFd: number, offset: number, length: number, stallMs: number): number;
  cancel(id: number): void;
}

/** Sends file ranges to sockets; one per process (see {@link loadSendfile}). */
export interface Sendfile {
  readonly threads: number;
  /**
   * Resolves with the bytes sent once all `length` bytes are in the socket; rejects with a system error
   * (ETIMEDOUT after `stallMs` without progress, ECANCELED when the socket closed first).
   */
  send(socket: Socket, fd: number, offset: number, length: number, stallMs?: number): Promise<number>;
}

/** A transfer that makes no progress for this long (a client that stopped reading) is ended. */
const STALL_MS = 120_000;

let loaded: Sendfile | string | undefined;

/**
 * The process's sendfile, started with `threads` worker threads on first use, or the reason it is not
 * available (not Linux, the addon not built). The thread count of the first call holds for the process.
 */
export function loadSendfile(threads = 2): Sendfile | string {
  if (loaded !== undefined) return loaded;
  const addon = loadAddon<Addon>('cascade_sendfile');
  if (typeof addon === 'string') return (loaded = addon);
  if (!addon.available()) return (loaded = `sendfile is only used on Linux (this is ${process.platform})`);
  const pending = new Map<number, { resolve: (sent: number) => void; reject: (err: Error) => void }>();
  const dispatch = (id: number, errno: number, sent: number) => {
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    if (errno === 0) p.resolve(sent);
    else {
      const code = getSystemErrorName(-errno);
      p.reject(Object.assign(new Error(`sendfile: ${code} after ${sent} bytes`), { code, sent }));
    }
  };
  try {
    addon.init(dispatch, threads);
  } catch (err) {
    // Another thread of this process (a worker_threads Worker) started it first: that one sends.
    return (loaded = `sendfile could not start here: ${(err as Error).message}`);
  }
  loaded = {
    threads,
    send(socket, fd, offset, length, stallMs = STALL_MS) {
      const socketFd = socketFdOf(socket);
      // A closed socket would never report 'close' again, and so never cancel the transfer.
      if (socket.destroyed || socketFd === undefined) return Promise.reject(Object.assign(new Error('sendfile: the socket is closed'), { code: 'ECANCELED', sent: 0 }));
      return new Promise((resolve, reject) => {
        const id = addon.send(socketFd, fd, offset, length, stallMs);
        if (id < 0) {
          const code = getSystemErrorName(id);
          return reject(Object.assign(new Error(`sendfile: ${code}`), { code, sent: 0 }));
        }
        // A client that leaves: Node closes its descriptor; the addon's copy is closed by cancelling.
        const onClose = () => addon.cancel(id);
        socket.once('close', onClose);
        pending.set(id, {
          resolve: (sent) => {
            socket.off('close', onClose);
            resolve(sent);
          },
          reject: (err) => {
            socket.off('close', onClose);
            reject(err);
          },
        });
      });
    },
  };
  return loaded;
}

function socketFdOf(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** True when this response may be sent with sendfile: HTTP/1 over plain TCP, on an open socket. */
export function canSendfile(ctx: Koa.Context): boolean {
  if (ctx.req.httpVersionMajor !== 1) return false;
  const socket = ctx.req.socket as Socket & { encrypted?: boolean };
  return !socket.encrypted && !socket.destroyed && socketFdOf(socket) !== undefined;
}

/**
 * Sends the status, the headers already set on `ctx`, and `body`'s files (`file`), and takes the response away from
 * Koa. The headers are written by Node first; the body follows once they have left. The body is closed at
 * the end (complete or not); on failure the connection is destroyed: the client sees a short body, never
 * wrong bytes.
 */
export function respondWithSendfile(ctx: Koa.Context, sendfile: Sendfile, body: BlobBody, file: FileSegments, onError: (err: Error) => void): void {
  ctx.respond = false;
  const { res } = ctx;
  const socket = ctx.req.socket;
  res.flushHeaders();
  // A client that leaves stops the wait for a fill's next bytes, not only a transfer in progress.
  const left = new AbortController();
  const onClose = () => left.abort(clientLeft());
  socket.once('close', onClose);
  void (async () => {
    // The access log of an aborted response counts what was sent before the client left (Node never sees
    // these bytes; a transfer still running when the socket closes is not counted).
    const state = ctx.state as { sendfileBytes?: number };
    try {
      await headersWritten(res, socket);
      state.sendfileBytes = 0;
      for await (const segment of file.segments(left.signal)) {
        if (socket.destroyed) throw clientLeft();
        if (segment.bytes) {
          // Bytes in memory (a fill's first ones) go through Node's socket; the next sendfile waits until they
          // are in the kernel.
          await written(socket, segment.bytes);
          state.sendfileBytes += segment.length;
          continue;
        }
        try {
          state.sendfileBytes += await sendfile.send(socket, segment.fd, segment.offset, segment.length);
        } catch (err) {
          state.sendfileBytes += (err as { sent?: number }).sent ?? 0;
          throw err;
        }
      }
      if (state.sendfileBytes !== body.length) throw new Error(`sendfile: ${state.sendfileBytes} of ${body.length} bytes`);
      res.end();
      body.close(true);
    } catch (err) {
      body.close(false);
      socket.destroy();
      if ((err as { code?: string }).code !== 'ECANCELED' && !left.signal.aborted) onError(err as Error);
    } finally {
      socket.off('close', onClose);
    }
  })();
}

/**
 * Resolves once the headers of `res` are in the kernel: the body must not overtake them. A client that
 * reuses its connection may send its next request before the previous response ended; Node then keeps the
 * new response's output until the socket is handed over to it, so the socket alone says nothing. Once the
 * socket is ours, the headers are in the kernel when Node holds nothing back; otherwise an empty write's
 * callback runs when everything written before it (the headers) has been handed to the kernel.
 */
async function headersWritten(res: ServerResponse, socket: Socket): Promise<void> {
  if (res.socket !== socket) {
    // Queued behind the connection's previous response: Node hands the socket over with a 'socket' event.
    await new Promise<void>((resolve, reject) => {
      const onSocket = () => {
        socket.off('close', onClose);
        resolve();
      };
      const onClose = () => {
        res.off('socket', onSocket);
        reject(clientLeft());
      };
      res.once('socket', onSocket);
      socket.once('close', onClose);
    });
  }
  if (socket.destroyed) throw clientLeft();
  // Nothing waiting in Node's buffer: the headers are in the kernel already (the usual case, a write that
  // completed at once), and waiting for an empty write's callback would only cost a turn of the event loop.
  if (socket.writableLength === 0 && !socket.writableCorked) return;
  await written(socket, EMPTY);
}

/**
 * Writes `bytes` to `socket` and resolves once they and everything written before them are in the kernel.
 * A client that reads nothing for STALL_MS is given up on.
 */
function written(socket: Socket, bytes: Buffer): Promise<void> {
  if (socket.destroyed) return Promise.reject(clientLeft());
  return new Promise<void>((resolve, reject) => {
    const stalled = setTimeout(() => reject(Object.assign(new Error('the response was not sent'), { code: 'ETIMEDOUT' })), STALL_MS);
    socket.write(bytes, (err) => {
      clearTimeout(stalled);
      if (err || socket.destroyed) reject(clientLeft());
      else resolve();
    });
  });
}

const EMPTY = Buffer.alloc(0);

/** The error of a response whose client went away (ECANCELED: not reported as a failure). */
function clientLeft(): Error {
  return Object.assign(new Error('the client left'), { code: 'ECANCELED' });
}
