/**
 * The hand-written image archive of the containerd suite, checked without root or containerd: the
 * system's `tar` must read back exactly what `tar()` wrote, and the OCI layout must hang together
 * (index → manifest → config and layer, each blob stored under its own sha256).
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { ociArchitecture, ociImageArchive, sha256, tar } from "./ociImage.ts"

const withDir = <T>(f: (dir: string) => T): T => {
  const dir = mkdtempSync(join(tmpdir(), "trw-oci-"))
  try {
    return f(dir)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Extracts `archive` with the system's tar into `dir`; throws with tar's message on failure. */
const extract = (archive: Buffer, dir: string) => {
  const file = join(dir, "archive.tar")
  writeFileSync(file, archive)
  const out = join(dir, "out")
  mkdirSync(out)
  const r = spawnSync("tar", ["-xf", file, "-C", out], { encoding: "utf8" })
  if (r.status !== 0) throw new Error(`tar -x: ${r.stderr}`)
  return out
}

const name = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,99}$/)
const data = fc.oneof(
  fc.constant(Buffer.alloc(0)),
  fc.constant(Buffer.alloc(512, 7)),
  fc.uint8Array({ minLength: 1, maxLength: 2048 }).map((a) => Buffer.from(a)),
  fc.integer({ min: 1, max: 300_000 }).map((n) => Buffer.alloc(n, n & 0xff))
)

describe("the OCI image archive written by hand", () => {
  it("tar: the system's tar extracts every file with its exact bytes and mode, whatever the size (0, 512, large) and name length (1..100)", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ name, data, exec: fc.boolean() }), {
          minLength: 1,
          maxLength: 5,
          selector: (e) => e.name
        }),
        (files) =>
          withDir((dir) => {
            const out = extract(
              tar(files.map((f) => ({ name: f.name, data: f.data, mode: f.exec ? 0o755 : 0o644 }))),
              dir
            )
            assert.deepStrictEqual(readdirSync(out).sort(), files.map((f) => f.name).sort())
            for (const f of files) {
              assert.isTrue(readFileSync(join(out, f.name)).equals(f.data), f.name)
              assert.strictEqual(statSync(join(out, f.name)).mode & 0o777, f.exec ? 0o755 : 0o644)
            }
          })
      ),
      { numRuns: 25 }
    )
  })

  it("tar refuses a name longer than 100 bytes instead of truncating it", () => {
    assert.throws(() => tar([{ name: "x".repeat(101), data: Buffer.alloc(1) }]), /too long/)
  })

  it("the layout: index names the image and points at the manifest; every blob is stored under its digest; the config's diff_id is the layer's", () => {
    const binary = Buffer.from("#!/bin/true\n")
    const image = ociImageArchive({
      reference: "localhost/trw-pause:test",
      entrypoint: ["/pause"],
      layer: [{ name: "pause", data: binary, mode: 0o755 }, { name: "etc" }]
    })
    withDir((dir) => {
      const out = extract(image.archive, dir)
      const read = (path: string) => readFileSync(join(out, path))
      const json = (path: string) => JSON.parse(read(path).toString("utf8"))
      assert.deepStrictEqual(json("oci-layout"), { imageLayoutVersion: "1.0.0" })
      for (const blob of readdirSync(join(out, "blobs", "sha256")))
        assert.strictEqual(sha256(read(`blobs/sha256/${blob}`)), `sha256:${blob}`)
      const index = json("index.json")
      assert.strictEqual(index.manifests.length, 1)
      const entry = index.manifests[0]
      assert.strictEqual(entry.digest, image.manifestDigest)
      assert.strictEqual(entry.annotations["io.containerd.image.name"], "localhost/trw-pause:test")
      assert.strictEqual(entry.annotations["org.opencontainers.image.ref.name"], "test")
      assert.deepStrictEqual(entry.platform, { architecture: ociArchitecture(), os: "linux" })
      const manifest = json(`blobs/sha256/${entry.digest.slice(7)}`)
      assert.strictEqual(read(`blobs/sha256/${entry.digest.slice(7)}`).length, entry.size)
      assert.strictEqual(manifest.layers[0].digest, image.layerDigest)
      const config = json(`blobs/sha256/${manifest.config.digest.slice(7)}`)
      assert.deepStrictEqual(config.rootfs, { type: "layers", diff_ids: [image.layerDigest] })
      assert.deepStrictEqual(config.config.Entrypoint, ["/pause"])
      const layerOut = extract(read(`blobs/sha256/${image.layerDigest.slice(7)}`), join(dir, "out"))
      assert.isTrue(readFileSync(join(layerOut, "pause")).equals(binary))
      assert.isTrue(statSync(join(layerOut, "etc")).isDirectory())
    })
  })
})
