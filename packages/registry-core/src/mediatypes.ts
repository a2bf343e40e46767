/** Manifest and descriptor media types the registry understands. */

export const MediaType = {
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifestSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerManifestSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

/** Media types of manifests that list other manifests (multi-platform). */
export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([MediaType.DockerManifestList, MediaType.OciIndex]);

/** Media types of single-image manifests. */
export const IMAGE_MEDIA_TYPES: ReadonlySet<string> = new Set([MediaType.DockerManifest, MediaType.OciManifest]);

/** Every manifest media type that can be pushed and pulled. */
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([...INDEX_MEDIA_TYPES, ...IMAGE_MEDIA_TYPES]);

/** Layer media types that may be absent from the registry ("foreign" / non-distributable layers). */
export const NON_DISTRIBUTABLE_LAYER_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
]);
