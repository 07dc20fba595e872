/**
 * A one-layer OCI image archive written by hand: `oci-layout`, `index.json`, and under `blobs/sha256/`
 * the manifest, the config and one uncompressed tar layer, all packed into one tar that
 * `ctr images import` reads. Written here (with node:crypto for the digests) so the containerd suite
 * needs no registry and no image tooling: the only image it runs is one it built from a binary it
 * compiled itself.
 *
 * The tar writer emits plain ustar entries (regular files and directories, uid/gid 0, mtime 0), enough
 * for containerd's importer and for unpacking a layer; names longer than 100 bytes are refused rather
 * than split into ustar's prefix field, since every name here is short.
 */
import { createHash } from "node:crypto"

export interface TarEntry {
  readonly name: string
  /** Absent: a directory. */
  readonly data?: Buffer
  readonly mode?: number
}

const BLOCK = 512

const octal = (value: number, width: number): string => value.toString(8).padStart(width - 1, "0") + "\0"

const header = (entry: TarEntry): Buffer => {
  const isDir = entry.data === undefined
  const name = isDir && !entry.name.endsWith("/") ? `${entry.name}/` : entry.name
  if (Buffer.byteLength(name) > 100) throw new Error(`tar name too long: ${name}`)
  const h = Buffer.alloc(BLOCK)
  h.write(name, 0, 100, "utf8")
  h.write(octal(entry.mode ?? (isDir ? 0o755 : 0o644), 8), 100, "ascii")
  h.write(octal(0, 8), 108, "ascii")
  h.write(octal(0, 8), 116, "ascii")
  h.write(octal(entry.data?.length ?? 0, 12), 124, "ascii")
  h.write(octal(0, 12), 136, "ascii")
  h.write("        ", 148, "ascii") // the checksum is computed with its own field as spaces
  h.write(isDir ? "5" : "0", 156, "ascii")
  h.write("ustar\0", 257, "ascii")
  h.write("00", 263, "ascii")
  h.write("root", 265, "ascii")
  h.write("root", 297, "ascii")
  let sum = 0
  for (const byte of h) sum += byte
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii")
  return h
}

/** A ustar archive of `entries`, in order, closed by two zero blocks. */
export const tar = (entries: ReadonlyArray<TarEntry>): Buffer => {
  const parts: Array<Buffer> = []
  for (const entry of entries) {
    parts.push(header(entry))
    if (entry.data !== undefined && entry.data.length > 0) {
      parts.push(entry.data)
      const pad = (BLOCK - (entry.data.length % BLOCK)) % BLOCK
      if (pad > 0) parts.push(Buffer.alloc(pad))
    }
  }
  parts.push(Buffer.alloc(2 * BLOCK))
  return Buffer.concat(parts)
}

export const sha256 = (data: Buffer): string => `sha256:${createHash("sha256").update(data).digest("hex")}`

/** The OCI name of Node's `process.arch` (only the ones containerd runs here). */
export const ociArchitecture = (arch: string = process.arch): string => {
  const names: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", s390x: "s390x" }
  const name = names[arch]
  if (name === undefined) throw new Error(`no OCI architecture for ${arch}`)
  return name
}

export interface ImageSpec {
  /** The full reference containerd stores it under, e.g. `localhost/trw-pause:test`. */
  readonly reference: string
  /** Files of the single layer. */
  readonly layer: ReadonlyArray<TarEntry>
  readonly entrypoint: ReadonlyArray<string>
}

export interface BuiltImage {
  readonly archive: Buffer
  readonly manifestDigest: string
  readonly layerDigest: string
}

/** The image archive of `spec` (an OCI image layout in a tar), for `ctr images import`. */
export const ociImageArchive = (spec: ImageSpec): BuiltImage => {
  const layer = tar(spec.layer)
  const layerDigest = sha256(layer)
  const platform = { architecture: ociArchitecture(), os: "linux" }
  const config = Buffer.from(
    JSON.stringify({
      ...platform,
      config: { Entrypoint: spec.entrypoint, WorkingDir: "/" },
      rootfs: { type: "layers", diff_ids: [layerDigest] }
    })
  )
  const configDigest = sha256(config)
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: configDigest,
        size: config.length
      },
      layers: [
        { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layerDigest, size: layer.length }
      ]
    })
  )
  const manifestDigest = sha256(manifest)
  const tag = spec.reference.slice(spec.reference.lastIndexOf(":") + 1)
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: manifestDigest,
          size: manifest.length,
          platform,
          // containerd's importer names the image after this annotation (the OCI one is only the tag).
          annotations: {
            "io.containerd.image.name": spec.reference,
            "org.opencontainers.image.ref.name": tag
          }
        }
      ]
    })
  )
  const blob = (digest: string, data: Buffer): TarEntry => ({ name: `blobs/sha256/${digest.slice(7)}`, data })
  const archive = tar([
    { name: "oci-layout", data: Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })) },
    { name: "index.json", data: index },
    { name: "blobs" },
    { name: "blobs/sha256" },
    blob(manifestDigest, manifest),
    blob(configDigest, config),
    blob(layerDigest, layer)
  ])
  return { archive, manifestDigest, layerDigest }
}
