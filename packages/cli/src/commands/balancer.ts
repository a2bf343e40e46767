/**
 * The small TCP balancer `cascade up --region N` puts in front of a region's nodes, so that the server
 * registers the region as one cache (the balancer's address). Each client connection goes to the next node
 * in turn (round-robin); a node that refuses the connection is skipped (the client's bytes are not read until
 * a node accepted, so nothing is lost by trying the next) and left out for a few seconds. Bytes are piped
 * both ways with backpressure; an error on either side closes both.
 *
 * For local use only: in production a real balancer goes in front of a region (nginx or haproxy in
 * deploy/compose, a Service in Kubernetes; docs/operations.md).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

/** One node behind the balancer. */
export interface Backend {
  readonly host: string;
  readonly port: number;
}

/** Options of {@link startBalancer}. */
export interface BalancerOptions {
  readonly host: string;
  readonly port: number;
  readonly backends: readonly Backend[];
  /** How long a node that refused a connection is left out (default 2000 ms). */
  readonly deadMs?: number;
  /** How long a connection to a node may take (default 5000 ms). */
  readonly connectTimeoutMs?: number;
  /** Told when a node is skipped, and when no node took a connection. */
  readonly onEvent?: (message: string) => void;
}

/** A running balancer. */
export interface Balancer {
  readonly url: string;
  /** Connections each node was given so far, in the order of `backends`. */
  connections(): number[];
  close(): Promise<void>;
}

/** Starts the balancer; rejects when its port cannot be bound (EADDRINUSE included). */
export async function startBalancer(options: BalancerOptions): Promise<Balancer> {
  const { backends } = options;
  if (backends.length === 0) throw new Error('a balancer needs at least one node');
  const deadMs = options.deadMs ?? 2000;
  const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
  const deadUntil = backends.map(() => 0);
  const given = backends.map(() => 0);
  const live = new Set<Socket>();
  let next = 0;

  /** Connects `client` to the next node that accepts, trying each node at most once. */
  const route = (client: Socket, tried: number): void => {
    if (client.destroyed) return;
    if (tried >= backends.length) {
      options.onEvent?.(`no node of ${backends.length} accepted a connection`);
      client.destroy();
      return;
    }
    // Round-robin, nodes recently found dead last (tried only once every live one has been).
    const now = Date.now();
    let index = next % backends.length;
    for (let k = 0; k < backends.length; k++) {
      const i = (next + k) % backends.length;
      if (deadUntil[i]! <= now) {
        index = i;
        break;
      }
    }
    next = index + 1;
    const backend = backends[index]!;
    const upstream = connect({ host: backend.host, port: backend.port, allowHalfOpen: true });
    live.add(upstream);
    upstream.setTimeout(connectTimeoutMs);
    let connected = false;
    const failed = (err: Error) => {
      upstream.destroy();
      live.delete(upstream);
      if (connected) {
        client.destroy();
        return;
      }
      deadUntil[index] = Date.now() + deadMs;
      options.onEvent?.(`node ${backend.host}:${backend.port} skipped: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
      route(client, tried + 1);
    };
    upstream.on('timeout', () => failed(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })));
    upstream.on('error', failed);
    upstream.once('connect', () => {
      connected = true;
      given[index]! += 1;
      upstream.setTimeout(0);
      upstream.setNoDelay(true);
      // pipe() pauses a source whose destination is full (backpressure) and passes each end on (half-close).
      client.pipe(upstream);
      upstream.pipe(client);
      client.once('close', () => upstream.destroy());
      client.resume();
    });
    upstream.once('close', () => {
      live.delete(upstream);
      if (connected) client.destroy();
    });
  };

  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    live.add(client);
    client.setNoDelay(true);
    client.on('error', () => client.destroy());
    client.once('close', () => live.delete(client));
    route(client, 0);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => options.onEvent?.(`balancer error: ${err.message}`));
  return {
    url: `http://${options.host}:${options.port}`,
    connections: () => [...given],
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of live) socket.destroy();
      }),
  };
}
