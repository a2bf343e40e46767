/**
 * Registry errors in two layers: {@link RegistryError} is the typed domain error that code throws, and
 * {@link ERROR_CODES} is the one table that maps each code to its HTTP status and default message, used to
 * build the OCI `{"errors":[...]}` envelope.
 */

/** One row of the error table: HTTP status and the default human-readable message. */
export interface ErrorCodeDescriptor {
  readonly status: number;
  readonly message: string;
  readonly description: string;
}

/**
 * Every error code the registry API returns. The first group is the OCI Distribution Spec v1.1 table; the
 * rest are distribution's extensions that clients already understand.
 */
export const ERROR_CODES = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry', description: 'The blob is not known to the registry in this repository.' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid', description: 'The upload failed; the client may restart it.' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry', description: 'The upload session is unknown, finished or cancelled.' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content', description: 'The digest is malformed, or does not match the content.' },
  MANIFEST_BLOB_UNKNOWN: { status: 400, message: 'manifest references a manifest or blob unknown to registry', description: 'A blob or manifest that the manifest references is not in the repository.' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid', description: 'The manifest failed validation: bad JSON, unknown media type, or a missing field.' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry', description: 'The manifest named by tag or digest is not in the repository.' },
  NAME_INVALID: { status: 400, message: 'invalid repository name', description: 'The repository name does not match the name grammar.' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry', description: 'The repository is not known to the registry.' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length', description: 'The content length does not match the declared size, or exceeds a limit.' },
  UNAUTHORIZED: { status: 401, message: 'authentication required', description: 'The client must authenticate.' },
  DENIED: { status: 403, message: 'requested access to the resource is denied', description: 'The client is authenticated but may not perform the operation.' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported', description: 'The method or operation is not supported here.' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests', description: 'The client exceeded a rate limit.' },
  // distribution extensions
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI', description: 'The tag is malformed.' },
  RANGE_INVALID: { status: 416, message: 'invalid content range', description: 'The range is malformed, out of order or beyond the content.' },
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested', description: 'The `n` query parameter is not a non-negative integer.' },
  REQUEST_INVALID: { status: 400, message: 'malformed request', description: 'A request that cannot be read: a target that is not a path (absolute-form `http://host/...` or asterisk-form `*`: a registry is not a proxy), or a token request without what the token endpoint needs.' },
  NOT_FOUND: { status: 404, message: 'not found', description: 'The path is not part of the registry API.' },
  UNAVAILABLE: { status: 503, message: 'service unavailable', description: 'The registry is unavailable.' },
  // Cascade's codes: each fixes its status, so no thrower overrides one
  UPSTREAM_FAILED: { status: 502, message: 'upstream failed', description: "An upstream (the origin, an upstream cache, a mirror's remote or its token service) could not be reached, failed, or sent content that does not match its digest; the message names it." },
  STORAGE_FULL: { status: 507, message: 'insufficient storage', description: "This node's disk is full (or over quota): nothing was stored." },
  REQUEST_LOOP: { status: 508, message: 'request loop', description: 'A mirror received a request it had sent itself: it is, directly or through other mirrors, its own remote.' },
  UNKNOWN: { status: 500, message: 'unknown error', description: 'An internal error; details are in the server log.' },
} as const satisfies Record<string, ErrorCodeDescriptor>;

/** An error code of the table. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** The body of one entry of the OCI error envelope. */
export interface ErrorEntry<C extends string = ErrorCode> {
  code: C;
  message: string;
  detail?: unknown;
}

/**
 * An error whose code, a row of a table of {@link ErrorCodeDescriptor}s, fixes its HTTP status and default
 * message: the one mechanism with which the registry API ({@link ERROR_CODES}) and the server's `/api/v0`
 * (its `API_ERROR_CODES`) declare their errors, and which the error mappers answer with the envelope
 * `{"errors":[{"code","message","detail"}]}`. `headers` are added to the response (`WWW-Authenticate`, `Allow`).
 */
export class CodedError<C extends string = string> extends Error {
  readonly code: C;
  readonly status: number;
  readonly detail: unknown;
  readonly headers: Record<string, string>;

  constructor(table: Readonly<Record<C, ErrorCodeDescriptor>>, code: C, message?: string, options: { detail?: unknown; status?: number; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(message ?? table[code].message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status ?? table[code].status;
    this.detail = options.detail;
    this.headers = options.headers ?? {};
  }

  /** The entry of this error in the envelope. */
  toEntry(): ErrorEntry<C> {
    const entry: ErrorEntry<C> = { code: this.code, message: this.message };
    if (this.detail !== undefined) entry.detail = this.detail;
    return entry;
  }
}

/**
 * A domain error with an OCI error code: its status is the code's row in {@link ERROR_CODES}. The one status
 * still given by a thrower is the spec's 413 for `SIZE_INVALID` (a manifest or body over its limit).
 */
export class RegistryError extends CodedError<ErrorCode> {
  constructor(code: ErrorCode, message?: string, options: { detail?: unknown; status?: number; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(ERROR_CODES, code, message, options);
    this.name = 'RegistryError';
  }
}

/** Builds the error envelope `{"errors":[...]}` (OCI's, which `/api/v0` answers too) for one or more errors. */
export function errorEnvelope<C extends string>(...errors: CodedError<C>[]): { errors: ErrorEntry<C>[] } {
  return { errors: errors.map((e) => e.toEntry()) };
}

/** True when `err` is a {@link RegistryError}, optionally with the given code. */
export function isRegistryError(err: unknown, code?: ErrorCode): err is RegistryError {
  return err instanceof RegistryError && (code === undefined || err.code === code);
}

/** System error codes of a peer that went away or broke the protocol, not of this node. */
const CLIENT_FAULT_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'ABORT_ERR']);

/**
 * True when `err` is the client's doing, not this node's: a connection it closed or reset, a request it
 * aborted, or a body Node's HTTP parser refused (`HPE_*`: bad chunked framing, a lying Content-Length).
 * Such errors are logged as one warning line without a stack: they are not bugs to look for.
 */
export function isClientFault(err: unknown): boolean {
  const e = err as { code?: unknown; name?: unknown } | undefined;
  const code = typeof e?.code === 'string' ? e.code : '';
  return code.startsWith('HPE_') || CLIENT_FAULT_CODES.has(code) || e?.name === 'AbortError';
}
