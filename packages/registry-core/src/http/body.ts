/** Reading bounded request bodies. */
import type { IncomingMessage } from 'node:http';
import { RegistryError } from '../errors.js';

/**
 * Reads a whole request body of at most `limit` bytes.
 * @throws RegistryError SIZE_INVALID (413) when the declared or actual length exceeds the limit.
 */
export async function readBody(req: IncomingMessage, limit: number, what: string): Promise<Buffer> {
  const tooLarge = (n: number) => new RegistryError('SIZE_INVALID', `${what} of ${n} bytes exceeds the limit of ${limit} bytes`, { status: 413 });
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    req.resume();
    throw tooLarge(Number(declared));
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > limit) {
      req.resume();
      throw tooLarge(total);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

/** True when the request carries a body (non-zero Content-Length, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  if (len !== undefined) return Number(len) > 0;
  return req.headers['transfer-encoding'] !== undefined;
}
