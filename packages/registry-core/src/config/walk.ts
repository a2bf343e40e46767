/**
 * Introspection of the configuration schema, so that the environment overrides, the YAML scalar fix-up and
 * the error messages are all driven by the one schema instead of keeping their own lists of keys.
 * Internal to `config/`.
 */
import { z } from 'zod';

/** A step in a configuration path: a mapping key or a list index. */
export type PathSegment = string | number;

/** What a schema node is, once its optional/default/pipe wrappers are removed. */
export type SchemaNode =
  | { kind: 'object'; keys: readonly string[]; child(key: string): z.ZodType | undefined; catchall: z.ZodType | undefined }
  | { kind: 'record'; value: z.ZodType }
  | { kind: 'array'; element: z.ZodType }
  | { kind: 'leaf'; isString: boolean };

/**
 * Removes the wrappers that do not change the shape of the data (optional, nullable, default, prefault)
 * and looks through pipes: a preprocess pipe shows its target, `schema.transform()` shows its source.
 */
export function unwrap(schema: z.ZodType): z.ZodType {
  let s: z.ZodType = schema;
  for (;;) {
    if (s instanceof z.ZodOptional || s instanceof z.ZodNullable || s instanceof z.ZodDefault || s instanceof z.ZodPrefault) {
      s = s.unwrap() as z.ZodType;
    } else if (s instanceof z.ZodPipe) {
      s = (s.in instanceof z.ZodTransform ? s.out : s.in) as z.ZodType;
    } else {
      return s;
    }
  }
}

/** Classifies a schema node for walking. */
export function nodeOf(schema: z.ZodType): SchemaNode {
  const s = unwrap(schema);
  if (s instanceof z.ZodObject) {
    const shape = s.shape as Record<string, z.ZodType>;
    // A loose object (`z.looseObject`) has an `unknown` catch-all: it also takes keys it does not list.
    const catchall = s.def.catchall instanceof z.ZodNever ? undefined : (s.def.catchall as z.ZodType | undefined);
    return {
      kind: 'object',
      keys: Object.keys(shape),
      child: (key) => (Object.hasOwn(shape, key) ? shape[key] : catchall),
      catchall,
    };
  }
  if (s instanceof z.ZodRecord) return { kind: 'record', value: s.valueType as z.ZodType };
  if (s instanceof z.ZodArray) return { kind: 'array', element: s.element as z.ZodType };
  return { kind: 'leaf', isString: s instanceof z.ZodString };
}

/** The schema at `path` below `root`, or undefined when the path leaves the schema. */
export function schemaAt(root: z.ZodType, path: readonly PathSegment[]): z.ZodType | undefined {
  let s: z.ZodType | undefined = root;
  for (const seg of path) {
    if (s === undefined) return undefined;
    const node = nodeOf(s);
    if (node.kind === 'object') s = typeof seg === 'string' ? node.child(seg) : undefined;
    else if (node.kind === 'record') s = typeof seg === 'string' ? node.value : undefined;
    else if (node.kind === 'array') s = typeof seg === 'number' ? node.element : undefined;
    else return undefined;
  }
  return s;
}

/** The dotted form of a path used in every message: `middleware.registry[0].options.blobttl`. */
export function formatKey(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out;
}
