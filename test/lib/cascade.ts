/**
 * Test harness: runs the real `cascade` command as a child process on a free port and reads its JSON logs.
 *
 * Contract with the program: on start it prints one JSON (pino) log line with `msg: "listening"` and
 * `url: "http://127.0.0.1:PORT"`; each request produces one access-log line with `msg: "request"` and
 * `method`, `path`, `status`, `bytes`, `duration`, `reqId`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { GUARD_MARK } from './guard.js';
import type { TestContext } from 'node:test';
import { stringify } from 'yaml';

/** The repository root. */
export const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
/** The `cascade` executable. */
export const CASCADE_BIN = join(ROOT, 'packages/cli/bin/cascade.js');

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
  /** The node process's id (not a wrapper's). */
  readonly pid: number;
  /** True while the node process runs. */
  alive(): boolean;
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
  /**
   * A program and its arguments that run `node` (e.g. `strace -o FILE`). Signals then go to the node process
   * itself, the wrapper's only child, so that `stop()` ends the node and not just the wrapper.
   */
  wrapper?: string[];
  /** The working directory (default: the test's). */
  cwd?: string;
  /** The `cascade` script to run (default {@link CASCADE_BIN}): another build, to see a test fail on a fixed defect. */
  bin?: string;
}

/** Starts `cascade ARGS...` and waits for its "listening" log line. */
export async function spawnCascade(args: string[], options: SpawnOptions = {}): Promise<CascadeProcess> {
  const nodeCommand = [process.execPath, '--import', GUARD_MODULE, ...(options.nodeArgs ?? []), options.bin ?? CASCADE_BIN, ...args];
  const [command, ...commandArgs] = [...(options.wrapper ?? []), ...nodeCommand] as [string, ...string[]];
  const child = spawn(command, commandArgs, {
    env: { ...process.env, ...options.env, CASCADE_TEST_GUARD: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  const what = `cascade ${args.join(' ')}${options.wrapper ? ` (under ${options.wrapper[0]})` : ''}`;
  const logs: LogLine[] = [];
  const text: string[] = [];
  let exited: number | null | undefined;
  const exitPromise = new Promise<number | null>((res) => child.on('exit', (code) => { exited = code; res(code); }));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start in time\n${text.join('\n')}\n${JSON.stringify(logs)}`)), options.timeoutMs ?? 15000);
    onLines(child.stdout!, (line) => {
      try {
        const parsed = JSON.parse(line) as LogLine;
        logs.push(parsed);
        if (parsed.msg === 'listening' && typeof parsed.url === 'string') { clearTimeout(timer); resolveUrl(parsed.url); }
      } catch {
        text.push(line);
      }
    });
    onLines(child.stderr!, (line) => {
      text.push(line);
      if (line.startsWith(GUARD_MARK)) guardTrips.push(`${what} (pid ${child.pid}): ${line.slice(GUARD_MARK.length + 1)}`);
    });
    void exitPromise.then((code) => { clearTimeout(timer); reject(new Error(`${what} exited with ${code} before listening\n${text.join('\n')}\n${JSON.stringify(logs)}`)); });
  });
  // Under a wrapper, the node process is the wrapper's only child.
  let pid = child.pid ?? 0;
  if (options.wrapper) {
    const children = await readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').catch(() => '');
    pid = Number(children.trim().split(/\s+/)[0]);
    if (!Number.isInteger(pid) || pid <= 0) throw new Error(`${what}: cannot find the node process under ${options.wrapper[0]} (pid ${child.pid})`);
  }
  const alive = () => {
    if (exited !== undefined) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const signal = (sig: NodeJS.Signals) => {
    if (alive()) process.kill(pid, sig);
  };
  return {
    url,
    host: new URL(url).host,
    logs,
    text,
    child,
    pid,
    alive,
    requests: () => logs.filter((l) => l.msg === 'request'),
    async stop(sig: NodeJS.Signals = 'SIGTERM') {
      if (exited !== undefined) return exited;
      signal(sig);
      const t = setTimeout(() => signal('SIGKILL'), options.stopGraceMs ?? 5000);
      const code = await exitPromise;
      clearTimeout(t);
      return code;
    },
  };
}

/** Calls `onLine` with every complete, non-empty line of `stream`. */
function onLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    pending += chunk;
    const idx = pending.lastIndexOf('\n');
    if (idx < 0) return;
    for (const line of pending.slice(0, idx).split('\n')) if (line.trim()) onLine(line);
    pending = pending.slice(idx + 1);
  });
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
