/**
 * The HTTP kit's error mapper: the one place where a thrown error becomes an error response, for every app
 * built on the kit (the `/v2/` API, the routes outside it, the server's `/api/v0`), and where failures are
 * logged.
 */
import type Koa from 'koa';
import type { Logger } from 'pino';
import { CodedError, errorEnvelope, isClientFault, RegistryError } from '../../errors.js';
import { emptyResponse } from '../respond.js';

/**
 * Maps any thrown value to a coded error: a {@link CodedError} as it is (a RegistryError, the server's
 * ApiError), a full disk to `STORAGE_FULL`, a missing path to `NOT_FOUND`, anything else to `UNKNOWN` (500,
 * details in the log, never in the response).
 */
export function toCodedError(err: unknown): CodedError {
  if (err instanceof CodedError) return err;
  if (isDiskFull(err)) return diskFullError();
  if ((err as { code?: string } | undefined)?.code === 'PATH_NOT_FOUND') return new RegistryError('NOT_FOUND', 'not found');
  return new RegistryError('UNKNOWN', 'internal error; see the registry log');
}

/** True when `err` is the file system saying the disk is full (or the quota is spent). */
export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** The answer to a write the disk had no room for: 507 `STORAGE_FULL`. */
export function diskFullError(): RegistryError {
  return new RegistryError('STORAGE_FULL', "insufficient storage: this node's disk is full");
}

/**
 * Answers whatever the rest of the app throws with the envelope `{"errors":[...]}` and the status its code
 * fixes, whichever table the code is from (HEAD: the status and headers only), adds the error's headers
 * (`WWW-Authenticate`, `Allow`), and drains what the client sent so its connection can be reused. Logging:
 * expected 5xx (a coded error: an upstream down) and a client that went away are one warning line; only
 * unexpected errors carry a stack; 4xx are the access log's.
 */
export function errorMapper(logger: Logger): Koa.Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      const error = toCodedError(err);
      const reqId = ctx.state.reqId as string | undefined;
      if (isClientFault(err)) logger.warn({ reqId, code: (err as { code?: string }).code, reason: (err as Error).message }, 'request failed: the client went away or sent a malformed body');
      else if (err instanceof CodedError && error.status >= 500) logger.warn({ reqId, code: error.code, reason: error.message }, 'request failed');
      else if (error.status >= 500) logger.error({ err, reqId }, 'request failed');
      if (!ctx.req.readableEnded) ctx.req.resume();
      if (ctx.method === 'HEAD') emptyResponse(ctx, error.status);
      else {
        ctx.body = errorEnvelope(error);
        ctx.status = error.status;
      }
      for (const [name, value] of Object.entries(error.headers)) ctx.set(name, value);
    }
  };
}

/**
 * Logs errors that escape Koa's own handling (a body stream that fails after the headers went out): a
 * client that went away is a warning, the rest an error with its stack. Register with `app.on('error', …)`.
 */
export function onResponseError(logger: Logger): (err: Error & { status?: number }, ctx?: Koa.Context) => void {
  return (err, ctx) => {
    if (err.status !== undefined && err.status < 500) return;
    const reqId = ctx?.state.reqId as string | undefined;
    if (isClientFault(err)) logger.warn({ reqId, code: (err as { code?: string }).code, reason: err.message }, 'response failed: the client went away or sent a malformed body');
    else logger.error({ err, reqId }, 'response failed');
  };
}
