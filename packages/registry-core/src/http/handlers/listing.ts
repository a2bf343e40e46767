/** The base route, tags/list, _catalog and the referrers API. */
import { Digest } from '../../digest.js';
import { RegistryError } from '../../errors.js';
import { MediaType } from '../../mediatypes.js';
import type { Handler } from './context.js';

/** GET `/v2/`: the API version check. */
export const base: Handler = async ({ ctx, namespace, request }) => {
  await namespace.ping?.(request);
  ctx.body = {};
  ctx.status = 200;
};

/** GET `/v2/<name>/tags/list?n=&last=`. */
export const listTags: Handler = async ({ ctx, repo, options }) => {
  const all = await repo.tags.list();
  const { n, last } = pagination(ctx.query);
  let tags = last === undefined ? all : all.filter((t) => t > last);
  const more = n !== undefined && tags.length > n;
  if (n !== undefined) tags = tags.slice(0, n);
  if (more && tags.length > 0) {
    ctx.set('Link', `<${options.prefix}/v2/${repo.name}/tags/list?n=${n}&last=${encodeURIComponent(tags[tags.length - 1] as string)}>; rel="next"`);
  }
  ctx.body = { name: repo.name, tags };
};

/** GET `/v2/_catalog?n=&last=`. */
export const catalog: Handler = async ({ ctx, namespace, options }) => {
  const { n, last } = pagination(ctx.query);
  const limit = n ?? options.catalogMaxEntries;
  // One extra entry tells whether there is a next page.
  const names = await namespace.catalog(limit + 1, last);
  const page = names.slice(0, limit);
  if (names.length > limit && page.length > 0) {
    ctx.set('Link', `<${options.prefix}/v2/_catalog?n=${limit}&last=${encodeURIComponent(page[page.length - 1] as string)}>; rel="next"`);
  }
  ctx.body = { repositories: page };
};

/** GET `/v2/<name>/referrers/<digest>?artifactType=`. */
export const referrers: Handler = async ({ ctx, params, repo }) => {
  const digest = Digest.parse(params.digest ?? '');
  const artifactType = typeof ctx.query.artifactType === 'string' ? ctx.query.artifactType : undefined;
  const manifests = await repo.manifests.referrers(digest, artifactType);
  if (artifactType !== undefined) ctx.set('OCI-Filters-Applied', 'artifactType');
  ctx.body = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests });
  ctx.type = MediaType.OciIndex;
};

function pagination(query: Record<string, string | string[] | undefined>): { n?: number; last?: string } {
  const nParam = Array.isArray(query.n) ? query.n[0] : query.n;
  const lastParam = Array.isArray(query.last) ? query.last[0] : query.last;
  let n: number | undefined;
  if (nParam !== undefined && nParam !== '') {
    if (!/^\d+$/.test(nParam) || Number(nParam) > 100000) {
      throw new RegistryError('PAGINATION_NUMBER_INVALID', `n must be an integer from 0 to 100000, got ${JSON.stringify(nParam.slice(0, 20))}`);
    }
    n = Number(nParam);
  }
  const out: { n?: number; last?: string } = {};
  if (n !== undefined) out.n = n;
  if (lastParam !== undefined && lastParam !== '') out.last = lastParam;
  return out;
}
