/**
 * Metrics and readiness of a node's part in its region: the fills it led, joined or took over, whether its
 * Redis answers, the live nodes it sees, the sweeps it ran or left to another node. Read at scrape time.
 */
import { Counter, Gauge } from 'prom-client';
import type { NodeObservability } from '@cascade/registry-core';
import type { RegionCoordinator } from './coordinator.js';

/** Registers the region's metrics, and a non-critical readiness check (without Redis the node still serves). */
export function observeRegion(obs: NodeObservability, region: RegionCoordinator): void {
  const registers = [obs.registry];
  new Counter({
    name: 'cascade_region_fills_total',
    help: 'Fills of this node by role in its region: led (fetched from upstream), joined (followed another node\'s), takeover (taken over from a dead node), alone (Redis unreachable: filled without the region).',
    labelNames: ['role'],
    registers,
    collect() {
      this.reset();
      const s = region.stats;
      this.inc({ role: 'led' }, s.fillsLed);
      this.inc({ role: 'joined' }, s.fillsJoined);
      this.inc({ role: 'takeover' }, s.takeovers);
      this.inc({ role: 'alone' }, s.fillsAlone);
    },
  });
  new Counter({
    name: 'cascade_region_sweeps_total',
    help: 'Expiry sweeps attempted by this node: ran (it was the region\'s sweeper for the interval) or skipped (another node swept, or Redis was unreachable).',
    labelNames: ['result'],
    registers,
    collect() {
      this.reset();
      this.inc({ result: 'ran' }, region.stats.sweeps);
      this.inc({ result: 'skipped' }, region.stats.sweepsSkipped);
    },
  });
  // Which node answered: behind a region's balancer, a scrape reaches any node, and a reader (the server's
  // cache tree) keeps each node's counters apart by this label.
  new Gauge({
    name: 'cascade_region_node_info',
    help: 'Always 1: the region (its key prefix in Redis) and this node\'s id in it.',
    labelNames: ['region', 'node'],
    registers,
    collect() {
      this.reset();
      this.set({ region: region.prefix, node: region.nodeId }, 1);
    },
  });
  new Gauge({
    name: 'cascade_region_redis_up',
    help: '1 when the region\'s Redis answers; 0 when this node works alone (degraded: per-node fills, no expiry sweep).',
    registers,
    collect() {
      this.set(region.up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'cascade_region_nodes',
    help: 'Live nodes of the region (heartbeats in Redis), as this node last saw them.',
    registers,
    collect() {
      this.set(region.up ? region.liveNodes.length : 0);
    },
  });
  obs.addReadyCheck({
    name: 'region redis',
    critical: false,
    check: async () => (region.up ? undefined : 'Redis unreachable: this node serves and fills alone (no region-wide single-flight, no expiry sweep)'),
  });
}
