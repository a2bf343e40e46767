/** Blob reads and deletes, and upload sessions (monolithic, POST+PUT, chunked, mount). */
import { Digest } from '../../digest.js';
import { RegistryError } from '../../errors.js';
import { validateName } from '../../names.js';
import { rangeHeader } from '../../store/blobs.js';
import { hasBody } from '../body.js';
import { canSendfile, respondWithSendfile } from '../sendfile.js';
import { emptyResponse } from '../respond.js';
import type { Handler, HandlerContext } from './context.js';

/**
 * GET and HEAD `/v2/<name>/blobs/<digest>`, with Range: one call to the store, which answers the size and the
 * body together. A body in files goes out with sendfile where the connection allows; otherwise as a stream.
 */
export const getBlob: Handler = async ({ ctx, params, repo, request, options, events }) => {
  const digest = Digest.parse(params.digest ?? '');
  const { size, range, body } = await repo.blobs.serve(digest, request);
  // distribution reports a pull for every blob GET and HEAD it answers (ServeBlob), ranges included.
  events.blob('pull', digest.toString(), size);
  const length = range ? range.end - range.start + 1 : size;
  const sendfile = body?.file && options.sendfile && canSendfile(ctx) ? options.sendfile : undefined;
  // Koa's body setter drops Content-Type and Content-Length, so the body goes first and headers after.
  if (body && !sendfile) {
    const stream = body.stream();
    ctx.res.once('close', () => body.close(ctx.res.writableFinished));
    ctx.body = stream;
  } else if (!body) ctx.body = length === 0 && ctx.method !== 'HEAD' ? Buffer.alloc(0) : null;
  ctx.status = range ? 206 : 200;
  if (range) ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
  ctx.set('Docker-Content-Digest', digest.toString());
  ctx.set('ETag', `"${digest.toString()}"`);
  ctx.set('Accept-Ranges', 'bytes');
  ctx.set('Cache-Control', 'max-age=31536000');
  ctx.type = 'application/octet-stream';
  ctx.length = length;
  if (body?.file && sendfile) return respondWithSendfile(ctx, sendfile, body, body.file, (err) => options.onBodyError?.(err));
  // The status and headers go out now, not with the first byte of the body: a cache filling a miss knows
  // both once its first bytes are on disk, and the client's time to first byte should not wait for more.
  if (body) ctx.flushHeaders();
};

/** DELETE `/v2/<name>/blobs/<digest>`. */
export const deleteBlob: Handler = async ({ ctx, params, repo, options, events }) => {
  requireDelete(options.deleteEnabled);
  const digest = Digest.parse(params.digest ?? '');
  await repo.blobs.delete(digest);
  events.deleted({ digest: digest.toString() });
  emptyResponse(ctx, 202);
};

/** POST `/v2/<name>/blobs/uploads/`: start a session, upload monolithically, or mount. */
export const startUpload: Handler = async (h) => {
  const { ctx, repo } = h;
  const mount = queryValue(ctx.query.mount);
  const from = queryValue(ctx.query.from);
  if (mount !== undefined && from !== undefined) {
    const digest = Digest.parse(mount);
    validateName(from);
    const desc = await repo.blobs.mount(digest, from);
    if (desc) {
      h.events.blob('mount', digest.toString(), desc.size, from);
      return blobCreated(h, digest);
    }
    // Not mountable: fall through to a new session, as the spec says.
  }
  const digestParam = queryValue(ctx.query.digest);
  const upload = await repo.blobs.createUpload();
  if (digestParam !== undefined) {
    const digest = Digest.parse(digestParam);
    try {
      await upload.append(ctx.req);
      const desc = await upload.commit(digest);
      h.events.blob('push', digest.toString(), desc.size);
    } catch (err) {
      await upload.cancel().catch(() => undefined);
      throw err;
    }
    return blobCreated(h, digest);
  }
  uploadAccepted(h, upload.id, upload.size);
};

/** GET `/v2/<name>/blobs/uploads/<uuid>`: upload status. */
export const uploadStatus: Handler = async (h) => {
  const upload = await h.repo.blobs.getUpload(h.params.uuid ?? '');
  uploadAccepted(h, upload.id, upload.size);
  h.ctx.status = 204;
};

/** PATCH `/v2/<name>/blobs/uploads/<uuid>`: append a chunk (Content-Range `start-end` optional). */
export const patchUpload: Handler = async (h) => {
  const upload = await h.repo.blobs.getUpload(h.params.uuid ?? '');
  const start = parseContentRange(h.ctx.get('content-range'));
  try {
    await upload.append(h.ctx.req, start);
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'RANGE_INVALID') {
      h.ctx.set('Location', uploadLocation(h, upload.id));
      h.ctx.set('Docker-Upload-UUID', upload.id);
    }
    throw err;
  }
  uploadAccepted(h, upload.id, upload.size);
};

/** PUT `/v2/<name>/blobs/uploads/<uuid>?digest=`: optional last chunk, then commit. */
export const putUpload: Handler = async (h) => {
  const digestParam = queryValue(h.ctx.query.digest);
  if (digestParam === undefined) throw new RegistryError('DIGEST_INVALID', 'the digest query parameter is required to complete an upload');
  const digest = Digest.parse(digestParam);
  const upload = await h.repo.blobs.getUpload(h.params.uuid ?? '');
  if (hasBody(h.ctx.req)) await upload.append(h.ctx.req, parseContentRange(h.ctx.get('content-range')));
  const desc = await upload.commit(digest);
  h.events.blob('push', digest.toString(), desc.size);
  blobCreated(h, digest);
};

/** DELETE `/v2/<name>/blobs/uploads/<uuid>`: cancel. */
export const cancelUpload: Handler = async (h) => {
  const upload = await h.repo.blobs.getUpload(h.params.uuid ?? '');
  await upload.cancel();
  emptyResponse(h.ctx, 204);
};

function blobCreated({ ctx, repo, options }: HandlerContext, digest: Digest): void {
  emptyResponse(ctx, 201);
  ctx.set('Location', `${options.prefix}/v2/${repo.name}/blobs/${digest.toString()}`);
  ctx.set('Docker-Content-Digest', digest.toString());
}

function uploadAccepted(h: HandlerContext, id: string, size: number): void {
  emptyResponse(h.ctx, 202);
  h.ctx.set('Location', uploadLocation(h, id));
  h.ctx.set('Range', rangeHeader(size));
  h.ctx.set('Docker-Upload-UUID', id);
}

function uploadLocation({ repo, options }: HandlerContext, id: string): string {
  return `${options.prefix}/v2/${repo.name}/blobs/uploads/${id}`;
}

/** The start offset of a `Content-Range: <start>-<end>` (distribution's form; `bytes ` prefix tolerated). */
function parseContentRange(value: string): number | undefined {
  if (!value) return undefined;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(value.trim());
  if (!m || Number(m[2]) < Number(m[1])) {
    throw new RegistryError('RANGE_INVALID', `malformed Content-Range ${JSON.stringify(value.slice(0, 64))}: expected <start>-<end>`);
  }
  return Number(m[1]);
}

/** The first value of a query parameter: Koa gives an array when the parameter is repeated. */
function queryValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Throws 405 UNSUPPORTED unless deletes are enabled. */
export function requireDelete(enabled: boolean): void {
  if (!enabled) throw new RegistryError('UNSUPPORTED', 'deletes are disabled: set storage.delete.enabled to true');
}
