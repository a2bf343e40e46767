/**
 * The `cascade` command: one program, the role chosen by the command.
 *
 *     cascade registry [CONFIG.yml]   a registry (a cache node when the config has the downstream middleware)
 *     cascade version
 */
import { readFileSync } from 'node:fs';
import { ConfigError, createLogger, startRegistry } from '@cascade/registry-core';
import { createNode, loadNodeConfig, NodeRoleError, parseNodeConfig } from '@cascade/downstream';
import { createServer, loadServerConfig } from '@cascade/server';
import { runCerts } from './commands/certs.js';
import { runUp, UpUsageError } from './commands/up.js';
import { runDoctor } from './commands/doctor.js';
import { runPrefetch } from './commands/prefetch.js';

const USAGE = `Usage: cascade <command> [options]

Commands:
  registry [CONFIG.yml]   Run a registry from a distribution-style config.yml; with the
                          downstream middleware in it, a cache node
                          (default: $REGISTRY_CONFIGURATION_PATH, else the embedded
                          defaults: 127.0.0.1:5000, storage in ./data)
  up [--dir DIR]          Run the whole stack on localhost: origin, server, two chained caches
                          (--mirror URL: and a pull-through mirror of URL; "cascade up --help")
  server SERVER.yml       Run the server (the DTR role) in front of an origin registry
  certs ca|server ...     Make a CA and server certificates (run "cascade certs --help")
  doctor CONFIG.yml       Check a cache node's config and its path to the origin (docs/doctor.md)
  prefetch IMAGE...       Warm a cache node with images (run "cascade prefetch --help")
  version                 Print the version
  help                    Print this help

Options:
  --debug                 Print stack traces of errors
`;

/**
 * The registry `cascade registry` runs without a config file: loopback only, storage in ./data, deletes
 * on. `REGISTRY_*` variables still override it.
 */
export const EMBEDDED_REGISTRY_CONFIG = `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: ./data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
  headers:
    X-Content-Type-Options: [nosniff]
`;

/** A failure to report in one line, without a stack trace. */
export class UsageError extends Error {}

/** Runs the command line; resolves with the exit code, or undefined while a server keeps running. */
export async function main(argv: string[]): Promise<number | undefined> {
  const debug = argv.includes('--debug');
  const args = argv.filter((a) => a !== '--debug');
  try {
    return await run(args);
  } catch (err) {
    if (debug) console.error(err);
    else if (err instanceof ConfigError || isUsageError(err)) console.error(`cascade: ${err.message}`);
    else console.error(`cascade: ${err instanceof Error ? err.message : String(err)} (run with --debug for details)`);
    return isUsageError(err) ? 64 : 1;
  }
}

/** A mistake to fix in the command line or the config's choice of role: one line, exit 64. */
function isUsageError(err: unknown): err is Error {
  return err instanceof UsageError || err instanceof UpUsageError || err instanceof NodeRoleError;
}

async function run(args: string[]): Promise<number | undefined> {
  const [command, ...rest] = args;
  switch (command) {
    case 'registry':
      return runRegistry(rest);
    case 'server':
      return runServer(rest);
    case 'certs':
      return runCerts(rest);
    case 'up':
      return runUp(rest);
    case 'doctor':
      return runDoctor(rest);
    case 'prefetch':
      return runPrefetch(rest);
    case 'version':
    case '--version':
      console.log(version());
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 64 : 0;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}; run "cascade help" for the list`);
  }
}

async function runRegistry(args: string[]): Promise<number | undefined> {
  const unknown = args.filter((a) => a.startsWith('-'));
  if (unknown.length > 0) throw new UsageError(`unknown option ${unknown[0]} for "cascade registry"`);
  if (args.length > 1) throw new UsageError('cascade registry takes one config file');
  const file = args[0] ?? process.env.REGISTRY_CONFIGURATION_PATH;
  const node = file ? loadNodeConfig(file, process.env) : parseNodeConfig(EMBEDDED_REGISTRY_CONFIG, '<embedded defaults>', process.env);
  const { config, warnings } = node;
  const logger = createLogger({ level: config.log.level, fields: config.log.fields });
  for (const warning of warnings) logger.warn({ file }, warning);
  if (!file) logger.info({ rootdirectory: config.storage.filesystem?.rootdirectory }, 'no config file given: running on the embedded defaults');
  // Signal handlers go in before the listener, so a SIGTERM right after "listening" is a clean stop.
  const stopper = stopOnSignals(typeof config.http.draintimeout === 'number' ? config.http.draintimeout : 5000);
  stopper.attach(await startRegistry({ config, logger, ...createNode(node, logger) }));
  return undefined;
}

async function runServer(args: string[]): Promise<number | undefined> {
  const unknown = args.filter((a) => a.startsWith('-'));
  if (unknown.length > 0) throw new UsageError(`unknown option ${unknown[0]} for "cascade server"`);
  if (args.length !== 1) throw new UsageError('cascade server needs one config file: cascade server SERVER.yml');
  const config = loadServerConfig(args[0] as string, process.env);
  const logger = createLogger({ level: config.log.level, ...(config.log.fields ? { fields: config.log.fields } : {}) });
  const stopper = stopOnSignals(5000);
  stopper.attach(await createServer({ config, logger }));
  return undefined;
}

/** Stops the running role on SIGTERM/SIGINT: drains open requests for at most `drainMs`, then exits 0. */
/** What a role gives the signal handler to stop. */
interface Stoppable {
  readonly logger: { info(obj: object, msg: string): void; flush(): void };
  close(drainMs?: number): Promise<void>;
}

function stopOnSignals(drainMs: number): { attach(registry: Stoppable): void } {
  let registry: Stoppable | undefined;
  let signalled: NodeJS.Signals | undefined;
  const stop = () => {
    if (!registry) return;
    registry.logger.info({ signal: signalled }, 'shutting down');
    const r: Stoppable = registry;
    void r.close(drainMs).then(() => {
      r.logger.flush();
      process.exit(0);
    });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) return;
    signalled = signal;
    stop();
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  return {
    attach(r) {
      registry = r;
      if (signalled) stop();
    },
  };
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return `cascade ${pkg.version}`;
}
