/**
 * What a warm job fetches, on the one registry client: the image at the origin, with the server's service
 * account (a tag or digest to the manifest, an index expanded to its platform manifests, their config and
 * distributable layers), and the cache's `POST /api/v0/warm` for one blob, with a grant for that cache,
 * repository and blob (as a redirected GET carries), whose answer comes once the cache has stored the blob.
 */
import { z } from 'zod';
import { Digest, MANIFEST_MAX_BYTES, readManifest, type ParsedManifest } from '@cascade/registry-core';
import { GRANT_HEADER, MANIFEST_ACCEPT, readBounded, RegistryClient, WARM_PATH, type GrantSigner } from '@cascade/downstream';
import type { OriginClient } from '../gateway/origin.js';
import type { ContentCache } from '../state/repository.js';
import type { BlobWarmed, ResolvedImage, WarmBlob } from './warmer.js';

/** Most platform manifests of an index a job follows. */
const INDEX_MAX_CHILDREN = 256;
/** Largest answer read from a cache's warm route. */
const WARM_ANSWER_MAX_BYTES = 64 * 1024;

/**
 * The blobs a pull of `repository` at `reference` needs, from the origin with the service account: an index
 * is expanded to every platform manifest it lists (one level of nesting is followed), blobs are listed once.
 * @throws Error when the origin refuses or fails, or sends a manifest that does not match its digest.
 */
export async function resolveAtOrigin(origin: OriginClient, repository: string, reference: string, signal: AbortSignal): Promise<ResolvedImage> {
  const authorization = await origin.serviceAuthorization(`repository:${repository}:pull`);
  const get = async (ref: string): Promise<ParsedManifest> => {
    const res = await origin.request({ method: 'GET', path: `/v2/${repository}/manifests/${ref}`, headers: { accept: MANIFEST_ACCEPT, ...(authorization ? { authorization } : {}) }, signal });
    if (res.statusCode !== 200) {
      res.resume();
      throw new Error(`the origin answered ${res.statusCode} for the manifest ${repository}@${ref}`);
    }
    const bytes = await readBounded(res, MANIFEST_MAX_BYTES, `the manifest ${repository}@${ref}`);
    const asked = Digest.tryParse(ref);
    const header = res.headers['docker-content-digest'];
    const digest = asked ?? (typeof header === 'string' ? Digest.tryParse(header) : undefined) ?? Digest.of(bytes, 'sha256');
    if (!Digest.of(bytes, digest.algorithm).equals(digest)) throw new Error(`the origin sent a manifest for ${repository}@${ref} that does not match ${digest.toString()}`);
    const contentType = res.headers['content-type'];
    return readManifest(bytes, digest, typeof contentType === 'string' ? contentType : undefined);
  };
  const top = await get(reference);
  const blobs = new Map<string, WarmBlob>();
  const add = (m: ParsedManifest) => {
    for (const b of m.blobs) blobs.set(b.digest, { digest: b.digest, size: b.size });
  };
  const expand = async (index: ParsedManifest, depth: number) => {
    for (const child of index.manifests.slice(0, INDEX_MAX_CHILDREN)) {
      const m = await get(child.digest);
      if (m.isIndex) {
        if (depth < 1) await expand(m, depth + 1);
      } else add(m);
    }
  };
  if (top.isIndex) await expand(top, 0);
  else add(top);
  return { digest: top.digest.toString(), blobs: [...blobs.values()] };
}

const warmAnswer = z.object({ digest: z.string(), size: z.number().int().nonnegative(), present: z.boolean() });

/** Options of {@link CacheWarmClient}. */
export interface CacheWarmClientOptions {
  readonly signer: GrantSigner;
  /** The lifetime of each grant (the server's `grants.ttl`): each hop checks it when its request starts. */
  readonly grantTtlSeconds: number;
  /** Extra CAs for caches served over https (the server's `origin.cas`). */
  readonly ca?: readonly string[];
  /** How long one blob's warm request may take. */
  readonly timeoutMs: number;
}

/** Asks caches to hold blobs, through their warm route. */
export class CacheWarmClient {
  private readonly clients = new Map<string, RegistryClient>();

  constructor(private readonly options: CacheWarmClientOptions) {}

  /** Resolves once `cache` holds `blob` of `repository`. @throws Error naming the cache and its answer. */
  async warmBlob(cache: ContentCache, repository: string, blob: WarmBlob, signal: AbortSignal): Promise<BlobWarmed> {
    const grant = this.options.signer.sign({ user: '', cache: cache.name, repo: repository, digest: blob.digest, ttlSeconds: this.options.grantTtlSeconds });
    let client = this.clients.get(cache.host);
    if (!client) {
      client = new RegistryClient({ url: cache.host, name: `content cache ${cache.name}`, responseTimeoutMs: this.options.timeoutMs, ...(this.options.ca?.length ? { ca: this.options.ca } : {}) });
      this.clients.set(cache.host, client);
    }
    const query = `repository=${encodeURIComponent(repository)}&digest=${encodeURIComponent(blob.digest)}`;
    const res = await client.request({ method: 'POST', path: `${WARM_PATH}?${query}`, headers: { [GRANT_HEADER]: grant }, signal });
    const body = await readBounded(res, WARM_ANSWER_MAX_BYTES, `the warm answer of content cache ${cache.name}`);
    if (res.statusCode !== 200) throw new Error(`content cache ${cache.name} answered ${res.statusCode}: ${errorText(body)}`);
    let parsed: z.output<typeof warmAnswer>;
    try {
      parsed = warmAnswer.parse(JSON.parse(body.toString('utf8')));
    } catch {
      throw new Error(`content cache ${cache.name} sent a warm answer that is not {digest, size, present}`);
    }
    if (parsed.digest !== blob.digest) throw new Error(`content cache ${cache.name} answered for ${parsed.digest.slice(0, 100)}, not ${blob.digest}`);
    return { present: parsed.present, size: parsed.size };
  }

  /** Closes idle connections. */
  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}

/** The message of an error envelope (or the start of the text), for a job's report. */
function errorText(body: Buffer): string {
  const text = body.toString('utf8');
  try {
    const doc = JSON.parse(text) as { errors?: { code?: unknown; message?: unknown }[] };
    const first = doc.errors?.[0];
    if (first) return `${String(first.code)}: ${String(first.message)}`.slice(0, 300);
  } catch {
    // not an envelope
  }
  return text.slice(0, 300) || '(no body)';
}
