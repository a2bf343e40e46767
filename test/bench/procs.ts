/**
 * The processes a benchmark run starts: distribution's `docker-registry` (plain origin, or pull-through
 * proxy with `proxy.remoteurl`), nginx serving one file with sendfile, and Cascade cache nodes (single or
 * chained). Every process listens on 127.0.0.1 on a free port; every one is tracked by a {@link Fleet},
 * which stops them all at the end and reports the ones that died on their own (a crash is a correctness
 * failure of the benchmark).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { CASCADE_BIN, startCascade, type CascadeProcess, type LogLine } from '../lib/cascade.js';
import { cacheConfig } from '../lib/cache.js';
import { distributionRequests, freePort, type DistributionAccessLine } from '../lib/peers.js';

/** A benchmarked server: its URL, its process id (for RSS), and its access log. */
export interface Peer {
  readonly name: string;
  readonly kind: 'cascade' | 'distribution' | 'nginx';
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly pid: number;
  /** Filesystem storage root (registries only). */
  readonly rootdirectory: string;
  /** Requests in its access log so far (registries only), oldest first. */
  requests(): DistributionAccessLine[];
  /** The last log lines, for failure messages. */
  tail(lines?: number): string;
  /** True when the process exited although nobody stopped it. */
  crashed(): boolean;
  stop(): Promise<void>;
  readonly cascade?: CascadeProcess;
}

/** Tracks every process of a run; {@link Fleet.stopAll} stops them and lists the ones that crashed. */
export class Fleet {
  private readonly nodes: Peer[] = [];
  readonly crashes: string[] = [];

  add<T extends Peer>(node: T): T {
    this.nodes.push(node);
    return node;
  }

  /** Stops `node` (recording a crash if it had already exited) and forgets it. */
  async stop(node: Peer): Promise<void> {
    const i = this.nodes.indexOf(node);
    if (i >= 0) this.nodes.splice(i, 1);
    if (node.crashed()) this.crashes.push(`${node.name} (${node.kind}) exited on its own:\n${node.tail(30)}`);
    await node.stop();
  }

  /** Stops every node at once (a node draining its connections on SIGTERM would otherwise hold up the rest). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.nodes].map((node) => this.stop(node)));
  }
}

interface Daemon {
  readonly child: ChildProcess;
  readonly output: string[];
  readonly exited: Promise<number | null>;
  hasExited(): boolean;
  kill(graceMs?: number): Promise<void>;
}

function daemon(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; keep?: number } = {}): Daemon {
  const child = spawn(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  const keep = options.keep ?? 200_000;
  let pending = '';
  const onChunk = (chunk: string) => {
    pending += chunk;
    const idx = pending.lastIndexOf('\n');
    if (idx < 0) return;
    for (const line of pending.slice(0, idx).split('\n')) if (line.trim()) output.push(line);
    pending = pending.slice(idx + 1);
    if (output.length > keep) output.splice(0, output.length - keep);
  };
  child.stdout!.setEncoding('utf8').on('data', onChunk);
  child.stderr!.setEncoding('utf8').on('data', onChunk);
  let done = false;
  let stopping = false;
  const exited = new Promise<number | null>((res) => {
    child.on('exit', (code) => { done = true; res(code); });
    child.on('error', (err) => { done = true; output.push(`spawn error: ${err.message}`); res(null); });
  });
  return {
    child,
    output,
    exited,
    hasExited: () => done && !stopping,
    async kill(graceMs = 5000) {
      stopping = true;
      if (done) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function waitHttp(what: string, d: Daemon, url: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (d.hasExited()) throw new Error(`${what} exited before it was ready:\n${d.output.slice(-40).join('\n')}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status < 500) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  await d.kill();
  throw new Error(`${what} was not ready after ${timeoutMs} ms:\n${d.output.slice(-40).join('\n')}`);
}

/** The environment without `REGISTRY_*` overrides, so a developer's shell cannot reconfigure a peer. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
}

export interface DistributionOptions {
  /** Holds `config.yml` and `data/` (the storage root). */
  dir: string;
  name: string;
  /** Pull-through proxy of this registry (`proxy.remoteurl`). */
  remoteurl?: string;
  /** Path of an htpasswd file (bcrypt). */
  htpasswd?: string;
}

/**
 * Starts `docker-registry serve config.yml` with filesystem storage in `dir/data`, JSON logs with the
 * combined-format access log enabled (so requests can be counted), and, with `remoteurl`, proxy mode.
 */
export async function startDistribution(fleet: Fleet, o: DistributionOptions): Promise<Peer> {
  const rootdirectory = join(o.dir, 'data');
  await mkdir(rootdirectory, { recursive: true });
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const config = {
      version: 0.1,
      log: { level: 'info', formatter: 'json', accesslog: { disabled: false } },
      storage: {
        filesystem: { rootdirectory },
        delete: { enabled: true },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: { addr: `127.0.0.1:${port}`, secret: 'bench-secret' },
      ...(o.remoteurl ? { proxy: { remoteurl: o.remoteurl } } : {}),
      ...(o.htpasswd ? { auth: { htpasswd: { realm: 'bench', path: o.htpasswd } } } : {}),
    };
    const configPath = join(o.dir, 'config.yml');
    await writeFile(configPath, JSON.stringify(config, null, 2));
    const d = daemon('docker-registry', ['serve', configPath], { cwd: o.dir, env: cleanEnv() });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitHttp(`docker-registry ${o.name} on ${url}`, d, `${url}/v2/`);
    } catch (err) {
      await d.kill();
      if (attempt < 3 && d.output.some((l) => l.includes('address already in use'))) continue;
      throw err;
    }
    return fleet.add({
      name: o.name,
      kind: 'distribution',
      url,
      host: `127.0.0.1:${port}`,
      pid: d.child.pid!,
      rootdirectory,
      requests: () => distributionRequests(d.output),
      tail: (n = 40) => d.output.slice(-n).join('\n'),
      crashed: () => d.hasExited(),
      stop: () => d.kill(),
    });
  }
}

/**
 * Starts nginx serving `file` at `/blob` with sendfile on (the throughput ceiling): config, pid file,
 * logs and temp folders in `dir`. Runs its workers as the current user (`user root` when root), so
 * they can read files in the benchmark's private temp folders.
 */
export async function startNginx(fleet: Fleet, dir: string, file: string): Promise<Peer> {
  await mkdir(dir, { recursive: true });
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const conf = [
      ...(process.getuid?.() === 0 ? ['user root;'] : []),
      'worker_processes auto;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${join(dir, 'error.log')} warn;`,
      'events { worker_connections 1024; }',
      'http {',
      '  access_log off;',
      '  sendfile on;',
      '  tcp_nopush on;',
      '  keepalive_requests 100000;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(dir, t)};`),
      '  server {',
      `    listen 127.0.0.1:${port};`,
      `    location = /blob { alias ${file}; default_type application/octet-stream; }`,
      '    location = /ping { return 200; }',
      '  }',
      '}',
      '',
    ].join('\n');
    const confPath = join(dir, 'nginx.conf');
    await writeFile(confPath, conf);
    const d = daemon('nginx', ['-c', confPath, '-p', dir, '-g', 'daemon off;'], { cwd: dir });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitHttp(`nginx on ${url}`, d, `${url}/ping`);
    } catch (err) {
      await d.kill();
      if (attempt < 3) continue;
      throw err;
    }
    return fleet.add({
      name: 'nginx',
      kind: 'nginx',
      url,
      host: `127.0.0.1:${port}`,
      pid: d.child.pid!,
      rootdirectory: dir,
      requests: () => [],
      tail: (n = 40) => [...d.output, ...safeRead(join(dir, 'error.log')).split('\n')].slice(-n).join('\n'),
      crashed: () => d.hasExited(),
      stop: () => d.kill(),
    });
  }
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

export interface CascadeCacheOptions {
  dir: string;
  name: string;
  /** `originhost`. */
  origin: string;
  /** `upstreamhosts` (the previous cache of a chain). */
  upstreamhosts?: string[];
  /** Extra environment. */
  env?: Record<string, string>;
  /** Arguments for `node` itself, before the script (`--cpu-prof` is refused in NODE_OPTIONS). */
  nodeArgs?: string[];
  /** Extra `downstream` options. */
  options?: Record<string, unknown>;
}

/** Starts `cascade registry cache.yml`: a cache node (downstream middleware) with storage in `dir/data`. */
export async function startCascadeCache(fleet: Fleet, o: CascadeCacheOptions): Promise<Peer> {
  const rootdirectory = join(o.dir, 'data');
  await mkdir(rootdirectory, { recursive: true });
  const config = cacheConfig(rootdirectory, {
    origin: o.origin,
    ...(o.upstreamhosts ? { upstreamhosts: o.upstreamhosts } : {}),
    ...(o.options ? { options: o.options } : {}),
  });
  const proc = o.nodeArgs?.length
    ? await spawnWithNodeArgs(o.dir, config, o.nodeArgs)
    : await startCascade(o.dir, config, o.env ? { env: o.env } : {});
  return fleet.add(cascadeNode(o.name, proc, rootdirectory));
}

/**
 * `node NODEARGS packages/server/bin/cascade.js registry config.yml` (what startCascade does, plus
 * arguments for node itself): waits for the "listening" line, keeps the JSON log lines.
 */
async function spawnWithNodeArgs(dir: string, config: Record<string, unknown>, nodeArgs: string[]): Promise<CascadeProcess> {
  const file = join(dir, 'config.yml');
  await mkdir(dir, { recursive: true });
  await writeFile(file, stringify({ version: '0.1', ...config, http: { addr: '127.0.0.1:0' } }));
  const child = spawn(process.execPath, [...nodeArgs, CASCADE_BIN, 'registry', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: LogLine[] = [];
  const text: string[] = [];
  let exited: number | null | undefined;
  const exit = new Promise<number | null>((res) => child.on('exit', (code) => { exited = code; res(code); }));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`cascade with ${nodeArgs.join(' ')} did not start in time\n${text.join('\n')}`)), 15_000);
    let pending = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      pending += chunk;
      const idx = pending.lastIndexOf('\n');
      if (idx < 0) return;
      for (const line of pending.slice(0, idx).split('\n')) {
        if (!line.trim()) continue;
        try {
          const l = JSON.parse(line) as LogLine;
          logs.push(l);
          if (l.msg === 'listening' && typeof l.url === 'string') { clearTimeout(timer); resolveUrl(l.url); }
        } catch {
          text.push(line);
        }
      }
      pending = pending.slice(idx + 1);
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => text.push(...chunk.split('\n').filter(Boolean)));
    void exit.then((code) => { clearTimeout(timer); reject(new Error(`cascade with ${nodeArgs.join(' ')} exited with ${code} before listening\n${text.join('\n')}`)); });
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
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exit;
      clearTimeout(t);
      return code;
    },
  };
}

/** Wraps a running `cascade` process (cache node or server) as a benchmark node. */
export function cascadeNode(name: string, proc: CascadeProcess, rootdirectory: string): Peer {
  let stopping = false;
  return {
    name,
    kind: 'cascade',
    url: proc.url,
    host: proc.host,
    pid: proc.child.pid!,
    rootdirectory,
    cascade: proc,
    requests: () =>
      proc.requests().map((l) => ({
        method: String(l.method),
        path: String(l.path),
        ...(typeof l.query === 'string' ? { query: l.query } : {}),
        status: Number(l.status),
      })),
    tail: (n = 40) => [...proc.text, ...proc.logs.map((l) => JSON.stringify(l))].slice(-n).join('\n'),
    crashed: () => !stopping && (proc.child.exitCode !== null || proc.child.signalCode !== null),
    async stop() {
      stopping = true;
      await proc.stop();
    },
  };
}

/**
 * A chain of `hops` cache nodes in front of `origin`: the first fills from the origin, each next one
 * lists the previous cache in `upstreamhosts` (and the origin as `originhost`, DTR's chaining form).
 * Returns the nodes nearest-to-origin first; clients use the last one.
 */
export async function startChain(
  fleet: Fleet,
  kind: 'cascade' | 'distribution',
  dir: string,
  origin: string,
  hops: number,
  env?: Record<string, string>,
): Promise<Peer[]> {
  const out: Peer[] = [];
  for (let i = 0; i < hops; i++) {
    const name = `${kind}-hop${i + 1}`;
    const prev = out[i - 1];
    const home = join(dir, name);
    if (kind === 'cascade') {
      out.push(await startCascadeCache(fleet, { dir: home, name, origin, ...(prev ? { upstreamhosts: [prev.url] } : {}), ...(env ? { env } : {}) }));
    } else {
      out.push(await startDistribution(fleet, { dir: home, name, remoteurl: prev ? prev.url : origin }));
    }
  }
  return out;
}

/** Peak resident memory of a process over a phase: VmHWM reset at the start (clear_refs), VmRSS polled. */
export class RssProbe {
  private peakKiB = 0;
  private timer: NodeJS.Timeout | undefined;
  private hwmReset = false;

  constructor(private readonly pid: number) {}

  start(intervalMs = 20): this {
    try {
      // "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
      writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
      this.hwmReset = true;
    } catch {
      this.hwmReset = false;
    }
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    return this;
  }

  /** Stops sampling; the peak in MiB. */
  stop(): number {
    if (this.timer) clearInterval(this.timer);
    this.sample();
    if (this.hwmReset) this.peakKiB = Math.max(this.peakKiB, readStatus(this.pid, 'VmHWM'));
    return this.peakKiB / 1024;
  }

  private sample(): void {
    this.peakKiB = Math.max(this.peakKiB, readStatus(this.pid, 'VmRSS'));
  }
}

/** A `kB` field of /proc/<pid>/status (0 when the process is gone). */
export function readStatus(pid: number, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
