/**
 * `tenant-routing doctor` (docs/DESIGN.md §7): gather what the node looks like through the
 * services, then let `diagnose` (domain/doctor/Diagnose.ts) judge it. Reads top to bottom: load the
 * tenants file and the installed conflist, read rules and the tenant tables, then everything else
 * concurrently — backends, entries, records, reverse-path sysctls, netfilter inventory, CNI binaries,
 * Cilium's status, and one namespace read with the configured identity — and the CNI config dir's
 * listing with our conflist, for the chaining check.
 *
 * Nothing here changes the node, and nothing fails: a fact that cannot be read becomes `Unreadable`
 * with the reason, and the diagnosis reports it (usually as a warning), so one broken tool never
 * hides the other checks. Doctor does not take the node lock (it must never delay a pod start), so
 * an ADD or DEL running at the same moment can show as a stale entry or record: run it again.
 */
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Path from "effect/Path"
import { type Backend, DEFAULT_STATE_DIR } from "../domain/cni/Config.ts"
import { AttachmentStore } from "../domain/datapath/AttachmentStore.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import { type CheckResult, exitCodeOf, summaryOf } from "../domain/doctor/CheckResult.ts"
import { ciliumPresent } from "../domain/doctor/CiliumChecks.ts"
import { diagnose } from "../domain/doctor/Diagnose.ts"
import { isCniConfFile, loadConfig } from "../domain/doctor/DoctorConfig.ts"
import {
  type ApiFact,
  type DoctorFacts,
  type Fact,
  isUnreadable,
  type LoadedConfig,
  type PluginSettings,
  type RpFacts,
  type TenantSource,
  unreadable
} from "../domain/doctor/Facts.ts"
import { NodeFacts } from "../domain/doctor/NodeFacts.ts"
import { ipv4GatewaysToProbe } from "../domain/doctor/ReversePathChecks.ts"
import { tablesToRead } from "../domain/doctor/RoutingChecks.ts"
import { formatMark } from "../domain/net/Mark.ts"
import { DEFAULT_TENANTS_FILE } from "../domain/node-setup/NodeSetupConfig.ts"
import { Routing } from "../domain/node-setup/Routing.ts"
import { FAMILIES } from "../domain/node-setup/RoutingPlan.ts"
import { AnnotationSource } from "../domain/tenancy/AnnotationSource.ts"
import { describeFileError } from "./fileError.ts"

export interface DoctorOptions {
  /** `--config`: a tenants file that must exist. */
  readonly tenantsFile: string | undefined
  /** The tenants file read when `--config` is not given, if it exists. */
  readonly defaultTenantsFile: string
  /** Where the runtime's conflists are. */
  readonly cniConfDir: string
  /** Where CNI plugin binaries are (portmap, cilium-cni). */
  readonly cniBinDir: string
  /** The namespace read to learn whether the configured identity may read namespaces. */
  readonly probeNamespace: string
}

export const DEFAULT_DOCTOR_OPTIONS: DoctorOptions = {
  tenantsFile: undefined,
  defaultTenantsFile: DEFAULT_TENANTS_FILE,
  cniConfDir: "/etc/cni/net.d",
  cniBinDir: "/opt/cni/bin",
  probeNamespace: "default"
}

export interface DoctorReport {
  readonly source: TenantSource
  readonly plugin: PluginSettings | undefined
  readonly results: ReadonlyArray<CheckResult>
}

export type DoctorServices =
  | Routing
  | Netfilter
  | AttachmentStore
  | NodeFacts
  | AnnotationSource
  | FileSystem.FileSystem
  | Path.Path

/** Reads a fact; a failure (every service error says what went wrong in `msg`) becomes `Unreadable`. */
const fact = <A, E extends { readonly msg: string }, R>(
  read: Effect.Effect<A, E, R>
): Effect.Effect<Fact<A>, never, R> => read.pipe(Effect.catch((e) => Effect.succeed(unreadable(e.msg))))

/** The tenants file (explicit, or the default one when present) and every file libcni would load. */
const readConfig = Effect.fnUntraced(function* (options: DoctorOptions) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const readText = (file: string, what: string, hint: string) =>
    fs.readFileString(file).pipe(
      Effect.map((text) => ({ path: file, text })),
      Effect.catch((e) => Effect.succeed({ path: file, error: describeFileError(e, what, file, hint) }))
    )
  const tenantsPath =
    options.tenantsFile ??
    ((yield* fs.exists(options.defaultTenantsFile).pipe(Effect.orElseSucceed(() => false)))
      ? options.defaultTenantsFile
      : undefined)
  const tenantsFile =
    tenantsPath === undefined
      ? undefined
      : yield* readText(tenantsPath, "tenants file", "pass --config FILE or create it")
  const names = yield* fs.readDirectory(options.cniConfDir).pipe(Effect.orElseSucceed(() => []))
  const conflists = yield* Effect.forEach(
    names.filter(isCniConfFile).map((n) => path.join(options.cniConfDir, n)),
    (file) => readText(file, "CNI config", "")
  )
  return loadConfig({
    tenantsFile,
    conflists: conflists.flatMap((c) => ("text" in c ? [c] : []))
  })
})

/** The CNI config dir's file names and the conflist holding the plugin, parsed (`cni-chaining`). */
const readCniConf = (dir: string, plugin: PluginSettings) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const files = yield* fs
      .readDirectory(dir)
      .pipe(Effect.mapError((e) => ({ msg: describeFileError(e, "CNI conf dir", dir, "") })))
    const text = yield* fs
      .readFileString(plugin.conflist)
      .pipe(Effect.mapError((e) => ({ msg: describeFileError(e, "conflist", plugin.conflist, "") })))
    const conflist = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: () => ({ msg: `${plugin.conflist} is not JSON` })
    })
    return { files, conflist }
  })

/** rp_filter and src_valid_mark of `all` and of the interfaces leading to the IPv4 gateways. */
const readRp = (gateways: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    if (gateways.length === 0)
      return { gateways: [], sysctls: {}, mainDefaultInterfaces: [] } satisfies RpFacts
    const facts = yield* NodeFacts
    const routed = yield* Effect.forEach(gateways, (gateway) =>
      Effect.map(facts.routeInterface(gateway), (iface) => ({ gateway, iface }))
    )
    const ifaces = ["all", ...new Set(routed.flatMap((g) => (g.iface === undefined ? [] : [g.iface])))]
    const asNumber = (v: string | undefined) => (v === undefined || !/^\d+$/.test(v) ? undefined : Number(v))
    const sysctls = yield* Effect.forEach(ifaces, (iface) =>
      Effect.all({
        rpFilter: Effect.map(facts.sysctl(["net", "ipv4", "conf", iface, "rp_filter"]), asNumber),
        srcValidMark: Effect.map(facts.sysctl(["net", "ipv4", "conf", iface, "src_valid_mark"]), asNumber)
      }).pipe(Effect.map((values) => [iface, values] as const))
    )
    return {
      gateways: routed,
      sysctls: Object.fromEntries(sysctls),
      mainDefaultInterfaces: yield* facts.mainDefaultInterfaces(4)
    } satisfies RpFacts
  })

/** One namespace read with the conflist's kubeconfig, bounded by its apiTimeout. */
const readApi = (plugin: PluginSettings | undefined, namespace: string) =>
  Effect.gen(function* () {
    if (plugin?.kubeconfig === undefined) return { kind: "no-kubeconfig" } satisfies ApiFact
    const source = yield* AnnotationSource
    const timeout = `${plugin.apiTimeoutMs} millis` as const
    const unavailable = (msg: string): ApiFact => ({ kind: "read", namespace, outcome: "unavailable", msg })
    const reader = yield* source.connect(plugin.kubeconfig).pipe(
      Effect.timeoutOption(timeout),
      Effect.map((r) =>
        r._tag === "Some" ? r.value : unavailable(`no answer within ${plugin.apiTimeoutMs}ms`)
      ),
      Effect.catchTags({
        InvalidConfig: (e) =>
          Effect.succeed<ApiFact>({ kind: "connect-failed", error: "InvalidConfig", msg: e.msg }),
        TryAgainLater: (e) =>
          Effect.succeed<ApiFact>({ kind: "connect-failed", error: "TryAgainLater", msg: e.msg })
      })
    )
    if ("kind" in reader) return reader
    return yield* reader.namespace(namespace).pipe(
      Effect.timeoutOption(timeout),
      Effect.map(
        (found): ApiFact =>
          found._tag === "None"
            ? unavailable(`no answer within ${plugin.apiTimeoutMs}ms`)
            : { kind: "read", namespace, outcome: found.value === undefined ? "not-found" : "ok", msg: "" }
      ),
      Effect.catchTags({
        ApiForbidden: (e) =>
          Effect.succeed<ApiFact>({ kind: "read", namespace, outcome: "forbidden", msg: e.msg }),
        ApiUnavailable: (e) => Effect.succeed(unavailable(e.msg))
      })
    )
  })

/** Everything the diagnosis looks at. */
export const gatherFacts = Effect.fn("doctor.gatherFacts")(function* (
  options: DoctorOptions
): Effect.fn.Return<DoctorFacts, never, DoctorServices> {
  const config: LoadedConfig = yield* readConfig(options)
  const { source, plugin } = config
  const routing = yield* Routing
  const nf = yield* Netfilter
  const store = yield* AttachmentStore
  const node = yield* NodeFacts

  const rules = yield* fact(
    Effect.map(
      Effect.forEach(FAMILIES, (f) => routing.rules(f)),
      (rs) => rs.flat()
    )
  )
  const routes = yield* fact(
    Effect.map(
      Effect.forEach(tablesToRead(source, rules), (t) => routing.routes(t.family, t.table)),
      (rs) => rs.flat()
    )
  )
  const backend = (b: Backend) => Effect.all({ usable: nf.usable(b), entries: fact(nf.list(b)) })
  const [ipt, nft, listing, rp, inventory, files, api] = yield* Effect.all(
    [
      backend("iptables"),
      backend("nftables"),
      fact(store.list(plugin?.stateDir ?? DEFAULT_STATE_DIR, undefined)),
      fact(readRp(ipv4GatewaysToProbe(source, rules, routes))),
      fact(node.netfilterInventory),
      Effect.all({
        portmap: node.fileExists(`${options.cniBinDir}/portmap`),
        ciliumCni: node.fileExists(`${options.cniBinDir}/cilium-cni`)
      }),
      readApi(plugin, options.probeNamespace)
    ],
    { concurrency: "unbounded" }
  )
  const cilium = ciliumPresent(inventory, files, plugin) ? yield* fact(node.ciliumStatus) : undefined
  const cniConf = plugin === undefined ? undefined : yield* fact(readCniConf(options.cniConfDir, plugin))
  return {
    config,
    backends: { iptables: ipt.usable, nftables: nft.usable },
    rules,
    routes,
    entries: { iptables: ipt.entries, nftables: nft.entries },
    records: isUnreadable(listing) ? listing : listing.records,
    unreadableRecords: isUnreadable(listing) ? [] : listing.skipped,
    rp,
    inventory,
    files,
    cilium,
    api,
    ...(cniConf === undefined ? {} : { cniConf })
  } satisfies DoctorFacts
})

export const doctor = Effect.fn("doctor")(function* (
  options: DoctorOptions
): Effect.fn.Return<DoctorReport, never, DoctorServices> {
  const facts = yield* gatherFacts(options)
  return { source: facts.config.source, plugin: facts.config.plugin, results: diagnose(facts) }
})

// ---------------------------------------------------------------------------------------------------
// Output

const STATUS_TEXT = { ok: "ok", warn: "WARN", fail: "FAIL" } as const

/** The human form: one aligned row per result, its hint under it, then a summary line. */
export const formatDoctor = (report: DoctorReport): string => {
  const rows = report.results.map((r) => [STATUS_TEXT[r.status], r.check, r.subject || "-", r.reason])
  const header = ["STATUS", "CHECK", "SUBJECT", "REASON"]
  const widths = [0, 1, 2].map((i) => Math.max(header[i]!.length, ...rows.map((row) => row[i]!.length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c))
      .join("  ")
      .trimEnd()
  const indent = " ".repeat(widths[0]! + widths[1]! + widths[2]! + 6)
  const body = report.results.flatMap((r, i) => [
    line(rows[i]!),
    ...(r.hint === "" ? [] : [`${indent}hint: ${r.hint}`])
  ])
  const count = summaryOf(report.results)
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`
  const summary = `${plural(count.fail, "failure")}, ${plural(count.warn, "warning")}, ${count.ok} ok`
  return [line(header), ...body, "", summary].join("\n")
}

/** The machine form. */
export const doctorJson = (report: DoctorReport) => ({
  ok: exitCodeOf(report.results) === 0,
  summary: summaryOf(report.results),
  tenants: {
    source: report.source.kind,
    path: report.source.path ?? null,
    markMask: formatMark(report.source.markMask),
    names: report.source.tenants.map((t) => t.name)
  },
  conflist: report.plugin?.conflist ?? null,
  checks: report.results
})
