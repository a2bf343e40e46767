/** Small response helpers shared by the handlers. */
import type { Context } from 'koa';

/**
 * Answers `status` with an empty body and `Content-Length: 0`, as distribution does for 201/202. Koa turns
 * a null body into 204, so the body is cleared first and the status set after.
 */
export function emptyResponse(ctx: Context, status: number): void {
  ctx.body = null;
  ctx.status = status;
}
