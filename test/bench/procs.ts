/**
 * The processes a benchmark run starts: distribution's `docker-registry` (plain origin, or pull-through
 * proxy with `proxy.remoteurl`), nginx serving one file with sendfile, and Cascade cache nodes (single or
 * chained). Every process listens on 127.0.0.1 on a free port, or, given a {@link NetPlace} (scenario 7),
 * in its own network namespace on that namespace's address; every one is tracked by a {@link Fleet},
 * which stops them all at the end and reports the ones that died on their own (a crash is a correctness
 * failure of the benchmark). Scenario 8's region puts nginx in front of several nodes as a round-robin
 * balancer ({@link startNginxBalancer}). {@link cpuSeconds} and {@link RssProbe} read what a process costs.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startCascade, type CascadeProcess } from '../lib/cascade.js';
import { cacheConfig } from '../lib/cache.js';
import { cleanEnv, daemon, distributionRequests, freePort, startDistribution as startRegistry, waitUntil, type Daemon, type Distribution, type DistributionAccessLine } from '../lib/peers.js';
import { startNginx as runNginx, type Nginx } from '../lib/nginx.js';
import { inNamespace, inNamespaceForked, type NetPlace } from './netns.js';

/** A benchmarked server: its URL, its process id (for RSS), and its access log. */
export interface Peer {
  readonly name: string;
  readonly kind: 'cascade' | 'distribution' | 'nginx';
  /** `http://127.0.0.1:PORT` (or the address of its namespace) */
  readonly url: string;
  /** `127.0.0.1:PORT` */
  readonly host: string;
  /** The server process itself (not a wrapper's): for its CPU time and RSS. */
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
  /** Storage folders removed once every node is stopped (a full run's would otherwise add up to tens of GiB). */
  private readonly scratch: string[] = [];
  readonly crashes: string[] = [];

  /** Removes `dir` when this fleet has stopped ({@link Fleet.stopAll}). */
  removeOnStop(dir: string): void {
    this.scratch.push(dir);
  }

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
    await Promise.all(this.scratch.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  }
}

/** Log lines kept per peer: a run's access log, every upstream GET of which is counted. */
const ACCESS_LOG_LINES = 200_000;

/** Polls `url` until it answers below 500. */
function waitHttp(what: string, d: Daemon, url: string, timeoutMs = 15_000): Promise<void> {
  return waitUntil(what, d, async () => {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status < 500;
  }, timeoutMs);
}

export interface DistributionOptions {
  /** Holds `data/` (the storage root). */
  dir: string;
  name: string;
  /** Pull-through proxy of this registry (`proxy.remoteurl`). */
  remoteurl?: string;
  /** Path of an htpasswd file (bcrypt). */
  htpasswd?: string;
  /** Run in this network namespace, on its address (scenario 7); on loopback otherwise. */
  net?: NetPlace;
}

/**
 * Starts `docker-registry serve` (test/lib/peers.ts) with filesystem storage in `dir/data`, deletes enabled,
 * its access log kept long enough to count a run's requests, and, with `remoteurl`, proxy mode.
 */
export async function startDistribution(fleet: Fleet, o: DistributionOptions): Promise<Peer> {
  const rootdirectory = join(o.dir, 'data');
  await mkdir(rootdirectory, { recursive: true });
  const d = o.net
    ? await startRegistryAt(o.net, o.dir, rootdirectory, o.remoteurl)
    : await startRegistry({
        rootdirectory,
        deleteEnabled: true,
        keepLogLines: ACCESS_LOG_LINES,
        ...(o.remoteurl ? { remoteurl: o.remoteurl } : {}),
        ...(o.htpasswd ? { htpasswd: o.htpasswd } : {}),
      });
  return fleet.add({
    name: o.name,
    kind: 'distribution',
    url: d.url,
    host: d.host,
    pid: d.pid,
    rootdirectory,
    requests: () => distributionRequests(d.output),
    tail: (n = 40) => d.output.slice(-n).join('\n'),
    crashed: () => d.exited(),
    stop: () => d.stop(),
  });
}

/**
 * `docker-registry serve` in the namespace of `net`, listening on its address, with the configuration that
 * test/lib/peers.ts's startDistribution writes for loopback (which takes neither an address nor a namespace).
 */
async function startRegistryAt(net: NetPlace, dir: string, rootdirectory: string, remoteurl: string | undefined): Promise<Distribution> {
  const host = `${net.ip}:${net.port()}`;
  const config = {
    version: 0.1,
    log: { level: 'info', formatter: 'json', accesslog: { disabled: false } },
    storage: { filesystem: { rootdirectory }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
    http: { addr: host, secret: 'bench-secret' },
    ...(remoteurl ? { proxy: { remoteurl } } : {}),
  };
  const configPath = join(dir, 'registry.yml');
  await writeFile(configPath, JSON.stringify(config, null, 2));
  const [cmd, ...args] = [...inNamespace(net.ns), 'docker-registry', 'serve', configPath];
  const d = daemon(cmd!, args, { env: cleanEnv(), cwd: dir, keep: ACCESS_LOG_LINES });
  const url = `http://${host}`;
  await waitHttp(`docker-registry in ${net.ns} on ${url}`, d, `${url}/v2/`);
  return { url, host, rootdirectory, output: d.output, pid: d.child.pid!, exited: () => d.hasExited(), stop: () => d.kill() };
}

/**
 * Starts nginx serving `file` at `/blob` with sendfile on (the throughput ceiling): config, pid file,
 * logs and temp folders in `dir`. Runs its workers as the current user (`user root` when root), so
 * they can read files in the benchmark's private temp folders.
 */
export async function startNginx(fleet: Fleet, dir: string, file: string): Promise<Peer> {
  const nginx = await runNginx(dir, {
    workers: 'auto',
    keep: ACCESS_LOG_LINES,
    http: ['sendfile on;', 'tcp_nopush on;', 'keepalive_requests 100000;'],
    server: [`location = /blob { alias ${file}; default_type application/octet-stream; }`],
  });
  return nginxPeer(fleet, 'nginx', dir, nginx);
}

/**
 * Starts nginx as a round-robin HTTP balancer in front of `nodes` (scenario 8, a region), configured as
 * deploy/compose/config/region-nginx.conf is for production: bodies streamed (no buffering, no size limit),
 * keep-alive to the nodes, long timeouts, a failing node skipped.
 */
export async function startNginxBalancer(fleet: Fleet, dir: string, nodes: readonly Peer[]): Promise<Peer> {
  const nginx = await runNginx(dir, {
    workers: 'auto',
    connections: 4096,
    keep: ACCESS_LOG_LINES,
    http: ['upstream region_nodes {', ...nodes.map((n) => `  server ${n.host} max_fails=1 fail_timeout=10s;`), '  keepalive 64;', '}'],
    server: [
      'client_max_body_size 0;',
      'proxy_buffering off;',
      'proxy_request_buffering off;',
      'proxy_max_temp_file_size 0;',
      'proxy_http_version 1.1;',
      'proxy_set_header Connection "";',
      'proxy_set_header Host $http_host;',
      'proxy_connect_timeout 5s;',
      'proxy_send_timeout 900s;',
      'proxy_read_timeout 900s;',
      'location / { proxy_pass http://region_nodes; }',
    ],
  });
  return nginxPeer(fleet, 'nginx-balancer', dir, nginx);
}

/** A running nginx as a peer of the fleet (its CPU measured, its crash recorded). */
function nginxPeer(fleet: Fleet, name: string, dir: string, nginx: Nginx): Peer {
  const d = nginx.daemon;
  return fleet.add({
    name,
    kind: 'nginx',
    url: nginx.url,
    host: nginx.host,
    pid: d.child.pid!,
    rootdirectory: dir,
    requests: () => [],
    tail: (n = 40) => [...d.output, ...safeRead(join(dir, 'error.log')).split('\n')].slice(-n).join('\n'),
    crashed: () => d.hasExited(),
    stop: () => d.kill(),
  });
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
  /** Run in this network namespace, on its address (scenario 7); on loopback otherwise. */
  net?: NetPlace;
  /** The storage folder (default `dir/data`); a region's nodes share one. */
  rootdirectory?: string;
  /** The `cascade` script of another build (default: this checkout's). */
  bin?: string;
}

/** Starts `cascade registry cache.yml`: a cache node (downstream middleware) with storage in `dir/data`. */
export async function startCascadeCache(fleet: Fleet, o: CascadeCacheOptions): Promise<Peer> {
  const rootdirectory = o.rootdirectory ?? join(o.dir, 'data');
  await mkdir(rootdirectory, { recursive: true });
  const config = cacheConfig(rootdirectory, {
    origin: o.origin,
    ...(o.upstreamhosts ? { upstreamhosts: o.upstreamhosts } : {}),
    ...(o.options ? { options: o.options } : {}),
    ...(o.net ? { config: { http: { addr: `${o.net.ip}:${o.net.port()}` } } } : {}),
  });
  // A profiled process writes its profile on exit: give it longer to stop.
  const proc = await startCascade(o.dir, config, {
    ...(o.env ? { env: o.env } : {}),
    ...(o.nodeArgs?.length ? { nodeArgs: o.nodeArgs, stopGraceMs: 10_000 } : {}),
    ...(o.net ? { wrapper: inNamespaceForked(o.net.ns) } : {}),
    ...(o.bin ? { bin: o.bin } : {}),
  });
  return fleet.add(cascadeNode(o.name, proc, rootdirectory));
}

/** Wraps a running `cascade` process (cache node or server) as a benchmark node. */
export function cascadeNode(name: string, proc: CascadeProcess, rootdirectory: string): Peer {
  let stopping = false;
  return {
    name,
    kind: 'cascade',
    url: proc.url,
    host: proc.host,
    pid: proc.pid,
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
 * Hop i runs at `places[i]` when given (its namespace and address), on loopback otherwise. `bin`: Cascade
 * nodes of another build (its `cascade` script).
 * Returns the nodes nearest-to-origin first; clients use the last one.
 */
export async function startChain(
  fleet: Fleet,
  kind: 'cascade' | 'distribution',
  dir: string,
  origin: string,
  hops: number,
  places?: readonly NetPlace[],
  bin?: string,
): Promise<Peer[]> {
  const out: Peer[] = [];
  for (let i = 0; i < hops; i++) {
    const name = `${kind}-hop${i + 1}`;
    const prev = out[i - 1];
    const home = join(dir, name);
    const net = places?.[i];
    if (kind === 'cascade') {
      out.push(await startCascadeCache(fleet, { dir: home, name, origin, ...(prev ? { upstreamhosts: [prev.url] } : {}), ...(net ? { net } : {}), ...(bin ? { bin } : {}) }));
    } else {
      out.push(await startDistribution(fleet, { dir: home, name, remoteurl: prev ? prev.url : origin, ...(net ? { net } : {}) }));
    }
  }
  return out;
}

let clockTicks: number | undefined;

/**
 * User + system CPU seconds `pid` and its live descendants (nginx's workers) have used so far, from
 * `/proc/<pid>/stat` (utime and stime, in clock ticks: `getconf CLK_TCK`, normally 100); 0 once it is gone.
 */
export function cpuSeconds(pid: number): number {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  let ticks = 0;
  try {
    // The command name, in parentheses, may hold spaces: fields are counted after its closing one.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    ticks = Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
  return ticks / clockTicks + childPids(pid).reduce((sum, child) => sum + cpuSeconds(child), 0);
}

/** The live children of `pid` (each thread lists those it forked). */
function childPids(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) => safeRead(`/proc/${pid}/task/${tid}/children`).split(' ').filter(Boolean).map(Number));
  } catch {
    return [];
  }
}

/** The CPU seconds each of `pids` uses from construction to {@link CpuMeter.read}. */
export class CpuMeter {
  private readonly start: number[];

  constructor(private readonly pids: readonly number[]) {
    this.start = pids.map(cpuSeconds);
  }

  /** CPU seconds of each process since construction, in the order of `pids`. */
  read(): number[] {
    return this.pids.map((pid, i) => cpuSeconds(pid) - this.start[i]!);
  }
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
