/**
 * Manifest parsing and validation for Docker schema 2 manifests and manifest lists, and OCI image
 * manifests and indexes (including OCI 1.1 `subject` and `artifactType`).
 */
import { Digest } from './digest.js';
import { RegistryError } from './errors.js';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MediaType, NON_DISTRIBUTABLE_LAYER_TYPES } from './mediatypes.js';

/** Largest manifest accepted, as in distribution. */
export const MANIFEST_MAX_BYTES = 4 * 1024 * 1024;

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: Platform;
}

/** The platform of an index entry. */
export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

/** A parsed, validated manifest together with its exact bytes. */
export interface ParsedManifest {
  /** The exact bytes as pushed: the digest is always computed over these. */
  readonly bytes: Buffer;
  readonly digest: Digest;
  readonly mediaType: string;
  /** True for manifest lists and OCI indexes. */
  readonly isIndex: boolean;
  /** Blobs the manifest needs in the repository (config and distributable layers). */
  readonly blobs: Descriptor[];
  /** Child manifests (indexes only). */
  readonly manifests: Descriptor[];
  readonly subject?: Descriptor;
  /** `artifactType`, or for image manifests without one, the config media type (for the referrers API). */
  readonly artifactType?: string;
  readonly annotations?: Record<string, string>;
}

/**
 * Parses and validates manifest bytes. `contentType` is the request's Content-Type; when the manifest has
 * a `mediaType` field the two must agree.
 * @throws RegistryError MANIFEST_INVALID (with the reason), SIZE_INVALID when too large.
 */
export function parseManifest(bytes: Buffer, contentType: string | undefined): ParsedManifest {
  if (bytes.length > MANIFEST_MAX_BYTES) {
    throw new RegistryError('SIZE_INVALID', `manifest is ${bytes.length} bytes, at most ${MANIFEST_MAX_BYTES} are accepted`, { status: 413 });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new RegistryError('MANIFEST_INVALID', `manifest is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) throw invalid('manifest must be a JSON object');
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  const requested = contentType?.split(';')[0]?.trim().toLowerCase() || undefined;
  if (declared === MediaType.DockerManifestSchema1 || declared === MediaType.DockerManifestSchema1Signed || doc.schemaVersion === 1) {
    throw invalid('Docker image manifest schema 1 is not supported: push schema 2 or OCI');
  }
  let mediaType = declared;
  if (mediaType === undefined) {
    // OCI manifests may omit mediaType: fall back to the Content-Type, then to the shape.
    if (requested && MANIFEST_MEDIA_TYPES.has(requested)) mediaType = requested;
    else if (Array.isArray(doc.manifests)) mediaType = MediaType.OciIndex;
    else if (isObject(doc.config)) mediaType = MediaType.OciManifest;
  } else if (requested && requested !== declared && MANIFEST_MEDIA_TYPES.has(requested)) {
    throw invalid(`Content-Type ${requested} does not match the manifest's mediaType ${declared}`);
  }
  if (mediaType === undefined || !MANIFEST_MEDIA_TYPES.has(mediaType)) {
    throw invalid(`unsupported manifest media type ${JSON.stringify(mediaType ?? requested ?? null)}`);
  }
  if (doc.schemaVersion !== 2) throw invalid('schemaVersion must be 2');
  const digest = Digest.of(bytes);
  const subject = doc.subject === undefined ? undefined : descriptor(doc.subject, 'subject');
  const annotations = stringMap(doc.annotations, 'annotations');
  const artifactType = optionalString(doc.artifactType, 'artifactType');
  if (INDEX_MEDIA_TYPES.has(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw invalid('manifests must be an array');
    const manifests = doc.manifests.map((m, i) => descriptor(m, `manifests[${i}]`));
    return { bytes, digest, mediaType, isIndex: true, blobs: [], manifests, subject, artifactType, annotations };
  }
  const config = descriptor(doc.config, 'config');
  if (!Array.isArray(doc.layers)) throw invalid('layers must be an array');
  const layers = doc.layers.map((l, i) => descriptor(l, `layers[${i}]`));
  const blobs = [config, ...layers.filter((l) => !(NON_DISTRIBUTABLE_LAYER_TYPES.has(l.mediaType) || (l.urls && l.urls.length > 0)))];
  return {
    bytes,
    digest,
    mediaType,
    isIndex: false,
    blobs,
    manifests: [],
    subject,
    artifactType: artifactType ?? config.mediaType,
    annotations,
  };
}

/**
 * Reads manifest bytes that are already known to hash to `digest` (stored, or checked against it): the
 * parsed manifest when Cascade would accept it, else the bytes as they are, with the media type from
 * `contentType`, the document's `mediaType`, or schema 1 (a kind Cascade refuses on push but still serves
 * when another registry stored or sent it).
 */
export function readManifest(bytes: Buffer, digest: Digest, contentType?: string): ParsedManifest {
  try {
    const parsed = parseManifest(bytes, contentType);
    return parsed.digest.equals(digest) ? parsed : { ...parsed, digest };
  } catch {
    let mediaType: string = contentType ?? MediaType.DockerManifestSchema1Signed;
    if (contentType === undefined) {
      try {
        const doc = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
        if (typeof doc.mediaType === 'string') mediaType = doc.mediaType;
      } catch {
        // not JSON: served with the schema 1 type, which is what distribution would have stored it as
      }
    }
    return { bytes, digest, mediaType, isIndex: false, blobs: [], manifests: [] };
  }
}

/**
 * Picks the child of an index for the given platform (default linux/amd64), as distribution does for
 * clients that do not accept manifest lists.
 */
export function selectPlatform(index: ParsedManifest, want: Platform = { os: 'linux', architecture: 'amd64' }): Descriptor | undefined {
  return index.manifests.find((m) => m.platform?.os === want.os && m.platform?.architecture === want.architecture);
}

function descriptor(value: unknown, key: string): Descriptor {
  if (!isObject(value)) throw invalid(`${key} must be a descriptor object`);
  const { mediaType, digest, size } = value;
  if (typeof mediaType !== 'string' || mediaType.length === 0) throw invalid(`${key}.mediaType must be a non-empty string`);
  if (typeof digest !== 'string') throw invalid(`${key}.digest must be a string`);
  try {
    Digest.parse(digest);
  } catch (err) {
    throw invalid(`${key}.digest: ${(err as Error).message}`);
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalid(`${key}.size must be a non-negative integer`);
  const out: Descriptor = { mediaType, digest, size };
  if (value.urls !== undefined) {
    if (!Array.isArray(value.urls) || !value.urls.every((u) => typeof u === 'string')) throw invalid(`${key}.urls must be an array of strings`);
    out.urls = value.urls as string[];
  }
  const annotations = stringMap(value.annotations, `${key}.annotations`);
  if (annotations) out.annotations = annotations;
  const artifactType = optionalString(value.artifactType, `${key}.artifactType`);
  if (artifactType) out.artifactType = artifactType;
  if (value.platform !== undefined) {
    const p = value.platform;
    if (!isObject(p) || typeof p.os !== 'string' || typeof p.architecture !== 'string') throw invalid(`${key}.platform must have os and architecture`);
    out.platform = p as unknown as Platform;
  }
  return out;
}

function stringMap(value: unknown, key: string): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value) || !Object.values(value).every((v) => typeof v === 'string')) throw invalid(`${key} must be a map of strings`);
  return value as Record<string, string>;
}

function optionalString(value: unknown, key: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw invalid(`${key} must be a string`);
  return value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(message: string): RegistryError {
  return new RegistryError('MANIFEST_INVALID', message);
}
