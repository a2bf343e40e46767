/**
 * A real Redis server for end-to-end tests (Debian's `redis-server`): a throwaway instance in a temporary
 * directory, listening on 127.0.0.1 on a free port, persisting nothing (`--save '' --appendonly no`).
 * `stop()` and `start()` take it down and bring it back on the same port (empty, as a restarted cache Redis
 * is); `close()` stops it for good and removes the directory.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { daemon, freePort, waitUntil, type Daemon } from './peers.js';

export interface RedisServer {
  /** `redis://127.0.0.1:PORT/0` */
  readonly url: string;
  readonly port: number;
  readonly output: readonly string[];
  /** Stops the server (SIGKILL with `kill`, as a crash); its port stays reserved for {@link start}. */
  stop(options?: { kill?: boolean }): Promise<void>;
  /** Starts it again on the same port, empty. */
  start(): Promise<void>;
  /** Runs one command with a fresh client (for assertions). */
  command(...args: (string | number)[]): Promise<unknown>;
  /** Stops it and removes its directory. */
  close(): Promise<void>;
}

/** Starts a throwaway redis-server. */
export async function startRedis(): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'cascade-redis-'));
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}/0`;
  let d: Daemon | undefined;
  const output: string[] = [];
  const ping = async (): Promise<boolean> => {
    const client = new Redis(url, { lazyConnect: true, connectTimeout: 500, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => undefined);
    try {
      await client.connect();
      return (await client.ping()) === 'PONG';
    } finally {
      client.disconnect();
    }
  };
  const start = async (): Promise<void> => {
    d = daemon('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no'], { cwd: dir });
    const current = d;
    current.child.stdout?.on('data', (c: Buffer | string) => output.push(String(c)));
    await waitUntil(`redis-server on 127.0.0.1:${port}`, current, ping, 15_000);
  };
  const stop = async (options: { kill?: boolean } = {}): Promise<void> => {
    const current = d;
    d = undefined;
    if (!current) return;
    if (options.kill) {
      current.child.kill('SIGKILL');
      await current.exited;
    } else await current.kill();
  };
  try {
    await start();
  } catch (err) {
    await stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url,
    port,
    output,
    stop,
    start,
    async command(...args) {
      const client = new Redis(url, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0 });
      client.on('error', () => undefined);
      try {
        await client.connect();
        const [cmd, ...rest] = args;
        return await client.call(String(cmd), ...rest.map(String));
      } finally {
        client.disconnect();
      }
    },
    async close() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
