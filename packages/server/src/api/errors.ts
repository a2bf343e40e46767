import { CodedError, type ErrorCodeDescriptor } from '@cascade/registry-core';

/**
 * The `/api/v0` errors in two layers, as in the registry and with its mechanism ({@link CodedError}):
 * {@link ApiError} is what handlers throw, and {@link API_ERROR_CODES} is the table of codes, statuses and
 * descriptions. The HTTP kit's error mapper answers them with the envelope `{"errors":[{"code","message"}]}`,
 * as it answers the registry's. `docs/server-api.md` documents every row (a test checks).
 */

/** Every error code the `/api/v0` API answers. The DTR codes keep DTR's names. */
export const API_ERROR_CODES = {
  // DTR's codes
  NO_SUCH_CONTENT_CACHE: { status: 404, message: 'no such content cache', description: 'No content cache has this id.' },
  INVALID_CONTENT_CACHE: { status: 400, message: 'invalid content cache', description: 'The name or host is missing or malformed, or the body has an unknown field.' },
  INVALID_USER_SETTINGS: { status: 400, message: 'invalid user settings', description: 'contentCacheUUID is not a string or null, or names no content cache.' },
  UNAUTHORIZED: { status: 401, message: 'authentication required', description: 'The request has no credentials, or the origin registry refused them.' },
  DENIED: { status: 403, message: 'requested access to the resource is denied', description: 'Authenticated, but not an admin (writes), nor the user whose settings these are.' },
  // Cascade's additions
  CONTENT_CACHE_NAME_CONFLICT: { status: 409, message: 'content cache name already in use', description: 'Another content cache has this name (names are compared case-insensitively).' },
  INVALID_CONTENT_CACHE_DEFAULT: { status: 400, message: 'invalid default content cache', description: 'contentCacheUUID is missing, not a string or null, or names no content cache.' },
  INVALID_CONTENT_CACHE_RULE: { status: 400, message: 'invalid content cache rule', description: 'The namespace or CIDR is malformed, or contentCacheUUID is missing or names no content cache.' },
  NO_SUCH_CONTENT_CACHE_RULE: { status: 404, message: 'no such content cache rule', description: 'No rule exists for this namespace or network.' },
  INVALID_WARM_RULE: { status: 400, message: 'invalid warm rule', description: 'The namespace is malformed, or contentCacheUUIDs is missing, empty, or names a content cache that does not exist.' },
  NO_SUCH_WARM_RULE: { status: 404, message: 'no such warm rule', description: 'No warm rule exists for this namespace.' },
  INVALID_WARM_REQUEST: { status: 400, message: 'invalid warm request', description: 'The repository or reference of a manual warm is missing or malformed.' },
  NO_SUCH_WARM_JOB: { status: 404, message: 'no such warm job', description: 'No warm job with this id is kept (jobs are kept in memory, the last `warm.history` finished ones).' },
  INVALID_EVENTS: { status: 400, message: 'invalid events envelope', description: 'The body is not a notification envelope `{"events": [...]}` as distribution sends it.' },
  INVALID_JSON: { status: 400, message: 'malformed JSON body', description: 'The body is not valid JSON, or a JSON body is required and missing.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'body must be application/json', description: 'A body was sent with a Content-Type other than application/json.' },
  REQUEST_TOO_LARGE: { status: 413, message: 'request body too large', description: 'The body is larger than 64 KiB (1 MiB for `/api/v0/events`).' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'method not allowed', description: 'The path exists but not with this method; `Allow` lists the methods it has.' },
  NOT_FOUND: { status: 404, message: 'not found', description: 'The path is not part of the /api/v0 API.' },
  UNKNOWN: { status: 500, message: 'internal error', description: 'An unexpected failure; details are in the server log.' },
} as const satisfies Record<string, ErrorCodeDescriptor>;

/** A code of {@link API_ERROR_CODES}. */
export type ApiErrorCode = keyof typeof API_ERROR_CODES;

/**
 * An API error: the status comes from the code's row; `headers` are added to the response (`Allow` on a
 * 405, `WWW-Authenticate` on a 401). The same mechanism as the registry API's errors ({@link CodedError}).
 */
export class ApiError extends CodedError<ApiErrorCode> {
  constructor(code: ApiErrorCode, message?: string, options: { headers?: Record<string, string>; cause?: unknown } = {}) {
    super(API_ERROR_CODES, code, message, options);
    this.name = 'ApiError';
  }
}
