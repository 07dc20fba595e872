/**
 * `tenant-routing install`: what the DaemonSet runs on each node, periodically. It copies
 * this executable into the CNI bin dir, refreshes the ServiceAccount token and CA the plugin reads
 * through its own kubeconfig, fills the conflist template with the node's pod CIDRs and writes it.
 * Every file is written atomically (temporary file + rename in the same directory) and only when its
 * content changed, so the runtime never sees a half-written conflist or binary.
 *
 * Reads top to bottom: read the template (a usage problem when it is missing or not JSON), read the
 * node's pod CIDRs, render and check the conflist, then write binary, credentials, kubeconfig and —
 * last, since the runtime may use the plugin as soon as it appears — the conflist. Paths written into
 * files are host paths; `hostRoot` is where the host's filesystem is mounted.
 */
import { Data, Effect, FileSystem, Path, Random } from "effect"
import type { PlatformError } from "effect/PlatformError"
import { renderConflist } from "../domain/install/Conflist.ts"
import { kubeconfigYaml } from "../domain/install/Kubeconfig.ts"
import { NodeSource } from "../domain/install/NodeSource.ts"
import { describeFileError } from "./fileError.ts"

export interface InstallOptions {
  readonly node: string
  readonly template: string
  readonly hostRoot: string
  readonly cniBinDir: string
  readonly cniConfDir: string
  readonly conflistName: string
  readonly credentialsDir: string
  /** Undefined: the in-cluster ServiceAccount. */
  readonly kubeconfig: string | undefined
  readonly saDir: string
  readonly server: string
  readonly binary: string
}

export const INSTALL_DEFAULTS = {
  hostRoot: "/",
  cniBinDir: "/opt/cni/bin",
  cniConfDir: "/etc/cni/net.d",
  conflistName: "10-tenant-routing.conflist",
  credentialsDir: "/etc/cni/net.d/tenant-routing",
  saDir: "/var/run/secrets/kubernetes.io/serviceaccount"
} as const

/** `usage`: the operator's input is wrong (exit 2); otherwise installing failed (exit 1). */
export class InstallFailed extends Data.TaggedError("InstallFailed")<{
  readonly message: string
  readonly usage: boolean
}> {}

export interface InstallReport {
  readonly node: string
  readonly podCidrs: ReadonlyArray<string>
  /** Host paths whose content changed, in the order written. */
  readonly changed: ReadonlyArray<string>
  /** Every host path install keeps, changed or not. */
  readonly files: ReadonlyArray<string>
}

const failed = (message: string, usage = false) => new InstallFailed({ message, usage })

/** Writes `bytes` to `path` atomically; false when the file already had them. */
const writeAtomic = Effect.fnUntraced(function* (
  path: string,
  bytes: Uint8Array,
  mode: number,
  what: string
) {
  const fs = yield* FileSystem.FileSystem
  const paths = yield* Path.Path
  const same = yield* fs.readFile(path).pipe(
    Effect.map((old) => old.length === bytes.length && old.every((b, i) => b === bytes[i])),
    Effect.orElseSucceed(() => false)
  )
  if (same) return false
  const dir = paths.dirname(path)
  const tmp = paths.join(dir, `.trw-${(yield* Random.nextInt).toString(36)}.tmp`)
  const write = Effect.gen(function* () {
    yield* fs.makeDirectory(dir, { recursive: true, mode: 0o755 })
    yield* fs.writeFile(tmp, bytes, { mode })
    // writeFile's mode is filtered by the umask; the installed file must have exactly `mode`.
    yield* fs.chmod(tmp, mode)
    yield* fs.rename(tmp, path)
  })
  yield* write.pipe(
    Effect.onError(() => fs.remove(tmp, { force: true }).pipe(Effect.ignore)),
    Effect.mapError((e: PlatformError) => failed(describeFileError(e, what, path, "", true)))
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

  const templateText = new TextDecoder().decode(
    yield* read(o.template, "conflist template", "pass --template FILE", true)
  )
  const template = yield* Effect.try({
    try: () => JSON.parse(templateText) as unknown,
    catch: (e) =>
      failed(`conflist template ${o.template} is not JSON (${(e as Error).message}); fix the ConfigMap`, true)
  })
  const podCidrs = yield* Effect.mapError(
    Effect.flatMap(NodeSource, (nodes) => nodes.podCidrs(o.node, o.kubeconfig)),
    (e) => failed(e.message)
  )
  const rendered = renderConflist(template, podCidrs)
  if ("issues" in rendered) {
    return yield* failed(
      `the conflist template cannot be installed on ${o.node}:\n${rendered.issues.map((i) => `  ${i.path}: ${i.message}`).join("\n")}`
    )
  }

  const host = (p: string) => paths.join(o.hostRoot, p)
  const binaryPath = paths.join(o.cniBinDir, "tenant-routing-wrapper")
  const tokenPath = paths.join(o.credentialsDir, "token")
  const caPath = paths.join(o.credentialsDir, "ca.crt")
  const kubeconfigPath = paths.join(o.credentialsDir, "kubeconfig")
  const conflistPath = paths.join(o.cniConfDir, o.conflistName)
  const saHint = "pass --sa-dir DIR (the ServiceAccount mount)"
  const files: ReadonlyArray<readonly [string, Effect.Effect<Uint8Array, InstallFailed>, number, string]> = [
    [binaryPath, read(o.binary, "executable", "pass --binary FILE", true), 0o755, "CNI binary"],
    [tokenPath, read(paths.join(o.saDir, "token"), "ServiceAccount token", saHint, true), 0o600, "token"],
    [caPath, read(paths.join(o.saDir, "ca.crt"), "ServiceAccount CA", saHint, true), 0o644, "CA"],
    [
      kubeconfigPath,
      Effect.succeed(new TextEncoder().encode(kubeconfigYaml(o.server, caPath, tokenPath))),
      0o600,
      "kubeconfig"
    ],
    [
      conflistPath,
      Effect.succeed(new TextEncoder().encode(`${JSON.stringify(rendered.conflist, null, 2)}\n`)),
      0o644,
      "conflist"
    ]
  ]
  const changed: Array<string> = []
  for (const [path, content, mode, what] of files) {
    if (yield* writeAtomic(host(path), yield* content, mode, what)) changed.push(path)
  }
  return { node: o.node, podCidrs, changed, files: files.map(([path]) => path) }
})

/** The line the CLI prints, e.g. `install: n1 pod CIDRs 10.244.7.0/24; 0 files changed`. */
export const formatInstall = (r: InstallReport): string =>
  `install: ${r.node} pod CIDRs ${r.podCidrs.join(", ")}; ${r.changed.length} files changed${r.changed.length > 0 ? `: ${r.changed.join(", ")}` : ""}`
