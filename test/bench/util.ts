/** Small helpers of the benchmark: test data, uploads, statistics, the machine and the versions. */
import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, openSync, readFileSync, statfsSync, unlinkSync, writeSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { request } from 'node:http';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../lib/cascade.js';

export const MiB = 1 << 20;
export const GiB = 1 << 30;

/** Writes `size` pseudo-random (incompressible, reproducible) bytes drawn from `seed`; returns the digest. */
export async function makeBlobFile(path: string, seed: string, size: number): Promise<string> {
  const key = createHash('sha256').update(`key:${seed}`).digest().subarray(0, 16);
  const iv = createHash('sha256').update(`iv:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, iv);
  const hash = createHash('sha256');
  const zeros = Buffer.alloc(4 * MiB);
  const out = createWriteStream(path);
  let left = size;
  while (left > 0) {
    const n = Math.min(left, zeros.length);
    const chunk = cipher.update(n === zeros.length ? zeros : zeros.subarray(0, n));
    hash.update(chunk);
    left -= n;
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((res, rej) => out.end((err?: Error | null) => (err ? rej(err) : res())));
  return `sha256:${hash.digest('hex')}`;
}

/** Uploads a file as a blob of `repo` (POST then PUT ?digest=, streamed); works with distribution and Cascade. */
export async function uploadBlob(base: string, repo: string, file: string, digest: string, headers: Record<string, string> = {}): Promise<void> {
  const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers });
  await start.arrayBuffer();
  if (start.status !== 202) throw new Error(`POST ${base}/v2/${repo}/blobs/uploads/ -> ${start.status}`);
  const location = new URL(start.headers.get('location') ?? '', base);
  location.searchParams.set('digest', digest);
  const size = (await stat(file)).size;
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(location, { method: 'PUT', headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(size) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    createReadStream(file, { highWaterMark: MiB }).pipe(req);
  });
  if (status !== 201) throw new Error(`PUT ${location} -> ${status}`);
}

/** `<root>/docker/registry/v2/blobs/sha256/<2>/<hex>/data` */
export function blobDataPath(rootdirectory: string, digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return join(rootdirectory, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))]!;
}

/** MB/s (10^6 bytes per second) of `bytes` in `ms`. */
export const mbps = (bytes: number, ms: number): number => bytes / 1e3 / ms;

function cmd(file: string, args: string[]): string {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    const e = err as { stderr?: string };
    return (e.stderr ?? '').trim() || 'unavailable';
  }
}

function cmdAll(file: string, args: string[]): string {
  // nginx -v prints on stderr
  try {
    const r = execFileSync('sh', ['-c', `${file} ${args.join(' ')} 2>&1`], { encoding: 'utf8' });
    return r.trim();
  } catch {
    return 'unavailable';
  }
}

export interface Environment {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  os: string;
  loadAtStart: string;
  node: string;
  distribution: string;
  nginx: string;
  skopeo: string;
  curl: string;
  commit: string;
  /** Files under packages/ that differ from the commit (the benchmark measures the working tree). */
  dirty: string[];
  date: string;
}

export function environment(): Environment {
  let cpu = cpus()[0]?.model ?? 'unknown';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpu;
  } catch {
    // keep os.cpus()
  }
  let osName = 'unknown';
  try {
    osName = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? osName;
  } catch {
    // not Linux
  }
  const status = cmd('git', ['-C', ROOT, 'status', '--porcelain', '--', 'packages']);
  return {
    cpu,
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    os: osName,
    loadAtStart: loadavg().map((x) => x.toFixed(2)).join(' '),
    node: process.version,
    distribution: cmd('docker-registry', ['--version']),
    nginx: cmdAll('nginx', ['-v']),
    skopeo: cmd('skopeo', ['--version']),
    curl: cmd('curl', ['--version']).split('\n')[0] ?? 'unavailable',
    commit: cmd('git', ['-C', ROOT, 'rev-parse', 'HEAD']),
    dirty: status === 'unavailable' ? [] : status.split('\n').filter(Boolean),
    date: new Date().toISOString(),
  };
}

/** What the machine itself allows a cache that verifies and stores a cold blob: see `machineFloors`. */
export interface MachineFloors {
  /** Size of the probe, in bytes (the cold blob's). */
  readonly bytes: number;
  /** SHA-256 on one core, from memory already in the CPU cache (Node's crypto, OpenSSL). */
  readonly sha256MBps: number;
  /** Writing a new file of `bytes` into the page cache (no fsync), on memory the kernel had not used lately. */
  readonly freshWriteMBps: number;
  /** The same again right after deleting the first file: the kernel reuses the pages it just freed. */
  readonly recycledWriteMBps: number;
}

/**
 * Writes `bytes` of `chunk` into a new file at `path` (into the page cache: no fsync) and closes it; returns
 * the write's speed in MB/s, which tells whether the kernel had to take memory the machine had not touched
 * lately (see {@link machineFloors}).
 */
export function writeNewFile(path: string, bytes: number, chunk = Buffer.alloc(MiB, 0x5a)): number {
  const n = Math.max(1, Math.round(bytes / chunk.length));
  const fd = openSync(path, 'w');
  try {
    const t = performance.now();
    for (let i = 0; i < n; i++) writeSync(fd, chunk);
    return mbps(n * chunk.length, performance.now() - t);
  } finally {
    closeSync(fd);
  }
}

/**
 * Recycled memory, before a cold pull: writes a file of `bytes` and deletes it, so that the pages the pull's
 * new files take next are pages the kernel has just freed, as on a long-running host whose page cache is
 * full and recycled all the time. On a virtual machine whose host backs guest pages on first use
 * (Firecracker here: ~0.45 GB/s on fresh pages, ~6.5 GB/s on pages just freed), a cold pull otherwise pays
 * for the host's first touch of every page it caches. The file goes to tmpfs (/dev/shm) when there is one
 * (`dir` otherwise): its pages come from the same allocator, but are never dirty for writeback, whereas 2 GiB
 * written on a disk filesystem start the flusher and throttle the pull's own writes. Call it right before
 * the pull: free pages go back to the host after a few seconds. Returns the write's MB/s (low when the
 * memory was fresh).
 */
export function recycleMemory(dir: string, bytes: number): number {
  const file = join(roomIn('/dev/shm', bytes) ? '/dev/shm' : dir, `cascade-bench-recycle-${process.pid}`);
  try {
    return writeNewFile(file, bytes);
  } finally {
    unlinkSync(file);
  }
}

/** True when `dir` exists and has room for `bytes` and a quarter more (a container's /dev/shm may be 64 MiB). */
function roomIn(dir: string, bytes: number): boolean {
  try {
    const fs = statfsSync(dir);
    return fs.bavail * fs.bsize >= bytes * 1.25;
  } catch {
    return false;
  }
}

/**
 * Measures the floors of a cold pull through a verifying, storing cache on this machine: how fast one core
 * hashes (a SHA-256 is sequential, so one blob's check cannot use more than one core) and how fast a new
 * file is written into the page cache. On some virtual machines the second is far slower for memory the
 * guest has not touched lately (the host backs each page on first use); run it last, since the first file's
 * freed pages make later writes cheaper.
 */
export function machineFloors(dir: string, bytes: number): MachineFloors {
  const chunk = Buffer.alloc(MiB, 0x5a);
  const n = Math.max(1, Math.round(bytes / MiB));
  const hash = createHash('sha256');
  const t = performance.now();
  for (let i = 0; i < n; i++) hash.update(chunk);
  hash.digest();
  const sha256MBps = mbps(n * MiB, performance.now() - t);
  const fresh = join(dir, 'floor-probe-1');
  const recycled = join(dir, 'floor-probe-2');
  try {
    const freshWriteMBps = writeNewFile(fresh, n * MiB, chunk);
    unlinkSync(fresh);
    const recycledWriteMBps = writeNewFile(recycled, n * MiB, chunk);
    return { bytes: n * MiB, sha256MBps, freshWriteMBps, recycledWriteMBps };
  } finally {
    for (const f of [fresh, recycled]) {
      try {
        unlinkSync(f);
      } catch {
        // already removed
      }
    }
  }
}
