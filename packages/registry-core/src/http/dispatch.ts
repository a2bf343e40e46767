/** Maps a matched route and method to its handler, after name validation and authorization. */
import type { Context } from 'koa';
import type { Access, Action, Authorizer } from '../auth/authorizer.js';
import { RegistryError } from '../errors.js';
import { validateName } from '../names.js';
import { RequestEvents } from '../notifications/event.js';
import type { Namespace } from '../registry.js';
import { cancelUpload, deleteBlob, getBlob, patchUpload, putUpload, startUpload, uploadStatus } from './handlers/blobs.js';
import type { Handler, HandlerOptions } from './handlers/context.js';
import { base, catalog, listTags, referrers } from './handlers/listing.js';
import { deleteManifest, getManifest, putManifest } from './handlers/manifests.js';
import { clientGone } from './kit/request.js';
import { matchRoute, type RouteName } from './routes.js';

/** One dispatcher per resource: method -> handler and the actions it needs. */
const DISPATCH: Record<RouteName, Record<string, { handler: Handler; actions: Action[] }>> = {
  base: { GET: { handler: base, actions: [] }, HEAD: { handler: base, actions: [] } },
  catalog: { GET: { handler: catalog, actions: [] } },
  tags: { GET: { handler: listTags, actions: ['pull'] } },
  manifest: {
    GET: { handler: getManifest, actions: ['pull'] },
    HEAD: { handler: getManifest, actions: ['pull'] },
    PUT: { handler: putManifest, actions: ['pull', 'push'] },
    DELETE: { handler: deleteManifest, actions: ['delete'] },
  },
  upload: { POST: { handler: startUpload, actions: ['pull', 'push'] } },
  'upload-session': {
    GET: { handler: uploadStatus, actions: ['pull', 'push'] },
    PATCH: { handler: patchUpload, actions: ['pull', 'push'] },
    PUT: { handler: putUpload, actions: ['pull', 'push'] },
    DELETE: { handler: cancelUpload, actions: ['pull', 'push'] },
  },
  blob: {
    GET: { handler: getBlob, actions: ['pull'] },
    HEAD: { handler: getBlob, actions: ['pull'] },
    DELETE: { handler: deleteBlob, actions: ['delete'] },
  },
  referrers: { GET: { handler: referrers, actions: ['pull'] } },
};

/** What the dispatcher needs. */
export interface DispatcherOptions extends HandlerOptions {
  readonly namespace: Namespace;
  readonly authorizer: Authorizer;
}

/** Serves one `/v2/` request: routes, validates the name, authorizes and runs the handler. */
export async function dispatch(ctx: Context, path: string, options: DispatcherOptions): Promise<void> {
  const match = matchRoute(path);
  if (!match) throw new RegistryError('NOT_FOUND', `${path.slice(0, 200)} is not part of the registry API`);
  const { route, params } = match;
  const entry = DISPATCH[route.name][ctx.method];
  if (!entry) {
    throw new RegistryError('UNSUPPORTED', `${ctx.method} is not supported on this resource`, { headers: { Allow: Object.keys(DISPATCH[route.name]).join(', ') } });
  }
  const access: Access[] = [];
  if (route.name === 'catalog') access.push({ type: 'registry', name: 'catalog', actions: ['*'] });
  if (params.name !== undefined) {
    validateName(params.name);
    access.push({ type: 'repository', name: params.name, actions: entry.actions });
    const from = ctx.query.from;
    if (route.name === 'upload' && typeof from === 'string' && typeof ctx.query.mount === 'string') {
      validateName(from);
      access.push({ type: 'repository', name: from, actions: ['pull'] });
    }
  }
  const identity = await options.authorizer.authorize(ctx.headers, access, path, ctx.query);
  ctx.state.user = identity.user;
  const registryHost = registryHostOf(ctx);
  const responseHeaders: Record<string, string> = {};
  const request = {
    ...(identity.user ? { user: identity.user } : {}),
    forward: forwardHeaders(ctx),
    signal: clientGone(ctx),
    method: ctx.method,
    ...(ctx.get('range') ? { range: ctx.get('range') } : {}),
    ...(registryHost ? { registryHost } : {}),
    responseHeaders,
  };
  const events = new RequestEvents(options.events, ctx, params.name ?? '', identity.user, options.prefix);
  await entry.handler({
    ctx,
    params,
    namespace: options.namespace,
    repo: options.namespace.repository(params.name ?? '', request),
    identity,
    request,
    options,
    events,
  });
  // A push, mount or delete is answered once its events are on disk (one group commit, a few ms), so a crash
  // after the answer loses none; a pull's events follow within a few ms and never delay the answer.
  if (ctx.method !== 'GET' && ctx.method !== 'HEAD') await events.durable();
  for (const [name, value] of Object.entries(responseHeaders)) ctx.set(name, value);
}

/** containerd's `?ns=` (a request to a mirror names the registry it stands in for) or sealer's `domain` header. */
function registryHostOf(ctx: Context): string | undefined {
  const ns = ctx.query.ns;
  const value = typeof ns === 'string' && ns !== '' ? ns : ctx.get('domain');
  return value ? value.trim().toLowerCase() : undefined;
}

function forwardHeaders(ctx: Context): Record<string, string> {
  const out: Record<string, string> = {};
  const auth = ctx.get('authorization');
  if (auth) out.authorization = auth;
  const accept = ctx.get('accept');
  if (accept) out.accept = accept;
  // A server grant (cache nodes in `auth: grant` mode) travels upstream with a miss, as a header.
  const grant = typeof ctx.query.grant === 'string' ? ctx.query.grant : ctx.get('x-cascade-grant');
  if (grant) out['x-cascade-grant'] = grant;
  // The mirrors a request went through, to detect a mirror that is (indirectly) its own remote.
  const via = ctx.get('x-cascade-via');
  if (via) out['x-cascade-via'] = via;
  return out;
}
