/** Bounded reads of a registry's small answers (manifests, tokens, key sets, error bodies). */
import type { Readable } from 'node:stream';
import { RegistryError } from '@cascade/registry-core';
import { readLimited } from '../cache.js';

/** A registry's answer larger than the bound it was read with. */
export class BodyTooLargeError extends RegistryError {
  constructor(
    readonly what: string,
    readonly limit: number,
  ) {
    super('UPSTREAM_FAILED', `${what} is larger than ${limit} bytes`);
  }
}

/**
 * The whole of `body`, at most `limit` bytes; `what` names it when it is larger (`the manifest of team/app:v1`).
 * On the cache's `readLimited`, whose only error without a cause is the one for a body past its limit.
 * @throws BodyTooLargeError past `limit` (the body is destroyed).
 * @throws RegistryError UPSTREAM_FAILED, with the stream's error as its cause, when the body was cut or its
 *   framing broken.
 */
export async function readBounded(body: Readable, limit: number, what: string): Promise<Buffer> {
  try {
    return await readLimited(body, limit);
  } catch (err) {
    if (err instanceof RegistryError && err.cause === undefined) throw new BodyTooLargeError(what, limit);
    throw err;
  }
}
