/** What every `/v2/` handler receives. */
import type { Context } from 'koa';
import type { Identity } from '../../auth/authorizer.js';
import type { EventSink, RequestEvents } from '../../notifications/event.js';
import type { Namespace, Repository, RequestContext } from '../../registry.js';
import type { RouteParams } from '../routes.js';
import type { Sendfile } from '../sendfile.js';

/** Options of the API that handlers consult. */
export interface HandlerOptions {
  /** `storage.delete.enabled`: DELETE of blobs and manifests is allowed. */
  readonly deleteEnabled: boolean;
  /** Path prefix (`http.prefix`) for Location headers, without trailing slash. */
  readonly prefix: string;
  /** Largest page of `_catalog` when the client gives no `n`. */
  readonly catalogMaxEntries: number;
  /** Sends whole-file blob bodies with sendfile(2) when set (plain TCP only). */
  readonly sendfile?: Sendfile;
  /** Hears a body that failed after its headers went out. */
  readonly onBodyError?: (err: Error) => void;
  /** Where notification events go (`notifications`); absent without an enabled endpoint. */
  readonly events?: EventSink;
}

/** The request as a handler sees it. */
export interface HandlerContext {
  readonly ctx: Context;
  readonly params: RouteParams;
  readonly namespace: Namespace;
  /** The repository of the route; set for every route with a name. */
  readonly repo: Repository;
  readonly identity: Identity;
  readonly request: RequestContext;
  readonly options: HandlerOptions;
  /** The request's notification events: handlers report what succeeded (a no-op without notifications). */
  readonly events: RequestEvents;
}

/** A handler of one method of one route. */
export type Handler = (h: HandlerContext) => Promise<void>;
