/**
 * The HTTP kit's error mapper: the one place where a thrown error becomes an OCI error response, for every
 * app built on the kit, and where failures are logged.
 */
import type Koa from 'koa';
import type { Logger } from 'pino';
import { errorEnvelope, isClientFault, RegistryError } from '../../errors.js';
import { emptyResponse } from '../respond.js';

/**
 * Maps any thrown value to a registry error: a RegistryError as it is, a full disk to `STORAGE_FULL`, a
 * missing path to `NOT_FOUND`, anything else to `UNKNOWN` (500, details in the log, never in the response).
 */
export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  if (isDiskFull(err)) return diskFullError();
  if ((err as { code?: string }).code === 'PATH_NOT_FOUND') return new RegistryError('NOT_FOUND', 'not found');
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
 * Answers whatever the rest of the app throws with the OCI envelope and the status its code fixes (HEAD:
 * the status and headers only), adds the error's headers (`WWW-Authenticate`, `Allow`), and drains what the
 * client sent so its connection can be reused. Logging: expected 5xx (an upstream down) and a client that
 * went away are one warning line; only unexpected errors carry a stack; 4xx are the access log's.
 */
export function errorMapper(logger: Logger): Koa.Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      const registryError = toRegistryError(err);
      const reqId = ctx.state.reqId as string | undefined;
      if (isClientFault(err)) logger.warn({ reqId, code: (err as { code?: string }).code, reason: (err as Error).message }, 'request failed: the client went away or sent a malformed body');
      else if (err instanceof RegistryError && registryError.status >= 500) logger.warn({ reqId, code: registryError.code, reason: registryError.message }, 'request failed');
      else if (registryError.status >= 500) logger.error({ err, reqId }, 'request failed');
      if (!ctx.req.readableEnded) ctx.req.resume();
      if (ctx.method === 'HEAD') emptyResponse(ctx, registryError.status);
      else {
        ctx.body = errorEnvelope(registryError);
        ctx.status = registryError.status;
      }
      for (const [name, value] of Object.entries(registryError.headers)) ctx.set(name, value);
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
