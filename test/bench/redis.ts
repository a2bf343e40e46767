/**
 * A redis-server for the benchmark's region scenario (8): on 127.0.0.1, a free port, no persistence, its
 * folder under the run's. Same shape as test/lib/redis.ts's `startRedis` (the e2e tests' Redis, which comes
 * with the region core of issue 16): once that is in, this file can go and scenarios.ts import that instead.
 */
import { mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { daemon, freePort, waitUntil, type Daemon } from '../lib/peers.js';

/** A running redis-server. */
export interface BenchRedis {
  readonly url: string;
  readonly port: number;
  /** The server process (for its CPU time). */
  readonly pid: number;
  stop(): Promise<void>;
  /** Stops it and starts it again on the same port (empty: it keeps nothing). */
  restart(): Promise<void>;
}

/** Whether Redis answers PING on 127.0.0.1:`port`. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let answer = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('*1\r\n$4\r\nPING\r\n'));
    socket.on('data', (d) => {
      answer += d.toString('latin1');
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
  });
}

/** Starts redis-server with its files in `dir`, retrying on another port when the one picked is taken. */
export async function startBenchRedis(dir: string): Promise<BenchRedis> {
  await mkdir(dir, { recursive: true });
  const launch = async (port: number): Promise<Daemon> => {
    const d = daemon('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { cwd: dir });
    await waitUntil(`redis-server on 127.0.0.1:${port}`, d, () => ping(port));
    return d;
  };
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    let d: Daemon;
    try {
      d = await launch(port);
    } catch (err) {
      if (attempt < 3) continue;
      throw err;
    }
    let current = d;
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      get pid() {
        return current.child.pid!;
      },
      stop: () => current.kill(),
      async restart() {
        await current.kill();
        current = await launch(port);
      },
    };
  }
}
