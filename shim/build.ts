/**
 * Builds the Go shim (shim/main.go): the small executable the container runtime runs for every CNI
 * call, which hands the call to the warm per-node agent or else runs `tenant-routing`.
 *
 * Debian's golang-go (`apt-get install golang-go`), standard library only: nothing is downloaded
 * (GOPROXY=off). Static (CGO_ENABLED=0), stripped (-s -w), and without build paths or VCS stamps
 * (-trimpath, -buildvcs=false), so the same sources give the same bytes. Go cross-compiles, so arm64
 * needs no emulation. The build cache lives in the git-ignored .tools/go-cache, so a fresh clone
 * builds without a configured Go environment.
 *
 * Usage: node shim/build.ts [--arch amd64|arm64] [--out PATH]
 *        (default: amd64, dist/tenant-routing-wrapper-shim)
 */
import { execFile } from "node:child_process"
import { mkdirSync, renameSync, rmSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { parseArgs, promisify } from "node:util"

export type ShimArch = "amd64" | "arm64"

const root = resolve(import.meta.dirname, "..")
const cache = join(root, ".tools/go-cache")

export async function buildShim(opts: { arch: ShimArch; out: string }): Promise<void> {
  const out = resolve(opts.out)
  mkdirSync(dirname(out), { recursive: true })
  // Built under a name of its own and renamed, so a concurrent or failed build never leaves half a file.
  const tmp = `${out}.${process.pid}-${opts.arch}.tmp`
  try {
    await promisify(execFile)(
      "go",
      ["build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", tmp, "."],
      {
        cwd: join(root, "shim"),
        env: {
          ...process.env,
          CGO_ENABLED: "0",
          GOOS: "linux",
          GOARCH: opts.arch,
          GOCACHE: join(cache, "build"),
          GOPATH: join(cache, "gopath"),
          GOFLAGS: "",
          GOPROXY: "off",
          GOWORK: "off",
          GOTOOLCHAIN: "local",
          GO111MODULE: "on"
        },
        maxBuffer: 16 * 1024 * 1024
      }
    )
    renameSync(tmp, out)
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string }
    if (err.code === "ENOENT") throw new Error("go not found on PATH (Debian: apt-get install golang-go)")
    throw new Error(`go build (${opts.arch}) failed: ${err.stderr?.trim() || err.message}`)
  } finally {
    rmSync(tmp, { force: true })
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      arch: { type: "string", default: "amd64" },
      out: { type: "string", default: join(root, "dist/tenant-routing-wrapper-shim") }
    }
  })
  if (values.arch !== "amd64" && values.arch !== "arm64") {
    process.stderr.write(`--arch must be amd64 or arm64, got ${JSON.stringify(values.arch)}\n`)
    process.exitCode = 2
  } else {
    try {
      await buildShim({ arch: values.arch, out: values.out })
      process.stdout.write(`${values.out} (${values.arch})\n`)
    } catch (e) {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`)
      process.exitCode = 1
    }
  }
}
