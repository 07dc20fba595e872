/**
 * `tenant-routing uninstall` (docs/DESIGN.md §7): bring a node back to before `install`. Run after
 * the DaemonSet is deleted (else its next pod installs again).
 *
 * Reads top to bottom: list the state records (who still holds the plugin); remove the conflist
 * first, so no new pod starts through the plugin; remove the credentials `install` wrote; remove
 * node-setup's rules and routes when given the tenants file; then the executables — only when no
 * attachment holds them, since a pod's DEL may still run them (a runtime that cached the conflist,
 * as libcni's cache allows, runs our DEL after the conflist is gone), unless `force`. The state dir
 * goes with the executables, once no record is left in it.
 *
 * Removing what is already gone succeeds, so a retry (the uninstall DaemonSet's init container runs
 * it until it completes) converges.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Path from "effect/Path"
import type { PlatformError } from "effect/PlatformError"
import { AttachmentStore } from "../domain/datapath/AttachmentStore.ts"
import type { Attachment } from "../domain/datapath/Owner.ts"
import { cacheFileName, describeHolder, type Holder, podOfCacheEntry } from "../domain/install/Holders.ts"
import type { NodeSetupConfig } from "../domain/node-setup/NodeSetupConfig.ts"
import type { Routing } from "../domain/node-setup/Routing.ts"
import { describeFileError } from "./fileError.ts"
import { PROGRAM_NAME, SHIM_NAME } from "./install.ts"
import { formatReport, type NodeSetupReport, nodeSetup } from "./nodeSetup.ts"

export interface UninstallOptions {
  readonly hostRoot: string
  readonly cniBinDir: string
  readonly cniConfDir: string
  readonly conflistName: string
  readonly credentialsDir: string
  /** The plugin's stateDir (host path). */
  readonly stateDir: string
  /** libcni's result cache (host path), where pod names are looked up. */
  readonly cniCacheDir: string
  /** The tenants file's config: its rules and routes are removed. Undefined: routing is left alone. */
  readonly tenants: NodeSetupConfig | undefined
  /** The host copy of the tenants file `install` wrote; removed. */
  readonly tenantsCopy: string
  readonly force: boolean
}

export const UNINSTALL_DEFAULTS = {
  cniCacheDir: "/var/lib/cni/results"
} as const

export class UninstallFailed extends Data.TaggedError("UninstallFailed")<{ readonly msg: string }> {}

export interface UninstallReport {
  /** Host paths removed by this run (already absent ones are not listed). */
  readonly removed: ReadonlyArray<string>
  /** node-setup's removal, when a tenants file was given. */
  readonly nodeSetup: NodeSetupReport | undefined
  /** Attachments with a state record: pods whose DEL may still need the executables. */
  readonly holders: ReadonlyArray<Holder>
  /** `kept`: holders remain and no force; `removed`: no holder was left; `forced`: removed despite holders. */
  readonly executables: "kept" | "removed" | "forced"
  /** What is still on the node because of holders (their records and netfilter entries). */
  readonly left: ReadonlyArray<string>
  /** True when the node is back to before the install (executables and state dir gone). */
  readonly complete: boolean
}

export const uninstall = Effect.fn("uninstall")(function* (
  o: UninstallOptions
): Effect.fn.Return<
  UninstallReport,
  UninstallFailed,
  FileSystem.FileSystem | Path.Path | AttachmentStore | Routing
> {
  const fs = yield* FileSystem.FileSystem
  const paths = yield* Path.Path
  const store = yield* AttachmentStore
  const host = (p: string) => paths.join(o.hostRoot, p)
  const removed: Array<string> = []
  /** Removes a host path; absent is fine. `recursive` only for our own directories. */
  const remove = (p: string, what: string, recursive = false) =>
    Effect.gen(function* () {
      if (!(yield* fs.exists(host(p)))) return
      yield* fs.remove(host(p), { recursive })
      removed.push(p)
    }).pipe(
      Effect.mapError(
        (e: PlatformError) =>
          new UninstallFailed({
            msg: describeFileError(e, what, host(p), "", true).replace("cannot write", "cannot remove")
          })
      )
    )

  const listing = yield* store.list(host(o.stateDir), undefined).pipe(
    Effect.mapError(
      (e) =>
        new UninstallFailed({
          msg: `cannot list the state records in ${o.stateDir}, so cannot tell which pods still need the executables: ${e.msg}`
        })
    )
  )
  const podOf = (a: Attachment) =>
    fs.readFileString(host(paths.join(o.cniCacheDir, cacheFileName(a)))).pipe(
      Effect.map((text) => {
        try {
          return podOfCacheEntry(JSON.parse(text))
        } catch {
          return undefined
        }
      }),
      Effect.orElseSucceed(() => undefined)
    )
  const holders: Array<Holder> = []
  for (const r of listing.records) {
    const a = { network: r.network, containerId: r.containerId, ifname: r.ifname }
    holders.push({ ...a, pod: yield* podOf(a), tenant: r.tenant, ips: r.ips })
  }
  for (const s of listing.skipped) {
    holders.push({
      ...s.attachment,
      pod: yield* podOf(s.attachment),
      tenant: null,
      ips: [],
      unreadable: s.reason
    })
  }

  // The conflist first: from here on no new pod starts through the plugin.
  yield* remove(paths.join(o.cniConfDir, o.conflistName), "conflist")
  for (const name of ["kubeconfig", "token", "ca.crt"])
    yield* remove(paths.join(o.credentialsDir, name), "credentials file")
  // Only when empty: anything else in it is not ours to delete.
  const credentialsLeft = yield* fs
    .readDirectory(host(o.credentialsDir))
    .pipe(Effect.orElseSucceed((): ReadonlyArray<string> => ["(unreadable)"]))
  if (credentialsLeft.length === 0) yield* remove(o.credentialsDir, "credentials dir", true)

  const routing =
    o.tenants === undefined
      ? undefined
      : yield* nodeSetup(o.tenants, { mode: "remove" }).pipe(
          Effect.mapError((e) => new UninstallFailed({ msg: `node-setup --remove: ${e.msg}` }))
        )
  // After the routing is gone: a failed removal above leaves the file for the retry.
  yield* remove(o.tenantsCopy, "tenants file")

  const held = holders.length > 0
  if (held && !o.force) {
    return {
      removed,
      nodeSetup: routing,
      holders,
      executables: "kept",
      left: [],
      complete: false
    } satisfies UninstallReport
  }
  yield* remove(paths.join(o.cniBinDir, SHIM_NAME), "shim")
  yield* remove(paths.join(o.cniBinDir, PROGRAM_NAME), "executable")
  // The state dir holds only records, the node lock and their directories; with records left
  // (forced), they stay so `inspect` and a later GC can still name what they installed.
  if (!held) yield* remove(o.stateDir, "state dir", true)
  const left = held
    ? [
        `${holders.length} attachment record${holders.length === 1 ? "" : "s"} in ${o.stateDir} and the netfilter entries they describe: their pods' DEL can no longer run the plugin (\`tenant-routing inspect\`, run from the image, lists them)`
      ]
    : []
  return {
    removed,
    nodeSetup: routing,
    holders,
    executables: held ? "forced" : "removed",
    left,
    complete: !held
  } satisfies UninstallReport
})

/** The text the CLI prints. */
export const formatUninstall = (r: UninstallReport): string => {
  const lines = [
    `uninstall: removed ${r.removed.length} path${r.removed.length === 1 ? "" : "s"}${r.removed.length > 0 ? `: ${r.removed.join(", ")}` : ""}`
  ]
  if (r.nodeSetup !== undefined) lines.push(formatReport(r.nodeSetup))
  const holders = r.holders.map((h) => `  ${describeHolder(h)}`)
  switch (r.executables) {
    case "kept":
      lines.push(
        `executables kept: ${r.holders.length} attachment${r.holders.length === 1 ? "" : "s"} still hold them (a pod's DEL runs them); delete these pods and run uninstall again, or pass --force:`,
        ...holders
      )
      break
    case "forced":
      lines.push(
        `executables removed (--force) although ${r.holders.length} attachment${r.holders.length === 1 ? "" : "s"} still hold them:`,
        ...holders,
        ...r.left.map((l) => `left: ${l}`)
      )
      break
    case "removed":
      lines.push("executables removed; the node is back to before the install")
  }
  return lines.join("\n")
}
