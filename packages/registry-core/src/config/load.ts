/**
 * Loading the registry configuration: read the file, parse the YAML, apply the `REGISTRY_*` overrides,
 * validate everything against the schema and the middleware validators, and report every problem at once.
 * Loading is synchronous: it happens once, at start-up, before anything else can usefully run.
 */
import { readFileSync } from 'node:fs';
import YAML, { isPair, isScalar, isSeq } from 'yaml';
import { ConfigError, configIssue, fromZodIssue, type ConfigIssue } from './errors.js';
import { applyEnvOverrides, originOf, type EnvOrigin } from './env.js';
import {
  MIDDLEWARE_POINTS,
  UNIMPLEMENTED_SECTIONS,
  middlewareConfigSchema,
  registryConfigSchema,
  type RegistryConfig,
} from './schema.js';
import { nodeOf, schemaAt, type PathSegment } from './walk.js';

/**
 * Validates the `options` of one middleware entry. `key` is the dotted key of those options (for example
 * `middleware.registry[0].options`) and `config` the rest of the validated configuration, for cross-checks
 * such as "blobttl requires storage.delete.enabled".
 *
 * Returns one message per problem, empty when the options are valid. Each message should read
 * `<full key>: expected <what>, got <what>` (for example `middleware.registry[0].options.blobttl: expected a
 * duration such as "24h", got "soon"`); a message that does not start with a key is attributed to `key`.
 * A validator must not throw; if it does, the exception becomes one message.
 */
export type MiddlewareOptionsValidator = (options: Record<string, unknown>, key: string, config: RegistryConfig) => string[];

/** Options of {@link loadConfig} and {@link parseConfig}. */
export interface LoadConfigOptions {
  /**
   * Validators by middleware name. A middleware entry whose name has no validator here is an error
   * ("unknown middleware"), as distribution refuses a middleware it has not registered.
   */
  readonly middleware?: Readonly<Record<string, MiddlewareOptionsValidator>>;
  /**
   * Checks of the whole validated configuration that belong to a role (the mirror's `proxy` section), run
   * once the schema accepted the file. Each returns messages in the validator format
   * (`<full key>: expected <what>, got <what>`).
   */
  readonly checks?: ReadonlyArray<(config: RegistryConfig) => string[]>;
}

/** A validated configuration, and the warnings to log about it. */
export interface LoadedConfig {
  /** The configuration with every default applied. */
  readonly config: RegistryConfig;
  /** Things accepted but not acted upon (sections Cascade does not implement, deprecated keys, ignored variables). */
  readonly warnings: string[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Sets a key without letting `__proto__` in a file change an object's prototype. */
function put(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function firstLine(text: string): string {
  return (text.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '').replace(/:$/, '');
}

/**
 * Reads and validates the configuration file `file`, with the `REGISTRY_*` overrides of `env`.
 * `REGISTRY_CONFIGURATION_PATH` is not read here: the caller decides which file to load.
 *
 * @throws ConfigError listing every problem (file unreadable, YAML syntax, unknown or mistyped keys,
 *   bad environment variables, middleware options), one per line.
 * @example
 * const { config, warnings } = loadConfig('/etc/cascade/config.yml', process.env, { middleware: { downstream: validateDownstream } });
 * for (const w of warnings) logger.warn(w);
 */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env, options: LoadConfigOptions = {}): LoadedConfig {
  return parseConfig(readConfigFile(file), file, env, options);
}

/**
 * The text of a configuration file (the registry's, the server's).
 * @throws ConfigError when it cannot be read.
 */
export function readConfigFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new ConfigError(file, [{ key: '', expected: 'a readable configuration file', got: reason, message: `${file}: cannot read config file: ${reason}` }]);
  }
}

/**
 * Validates configuration text as {@link loadConfig} does; `file` is only used in messages.
 *
 * @throws ConfigError listing every problem, one per line.
 */
export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env, options: LoadConfigOptions = {}): LoadedConfig {
  const doc = YAML.parseDocument(text, { prettyErrors: true, merge: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e): ConfigIssue => {
        const pos = e.linePos?.[0];
        const reason = firstLine(e.message);
        const at = pos === undefined ? '' : `:${pos.line}:${pos.col}`;
        return { key: '', expected: 'valid YAML', got: reason, ...(pos === undefined ? {} : { line: pos.line }), message: `${file}${at}: expected valid YAML, got ${reason}` };
      }),
    );
  }
  keepStringScalarsAsWritten(doc);
  const warnings = doc.warnings.map((w) => {
    const pos = w.linePos?.[0];
    return `${file}${pos === undefined ? '' : `:${pos.line}:${pos.col}`}: ${firstLine(w.message)}`;
  });

  let js: unknown;
  try {
    js = doc.toJS({ maxAliasCount: 1000 });
  } catch (e) {
    const reason = e instanceof Error ? firstLine(e.message) : String(e);
    throw new ConfigError(file, [configIssue(file, { key: '', expected: 'valid YAML', got: reason })]);
  }
  if (!isRecord(js)) {
    const got = js === null || js === undefined ? 'an empty file' : Array.isArray(js) ? 'a list' : `a single value (${typeof js})`;
    throw new ConfigError(file, [configIssue(file, { key: '', expected: 'a mapping of configuration sections (version, storage, http, ...)', got })]);
  }

  const raw = normalize(js);
  const overrides = applyEnvOverrides(raw, env, file);
  warnings.push(...overrides.warnings);
  const issues: ConfigIssue[] = [...overrides.issues];

  const parsed = registryConfigSchema.safeParse(raw, { reportInput: true });
  const badSections = new Set<string>();
  if (!parsed.success) {
    for (const zodIssue of parsed.error.issues) {
      for (const t of fromZodIssue(zodIssue)) {
        issues.push(configIssue(file, { key: t.key, expected: t.expected, got: t.got, env: originOf(t.key, overrides.origins) }));
        const top = t.path[0];
        badSections.add(typeof top === 'string' ? top : '');
      }
    }
  }

  const config = parsed.success ? parsed.data : configWithout(raw, badSections);
  issues.push(...checkMiddleware(raw, config, options.middleware ?? {}, file, overrides.origins));
  if (parsed.success) {
    for (const check of options.checks ?? []) {
      for (const m of check(parsed.data)) issues.push(validatorIssue(file, m, '', overrides.origins));
    }
  }

  if (issues.length > 0 || !parsed.success) throw new ConfigError(file, issues);
  warnings.push(...acceptedButIgnored(parsed.data, raw));
  return { config: parsed.data, warnings };
}

/**
 * The YAML 1.2 parser reads `password: 0123` as the number 123 and `secret: 1e3` as 1000, where Go's decoder
 * gives the string as written. For keys that hold strings, keep the text of plain scalars.
 */
function keepStringScalarsAsWritten(doc: YAML.Document): void {
  YAML.visit(doc, {
    Scalar(key, node, ancestors) {
      if (key === 'key' || node.type !== 'PLAIN' || node.value === null || typeof node.value === 'string' || node.source === undefined) return;
      const path = pathOf([...ancestors, node]);
      const schema = path === undefined ? undefined : schemaAt(registryConfigSchema, path);
      if (schema === undefined) return;
      const target = nodeOf(schema);
      if (target.kind === 'leaf' && target.isString) node.value = node.source;
    },
  });
}

/** The configuration path of the last node of a chain of YAML ancestors. */
function pathOf(chain: readonly unknown[]): PathSegment[] | undefined {
  const path: PathSegment[] = [];
  for (let i = 0; i < chain.length; i++) {
    const node = chain[i];
    if (isPair(node)) {
      const k: unknown = isScalar(node.key) ? node.key.value : node.key;
      if (typeof k !== 'string' && typeof k !== 'number') return undefined;
      path.push(String(k));
    } else if (isSeq(node)) {
      const index = node.items.indexOf(chain[i + 1]);
      if (index < 0) return undefined;
      path.push(index);
    }
  }
  return path;
}

function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (!isRecord(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== null) put(out, k, withoutNulls(v));
  return out;
}

/**
 * Brings the document to the shape the schema expects, the way Go's decoder reads it: a key with no value
 * (`username:`) is absent; a driver or scheme with no parameters (`inmemory:`) is present with none; and
 * `storage: inmemory` / `auth: none` name a driver or scheme without parameters.
 */
function normalize(doc: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(doc)) {
    if ((k === 'storage' || k === 'auth') && typeof v === 'string') {
      put(out, k, { [v]: {} });
    } else if ((k === 'storage' || k === 'auth') && isRecord(v)) {
      const section: Record<string, unknown> = {};
      for (const [name, params] of Object.entries(v)) put(section, name, params === null ? {} : withoutNulls(params));
      put(out, k, section);
    } else if (v !== null) {
      put(out, k, withoutNulls(v));
    }
  }
  return out;
}

/**
 * The configuration with the failed top-level sections left at their defaults, so that middleware options
 * are validated (and reported) in the same run as the other issues. A failed `storage` keeps only its
 * `delete` section (which middleware cross-checks read) with a stand-in driver; undefined when even that
 * does not validate.
 */
function configWithout(raw: Record<string, unknown>, bad: ReadonlySet<string>): RegistryConfig | undefined {
  const copy: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!bad.has(k)) put(copy, k, v);
  if (bad.has('version')) copy['version'] = '0.1';
  if (bad.has('storage')) {
    const storage = raw['storage'];
    const del = isRecord(storage) ? storage['delete'] : undefined;
    copy['storage'] = del === undefined ? { inmemory: {} } : { inmemory: {}, delete: del };
  }
  const retry = registryConfigSchema.safeParse(copy);
  return retry.success ? retry.data : undefined;
}

const ROOT = nodeOf(registryConfigSchema);
const TOP_LEVEL_KEYS: ReadonlySet<string> = new Set(ROOT.kind === 'object' ? ROOT.keys : []);

/** Turns a validator's message into an issue, reading the key and the expected/got parts when present. */
function validatorIssue(file: string, message: string, optionsKey: string, origins: readonly EnvOrigin[]): ConfigIssue {
  const keyed = /^(\S+?): (.*)$/s.exec(message);
  let key = optionsKey;
  let rest = message;
  if (keyed !== null && !keyed[1]?.startsWith('expected')) {
    const k = keyed[1] ?? '';
    const head = k.split(/[.[]/)[0] ?? '';
    key = k.startsWith('middleware.') || TOP_LEVEL_KEYS.has(head) ? k : `${optionsKey}.${k}`;
    rest = keyed[2] ?? '';
  }
  const env = originOf(key, origins);
  const parts = /^expected (.+), got (.+)$/s.exec(rest);
  if (parts !== null) return configIssue(file, { key, expected: parts[1] ?? '', got: parts[2] ?? '', env });
  const from = env === undefined ? '' : ` (from environment variable ${env})`;
  return { key, expected: rest, got: '', ...(env === undefined ? {} : { env }), message: `${file}: ${key}${from}: ${rest}` };
}

/** Checks middleware names against the registered validators and runs them on their options. */
function checkMiddleware(
  raw: Record<string, unknown>,
  config: RegistryConfig | undefined,
  validators: Readonly<Record<string, MiddlewareOptionsValidator>>,
  file: string,
  origins: readonly EnvOrigin[],
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const section = raw['middleware'];
  if (!isRecord(section)) return issues;
  const known = Object.keys(validators);
  for (const point of MIDDLEWARE_POINTS) {
    const entries = section[point];
    if (!Array.isArray(entries)) continue;
    entries.forEach((entry: unknown, index) => {
      // A malformed entry is reported by the schema; here only well-formed ones are checked.
      const parsed = middlewareConfigSchema.safeParse(entry);
      if (!parsed.success || parsed.data.disabled) return;
      const { name, options } = parsed.data;
      const base = `middleware.${point}[${index}]`;
      const validator = Object.hasOwn(validators, name) ? validators[name] : undefined;
      if (validator === undefined) {
        issues.push(
          configIssue(file, {
            key: `${base}.name`,
            expected: `a middleware Cascade knows (${known.length === 0 ? 'none is registered' : known.join(', ')})`,
            got: `unknown middleware ${JSON.stringify(name)}`,
            env: originOf(`${base}.name`, origins),
          }),
        );
        return;
      }
      if (config === undefined) return;
      let messages: string[];
      try {
        messages = validator(options, `${base}.options`, config);
      } catch (e) {
        messages = [`${base}.options: expected options the ${name} middleware accepts, got an error: ${e instanceof Error ? e.message : String(e)}`];
      }
      for (const m of messages) issues.push(validatorIssue(file, m, `${base}.options`, origins));
    });
  }
  return issues;
}

function notImplemented(key: string): string {
  return `${key}: accepted but not implemented by Cascade; ignored`;
}

/** Warnings for what the file configures and Cascade does not do. */
function acceptedButIgnored(config: RegistryConfig, raw: Record<string, unknown>): string[] {
  const warnings: string[] = [];
  for (const s of UNIMPLEMENTED_SECTIONS) if (config[s] !== undefined) warnings.push(notImplemented(s));
  if (raw['loglevel'] !== undefined) {
    const levelSet = isRecord(raw['log']) && raw['log']['level'] !== undefined;
    warnings.push(`loglevel: deprecated, use log.level; ${levelSet ? 'ignored because log.level is set' : 'applied as log.level'}`);
  }
  if (config.log.hooks !== undefined) warnings.push(notImplemented('log.hooks'));
  if (config.log.reportcaller !== undefined) warnings.push(notImplemented('log.reportcaller'));
  if (config.storage.maintenance !== undefined) warnings.push(notImplemented('storage.maintenance'));
  const driverParams: Record<string, readonly string[]> = { filesystem: ['rootdirectory', 'maxthreads'], inmemory: [] };
  for (const [driver, allowed] of Object.entries(driverParams)) {
    const params = config.storage[driver as 'filesystem' | 'inmemory'];
    if (params === undefined) continue;
    for (const p of Object.keys(params)) {
      if (!allowed.includes(p)) warnings.push(`storage.${driver}.${p}: not a parameter of the ${driver} driver; ignored`);
    }
  }
  if (config.http.tls?.letsencrypt !== undefined) warnings.push(notImplemented('http.tls.letsencrypt'));
  if (config.http.tls?.ciphersuites !== undefined) warnings.push(notImplemented('http.tls.ciphersuites'));
  for (const check of ['file', 'http', 'tcp'] as const) {
    if (config.health[check].length > 0) warnings.push(notImplemented(`health.${check}`));
  }
  if (config.proxy?.exec !== undefined) warnings.push(notImplemented('proxy.exec'));
  return warnings;
}
