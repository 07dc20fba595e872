/**
 * `tenant-routing install`: what the DaemonSet's init container runs on each node (docs/DESIGN.md
 * §7). It copies both executables into the CNI bin dir (the full program as `tenant-routing`, the
 * shim the conflist names as `tenant-routing-wrapper`), copies the ServiceAccount token and CA the
 * plugin reads through its own kubeconfig, fills the conflist template with the node's pod CIDRs
 * (and, given a tenants file, its tenants) and writes it.
 *
 * Every file is written atomically (temporary file + rename in the same directory) and only when its
 * content changed, so the runtime never sees a half-written conflist, and a call running while an
 * upgrade replaces an executable runs the old one or the new one, never half of one (a rename never
 * touches the old file's inode, so a running process keeps it; writing in place would fail with
 * ETXTBSY or tear it). Executables are compared and copied in 1 MiB chunks: the full program is
 * ~120 MB, and holding it in memory made install peak at ~365 MiB.
 *
 * Reads top to bottom: read the template and tenants file (a usage problem when missing or invalid),
 * read the node's pod CIDRs, render the conflist and refuse one `cilium-cni` would reject (usage),
 * then write executables, credentials, kubeconfig and — last, since the runtime may use the plugin as
 * soon as it appears — the conflist; finally warn about CNI configs that would win over ours.
 * Paths written into files are host paths; `hostRoot` is where the host's filesystem is mounted.
 */

import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Path from "effect/Path"
import type { PlatformError } from "effect/PlatformError"
import * as Result from "effect/Result"
import { cniChainingIssue, conflistsBefore } from "../domain/install/CiliumChaining.ts"
import { renderConflist, withTenants } from "../domain/install/Conflist.ts"
import { kubeconfigYaml } from "../domain/install/Kubeconfig.ts"
import { NodeSource } from "../domain/install/NodeSource.ts"
import { DEFAULT_TENANTS_FILE, decodeNodeSetupConfig } from "../domain/node-setup/NodeSetupConfig.ts"
import { replaceFileAtomic, writeFileAtomic } from "./atomicFile.ts"
import { describeFileError } from "./fileError.ts"

export interface InstallOptions {
  readonly node: string
  readonly template: string
  /**
   * A tenants file (node-setup's format) whose tenants replace the template's, copied to
   * `tenantsDest` on the host for the agent and doctor; undefined: keep the template's.
   */
  readonly tenantsFile: string | undefined
  readonly tenantsDest: string
  readonly hostRoot: string
  readonly cniBinDir: string
  readonly cniConfDir: string
  readonly conflistName: string
  readonly credentialsDir: string
  /** Undefined: the in-cluster ServiceAccount. */
  readonly kubeconfig: string | undefined
  readonly saDir: string
  readonly server: string
  /** The full program, installed as `tenant-routing`. */
  readonly binary: string
  /** The shim, installed as `tenant-routing-wrapper` (the conflist's `type`). */
  readonly shim: string
}

/** File names in the CNI bin dir. Never change: the conflist's `type` and the shim's fallback name them. */
export const PROGRAM_NAME = "tenant-routing"
export const SHIM_NAME = "tenant-routing-wrapper"

export const INSTALL_DEFAULTS = {
  hostRoot: "/",
  cniBinDir: "/opt/cni/bin",
  cniConfDir: "/etc/cni/net.d",
  // "00-": the runtime uses the config file that sorts first, and Cilium writes 05-cilium.conflist.
  conflistName: "00-tenant-routing.conflist",
  credentialsDir: "/etc/cni/net.d/tenant-routing",
  saDir: "/var/run/secrets/kubernetes.io/serviceaccount",
  tenantsDest: DEFAULT_TENANTS_FILE
} as const

/** `usage`: the operator's input is wrong (exit 2); otherwise installing failed (exit 1). */
export class InstallFailed extends Data.TaggedError("InstallFailed")<{
  readonly msg: string
  readonly usage: boolean
}> {}

export interface InstallReport {
  readonly node: string
  readonly podCidrs: ReadonlyArray<string>
  /** Host paths whose content changed, in the order written. */
  readonly changed: ReadonlyArray<string>
  /** Every host path install keeps, changed or not. */
  readonly files: ReadonlyArray<string>
  /** Things that do not stop the install but will stop the plugin from being used. */
  readonly warnings: ReadonlyArray<string>
}

const failed = (message: string, usage = false) => new InstallFailed({ msg: message, usage })

/** Writes `bytes` to `path` atomically; false when the file already had them. For small files. */
const writeAtomic = Effect.fnUntraced(function* (
  path: string,
  bytes: Uint8Array,
  mode: number,
  what: string
) {
  const fs = yield* FileSystem.FileSystem
  const same = yield* fs.readFile(path).pipe(
    Effect.map((old) => old.length === bytes.length && old.every((b, i) => b === bytes[i])),
    Effect.orElseSucceed(() => false)
  )
  if (same) return false
  yield* writeFileAtomic(path, bytes, { mode, dirMode: 0o755 }).pipe(
    Effect.mapError((e: PlatformError) => failed(describeFileError(e, what, path, "", true)))
  )
  return true
})

const CHUNK = 1 << 20

/** Fills `buf` from `file` as far as the file goes; the number of bytes read (short only at its end). */
const readChunk = (file: FileSystem.File, buf: Uint8Array): Effect.Effect<number, PlatformError> =>
  Effect.gen(function* () {
    let n = 0
    while (n < buf.length) {
      const got = yield* file.read(buf.subarray(n))
      if (got === 0) break
      n += got
    }
    return n
  })

/** Whether two files hold the same bytes: sizes first, then chunk by chunk. A missing `b` differs. */
const sameContent = (a: string, b: string) =>
  Effect.scoped(
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const [sa, sb] = [yield* fs.stat(a), yield* fs.stat(b)]
      if (sb.type !== "File" || sa.size !== sb.size) return false
      const [fa, fb] = [yield* fs.open(a, { flag: "r" }), yield* fs.open(b, { flag: "r" })]
      const [ba, bb] = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)]
      for (;;) {
        const na = yield* readChunk(fa, ba)
        const nb = yield* readChunk(fb, bb)
        if (na !== nb) return false
        if (na === 0) return true
        for (let i = 0; i < na; i++) if (ba[i] !== bb[i]) return false
      }
    })
  )

/** Copies the executable `from` to `to` atomically, streaming; false when `to` already had its bytes. */
const copyExecutable = Effect.fnUntraced(function* (from: string, to: string, what: string, hint: string) {
  const fs = yield* FileSystem.FileSystem
  const _paths = yield* Path.Path
  // The source must be readable: a missing one is the operator's mistake (a flag), not a node problem.
  yield* fs.stat(from).pipe(Effect.mapError((e) => failed(describeFileError(e, what, from, hint), true)))
  if (yield* sameContent(from, to).pipe(Effect.orElseSucceed(() => false))) return false
  // Streamed in chunks: a 120 MB executable never sits in memory.
  const stream = (target: FileSystem.File) =>
    Effect.scoped(
      Effect.gen(function* () {
        const source = yield* fs.open(from, { flag: "r" })
        const buf = new Uint8Array(CHUNK)
        for (;;) {
          const n = yield* readChunk(source, buf)
          if (n === 0) break
          yield* target.writeAll(buf.subarray(0, n))
        }
      })
    )
  yield* replaceFileAtomic(to, { mode: 0o755, dirMode: 0o755 }, stream).pipe(
    Effect.mapError((e: PlatformError) => failed(describeFileError(e, what, to, "", true)))
  )
  return true
})

export const install = Effect.fn("install")(function* (
  o: InstallOptions
): Effect.fn.Return<InstallReport, InstallFailed, FileSystem.FileSystem | Path.Path | NodeSource> {
  const fs = yield* FileSystem.FileSystem
  const paths = yield* Path.Path
  const read = (file: string, what: string, hint: string, usage: boolean) =>
    fs.readFile(file).pipe(Effect.mapError((e) => failed(describeFileError(e, what, file, hint), usage)))
  const parseJson = (bytes: Uint8Array, file: string, what: string) =>
    Effect.try({
      try: () => JSON.parse(new TextDecoder().decode(bytes)) as unknown,
      catch: (e) => failed(`${what} ${file} is not JSON (${(e as Error).message}); fix the ConfigMap`, true)
    })

  const templateFile = "conflist template"
  const rawTemplate = yield* parseJson(
    yield* read(o.template, templateFile, "pass --template FILE", true),
    o.template,
    templateFile
  )
  let template = rawTemplate
  let tenantsBytes: Uint8Array | undefined
  if (o.tenantsFile !== undefined) {
    const tenantsHint = "pass --tenants FILE (node-setup's format)"
    tenantsBytes = yield* read(o.tenantsFile, "tenants file", tenantsHint, true)
    const decoded = decodeNodeSetupConfig(yield* parseJson(tenantsBytes, o.tenantsFile, "tenants file"))
    if (Result.isFailure(decoded))
      return yield* failed(
        `tenants file ${o.tenantsFile} is not valid:\n${decoded.failure.map((i) => `  ${i.path}: ${i.message}`).join("\n")}`,
        true
      )
    template = withTenants(rawTemplate, decoded.success)
  }
  const podCidrs = yield* Effect.mapError(
    Effect.flatMap(NodeSource, (nodes) => nodes.podCidrs(o.node, o.kubeconfig)),
    (e) => failed(e.msg)
  )
  const rendered = renderConflist(template, podCidrs)
  if ("issues" in rendered) {
    return yield* failed(
      `the conflist template cannot be installed on ${o.node}:\n${rendered.issues.map((i) => `  ${i.path}: ${i.message}`).join("\n")}`
    )
  }
  const chaining = cniChainingIssue(rendered.conflist)
  if (chaining !== undefined)
    return yield* failed(`the conflist template ${o.template} would fail every pod: ${chaining}`, true)

  const host = (p: string) => paths.join(o.hostRoot, p)
  const programPath = paths.join(o.cniBinDir, PROGRAM_NAME)
  const shimPath = paths.join(o.cniBinDir, SHIM_NAME)
  const tokenPath = paths.join(o.credentialsDir, "token")
  const caPath = paths.join(o.credentialsDir, "ca.crt")
  const kubeconfigPath = paths.join(o.credentialsDir, "kubeconfig")
  const conflistPath = paths.join(o.cniConfDir, o.conflistName)
  const saHint = "pass --sa-dir DIR (the ServiceAccount token mount)"
  const changed: Array<string> = []

  // The program before the shim: a shim that finds no agent execs the program next to it.
  if (yield* copyExecutable(o.binary, host(programPath), "executable", "pass --binary FILE"))
    changed.push(programPath)
  if (yield* copyExecutable(o.shim, host(shimPath), "shim", "pass --shim FILE")) changed.push(shimPath)

  const files: ReadonlyArray<readonly [string, Effect.Effect<Uint8Array, InstallFailed>, number, string]> = [
    [tokenPath, read(paths.join(o.saDir, "token"), "ServiceAccount token", saHint, true), 0o600, "token"],
    [caPath, read(paths.join(o.saDir, "ca.crt"), "ServiceAccount CA", saHint, true), 0o644, "CA"],
    [
      kubeconfigPath,
      Effect.succeed(new TextEncoder().encode(kubeconfigYaml(o.server, caPath, tokenPath))),
      0o600,
      "kubeconfig"
    ],
    ...(tenantsBytes === undefined
      ? []
      : [[o.tenantsDest, Effect.succeed(tenantsBytes), 0o644, "tenants file"] as const]),
    [
      conflistPath,
      Effect.succeed(new TextEncoder().encode(`${JSON.stringify(rendered.conflist, null, 2)}\n`)),
      0o644,
      "conflist"
    ]
  ]
  for (const [path, content, mode, what] of files) {
    if (yield* writeAtomic(host(path), yield* content, mode, what)) changed.push(path)
  }

  const names = yield* fs.readDirectory(host(o.cniConfDir)).pipe(Effect.orElseSucceed(() => []))
  const warnings = conflistsBefore(names, o.conflistName).map(
    (n) =>
      `${paths.join(o.cniConfDir, n)} sorts before ${o.conflistName}, so the runtime uses it and pods never reach this plugin; remove it, or install Cilium with cni.customConf=true and cni.exclusive=false so it stops writing its own`
  )
  return {
    node: o.node,
    podCidrs,
    changed,
    files: [programPath, shimPath, ...files.map(([path]) => path)],
    warnings
  }
})

/** The text the CLI prints, e.g. `install: n1 pod CIDRs 10.244.7.0/24; 0 files changed`, then warnings. */
export const formatInstall = (r: InstallReport): string =>
  [
    `install: ${r.node} pod CIDRs ${r.podCidrs.join(", ")}; ${r.changed.length} files changed${r.changed.length > 0 ? `: ${r.changed.join(", ")}` : ""}`,
    ...r.warnings.map((w) => `warning: ${w}`)
  ].join("\n")
