/**
 * Configuration errors: every problem is one {@link ConfigIssue} naming the file, the key and what was
 * expected, and all the problems of a file are thrown together in one {@link ConfigError}.
 */
import type { z } from 'zod';
import { AUTH_SCHEMES, EXPECTED_AT, STORAGE_DRIVERS, STORAGE_SECTIONS, registryConfigSchema } from './schema.js';
import { formatKey, nodeOf, schemaAt, type PathSegment } from './walk.js';

/** One configuration problem. */
export interface ConfigIssue {
  /** Dotted key such as `storage.delete.enabled` or `middleware.registry[0].options.blobttl`; '' for the whole file. */
  readonly key: string;
  /** What the key should hold. */
  readonly expected: string;
  /** What it held, described without revealing secrets. */
  readonly got: string;
  /** The environment variable that set the value, when one did. */
  readonly env?: string;
  /** 1-based line of a YAML syntax error. */
  readonly line?: number;
  /** The whole line as printed: `<file>: <key>: expected <what>, got <what>`. */
  readonly message: string;
}

/**
 * Thrown by `loadConfig`/`parseConfig` when the configuration cannot be used. `message` holds one line per
 * issue; `key` and `expected` are those of the first issue, `issues` has them all. The program should print
 * the message and exit non-zero.
 */
export class ConfigError extends Error {
  /** The configuration file, as given to the loader. */
  readonly file: string;
  /** The key of the first issue. */
  readonly key: string;
  /** What the first issue's key should hold. */
  readonly expected: string;
  /** Every issue found, in the order they were found (at least one). */
  readonly issues: readonly ConfigIssue[];

  constructor(file: string, issues: readonly ConfigIssue[]) {
    super(issues.map((i) => i.message).join('\n'));
    this.name = 'ConfigError';
    this.file = file;
    this.issues = issues;
    this.key = issues[0]?.key ?? '';
    this.expected = issues[0]?.expected ?? '';
  }
}

/** Builds an issue and its printed line. */
export function configIssue(file: string, fields: { key: string; expected: string; got: string; env?: string | undefined }): ConfigIssue {
  const from = fields.env === undefined ? '' : ` (from environment variable ${fields.env})`;
  const where = fields.key === '' ? from.trimStart() : `${fields.key}${from}`;
  const message = `${file}: ${where === '' ? '' : `${where}: `}expected ${fields.expected}, got ${fields.got}`;
  return { key: fields.key, expected: fields.expected, got: fields.got, ...(fields.env === undefined ? {} : { env: fields.env }), message };
}

const SENSITIVE_KEY = /^(password|secret|apikey|licensekey|token|key)$/i;

/** Keys whose values are never echoed: a wrong type must not print a password into a log. */
function isSensitive(path: readonly PathSegment[]): boolean {
  const last = path.at(-1);
  if (typeof last !== 'string') return false;
  // `http.tls.key` is a file name, not key material.
  if (last === 'key' && path.at(-2) === 'tls') return false;
  return SENSITIVE_KEY.test(last);
}

/**
 * Describes a value for the "got" part of a message: strings quoted and shortened, collections by kind,
 * secrets by type only, and credentials embedded in URLs masked.
 */
export function describeValue(value: unknown, path: readonly PathSegment[] = []): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'string') {
    if (value === '') return 'an empty string';
    if (isSensitive(path)) return 'a string (not shown)';
    const masked = value.replace(/\/\/[^/@\s]*@/g, '//***@');
    return JSON.stringify(masked.length > 80 ? `${masked.slice(0, 77)}...` : masked);
  }
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return isSensitive(path) ? `a ${typeof value === 'boolean' ? 'boolean' : 'number'} (not shown)` : String(value);
  }
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : `a list of ${value.length} item${value.length === 1 ? '' : 's'}`;
  if (typeof value === 'object') return 'a mapping';
  return `a ${typeof value}`;
}

const TYPE_NAMES: Readonly<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
  bigint: 'an integer',
};

/** Edit distance, to suggest the key a typo meant. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0] ?? 0;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j] ?? 0;
      row[j] = Math.min(up + 1, (row[j - 1] ?? 0) + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length] ?? 0;
}

/**
 * The known key closest to `key`, if it is close enough to be a typo (by default within 1 or 2 edits,
 * depending on the key's length).
 */
export function suggestKey(key: string, known: readonly string[], maxDistance = Math.max(1, Math.min(2, Math.floor(key.length / 3)))): string | undefined {
  const lower = key.toLowerCase();
  let best: string | undefined;
  let bestDistance = maxDistance;
  for (const k of known) {
    const d = k === lower ? 0 : distance(lower, k);
    if (d <= bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

/** Storage drivers of distribution that Cascade does not implement, named as such in messages. */
const OTHER_DRIVERS = new Set(['s3', 'azure', 'gcs', 'swift', 'oss']);

/** What a mapping at `path` may contain, for an unknown key's message. */
export function expectedKeysAt(path: readonly PathSegment[]): { expected: string; known: readonly string[] } {
  const schema = schemaAt(registryConfigSchema, path);
  const node = schema === undefined ? undefined : nodeOf(schema);
  const known = node?.kind === 'object' ? node.keys : [];
  const parent = formatKey(path);
  if (parent === 'storage') {
    return { expected: `a storage driver Cascade implements (${STORAGE_DRIVERS.join(', ')}) or one of ${STORAGE_SECTIONS.join(', ')}`, known };
  }
  if (parent === 'auth') return { expected: `one of the authentication schemes ${AUTH_SCHEMES.join(', ')}`, known };
  if (parent === '') return { expected: `a top-level section (${known.join(', ')})`, known };
  return { expected: known.length === 0 ? `no keys in ${parent}` : `a key of ${parent} (${known.join(', ')})`, known };
}

/** The "got" text for an unknown key, with a suggestion when it looks like a typo. */
export function unknownKeyGot(key: string, path: readonly PathSegment[], known: readonly string[]): string {
  if (formatKey(path) === 'storage' && OTHER_DRIVERS.has(key)) return `the "${key}" storage driver, which Cascade does not implement`;
  const suggestion = suggestKey(key, known);
  return `unknown key ${JSON.stringify(key)}${suggestion !== undefined && suggestion !== key ? ` (did you mean "${suggestion}"?)` : ''}`;
}

function expectedAt(path: readonly PathSegment[]): string | undefined {
  const generic = path.map((s) => (typeof s === 'number' ? -1 : s));
  const key = formatKey(generic).replace(/\[-1\]/g, '[]');
  return EXPECTED_AT[key];
}

/** Converts one zod issue into the `key`/`expected`/`got` triples of configuration issues. */
export function fromZodIssue(issue: z.core.$ZodIssue): Array<{ key: string; expected: string; got: string; path: readonly PathSegment[] }> {
  const path = issue.path.filter((s): s is PathSegment => typeof s === 'string' || typeof s === 'number');
  const key = formatKey(path);
  const input = (issue as { input?: unknown }).input;
  const got = describeValue(input, path);
  switch (issue.code) {
    case 'invalid_type':
      return [{ key, path, expected: expectedAt(path) ?? TYPE_NAMES[issue.expected] ?? `a ${issue.expected}`, got }];
    case 'invalid_value': {
      const values = issue.values.map((v) => JSON.stringify(v));
      return [{ key, path, expected: values.length === 1 ? (values[0] ?? '') : `one of ${values.join(', ')}`, got }];
    }
    case 'unrecognized_keys': {
      const { expected, known } = expectedKeysAt(path);
      return issue.keys.map((k) => ({ key: formatKey([...path, k]), path: [...path, k], expected, got: unknownKeyGot(k, path, known) }));
    }
    case 'too_small': {
      const min = String(issue.minimum);
      if (issue.origin === 'string') return [{ key, path, expected: issue.minimum === 1 ? 'a non-empty string' : `a string of at least ${min} characters`, got }];
      if (issue.origin === 'array') return [{ key, path, expected: `a list of at least ${min} items`, got }];
      return [{ key, path, expected: `a number ${issue.inclusive === false ? '>' : '>='} ${min}`, got }];
    }
    case 'too_big': {
      const max = String(issue.maximum);
      if (issue.origin === 'string') return [{ key, path, expected: `a string of at most ${max} characters`, got }];
      if (issue.origin === 'array') return [{ key, path, expected: `a list of at most ${max} items`, got }];
      return [{ key, path, expected: `a number ${issue.inclusive === false ? '<' : '<='} ${max}`, got }];
    }
    case 'invalid_format':
      return [{ key, path, expected: `a valid ${issue.format}`, got }];
    case 'custom': {
      const params: Record<string, unknown> = issue.params ?? {};
      const expected = typeof params['expected'] === 'string' ? params['expected'] : issue.message;
      return [{ key, path, expected, got: typeof params['got'] === 'string' ? params['got'] : got }];
    }
    default:
      return [{ key, path, expected: expectedAt(path) ?? issue.message, got }];
  }
}
