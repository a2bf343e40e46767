/**
 * The `/v2/` API routes as data: one named descriptor per resource, matched in order. OCI names contain
 * slashes, so names are matched greedily and the resource suffix decides; the name is then checked against
 * the name grammar by the dispatcher.
 */

/** The resources of the distribution API. */
export type RouteName = 'base' | 'catalog' | 'tags' | 'manifest' | 'upload' | 'upload-session' | 'blob' | 'referrers';

/** A route descriptor: the path pattern and the methods its dispatcher serves. */
export interface RouteDescriptor {
  readonly name: RouteName;
  readonly pattern: RegExp;
  readonly methods: readonly string[];
}

/** Path parameters captured by a route. */
export interface RouteParams {
  name?: string;
  reference?: string;
  digest?: string;
  uuid?: string;
}

/** The route table, in match order (uploads before blobs, since `uploads` looks like a digest slot). */
export const ROUTES: readonly RouteDescriptor[] = [
  { name: 'base', pattern: /^\/v2\/?$/, methods: ['GET', 'HEAD'] },
  { name: 'catalog', pattern: /^\/v2\/_catalog$/, methods: ['GET'] },
  { name: 'tags', pattern: /^\/v2\/(?<name>.+)\/tags\/list$/, methods: ['GET'] },
  { name: 'manifest', pattern: /^\/v2\/(?<name>.+)\/manifests\/(?<reference>[^/]+)$/, methods: ['GET', 'HEAD', 'PUT', 'DELETE'] },
  { name: 'upload', pattern: /^\/v2\/(?<name>.+)\/blobs\/uploads\/?$/, methods: ['POST'] },
  { name: 'upload-session', pattern: /^\/v2\/(?<name>.+)\/blobs\/uploads\/(?<uuid>[^/]+)$/, methods: ['GET', 'PATCH', 'PUT', 'DELETE'] },
  { name: 'blob', pattern: /^\/v2\/(?<name>.+)\/blobs\/(?<digest>[^/]+)$/, methods: ['GET', 'HEAD', 'DELETE'] },
  { name: 'referrers', pattern: /^\/v2\/(?<name>.+)\/referrers\/(?<digest>[^/]+)$/, methods: ['GET'] },
];

/** The route and parameters of a path, or undefined when the path is not part of the API. */
export function matchRoute(path: string): { route: RouteDescriptor; params: RouteParams } | undefined {
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (m) return { route, params: { ...(m.groups ?? {}) } };
  }
  return undefined;
}
