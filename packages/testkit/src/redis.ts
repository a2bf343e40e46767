/**
 * A real Redis server for tests (Debian's `redis-server`): a throwaway instance in a temporary directory,
 * listening on 127.0.0.1 on a free port, persisting nothing (`--save '' --appendonly no`), optionally with a
 * password. `stop()` and `start()` take it down and bring it back on the same port (empty, as a restarted
 * Redis that keeps nothing is); `close()` stops it for good and removes the directory. Used by the region
 * coordinator's unit tests, the doctor's, the end-to-end region tests and the benchmark's region scenario.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './net.js';

export interface RedisServer {
  /** `redis://127.0.0.1:PORT/0`, with the password when there is one (`redis://:PASSWORD@...`). */
  readonly url: string;
  readonly port: number;
  /** What the server printed (its log), across restarts. */
  readonly output: readonly string[];
  /** The running server's process id (for its CPU time). */
  readonly pid: number;
  /** Stops the server (SIGKILL with `kill`, as a crash); its port stays reserved for {@link start}. */
  stop(options?: { kill?: boolean }): Promise<void>;
  /** Starts it again on the same port, empty. */
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  close(): Promise<void>;
}

/** Starts a throwaway redis-server (with `password`, clients must AUTH). */
export async function startRedis(options: { password?: string } = {}): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'cascade-redis-'));
  const port = await freePort();
  const { password } = options;
  const url = `redis://${password ? `:${encodeURIComponent(password)}@` : ''}127.0.0.1:${port}/0`;
  const output: string[] = [];
  let child: ChildProcess | undefined;
  const ping = () => send(port, password, ['PING']).catch(() => '');

  const start = async (): Promise<void> => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', ...(password ? ['--requirepass', password] : [])];
    const current = spawn('redis-server', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child = current;
    const exited = new Promise<void>((resolve) => current.once('exit', () => resolve()));
    current.stdout!.setEncoding('utf8').on('data', (d: string) => output.push(d));
    current.stderr!.setEncoding('utf8').on('data', (d: string) => output.push(d));
    current.on('error', (err) => output.push(`spawn error: ${err.message}`));
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (current.exitCode !== null || current.signalCode !== null) throw new Error(`redis-server exited at start (is Debian's redis-server installed?):\n${output.join('')}`);
      if ((await ping()) === '+PONG') return;
      if (Date.now() > deadline) {
        current.kill('SIGKILL');
        await exited;
        throw new Error(`redis-server did not answer on 127.0.0.1:${port}:\n${output.join('')}`);
      }
      await sleep(50);
    }
  };
  const stop = async (o: { kill?: boolean } = {}): Promise<void> => {
    const current = child;
    child = undefined;
    if (!current || current.exitCode !== null || current.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => current.once('exit', () => resolve()));
    current.kill(o.kill ? 'SIGKILL' : 'SIGTERM');
    await exited;
  };
  try {
    await start();
  } catch (err) {
    await stop({ kill: true });
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url,
    port,
    output,
    get pid() {
      if (!child?.pid) throw new Error('redis-server is not running');
      return child.pid;
    },
    stop,
    start,
    async close() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Sends one command (after AUTH when there is a password) and answers its reply's first line (AUTH's, if AUTH fails). */
function send(port: number, password: string | undefined, args: string[]): Promise<string> {
  const resp = (parts: string[]) => `*${parts.length}\r\n${parts.map((p) => `$${Buffer.byteLength(p)}\r\n${p}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let answer = '';
    let expected = password ? 2 : 1;
    socket.setTimeout(2000, () => socket.destroy(new Error('redis: no answer within 2 s')));
    socket.on('error', reject);
    socket.on('connect', () => socket.write((password ? resp(['AUTH', password]) : '') + resp(args)));
    socket.setEncoding('latin1').on('data', (d: string) => {
      answer += d;
      // One reply per command; the answer is the last command's (AUTH's +OK comes first).
      const lines = answer.split('\r\n');
      if (lines.length - 1 < expected) return;
      if (password && lines[0] !== '+OK') {
        expected = 1;
        socket.destroy();
        resolve(lines[0]!);
        return;
      }
      socket.destroy();
      resolve(lines[expected - 1]!);
    });
  });
}
