/**
 * `REGISTRY_*` environment overrides, with distribution's rules: the name after `REGISTRY_` is split on `_`
 * into a path, each segment is matched case-insensitively against the keys the schema knows (inside free-form
 * maps it is lower-cased, inside lists it is an index), and the value is parsed as YAML. Variables are
 * applied in lexical order, so `REGISTRY_STORAGE` applies before `REGISTRY_STORAGE_DELETE_ENABLED`.
 * Internal to `config/`.
 */
import YAML from 'yaml';
import type { z } from 'zod';
import { configIssue, expectedKeysAt, unknownKeyGot, type ConfigIssue } from './errors.js';
import { STORAGE_SECTIONS, registryConfigSchema } from './schema.js';
import { formatKey, nodeOf, type PathSegment } from './walk.js';

/** The prefix of override variables. */
export const ENV_PREFIX = 'REGISTRY_';

/** Variables with the prefix that are not overrides: the CLI reads the config file path itself. */
const NOT_OVERRIDES = new Set(['REGISTRY_CONFIGURATION_PATH']);

/**
 * Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_...` for every service in the namespace, so a
 * service named `registry` would otherwise stop every pod of the namespace from starting.
 */
const KUBERNETES_SERVICE_LINK = /^REGISTRY_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\w+)?)$/;

/** Where a value of the configuration came from, to name the variable in error messages. */
export interface EnvOrigin {
  readonly key: string;
  readonly env: string;
}

/** The result of applying the overrides. */
export interface EnvResult {
  readonly issues: ConfigIssue[];
  readonly warnings: string[];
  readonly origins: EnvOrigin[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function firstLine(text: string): string {
  return (text.split('\n')[0] ?? '').replace(/:$/, '');
}

/**
 * Parses a variable's value as YAML, except for keys that hold strings: those take the text as written
 * when YAML would make it something else, so that `REGISTRY_PROXY_PASSWORD=0123` stays "0123" (Go's decoder
 * also keeps the text of a scalar decoded into a string).
 */
function parseValue(text: string, isString: boolean): { value: unknown } | { error: string } {
  let parsed: unknown;
  let error: string | undefined;
  try {
    parsed = YAML.parse(text, { merge: true });
  } catch (e) {
    error = firstLine(e instanceof Error ? e.message : String(e));
  }
  if (isString) return { value: typeof parsed === 'string' ? parsed : text };
  if (error !== undefined) return { error };
  return { value: parsed };
}

/** The key of `container` that `segment` names case-insensitively, so an override replaces rather than duplicates it. */
function existingKey(container: Record<string, unknown> | unknown[], segment: string): string | undefined {
  return isRecord(container) ? Object.keys(container).find((k) => k.toLowerCase() === segment.toLowerCase()) : undefined;
}

function getChild(container: Record<string, unknown> | unknown[], key: PathSegment): unknown {
  if (Array.isArray(container)) return typeof key === 'number' ? container[key] : undefined;
  return typeof key === 'string' && Object.hasOwn(container, key) ? container[key] : undefined;
}

function setChild(container: Record<string, unknown> | unknown[], key: PathSegment, value: unknown): void {
  if (Array.isArray(container)) {
    if (typeof key === 'number') container[key] = value;
  } else if (typeof key === 'string') {
    if (value === undefined) delete container[key];
    else container[key] = value;
  }
}

/**
 * Applies the `REGISTRY_*` variables of `env` to `raw` (the normalized YAML document, modified in place).
 * Problems are returned as issues naming the variable, never thrown.
 */
export function applyEnvOverrides(raw: Record<string, unknown>, env: NodeJS.ProcessEnv, file: string): EnvResult {
  const issues: ConfigIssue[] = [];
  const warnings: string[] = [];
  const origins: EnvOrigin[] = [];
  const names = Object.keys(env)
    .filter((n) => n.startsWith(ENV_PREFIX) && !NOT_OVERRIDES.has(n) && env[n] !== undefined)
    .sort();

  for (const name of names) {
    if (KUBERNETES_SERVICE_LINK.test(name)) {
      warnings.push(`environment variable ${name} ignored: it looks like a Kubernetes service link, not a configuration key`);
      continue;
    }
    const text = env[name] ?? '';
    const fail = (path: readonly PathSegment[], expected: string, got: string): void => {
      issues.push(configIssue(file, { key: formatKey(path), expected, got, env: name }));
    };
    const segments = name.slice(ENV_PREFIX.length).split('_');
    let container: Record<string, unknown> | unknown[] = raw;
    let schema: z.ZodType = registryConfigSchema;
    const path: PathSegment[] = [];

    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i] ?? '';
      const last = i === segments.length - 1;
      if (seg === '') {
        fail(path, 'key names separated by single underscores, such as REGISTRY_HTTP_ADDR', `an empty segment in ${name}`);
        break;
      }
      const node = nodeOf(schema);
      let key: PathSegment;
      let child: z.ZodType | undefined;
      if (node.kind === 'object') {
        const known =
          node.keys.find((k) => k.toLowerCase() === seg.toLowerCase()) ??
          (node.catchall === undefined ? undefined : existingKey(container, seg) ?? seg.toLowerCase());
        if (known === undefined) {
          const { expected, known: keys } = expectedKeysAt(path);
          fail([...path, seg.toLowerCase()], expected, unknownKeyGot(seg.toLowerCase(), path, keys));
          break;
        }
        key = known;
        child = node.child(known);
      } else if (node.kind === 'record') {
        key = existingKey(container, seg) ?? seg.toLowerCase();
        child = node.value;
      } else if (node.kind === 'array') {
        const length = Array.isArray(container) ? container.length : 0;
        if (!/^\d+$/.test(seg)) {
          fail(path, `a list index (0 to ${length})`, JSON.stringify(seg));
          break;
        }
        const index = Number(seg);
        if (index > length) {
          fail([...path, index], `a list index from 0 to ${length} (the next new item)`, String(index));
          break;
        }
        key = index;
        child = node.element;
      } else {
        fail(path, `nothing after ${formatKey(path)}, which is a value, not a section`, `${JSON.stringify(segments.slice(i).join('_'))}`);
        break;
      }
      path.push(key);
      if (child === undefined) break;

      if (!last) {
        let next = getChild(container, key);
        const childKind = nodeOf(child).kind;
        if (childKind === 'array' && !Array.isArray(next)) {
          next = [];
          setChild(container, key, next);
        } else if (childKind !== 'array' && !isRecord(next)) {
          next = {};
          setChild(container, key, next);
        }
        if (!Array.isArray(next) && !isRecord(next)) break;
        container = next;
        schema = child;
        continue;
      }

      const target = nodeOf(child);
      const parsed = parseValue(text, target.kind === 'leaf' && target.isString);
      if ('error' in parsed) {
        fail(path, 'a YAML value', parsed.error);
        break;
      }
      let value = parsed.value;
      const top = path[0];
      if (path.length === 1 && top === 'storage' && typeof value === 'string') {
        // REGISTRY_STORAGE=<driver> selects the driver; unlike distribution, which replaces the whole
        // section, the delete/maintenance/... sections of the file are kept.
        const sections: readonly string[] = STORAGE_SECTIONS;
        const kept = isRecord(raw['storage']) ? Object.entries(raw['storage']).filter(([k]) => sections.includes(k)) : [];
        value = { ...Object.fromEntries(kept), [value]: {} };
      } else if (path.length === 1 && top === 'auth' && typeof value === 'string') {
        value = { [value]: {} };
      } else if (value === null) {
        // An empty variable unsets the key, except a bare driver or scheme name, whose presence is the setting.
        value = path.length === 2 && (top === 'storage' || top === 'auth') ? {} : undefined;
      }
      setChild(container, key, value);
      origins.push({ key: formatKey(path), env: name });
    }
  }
  return { issues, warnings, origins };
}

/** The variable that set `key` or one of its parents, for error messages. */
export function originOf(key: string, origins: readonly EnvOrigin[]): string | undefined {
  let best: EnvOrigin | undefined;
  for (const o of origins) {
    const covers = key === o.key || key.startsWith(`${o.key}.`) || key.startsWith(`${o.key}[`);
    if (covers && (best === undefined || o.key.length >= best.key.length)) best = o;
  }
  return best?.env;
}
