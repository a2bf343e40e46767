/**
 * nginx for the tests and the benchmark (Debian's `nginx-light`): a config of our own in `dir` (pid file, error
 * log and temp folders there; workers as the current user, `user root` under root, so they read the tests'
 * private folders), on 127.0.0.1 and a free port (another is tried when the one picked is taken), ready once
 * it answers `/nginx-ping`. The caller gives what differs: directives of the `http` block (an `upstream`,
 * `sendfile`), and of the `server` block (its locations).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { daemon, freePort, waitUntil, type Daemon } from './peers.js';

/** What {@link startNginx} writes into the config beside its skeleton. */
export interface NginxConfig {
  /** `worker_processes` (default 1). */
  readonly workers?: number | 'auto';
  /** `worker_connections` (default 1024). */
  readonly connections?: number;
  /** Directives of the `http` block, before the server (an `upstream`, `sendfile on;`). */
  readonly http?: readonly string[];
  /** Directives of the `server` block (its locations), beside its `listen` and `/nginx-ping`. */
  readonly server: readonly string[];
  /** Output lines the daemon keeps (default: peers.ts's). */
  readonly keep?: number;
}

/** A running nginx. */
export interface Nginx {
  readonly url: string;
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly daemon: Daemon;
  /** Its error log's text (empty when there is none yet). */
  errorLog(): Promise<string>;
  stop(): Promise<void>;
}

/** Starts nginx with `config` in `dir`. */
export async function startNginx(dir: string, config: NginxConfig): Promise<Nginx> {
  await mkdir(dir, { recursive: true });
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const conf = [
      ...(process.getuid?.() === 0 ? ['user root;'] : []),
      `worker_processes ${config.workers ?? 1};`,
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'error.log')} warn;`,
      `events { worker_connections ${config.connections ?? 1024}; }`,
      'http {',
      '  access_log off;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(dir, t)};`),
      ...(config.http ?? []).map((l) => `  ${l}`),
      '  server {',
      `    listen 127.0.0.1:${port};`,
      '    location = /nginx-ping { return 200; }',
      ...config.server.map((l) => `    ${l}`),
      '  }',
      '}',
      '',
    ].join('\n');
    const file = join(dir, 'nginx.conf');
    await writeFile(file, conf);
    const d = daemon('nginx', ['-c', file, '-p', dir, '-g', 'daemon off;'], { cwd: dir, ...(config.keep ? { keep: config.keep } : {}) });
    const host = `127.0.0.1:${port}`;
    const url = `http://${host}`;
    try {
      await waitUntil(`nginx on ${url}`, d, async () => (await fetch(`${url}/nginx-ping`)).status === 200);
    } catch (err) {
      await d.kill();
      if (attempt < 3) continue;
      throw err;
    }
    return { url, host, daemon: d, errorLog: () => readFile(join(dir, 'error.log'), 'utf8').catch(() => ''), stop: () => d.kill() };
  }
}
