/**
 * Which tenants `doctor` checks, and the plugin settings it checks them with: tenants from the
 * tenants file when there is one (node-setup routes by it), else from the installed conflist (ADD
 * marks by it), else the defaults; plugin settings (backend, state directory, kubeconfig) from the
 * conflist either way. A file that exists but cannot be used becomes one of `problems` (the `config`
 * check fails on each) and doctor goes on with the next source. Works on text handed to it: reading
 * the files is the program's job.
 */
import * as Result from "effect/Result"
import { decodeConfig, type PluginConfig } from "../cni/Config.ts"
import { formatIssues } from "../decode/Issue.ts"
import { PLUGIN_TYPE } from "../install/Conflist.ts"
import { formatMark, or32 } from "../net/Mark.ts"
import { decodeNodeSetupConfigJson, type NodeSetupConfig } from "../node-setup/NodeSetupConfig.ts"
import { DEFAULT_TENANTS } from "../tenancy/Tenant.ts"
import type { LoadedConfig, PluginSettings, TenantSource } from "./Facts.ts"

const sourceFromNodeSetup = (config: NodeSetupConfig, path: string): TenantSource => ({
  kind: "tenants-file",
  path,
  markMask: config.markMask,
  tenants: config.tenants.map((t) => ({
    name: t.name,
    mark: t.mark,
    routing: { table: t.table, priority: t.priority, gateways: t.gateways }
  }))
})

const sourceFromPlugin = (p: PluginSettings): TenantSource => ({
  kind: "conflist",
  path: p.conflist,
  markMask: p.markMask,
  tenants: p.tenants.map((t) => ({ name: t.name, mark: t.mark, routing: undefined }))
})

export const DEFAULT_SOURCE: TenantSource = {
  kind: "defaults",
  path: undefined,
  markMask: DEFAULT_TENANTS.reduce((m, t) => or32(m, t.mark), 0),
  tenants: DEFAULT_TENANTS.map((t) => ({ name: t.name, mark: t.mark, routing: undefined }))
}

const isRecord = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const settingsOf = (path: string, config: PluginConfig, others: ReadonlyArray<string>): PluginSettings => ({
  conflist: path,
  network: config.name,
  backend: config.backend,
  stateDir: config.stateDir,
  kubeconfig: config.kubeconfig,
  pinning: config.pinning,
  failurePolicy: config.failurePolicy,
  apiTimeoutMs: config.apiTimeoutMs,
  markMask: config.markMask,
  tenants: config.tenants,
  otherPlugins: [...others, ...(config.delegate === undefined ? [] : [config.delegate.type])]
})

/** The files libcni loads from the CNI conf dir: these extensions only, in file-name order. */
export const CNI_CONF_EXTENSIONS = [".conf", ".conflist", ".json"] as const

export const isCniConfFile = (name: string): boolean => CNI_CONF_EXTENSIONS.some((ext) => name.endsWith(ext))

/**
 * A file as libcni reads it, as a plugin list: a `.conflist` is one already; a `.conf` or `.json`
 * holds a single plugin config (it must have a `type`), which libcni wraps into a list of one that
 * takes the config's own `name` and `cniVersion`. Undefined when the runtime could not use it.
 */
const asPluginList = (
  path: string,
  json: unknown
):
  | {
      readonly cniVersion: unknown
      readonly name: unknown
      readonly plugins: ReadonlyArray<Record<string, unknown>>
    }
  | undefined => {
  if (!isRecord(json)) return undefined
  if (path.endsWith(".conflist")) {
    const plugins = Array.isArray(json.plugins) ? json.plugins.filter(isRecord) : []
    return { cniVersion: json.cniVersion, name: json.name, plugins }
  }
  if (typeof json.type !== "string" || json.type === "") return undefined
  return { cniVersion: json.cniVersion, name: json.name, plugins: [json] }
}

/**
 * The first file, in file-name order as libcni loads them (`.conf`, `.conflist`, `.json`), whose
 * plugins include ours; its entry gets the list's `cniVersion` and `name`, as the runtime injects
 * them. Unparsable files are skipped (they are no config the runtime would use either).
 */
export const pickConflist = (
  files: ReadonlyArray<{ readonly path: string; readonly text: string }>
): { readonly plugin: PluginSettings } | { readonly problem: string } | undefined => {
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  for (const file of sorted) {
    const parsed = Result.try({ try: () => JSON.parse(file.text) as unknown, catch: String })
    if (Result.isFailure(parsed)) continue
    const list = asPluginList(file.path, parsed.success)
    if (list === undefined) continue
    const entry = list.plugins.find((p) => p.type === PLUGIN_TYPE)
    if (entry === undefined) continue
    const others = list.plugins
      .filter((p) => p !== entry && typeof p.type === "string")
      .map((p) => String(p.type))
    const decoded = decodeConfig({ ...entry, cniVersion: list.cniVersion, name: list.name })
    if (Result.isFailure(decoded))
      return { problem: `${file.path}: the plugin rejects its entry: ${decoded.failure.msg}` }
    return { plugin: settingsOf(file.path, decoded.success, others) }
  }
  return undefined
}

/**
 * Tenants from the tenants file when there is one, else from the installed conflist, else the
 * defaults; plugin settings (backend, state directory, kubeconfig) from the conflist either way.
 */
export const loadConfig = (input: {
  readonly tenantsFile:
    | { readonly path: string; readonly text: string }
    | { readonly path: string /** What is wrong, in words, naming the file. */; readonly error: string }
    | undefined
  readonly conflists: ReadonlyArray<{ readonly path: string; readonly text: string }>
}): LoadedConfig => {
  const problems: Array<string> = []
  const picked = pickConflist(input.conflists)
  const plugin = picked !== undefined && "plugin" in picked ? picked.plugin : undefined
  if (picked !== undefined && "problem" in picked) problems.push(picked.problem)
  const fallback = plugin === undefined ? DEFAULT_SOURCE : sourceFromPlugin(plugin)
  const file = input.tenantsFile
  if (file === undefined) return { source: fallback, plugin, problems }
  if ("error" in file) {
    // `error` is a whole sentence naming the file (the program words it).
    problems.push(file.error)
    return { source: fallback, plugin, problems }
  }
  const decoded = decodeNodeSetupConfigJson(file.text)
  if (Result.isFailure(decoded)) {
    problems.push(
      `tenants file ${file.path} is invalid: ${formatIssues(decoded.failure).split("\n").join("; ")}`
    )
    return { source: fallback, plugin, problems }
  }
  return { source: sourceFromNodeSetup(decoded.success, file.path), plugin, problems }
}

/** Where the tenants file and the conflist disagree (node-setup routes by one, ADD marks by the other). */
export const disagreements = (source: TenantSource, plugin: PluginSettings): ReadonlyArray<string> => {
  if (source.kind !== "tenants-file") return []
  const out: Array<string> = []
  if (source.markMask !== plugin.markMask) {
    out.push(
      `markMask ${formatMark(source.markMask)} in the tenants file, ${formatMark(plugin.markMask)} in the conflist`
    )
  }
  for (const t of source.tenants) {
    const p = plugin.tenants.find((x) => x.name === t.name)
    if (p === undefined) out.push(`${t.name} is not a tenant of the conflist`)
    else if (p.mark !== t.mark)
      out.push(`${t.name} has mark ${formatMark(t.mark)} here, ${formatMark(p.mark)} in the conflist`)
  }
  for (const p of plugin.tenants) {
    if (!source.tenants.some((t) => t.name === p.name))
      out.push(`${p.name} has no routing in the tenants file`)
  }
  return out
}
