/** Reading the JSON bodies of `/api/v0` requests: bounded, typed by `Content-Type`, parsed strictly. */
import type { IncomingMessage } from 'node:http';
import { ApiError, type ApiErrorCode } from './errors.js';

/** The largest body accepted: the largest valid body is a few hundred bytes. */
export const API_BODY_LIMIT = 64 * 1024;

/** A JSON object body, before its fields are checked. */
export type JsonObject = Readonly<Record<string, unknown>>;

/**
 * True when `contentType` is absent or JSON (`application/json`, or any `+json` type). Anything else is
 * refused: a browser may post `text/plain` or a form to another origin without a preflight, and with
 * remembered Basic credentials that would be a cross-site write; a JSON type forces the preflight.
 */
export function isJsonContentType(contentType: string | undefined): boolean {
  if (contentType === undefined || contentType.trim() === '') return true;
  const mediaType = contentType.split(';', 1)[0]?.trim().toLowerCase() ?? '';
  return mediaType === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(mediaType);
}

/** The error for a too large body; the connection is closed after it, rather than reading the rest. */
function tooLarge(limit: number, size?: number): ApiError {
  const what = size === undefined ? 'the body' : `the body of ${size} bytes`;
  return new ApiError('REQUEST_TOO_LARGE', `${what} exceeds the limit of ${limit} bytes`, { headers: { Connection: 'close' } });
}

/**
 * Reads the whole body of at most `limit` bytes. Listeners rather than an async iterator, because leaving
 * a `for await` early destroys the request, and with it the socket the 413 must be written to.
 */
function collect(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > limit) {
        cleanup();
        req.resume(); // discard the rest until the connection closes
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks, total));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

/**
 * Reads a request body that must be one JSON object.
 * @param invalid the endpoint's code for a body that is JSON but not an object.
 * @throws ApiError UNSUPPORTED_MEDIA_TYPE (415), REQUEST_TOO_LARGE (413), INVALID_JSON (400) for a missing
 *   or malformed body, `invalid` (400) for a JSON value that is not an object.
 */
export async function readJsonObject(req: IncomingMessage, invalid: ApiErrorCode, limit: number = API_BODY_LIMIT): Promise<JsonObject> {
  const contentType = req.headers['content-type'];
  if (!isJsonContentType(contentType)) {
    req.resume();
    throw new ApiError('UNSUPPORTED_MEDIA_TYPE', `the body must be application/json, not ${contentType ?? ''}`.slice(0, 200));
  }
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw tooLarge(limit, Number(declared));

  const bytes = await collect(req, limit);
  if (bytes.length === 0) throw new ApiError('INVALID_JSON', 'a JSON body is required');
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new ApiError('INVALID_JSON', `malformed JSON body: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ApiError(invalid, 'the body must be a JSON object');
  return value as JsonObject;
}

/**
 * Refuses fields other than `allowed`: a misspelt field (`hostname`) must not be a silent no-op.
 * @throws ApiError `invalid` naming the first unknown field.
 */
export function onlyFields(body: JsonObject, allowed: readonly string[], invalid: ApiErrorCode): void {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) throw new ApiError(invalid, `unknown field ${JSON.stringify(key.slice(0, 100))}; expected ${allowed.join(', ')}`);
  }
}
