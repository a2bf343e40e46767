/**
 * Scenario 7: shaped links. The client, each cache hop and the origin run in network namespaces of their
 * own, each on a link rate-limited with tbf (netns.ts), at each speed of `shapedGbits`: a chain of machines
 * rather than processes sharing loopback. Chains client → c1 → origin and client → c3 → c2 → c1 → origin, for
 * Cascade and distribution's proxy, empty, measured with scenario 2's {@link coldPull} (the direct pull over
 * the same links right before each cold pull, CPU per process), then pulled once more, warm. The figures
 * are `s7.<gbit>g.<chain>...`; the direct pull's MB/s is printed, and noted when it falls short of the link.
 *
 * Needs root, `ip` and `tc`, and curl as the client (it runs under `ip netns exec`); without them, or when the
 * kernel refuses the namespaces, the scenario is skipped with a note, not failed.
 */
import { join } from 'node:path';
import { Topology, inNamespace, netnsUnavailable } from './netns.js';
import { Fleet, startDistribution } from './procs.js';
import {
  blobUrl,
  checkBatch,
  coldPull,
  get,
  primaryMemory,
  runDir,
  seedBlob,
  startChains,
  stopFleet,
  summariseDirect,
  type Context,
  type Metrics,
  type Site,
} from './scenarios.js';
import { mbps, MiB } from './util.js';

/** The cache hops' nodes, nearest-to-origin first: a chain of n hops uses the first n. */
const HOPS = ['hop1', 'hop2', 'hop3'] as const;
const NODES = ['client', ...HOPS, 'origin'] as const;

/**
 * A direct pull whose body came at less than this share of the link's rate is noted: the shape was not
 * reached (a busy machine, a blob too small for TCP to get up to speed). TCP/IP and Ethernet headers take ~4.4 % of a 1500-byte frame (1448 bytes of payload per
 * 1514 counted by tbf), so a link at its rate carries its payload at ~0.956 of it.
 */
const REACHED = 0.85;

/** Key prefix of one link speed's figures. */
export const shapedPrefix = (gbit: number): string => `s7.${gbit}g.`;

/**
 * Builds the namespaces, starts the origin in its own and seeds it, then measures every chain at each link
 * speed; tears everything down at the end, also on failure (the runner's clean-up covers SIGINT).
 */
export async function shaped(ctx: Context, m: Metrics): Promise<void> {
  const why = ctx.cfg.client === 'curl' ? await netnsUnavailable() : 'the client must be curl (it runs in the client namespace)';
  if (why) return skip(ctx, why);
  let topo: Topology;
  try {
    topo = await Topology.create(NODES);
  } catch (err) {
    return skip(ctx, `the network namespaces could not be built: ${(err as Error).message.split('\n')[0]}`);
  }
  const fleet = new Fleet();
  try {
    const site = await seedSite(ctx, topo, fleet);
    for (const [i, gbit] of ctx.cfg.shapedGbits.entries()) {
      await topo.shape(gbit * 1000);
      // One hashed check per chain and run is enough: at the last speed (10 Gbit/s by default, the quickest).
      await atSpeed(ctx, m, topo, site, gbit, !ctx.cfg.hashAll && i === ctx.cfg.shapedGbits.length - 1);
    }
  } finally {
    await stopFleet(ctx, fleet);
    await topo.close();
  }
}

/** Scenario 7, for the runner's list (scenarios.ts lists 1-6; this module builds on it). */
export const SHAPED = { id: 7, name: 'shaped links', run: shaped } as const;

/** A skipped scenario is a note (once per invocation) and a log line, not a problem. */
function skip(ctx: Context, why: string): void {
  const note = `Scenario 7 (shaped links) was skipped: ${why}.`;
  if (!ctx.notes.includes(note)) {
    ctx.notes.push(note);
    ctx.log(note);
  }
}

/** The origin in its namespace, with the scenario's blob and a warm-up blob uploaded (links not shaped yet). */
async function seedSite(ctx: Context, topo: Topology, fleet: Fleet): Promise<Site> {
  const origin = await startDistribution(fleet, { dir: await runDir(ctx, fleet, 'shaped-origin'), name: 'shaped-origin', net: topo.place('origin') });
  const big = await seedBlob(ctx.work, origin, 'shaped', ctx.cfg.shapedMiB * MiB);
  const warmup = await seedBlob(ctx.work, origin, 'shaped-warmup', MiB);
  return { origin, big, warmup, via: inNamespace(topo.ns('client')) };
}

/** Every chain, empty, at one link speed: the cold pull (with its direct pull), then a warm pull. */
async function atSpeed(ctx: Context, m: Metrics, topo: Topology, site: Site, gbit: number, verify: boolean): Promise<void> {
  const p = shapedPrefix(gbit);
  const what = `s7 ${gbit} Gbit/s`;
  const fleet = new Fleet();
  try {
    const chains = await startChains(fleet, await runDir(ctx, fleet, `shaped-${gbit}g`), site.origin.url, HOPS.map((h) => topo.place(h)));
    for (const chain of chains) {
      await coldPull(ctx, site, chain, m, p, { what, memory: primaryMemory(ctx.cfg.memory), verify });
      const warm = await get(ctx, blobUrl(chain.nodes[chain.nodes.length - 1]!, site.big.digest), 1, 'processes', site.via);
      checkBatch(ctx, `${what} warm ${chain.key}`, warm, site.big);
      m[`${p}${chain.key}.warm.totalMs`] = warm.transfers[0]!.totalMs;
      m[`${p}${chain.key}.warm.ratio`] = warm.transfers[0]!.totalMs / m[`${p}${chain.key}.direct.totalMs`]!;
      m[`${p}${chain.key}.warm.MBps`] = mbps(site.big.size, warm.transfers[0]!.totalMs);
    }
    summariseDirect(m, p, site.big.size);
  } finally {
    await stopFleet(ctx, fleet);
  }
  const link = gbit * 125; // MB/s
  const body = m[`${p}direct.bodyMBps`]!;
  const share = `${((body / link) * 100).toFixed(0)} % of the link's ${link} MB/s`;
  ctx.log(`${what}: direct pull ${m[`${p}direct.MBps`]!.toFixed(0)} MB/s in all, its body at ${body.toFixed(0)} MB/s (${share})`);
  if (body < REACHED * link) {
    ctx.notes.push(
      `Scenario 7 at ${gbit} Gbit/s: the direct pull's body came at ${body.toFixed(0)} MB/s, ${share}: the shape was not reached (a busy machine, or a blob too small for TCP to reach the rate), and the ratios at this speed compare with what was carried.`,
    );
  }
}
