/** Manifests by tag or digest: GET/HEAD with content negotiation, PUT, DELETE. */
import { Digest } from '../../digest.js';
import { isRegistryError, RegistryError } from '../../errors.js';
import { MANIFEST_MAX_BYTES, parseManifest, selectPlatform, type ParsedManifest } from '../../manifest.js';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES } from '../../mediatypes.js';
import { parseReference, type Reference } from '../../names.js';
import { readBody } from '../body.js';
import { requireDelete } from './blobs.js';
import { emptyResponse } from '../respond.js';
import type { Handler } from './context.js';

/**
 * The reference of a request for a manifest that must exist (GET, HEAD, DELETE). A reference that is neither
 * a valid tag nor a valid digest names no manifest: 404 MANIFEST_UNKNOWN, as the OCI distribution spec asks
 * of a manifest that does not exist (its conformance suite GETs `.INVALID_MANIFEST_NAME`), not 400.
 * @throws RegistryError MANIFEST_UNKNOWN
 */
function existingReference(value: string): Reference {
  try {
    return parseReference(value);
  } catch (err) {
    if (isRegistryError(err, 'TAG_INVALID') || isRegistryError(err, 'DIGEST_INVALID')) {
      throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown: the reference is neither a valid tag nor a valid digest');
    }
    throw err;
  }
}

/** GET and HEAD `/v2/<name>/manifests/<reference>`. */
export const getManifest: Handler = async ({ ctx, params, repo, events }) => {
  const ref = existingReference(params.reference ?? '');
  const digest = ref.kind === 'tag' ? await repo.tags.resolve(ref.tag) : ref.digest;
  let manifest = await repo.manifests.get(digest);
  // As distribution's manifest listener: every manifest read (GET or HEAD) is a pull, with the tag asked for.
  events.manifest('pull', manifest, ref.kind === 'tag' ? ref.tag : undefined);
  const accepted = parseAccept(ctx.get('accept'));
  if (!isAcceptable(manifest.mediaType, accepted)) {
    // Old clients that cannot read manifest lists get the linux/amd64 image instead, as from distribution.
    const child = ref.kind === 'tag' && INDEX_MEDIA_TYPES.has(manifest.mediaType) ? selectPlatform(manifest) : undefined;
    const childManifest = child ? await repo.manifests.get(Digest.parse(child.digest)).catch(() => undefined) : undefined;
    if (!childManifest || !isAcceptable(childManifest.mediaType, accepted)) {
      throw new RegistryError('MANIFEST_UNKNOWN', `manifest is of type ${manifest.mediaType}, which the Accept header does not include`, {
        detail: { mediaType: manifest.mediaType },
      });
    }
    manifest = childManifest;
    events.manifest('pull', manifest);
  }
  sendManifest(ctx, manifest);
};

function sendManifest(ctx: Parameters<Handler>[0]['ctx'], manifest: ParsedManifest): void {
  if (ctx.method === 'HEAD') emptyResponse(ctx, 200);
  else {
    ctx.body = manifest.bytes;
    ctx.status = 200;
  }
  ctx.type = manifest.mediaType;
  ctx.length = manifest.bytes.length;
  ctx.set('Docker-Content-Digest', manifest.digest.toString());
  ctx.set('ETag', `"${manifest.digest.toString()}"`);
}

/** PUT `/v2/<name>/manifests/<reference>`. */
export const putManifest: Handler = async ({ ctx, params, repo, options, events }) => {
  const ref = parseReference(params.reference ?? '');
  const bytes = await readBody(ctx.req, MANIFEST_MAX_BYTES, 'manifest');
  const manifest = parseManifest(bytes, ctx.get('content-type') || undefined);
  if (ref.kind === 'digest') {
    const actual = Digest.of(bytes, ref.digest.algorithm);
    if (!actual.equals(ref.digest)) {
      throw new RegistryError('DIGEST_INVALID', `manifest content has digest ${actual.toString()}, not ${ref.digest.toString()}`);
    }
  }
  await repo.manifests.put(manifest);
  if (ref.kind === 'tag') await repo.tags.tag(ref.tag, manifest.digest);
  events.manifest('push', manifest, ref.kind === 'tag' ? ref.tag : undefined);
  const digest = ref.kind === 'digest' ? ref.digest : manifest.digest;
  emptyResponse(ctx, 201);
  ctx.set('Location', `${options.prefix}/v2/${repo.name}/manifests/${digest.toString()}`);
  ctx.set('Docker-Content-Digest', digest.toString());
  if (manifest.subject) ctx.set('OCI-Subject', manifest.subject.digest);
};

/** DELETE `/v2/<name>/manifests/<reference>`: a digest deletes the manifest and its tags, a tag only the tag. */
export const deleteManifest: Handler = async ({ ctx, params, repo, options, events }) => {
  requireDelete(options.deleteEnabled);
  const ref = existingReference(params.reference ?? '');
  if (ref.kind === 'tag') {
    await repo.tags.untag(ref.tag);
    events.deleted({ tag: ref.tag });
  } else {
    // distribution 2.8: the manifest's delete event, then one for each tag that pointed at it.
    const untagged = await repo.manifests.delete(ref.digest);
    events.deleted({ digest: ref.digest.toString() });
    for (const tag of untagged) events.deleted({ tag });
  }
  emptyResponse(ctx, 202);
};

/** The media types of an Accept header (parameters and q-values are ignored; `*\/*` is kept). */
export function parseAccept(header: string): string[] {
  return header
    .split(',')
    .map((part) => part.split(';')[0]?.trim().toLowerCase() ?? '')
    .filter((t) => t.length > 0);
}

/**
 * A manifest type is acceptable when the client accepts it, accepts anything, or names no manifest type
 * at all (curl's default, or `application/json`).
 */
function isAcceptable(mediaType: string, accepted: string[]): boolean {
  if (accepted.length === 0 || accepted.includes('*/*') || accepted.includes(mediaType)) return true;
  return !accepted.some((t) => MANIFEST_MEDIA_TYPES.has(t));
}
