/**
 * The building blocks of the option schemas (the cache's, `options.ts`, and the mirror's,
 * `mirror/options.ts`), so that their messages read as the registry config's: `<key>: expected <what>, got
 * <what>`, naming the exact key. A value's schema is a {@link leaf} that parses it or says what was expected;
 * issues carry their whole message, and {@link optionMessages} puts the key in front of each. The CA files the
 * options name are read here once, into the node's `CaStore`.
 */
import { z } from 'zod';
import { describeValue } from '@cascade/registry-core';
import { CaStore } from './ca-trust.js';

/** How the CA files the options name are checked, by the cache's and the mirror's options parsers. */
export interface CaFileSettings {
  /** Read and check the CA files (default true); false only parses the options. */
  readonly checkCaFiles?: boolean;
  /** The time CA validity is checked against (default: now). */
  readonly now?: Date;
  /**
   * Where the certificates of the files read go (default: a store of this parse's own), so that the node
   * built from the options takes them from there instead of reading the files again.
   */
  readonly cas?: CaStore;
}

/** A key's path below the options: mapping keys and list indexes. */
export type KeyPath = ReadonlyArray<string | number>;

/** The context zod gives a refinement or a transform, where issues are added. */
export type OptionCtx = z.core.$RefinementCtx;

/** Refinements that must run even when sibling keys failed, so that every issue is reported at once. */
export const ALWAYS = { when: () => true } as const;

/** What an issue says besides its message: how it is placed among the others. */
export interface IssueParams {
  /** A key that is not one of the mapping's: reported before the mapping's own keys. */
  readonly unknownKey?: true;
  /** The value is in the wrong place: nothing else is said about it (or below it). */
  readonly supersedes?: true;
  /** The issue is on a key outside the options (`storage.delete.enabled`), written out. */
  readonly key?: string;
  /** Reported after the options' own keys: checks across keys, then the CA files. */
  readonly after?: 'keys' | 'files';
}

/** A value that was refused: what was expected, and what was got when the value's description will not do. */
export class Refusal {
  constructor(
    readonly expected: string,
    readonly got?: string,
  ) {}
}

/**
 * Reports `value` as `expected <expected>, got <got>` (by default the value described, secrets and URL
 * credentials masked), at `path` below the value being parsed.
 */
export function fail(ctx: OptionCtx, value: unknown, expected: string, got: string = describeValue(value), options: IssueParams & { path?: KeyPath } = {}): never {
  const { path = [], ...params } = options;
  ctx.addIssue({ code: 'custom', input: value, path: [...path], message: `expected ${expected}, got ${got}`, params });
  return z.NEVER;
}

/** A value's schema from a function that parses it or says why not. */
export function leaf<T>(parse: (value: unknown) => T | Refusal) {
  return z.unknown().transform((value, ctx): T => {
    const out = parse(value);
    return out instanceof Refusal ? fail(ctx, value, out.expected, out.got) : out;
  });
}

/**
 * A list whose items `item` parses, each refused item an issue on its index; `expected` says what the value
 * should be when it is not a list. `check` looks at the items as written, after their own checks.
 */
export function listOf<T>(item: z.ZodType<T>, expected: string, check?: (items: readonly unknown[], ctx: OptionCtx) => void) {
  return z.unknown().transform((value, ctx): T[] => {
    if (!Array.isArray(value)) return fail(ctx, value, expected);
    const items = value.map((v, i) => parseAt(item, v, [i], ctx));
    check?.(value, ctx);
    return items.every((v) => v !== undefined) ? (items as T[]) : z.NEVER;
  });
}

/** A key that may be absent; written without a value (`key:`, null) it is absent, as the loader treats it. */
export function optional<T extends z.ZodType>(schema: T) {
  return z.preprocess((v) => (v === null ? undefined : v), schema.optional());
}

/** A key with a default, written as a user would write it (the default is parsed like a value). */
export function withDefault<T extends z.ZodType>(schema: T, value: z.input<T>) {
  return z.preprocess((v) => (v === null ? undefined : v), schema.prefault(value));
}

/** Parses a part of the value being parsed with its own schema, its issues reported at `path` below the value. */
export function parseAt<T>(schema: z.ZodType<T>, value: unknown, path: KeyPath, ctx: OptionCtx): T | undefined {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  for (const issue of result.error.issues) ctx.addIssue({ ...issue, path: [...path, ...issue.path] } as z.core.$ZodRawIssue);
  return undefined;
}

/** `base` and a path below it, as every message names keys: `middleware.registry[0].options.upstreams[0].cas[1]`. */
export function keyAt(base: string, path: readonly PropertyKey[]): string {
  return path.reduce<string>((k, s) => (typeof s === 'number' ? `${k}[${s}]` : k === '' ? String(s) : `${k}.${String(s)}`), base);
}

/**
 * The messages of a failed parse, `<key>: <message>`, the key from `base` and the issue's path. With `order`
 * (the keys of a mapping in the order they are reported), they come by key: unknown keys first, a key's own
 * message after those of its items, the checks across keys and then the CA files last; otherwise as found.
 * An issue that `supersedes` hides the others on its key.
 */
export function optionMessages(issues: readonly z.core.$ZodIssue[], base: string, order?: readonly string[]): string[] {
  const params = (issue: z.core.$ZodIssue): IssueParams => (issue.code === 'custom' ? (issue.params ?? {}) : {});
  const superseding = issues.filter((i) => params(i).supersedes).map((i) => keyAt(base, i.path));
  const shown = issues.filter((i) => params(i).supersedes || !superseding.includes(keyAt(base, i.path)));
  const ranked = order === undefined ? shown : [...shown].sort((a, b) => compareIssues(a.path, params(a), b.path, params(b), order));
  return ranked.map((i) => `${params(i).key ?? keyAt(base, i.path)}: ${i.message}`);
}

const AFTER_RANK = { keys: 1, files: 2 } as const;

function compareIssues(a: readonly PropertyKey[], pa: IssueParams, b: readonly PropertyKey[], pb: IssueParams, order: readonly string[]): number {
  const after = (pa.after ? AFTER_RANK[pa.after] : 0) - (pb.after ? AFTER_RANK[pb.after] : 0);
  if (after !== 0) return after;
  const rank = (path: readonly PropertyKey[], i: number, p: IssueParams) => (p.unknownKey && i === path.length - 1 ? -1 : order.indexOf(String(path[i])));
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    // Items of a list keep the order they were found in (each item's checks, then the list's).
    if (typeof a[i] === 'number' && typeof b[i] === 'number') continue;
    const d = rank(a, i, pa) - rank(b, i, pb);
    if (d !== 0) return d;
  }
  return b.length - a.length;
}

/** Reads the CA files of one list into the settings' store, each bad file an issue on its item (`<file>: <reason>`). */
export function readCaFiles(ctx: OptionCtx, path: KeyPath, files: readonly string[], settings: CaFileSettings): void {
  for (const { index, error } of (settings.cas ?? new CaStore()).read(files, settings.now)) {
    ctx.addIssue({ code: 'custom', input: files[index], path: [...path, index], message: error.message, params: { after: 'files' } satisfies IssueParams });
  }
}
