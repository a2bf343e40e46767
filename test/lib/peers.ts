/**
 * Real peers and clients for end-to-end tests: distribution's `docker-registry`, `containerd` + `ctr`,
 * and `skopeo`. Every server listens on 127.0.0.1 on a free port, keeps its files in its own temporary
 * directory, and comes with a `stop()` that kills it and removes that directory; register it with
 * `t.after(stop)` so it runs even when the test fails.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '@cascade/testkit';

/** Result of running a command to completion. */
export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Error thrown by {@link run} when a command exits non-zero; carries its output. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly result: RunResult,
  ) {
    super(`${command}\nexited with ${result.code}\n--- stderr ---\n${result.stderr.trim()}\n--- stdout ---\n${result.stdout.trim().slice(0, 4000)}`);
    this.name = 'CommandError';
  }
}

/**
 * Runs `cmd args...` to completion. Throws a {@link CommandError} on a non-zero exit unless
 * `allowFailure` is set.
 */
export function run(
  cmd: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; allowFailure?: boolean; cwd?: string; uid?: number; gid?: number } = {},
): Promise<RunResult> {
  const command = [cmd, ...args].map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a)).join(' ');
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        env: options.env ?? process.env,
        timeout: options.timeoutMs ?? 120_000,
        maxBuffer: 64 << 20,
        cwd: options.cwd,
        encoding: 'utf8',
        ...(options.uid !== undefined ? { uid: options.uid } : {}),
        ...(options.gid !== undefined ? { gid: options.gid } : {}),
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        const result = { code, stdout, stderr: err && err.killed ? `${stderr}\n(killed: timeout or signal ${err.signal})` : stderr };
        if (code !== 0 && !options.allowFailure) reject(new CommandError(command, result));
        else resolve(result);
      },
    );
  });
}

/** A free TCP port on 127.0.0.1 (bound and released; callers that race for it should retry). */
export { freePort };

/** A long-running child process whose output is kept for diagnostics. */
export interface Daemon {
  readonly child: ChildProcess;
  readonly output: string[];
  /** Resolves with the exit code once the process has exited. */
  readonly exited: Promise<number | null>;
  /** True when the process exited although nobody stopped it (a crash, or a failed start). */
  hasExited(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  kill(graceMs?: number): Promise<void>;
}

/** Starts `cmd`; its stdout and stderr are kept as whole lines, the last `keep` of them (default 5000). */
export function daemon(cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; keep?: number; uid?: number; gid?: number } = {}): Daemon {
  const child = spawn(cmd, args, {
    env: options.env ?? process.env,
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
  });
  const output: string[] = [];
  const keep = options.keep ?? 5000;
  // A line can arrive in two chunks: only complete lines are kept, the rest waits for the next chunk.
  const onChunk = (stream: { pending: string }) => (chunk: string) => {
    stream.pending += chunk;
    const idx = stream.pending.lastIndexOf('\n');
    if (idx < 0) return;
    for (const line of stream.pending.slice(0, idx).split('\n')) if (line.trim()) output.push(line);
    stream.pending = stream.pending.slice(idx + 1);
    if (output.length > keep) output.splice(0, output.length - keep);
  };
  child.stdout!.setEncoding('utf8').on('data', onChunk({ pending: '' }));
  child.stderr!.setEncoding('utf8').on('data', onChunk({ pending: '' }));
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

/** Polls `probe` every 50 ms until it returns true, the daemon exits, or `timeoutMs` passes. */
export async function waitUntil(what: string, d: Daemon, probe: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (d.hasExited()) throw new Error(`${what} exited before it was ready:\n${d.output.slice(-40).join('\n')}`);
    if (await probe().catch(() => false)) return;
    await sleep(50);
  }
  await d.kill();
  throw new Error(`${what} was not ready after ${timeoutMs} ms:\n${d.output.slice(-40).join('\n')}`);
}

/** The environment without `REGISTRY_*` overrides, so a developer's shell cannot reconfigure a peer. */
export function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
}

/** A running distribution `docker-registry`. */
export interface Distribution {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly rootdirectory: string;
  /** Its log lines (JSON) so far. */
  readonly output: readonly string[];
  readonly pid: number;
  /** Whether the process has exited (crashed, when nobody stopped it). */
  exited(): boolean;
  /** Kills the registry and removes its config directory (not `rootdirectory`, which the caller owns). */
  stop(): Promise<void>;
}

export interface DistributionOptions {
  /** Filesystem storage root; the caller creates and removes it. */
  rootdirectory: string;
  deleteEnabled?: boolean;
  /**
   * Basic auth: either the path of an existing htpasswd file, or `{user: password}` written to one
   * with `htpasswd -B` (distribution accepts bcrypt only).
   */
  htpasswd?: string | Record<string, string>;
  /** Pull-through proxy of this registry (`proxy.remoteurl`). */
  remoteurl?: string;
  /** Log lines kept in `output` (default: the daemon's default). */
  keepLogLines?: number;
  /** The `notifications` section, as distribution reads it (endpoints the registry posts its events to). */
  notifications?: Record<string, unknown>;
}

/** Starts distribution's `docker-registry serve` on a free port and waits until `GET /v2/` answers. */
export async function startDistribution(options: DistributionOptions): Promise<Distribution> {
  const dir = await mkdtemp(join(tmpdir(), 'distribution-'));
  try {
    let htpasswdPath: string | undefined;
    if (typeof options.htpasswd === 'string') htpasswdPath = options.htpasswd;
    else if (options.htpasswd) {
      htpasswdPath = join(dir, 'htpasswd');
      let first = true;
      for (const [user, password] of Object.entries(options.htpasswd)) {
        await run('htpasswd', [first ? '-Bbc' : '-Bb', htpasswdPath, user, password]);
        first = false;
      }
    }
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const config = {
        version: 0.1,
        log: { level: 'info', formatter: 'json', accesslog: { disabled: false } },
        storage: {
          filesystem: { rootdirectory: options.rootdirectory },
          delete: { enabled: options.deleteEnabled ?? false },
          // never purge uploads under a test's feet (the default purges after 17 min, then daily)
          maintenance: { uploadpurging: { enabled: false } },
        },
        http: { addr: `127.0.0.1:${port}`, secret: 'e2e-test-secret' },
        ...(options.remoteurl ? { proxy: { remoteurl: options.remoteurl } } : {}),
        ...(htpasswdPath ? { auth: { htpasswd: { realm: 'e2e', path: htpasswdPath } } } : {}),
        ...(options.notifications ? { notifications: options.notifications } : {}),
      };
      // JSON is valid YAML, and distribution reads YAML
      const configPath = join(dir, 'config.yml');
      await writeFile(configPath, JSON.stringify(config, null, 2));
      const d = daemon('docker-registry', ['serve', configPath], { env: cleanEnv(), cwd: dir, ...(options.keepLogLines ? { keep: options.keepLogLines } : {}) });
      const url = `http://127.0.0.1:${port}`;
      try {
        await waitUntil(`docker-registry on ${url}`, d, async () => {
          const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
          await res.arrayBuffer();
          return res.status === 200 || res.status === 401;
        });
      } catch (err) {
        await d.kill();
        if (attempt < 3 && d.output.some((l) => l.includes('address already in use'))) continue;
        throw err;
      }
      return {
        url,
        host: `127.0.0.1:${port}`,
        rootdirectory: options.rootdirectory,
        output: d.output,
        pid: d.child.pid!,
        exited: () => d.hasExited(),
        async stop() {
          await d.kill();
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** A running containerd with its own root, state and socket. */
export interface Containerd {
  /** The gRPC unix socket. */
  readonly address: string;
  /** Its `root` directory (content store under `io.containerd.content.v1.content`). */
  readonly root: string;
  readonly output: readonly string[];
  /** Runs `ctr --address <socket> ARGS...`; throws on a non-zero exit. */
  ctr(args: string[], options?: { timeoutMs?: number; allowFailure?: boolean }): Promise<RunResult>;
  /** Kills containerd and removes its directory. */
  stop(): Promise<void>;
}

/**
 * Plugins this containerd does not need, or that need things a test machine lacks: CRI (CNI, a
 * pause image, a kubelet), the snapshotters that need special filesystems or devices, tracing.
 * The content store, metadata, images, leases, diff and the overlayfs/native snapshotters stay.
 */
const CONTAINERD_DISABLED_PLUGINS = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.internal.v1.opt',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
];

/** Starts a private containerd (config, root, state and socket in a temp dir) and waits for its socket. */
export async function startContainerd(): Promise<Containerd> {
  // a short path: unix socket paths are limited to 107 bytes
  const dir = await mkdtemp(join('/tmp', 'ctrd-'));
  try {
    const address = join(dir, 'containerd.sock');
    const root = join(dir, 'root');
    const toml = [
      'version = 2',
      `root = ${JSON.stringify(root)}`,
      `state = ${JSON.stringify(join(dir, 'state'))}`,
      `disabled_plugins = ${JSON.stringify(CONTAINERD_DISABLED_PLUGINS)}`,
      '[grpc]',
      `  address = ${JSON.stringify(address)}`,
      '[ttrpc]',
      `  address = ${JSON.stringify(`${address}.ttrpc`)}`,
      '[debug]',
      '  address = ""',
      '  level = "info"',
      '[metrics]',
      '  address = ""',
      '',
    ].join('\n');
    const configPath = join(dir, 'config.toml');
    await writeFile(configPath, toml);
    const d = daemon('containerd', ['--config', configPath], { cwd: dir });
    const ctr: Containerd['ctr'] = (args, options = {}) => run('ctr', ['--address', address, ...args], options);
    await waitUntil(`containerd at ${address}`, d, async () => {
      await access(address);
      return (await ctr(['version'], { timeoutMs: 5000, allowFailure: true })).code === 0;
    });
    return {
      address,
      root,
      output: d.output,
      ctr,
      async stop() {
        await d.kill();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Runs `skopeo --insecure-policy SUBCOMMAND ...`, adding the flags plain http on loopback needs:
 * `--src-tls-verify=false --dest-tls-verify=false` for `copy` and `sync`, `--tls-verify=false` for
 * `inspect`, `delete` and `list-tags` (skopeo ignores them for non-registry transports).
 * `global` options (`--override-arch` ...) go before the subcommand. Throws a {@link CommandError} on
 * a non-zero exit unless `allowFailure` is set.
 *
 * @example
 * await skopeo(['copy', 'oci:/tmp/img:v1', 'docker://127.0.0.1:5000/team/app:v1']);
 */
export function skopeo(
  args: string[],
  options: { timeoutMs?: number; allowFailure?: boolean; env?: NodeJS.ProcessEnv; global?: string[] } = {},
): Promise<RunResult> {
  const [sub, ...rest] = args;
  if (sub === undefined) throw new Error('skopeo: no subcommand');
  let tls: string[] = [];
  if (sub === 'copy' || sub === 'sync') tls = ['--src-tls-verify=false', '--dest-tls-verify=false'];
  else if (sub === 'inspect' || sub === 'delete' || sub === 'list-tags') tls = ['--tls-verify=false'];
  return run('skopeo', ['--insecure-policy', ...(options.global ?? []), sub, ...tls, ...rest], options);
}

/**
 * Runs `podman ARGS...` with its own storage under `dir` (the vfs driver: no mounts or kernel overlay
 * needed) and, when given, a `registries.conf` of the test's; `--tls-verify` is left to the caller's
 * registries.conf (`insecure = true`) or arguments.
 */
export async function podman(args: string[], options: { dir: string; registriesConf?: string; allowFailure?: boolean; timeoutMs?: number }): Promise<RunResult> {
  const storageConf = join(options.dir, 'storage.conf');
  await mkdir(options.dir, { recursive: true });
  await writeFile(storageConf, `[storage]\ndriver = "vfs"\nrunroot = "${join(options.dir, 'run')}"\ngraphroot = "${join(options.dir, 'root')}"\n`);
  const env = { ...cleanEnv(), CONTAINERS_STORAGE_CONF: storageConf, ...(options.registriesConf ? { CONTAINERS_REGISTRIES_CONF: options.registriesConf } : {}) };
  return run('podman', ['--log-level=error', '--events-backend=none', ...args], { env, ...(options.allowFailure ? { allowFailure: true } : {}), timeoutMs: options.timeoutMs ?? 120_000 });
}

/** One request in distribution's access log. */
export interface DistributionAccessLine {
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  readonly query?: string;
  readonly status: number;
}

/**
 * The requests in a distribution's log output ({@link Distribution.output}), oldest first, read from its
 * combined-log access lines: `127.0.0.1 - - [date] "GET /v2/... HTTP/1.1" 200 5 "" "agent"` (it also
 * writes a JSON "response completed" line per request; only the access line is counted).
 */
export function distributionRequests(output: readonly string[]): DistributionAccessLine[] {
  const out: DistributionAccessLine[] = [];
  for (const line of output) {
    const m = /^\S+ - \S+ \[[^\]]*\] "([A-Z]+) (\S+) HTTP\/[\d.]+" (\d{3}) /.exec(line);
    if (!m) continue;
    const [, method, uri, status] = m as unknown as [string, string, string, string];
    const q = uri.indexOf('?');
    out.push({ method, path: q < 0 ? uri : uri.slice(0, q), ...(q < 0 ? {} : { query: uri.slice(q + 1) }), status: Number(status) });
  }
  return out;
}

const CAP_SYS_ADMIN = 21n;

/** Whether this process holds CAP_SYS_ADMIN (containerd, started by it, inherits its capabilities). */
export async function canMount(): Promise<boolean> {
  const status = await readFile('/proc/self/status', 'utf8').catch(() => '');
  const eff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  return eff !== undefined && ((BigInt(`0x${eff}`) >> CAP_SYS_ADMIN) & 1n) === 1n;
}
