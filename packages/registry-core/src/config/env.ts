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
function existingKey(container: unknown, segment: string): string | undefined {
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

/** A variable's name resolved against the schema: the configuration path it sets and the schema there. */
type Resolved = { path: PathSegment[]; leaf: z.ZodType } | { error: { path: PathSegment[]; expected: string; got: string } };

/**
 * Matches the segments of a variable's name against the schema, looking at the document only to reuse the
 * spelling of existing free-form keys and to bound list indexes. Changes nothing.
 */
function resolvePath(raw: Record<string, unknown>, segments: readonly string[], name: string): Resolved {
  let schema: z.ZodType = registryConfigSchema;
  let current: unknown = raw;
  const path: PathSegment[] = [];
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i] ?? '';
    if (seg === '') {
      return { error: { path, expected: 'key names separated by single underscores, such as REGISTRY_HTTP_ADDR', got: `an empty segment in ${name}` } };
    }
    const node = nodeOf(schema);
    let key: PathSegment;
    let child: z.ZodType | undefined;
    if (node.kind === 'object') {
      const known = node.keys.find((k) => k.toLowerCase() === seg.toLowerCase());
      key = known ?? existingKey(current, seg) ?? seg.toLowerCase();
      child = known === undefined ? node.catchall : node.child(known);
      if (child === undefined) {
        const { expected, known: keys } = expectedKeysAt(path);
        return { error: { path: [...path, seg.toLowerCase()], expected, got: unknownKeyGot(seg.toLowerCase(), path, keys) } };
      }
    } else if (node.kind === 'record') {
      key = existingKey(current, seg) ?? seg.toLowerCase();
      child = node.value;
    } else if (node.kind === 'array') {
      const length = Array.isArray(current) ? current.length : 0;
      if (!/^\d+$/.test(seg)) return { error: { path, expected: `a list index (0 to ${length})`, got: JSON.stringify(seg) } };
      key = Number(seg);
      if (key > length) return { error: { path: [...path, key], expected: `a list index from 0 to ${length} (the next new item)`, got: String(key) } };
      child = node.element;
    } else {
      return { error: { path, expected: `nothing after ${formatKey(path)}, which is a value, not a section`, got: JSON.stringify(segments.slice(i).join('_')) } };
    }
    path.push(key);
    current = Array.isArray(current) && typeof key === 'number' ? current[key] : isRecord(current) && typeof key === 'string' && Object.hasOwn(current, key) ? current[key] : undefined;
    schema = child;
  }
  return { path, leaf: schema };
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
    const resolved = resolvePath(raw, name.slice(ENV_PREFIX.length).split('_'), name);
    if ('error' in resolved) {
      fail(resolved.error.path, resolved.error.expected, resolved.error.got);
      continue;
    }
    const { path, leaf } = resolved;

    // Only now, with the whole name resolved, create the sections it goes through: a bad variable must not
    // leave an empty section behind that would add errors of its own.
    let container: Record<string, unknown> | unknown[] = raw;
    for (let i = 0; i < path.length - 1; i++) {
      const key = path[i] ?? '';
      let next = getChild(container, key);
      const wantList = typeof path[i + 1] === 'number';
      if (wantList ? !Array.isArray(next) : !isRecord(next)) {
        next = wantList ? [] : {};
        setChild(container, key, next);
      }
      if (!Array.isArray(next) && !isRecord(next)) break;
      container = next;
    }
    const key = path.at(-1) ?? '';

    const target = nodeOf(leaf);
    const parsed = parseValue(text, target.kind === 'leaf' && target.isString);
    if ('error' in parsed) {
      fail(path, 'a YAML value', parsed.error);
      continue;
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
