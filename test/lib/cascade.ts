/**
 * Test harness: runs the real `cascade` command as a child process on a free port and reads its JSON logs.
 *
 * Contract with the program: on start it prints one JSON (pino) log line with `msg: "listening"` and
 * `url: "http://127.0.0.1:PORT"`; each request produces one access-log line with `msg: "request"` and
 * `method`, `path`, `status`, `bytes`, `duration`, `reqId`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { GUARD_MARK } from './guard.js';
import type { TestContext } from 'node:test';
import { stringify } from 'yaml';

/** The repository root. */
export const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
/** The `cascade` executable. */
export const CASCADE_BIN = join(ROOT, 'packages/server/bin/cascade.js');

/** One parsed JSON log line. */
export type LogLine = Record<string, unknown> & { msg?: string };

/** A running cascade process. */
export interface CascadeProcess {
  /** Base URL, e.g. http://127.0.0.1:43111 */
  readonly url: string;
  /** host:port, for clients that want a registry host name. */
  readonly host: string;
  /** Every JSON log line so far. */
  readonly logs: LogLine[];
  /** Lines that were not JSON (stderr included). */
  readonly text: string[];
  readonly child: ChildProcess;
  /** Access-log lines so far (`msg === "request"`). */
  requests(): LogLine[];
  /** Stops the process (SIGTERM, then SIGKILL after 5 s) and waits for it. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** The guard module loaded into every process the tests start (see guard.ts). */
const GUARD_MODULE = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), 'guard.js')).href;

/**
 * Every guard line seen so far, in this test process: an uncaught exception or unhandled rejection of a node
 * under test. `testScope` fails the test during which one appears.
 */
export const guardTrips: string[] = [];

/** Makes a temporary directory, removed by the returned cleanup. */
export async function tempDir(prefix = 'cascade-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * Writes `config` (an object, serialised as YAML) to `dir/config.yml` and starts `cascade <role> config.yml`.
 * `http.addr` defaults to 127.0.0.1:0 (a free port).
 */
export async function startCascade(
  dir: string,
  config: Record<string, unknown>,
  options: { role?: string; args?: string[] } & SpawnOptions = {},
): Promise<CascadeProcess> {
  const http = { addr: '127.0.0.1:0', ...((config.http as Record<string, unknown> | undefined) ?? {}) };
  const file = join(dir, 'config.yml');
  await mkdir(dir, { recursive: true });
  await writeFile(file, stringify({ version: '0.1', ...config, http }));
  return spawnCascade([options.role ?? 'registry', file, ...(options.args ?? [])], options);
}

/** Options of {@link spawnCascade}. */
export interface SpawnOptions {
  env?: Record<string, string>;
  /** How long to wait for the "listening" line (default 15 s). */
  timeoutMs?: number;
  /** Arguments for `node` itself, before the script (`--cpu-prof` is refused in NODE_OPTIONS). */
  nodeArgs?: string[];
  /** How long `stop()` waits after SIGTERM before SIGKILL (default 5 s). */
  stopGraceMs?: number;
}

/** Starts `cascade ARGS...` and waits for its "listening" log line. */
export async function spawnCascade(args: string[], options: SpawnOptions = {}): Promise<CascadeProcess> {
  const child = spawn(process.execPath, ['--import', GUARD_MODULE, ...(options.nodeArgs ?? []), CASCADE_BIN, ...args], {
    env: { ...process.env, ...options.env, CASCADE_TEST_GUARD: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogLine[] = [];
  const text: string[] = [];
  let exited: number | null | undefined;
  const exitPromise = new Promise<number | null>((res) => child.on('exit', (code) => { exited = code; res(code); }));
  const onData = (buf: string, onLine: (l: LogLine) => void) => {
    for (const line of buf.split('\n')) {
      if (!line.trim()) continue;
      try {
        const parsed = JSON.parse(line) as LogLine;
        logs.push(parsed);
        onLine(parsed);
      } catch {
        text.push(line);
      }
    }
  };
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`cascade ${args.join(' ')} did not start in time\n${text.join('\n')}\n${JSON.stringify(logs)}`)), options.timeoutMs ?? 15000);
    let pending = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      pending += chunk;
      const idx = pending.lastIndexOf('\n');
      if (idx < 0) return;
      const complete = pending.slice(0, idx);
      pending = pending.slice(idx + 1);
      onData(complete, (l) => {
        if (l.msg === 'listening' && typeof l.url === 'string') { clearTimeout(timer); resolveUrl(l.url); }
      });
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = chunk.split('\n').filter(Boolean);
      text.push(...lines);
      for (const line of lines) if (line.startsWith(GUARD_MARK)) guardTrips.push(`cascade ${args.join(' ')} (pid ${child.pid}): ${line.slice(GUARD_MARK.length + 1)}`);
    });
    void exitPromise.then((code) => { clearTimeout(timer); reject(new Error(`cascade ${args.join(' ')} exited with ${code} before listening\n${text.join('\n')}\n${JSON.stringify(logs)}`)); });
  });
  return {
    url,
    host: new URL(url).host,
    logs,
    text,
    child,
    requests: () => logs.filter((l) => l.msg === 'request'),
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (exited !== undefined) return exited;
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), options.stopGraceMs ?? 5000);
      const code = await exitPromise;
      clearTimeout(t);
      return code;
    },
  };
}

/**
 * A test's temporary directory and its clean-up stack: `defer(fn)` registers a stop, run in reverse order
 * (processes started last stop first) by one `t.after`, and only then is the directory removed. (node:test
 * runs `t.after` hooks in registration order, so `t.after(cleanup)` registered first would remove the
 * directory under processes still running.)
 */
export async function testScope(t: TestContext, prefix: string): Promise<{ dir: string; defer: (fn: () => unknown) => void }> {
  const { dir, cleanup } = await tempDir(prefix);
  const stack: Array<() => unknown> = [];
  const tripsBefore = guardTrips.length;
  t.after(async () => {
    for (const fn of stack.reverse()) await Promise.resolve().then(fn).catch(() => undefined);
    await cleanup();
    const trips = guardTrips.slice(tripsBefore);
    if (trips.length > 0) throw new Error(`a node under test ended on an unhandled error:\n${trips.join('\n')}`);
  });
  return { dir, defer: (fn) => void stack.push(fn) };
}
