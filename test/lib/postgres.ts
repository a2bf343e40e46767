/**
 * A real PostgreSQL server for end-to-end tests (Debian's `postgresql` package): a new cluster in a
 * temporary directory (`initdb`, trust authentication, no fsync), listening on 127.0.0.1 on a free port.
 * PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres` user the package
 * creates. `stop()` kills the server and removes the directory.
 */
import { chown, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { daemon, freePort, run, waitUntil, type Daemon } from './peers.js';

export interface Postgres {
  /** `postgres://cascade@127.0.0.1:PORT/<database>` */
  url(database?: string): string;
  /** Creates an empty database and answers its URL. */
  createDatabase(name: string): Promise<string>;
  readonly output: readonly string[];
  stop(): Promise<void>;
}

/** The directory of PostgreSQL's server programs (the newest installed major version), or undefined. */
export async function postgresBinDir(): Promise<string | undefined> {
  const versions = await readdir('/usr/lib/postgresql').catch(() => [] as string[]);
  const newest = versions.filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a))[0];
  return newest === undefined ? undefined : join('/usr/lib/postgresql', newest, 'bin');
}

/** Starts a throwaway PostgreSQL server; its superuser is `cascade`, with no password (trust). */
export async function startPostgres(): Promise<Postgres> {
  const bin = await postgresBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (Debian package postgresql; scripts/install-peers.sh installs it)');
  const dir = await mkdtemp(join(tmpdir(), 'cascade-pg-'));
  let owner: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
    owner = { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
    await chown(dir, owner.uid, owner.gid);
  }
  const data = join(dir, 'data');
  let d: Daemon | undefined;
  try {
    await run(join(bin, 'initdb'), ['-D', data, '-U', 'cascade', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'], { cwd: dir, ...owner });
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      d = daemon(
        join(bin, 'postgres'),
        ['-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', dir, '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'],
        { cwd: dir, ...owner },
      );
      const url = (database = 'postgres') => `postgres://cascade@127.0.0.1:${port}/${database}`;
      try {
        await waitUntil(`postgres on 127.0.0.1:${port}`, d, async () => {
          const client = new pg.Client({ connectionString: url(), connectionTimeoutMillis: 1000 });
          try {
            await client.connect();
            return true;
          } finally {
            await client.end().catch(() => undefined);
          }
        }, 30_000);
      } catch (err) {
        await d.kill();
        if (attempt < 3 && d.output.some((l) => l.includes('could not bind'))) continue;
        throw err;
      }
      const server = d;
      return {
        url,
        async createDatabase(name) {
          const client = new pg.Client({ connectionString: url() });
          await client.connect();
          try {
            await client.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
          } finally {
            await client.end();
          }
          return url(name);
        },
        output: server.output,
        async stop() {
          await server.kill();
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
  } catch (err) {
    await d?.kill();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
