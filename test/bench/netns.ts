/**
 * Shaped links for the benchmark's scenario 7: each node (the client, every cache hop, the origin) runs in
 * its own network namespace, joined to one bridge in the root namespace by a veth pair, and both ends of
 * every pair are rate-limited with `tc tbf` (this kernel has no netem; tbf and htb work). A node's link is
 * then a full-duplex port of a switch at the chosen rate, as between the machines of a real chain. The
 * runner keeps an address on the bridge, so that it can start, probe and check the nodes (its own requests
 * cross the shaped links too).
 *
 * Every name carries the runner's pid (namespaces `cbn<pid>-<node>`, bridge `cbn<pid>br`, veths
 * `cbn<pid>v<i>` in the root namespace and `cbn<pid>p<i>` in the node's), so that a run recognises what a
 * killed run left behind (its pid is gone) and removes it, and never touches the topology of a live run.
 */
import { run } from '../lib/peers.js';

const PREFIX = 'cbn';
/** Addresses are 10.213.<k>.<i>/24, one free <k> per topology; the runner is .254 on the bridge. */
const NET = '10.213';
const RUNNER_HOST = 254;
/** Ports handed out in each namespace start here (each namespace has its own ports, all free). */
const FIRST_PORT = 5000;

/** Where a process of a topology runs: its namespace, its address there, and a free port of that namespace. */
export interface NetPlace {
  readonly ns: string;
  readonly ip: string;
  /** A port no other process of this namespace was given. */
  port(): number;
}

/** The command prefix that runs a command in namespace `ns` (`ip netns exec` replaces itself with the command). */
export function inNamespace(ns: string): string[] {
  return ['ip', 'netns', 'exec', ns];
}

/**
 * The same through a shell that waits for the command: for `spawnCascade`'s wrapper, which finds the node
 * process as its wrapper's child and signals it directly.
 */
export function inNamespaceForked(ns: string): string[] {
  return [...inNamespace(ns), 'sh', '-c', '"$@"; exit $?', 'sh'];
}

/** Why shaped links cannot be built here, or undefined when they can be tried (root, `ip` and `tc`). */
export async function netnsUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  for (const cmd of ['ip', 'tc']) {
    const r = await run(cmd, ['-V'], { allowFailure: true }).catch(() => undefined);
    if (r?.code !== 0) return `\`${cmd}\` (iproute2) is not installed`;
  }
  return undefined;
}

/**
 * tbf arguments for `mbit` megabits per second. The bucket holds 1 ms at the rate and at least 128 KiB:
 * a veth hands tbf whole GSO packets of up to 64 KiB, and tbf splits (slowly) or drops a packet larger than
 * its bucket; a bucket much smaller than a millisecond of traffic also keeps a 10 Gbit/s shape below its
 * rate, the timer not firing often enough. The queue holds 4 buckets: one TCP flow fills it without loss.
 */
export function tbfArgs(mbit: number): string[] {
  const burst = Math.max(128 * 1024, Math.round((mbit * 1e6) / 8 / 1000));
  return ['tbf', 'rate', `${mbit}mbit`, 'burst', String(burst), 'limit', String(4 * burst)];
}

/** The topologies not closed yet, for {@link closeTopologies} (SIGINT, a failed run). */
const open = new Set<Topology>();

/** Closes every topology still open: called by the runner's clean-up, on failure and on SIGINT too. */
export async function closeTopologies(): Promise<void> {
  await Promise.all([...open].map((t) => t.close()));
}

interface Link {
  readonly ns: string;
  /** The veth end in the root namespace, on the bridge. */
  readonly host: string;
  /** The veth end in the node's namespace. */
  readonly peer: string;
}

/** One bridge and a namespace per node, each on the bridge through its own veth pair. */
export class Topology {
  private readonly links = new Map<string, Link>();
  private readonly ports = new Map<string, number>();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly id: string,
    /** `10.213.<k>` */
    private readonly subnet: string,
  ) {}

  private get bridge(): string {
    return `${this.id}br`;
  }

  /**
   * Builds the namespaces of `nodes` (in that order: .1, .2, ...) on a new bridge. Removes first what killed
   * runs left behind. Throws when the kernel refuses (no namespaces in a container without the capability,
   * no tbf), after removing what it had built.
   */
  static async create(nodes: readonly string[]): Promise<Topology> {
    await sweepStale();
    const t = new Topology(`${PREFIX}${process.pid}`, await freeSubnet());
    open.add(t);
    try {
      await ip('link', 'add', t.bridge, 'type', 'bridge', 'forward_delay', '0');
      await ip('addr', 'add', `${t.subnet}.${RUNNER_HOST}/24`, 'dev', t.bridge);
      await ip('link', 'set', t.bridge, 'up');
      for (const [i, node] of nodes.entries()) await t.addNode(node, i + 1);
      // Fail here, before any process starts, when this kernel has no tbf.
      const first = [...t.links.values()][0]!;
      await run('tc', ['qdisc', 'replace', 'dev', first.host, 'root', ...tbfArgs(10_000)]);
      await run('tc', ['qdisc', 'del', 'dev', first.host, 'root']);
      return t;
    } catch (err) {
      await t.close();
      throw err;
    }
  }

  private async addNode(node: string, n: number): Promise<void> {
    const link = { ns: `${this.id}-${node}`, host: `${this.id}v${n}`, peer: `${this.id}p${n}` };
    await ip('netns', 'add', link.ns);
    this.links.set(node, link);
    await ip('link', 'add', link.host, 'type', 'veth', 'peer', 'name', link.peer, 'netns', link.ns);
    await ip('link', 'set', link.host, 'master', this.bridge, 'up');
    await ip('-n', link.ns, 'addr', 'add', `${this.subnet}.${n}/24`, 'dev', link.peer);
    await ip('-n', link.ns, 'link', 'set', link.peer, 'up');
    await ip('-n', link.ns, 'link', 'set', 'lo', 'up');
  }

  /** The namespace of `node`. */
  ns(node: string): string {
    return this.link(node).ns;
  }

  /** Where a process of `node` runs: its namespace, its address, and the next free port there. */
  place(node: string): NetPlace {
    const { ns } = this.link(node);
    const ip = `${this.subnet}.${[...this.links.keys()].indexOf(node) + 1}`;
    return {
      ns,
      ip,
      port: () => {
        const port = this.ports.get(ns) ?? FIRST_PORT;
        this.ports.set(ns, port + 1);
        return port;
      },
    };
  }

  /** Shapes both directions of every link to `mbit` (tbf on both veth ends), replacing the previous shape. */
  async shape(mbit: number): Promise<void> {
    const tbf = tbfArgs(mbit);
    await Promise.all(
      [...this.links.values()].flatMap((l) => [
        run('tc', ['qdisc', 'replace', 'dev', l.host, 'root', ...tbf]),
        run('tc', ['-n', l.ns, 'qdisc', 'replace', 'dev', l.peer, 'root', ...tbf]),
      ]),
    );
  }

  /** Kills what still runs in the namespaces, removes them, their veths and the bridge. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.all([...this.links.values()].map((l) => removeNamespace(l.ns, l.host)));
      await ip('link', 'del', this.bridge).catch(() => undefined);
      open.delete(this);
    })();
    return this.closing;
  }

  private link(node: string): Link {
    const l = this.links.get(node);
    if (!l) throw new Error(`no node ${node} in topology ${this.id}`);
    return l;
  }
}

async function ip(...args: string[]): Promise<void> {
  await run('ip', args);
}

/**
 * SIGKILLs the processes left in `ns` (every one was started by this benchmark in its own namespace), then
 * deletes the veth (both ends go) and the namespace; errors are ignored (the piece is already gone).
 */
async function removeNamespace(ns: string, hostVeth: string | undefined): Promise<void> {
  const pids = (await run('ip', ['netns', 'pids', ns], { allowFailure: true })).stdout.split(/\s+/).filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (hostVeth) await run('ip', ['link', 'del', hostVeth], { allowFailure: true });
  await run('ip', ['netns', 'del', ns], { allowFailure: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the namespaces, veths and bridges of runs that are gone (killed before their clean-up). */
async function sweepStale(): Promise<void> {
  const stale = (name: string): boolean => {
    const pid = Number(new RegExp(`^${PREFIX}(\\d+)`).exec(name)?.[1]);
    return Number.isInteger(pid) && pid !== process.pid && !alive(pid);
  };
  const namespaces = (await run('ip', ['netns', 'list'], { allowFailure: true })).stdout.split('\n').map((l) => l.split(' ')[0] ?? '');
  await Promise.all(namespaces.filter((n) => n.startsWith(PREFIX) && stale(n)).map((n) => removeNamespace(n, undefined)));
  const links = (await run('ip', ['-o', 'link', 'show'], { allowFailure: true })).stdout.split('\n').map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '');
  for (const link of links.filter((n) => new RegExp(`^${PREFIX}\\d+(br|v\\d+)$`).test(n) && stale(n))) {
    await run('ip', ['link', 'del', link], { allowFailure: true });
  }
}

/** A `10.213.<k>` no address or route of the root namespace uses, starting from one derived from the pid. */
async function freeSubnet(): Promise<string> {
  const used = (await run('ip', ['-4', '-o', 'addr', 'show'])).stdout + (await run('ip', ['-4', 'route', 'show'])).stdout;
  for (let i = 0; i < 250; i++) {
    const subnet = `${NET}.${((process.pid + i) % 250) + 1}`;
    if (!used.includes(`${subnet}.`)) return subnet;
  }
  throw new Error(`no free ${NET}.<k>.0/24 subnet`);
}
