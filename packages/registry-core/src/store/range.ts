/** HTTP byte ranges for blob GET (RFC 9110, single range). */
import { RegistryError } from '../errors.js';
import type { ByteRange } from '../registry.js';

/**
 * Resolves a `Range` header against a blob of `size` bytes. Returns undefined for no range (or a unit
 * other than bytes, or several ranges, which are answered with the whole blob as RFC 9110 allows).
 * @throws RegistryError RANGE_INVALID (416, with `Content-Range: bytes *\/size`) when malformed or unsatisfiable.
 */
export function resolveRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  const value = header.trim();
  if (!value.toLowerCase().startsWith('bytes=')) return undefined;
  const spec = value.slice(6).trim();
  if (spec.includes(',')) return undefined;
  const m = /^(\d*)-(\d*)$/.exec(spec);
  const unsatisfiable = () =>
    new RegistryError('RANGE_INVALID', `range ${JSON.stringify(value.slice(0, 64))} cannot be satisfied for a blob of ${size} bytes`, {
      headers: { 'Content-Range': `bytes */${size}` },
    });
  if (!m || (m[1] === '' && m[2] === '')) throw unsatisfiable();
  const first = m[1] === '' ? undefined : Number(m[1]);
  const last = m[2] === '' ? undefined : Number(m[2]);
  if (first === undefined) {
    // suffix range: the last N bytes
    const n = last as number;
    if (n === 0 || size === 0) throw unsatisfiable();
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  if (first >= size || (last !== undefined && last < first)) throw unsatisfiable();
  return { start: first, end: last === undefined ? size - 1 : Math.min(last, size - 1) };
}
