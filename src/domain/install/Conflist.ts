/**
 * The conflist the DaemonSet installs on each node: a template from a ConfigMap, filled with the
 * node's pod CIDRs (host-local ranges must differ per node), and checked with the plugin's own config
 * decoder before it is written, so a bad ConfigMap never reaches the runtime.
 *
 * Placeholders: the string `"__POD_CIDR__"` becomes the first pod CIDR; a value `"__POD_CIDR_RANGES__"`
 * becomes host-local `ranges` with one range set per pod CIDR (dual-stack nodes have two); a value
 * `"__POD_CIDR_ROUTES__"` becomes host-local `routes` with a default route per family the node has a
 * pod CIDR of (`0.0.0.0/0`, and `::/0` on an IPv6 or dual-stack node), so an IPv6 pod gets a route too.
 *
 * Tenants are written once, in the tenants file node-setup reads (docs/DESIGN.md §6): `withTenants`
 * puts that file's tenants and markMask into the plugin's entry, so the mark a pod gets (the conflist)
 * and the way the node routes it (node-setup) cannot drift apart.
 */
import * as Result from "effect/Result"
import { decodeConfig } from "../cni/Config.ts"
import { formatPath, type Issue } from "../decode/Issue.ts"
import { isCidr } from "../net/Ip.ts"
import { formatMark } from "../net/Mark.ts"
import type { NodeSetupConfig } from "../node-setup/NodeSetupConfig.ts"

export const PLUGIN_TYPE = "tenant-routing-wrapper"
export const POD_CIDR = "__POD_CIDR__"
export const POD_CIDR_RANGES = "__POD_CIDR_RANGES__"
export const POD_CIDR_ROUTES = "__POD_CIDR_ROUTES__"

/** One default route per family among the pod CIDRs, IPv4 first. */
const defaultRoutes = (cidrs: ReadonlyArray<string>): ReadonlyArray<{ readonly dst: string }> => [
  ...(cidrs.some((c) => !c.includes(":")) ? [{ dst: "0.0.0.0/0" }] : []),
  ...(cidrs.some((c) => c.includes(":")) ? [{ dst: "::/0" }] : [])
]

const fill = (value: unknown, cidrs: ReadonlyArray<string>): unknown => {
  if (value === POD_CIDR) return cidrs[0]
  if (value === POD_CIDR_RANGES) return cidrs.map((subnet) => [{ subnet }])
  if (value === POD_CIDR_ROUTES) return defaultRoutes(cidrs)
  if (Array.isArray(value)) return value.map((v) => fill(v, cidrs))
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fill(v, cidrs)]))
  }
  return value
}

/**
 * The template with the first plugin's `tenants` and `markMask` replaced by the tenants file's (the
 * routing fields stay in the file: the plugin needs only names and marks). Anything that is not a
 * conflist with a first plugin is returned unchanged, for `renderConflist` to refuse.
 */
export const withTenants = (template: unknown, tenants: NodeSetupConfig): unknown => {
  const plugins = (template as { plugins?: unknown } | null)?.plugins
  if (!Array.isArray(plugins) || typeof plugins[0] !== "object" || plugins[0] === null) return template
  const first = {
    ...(plugins[0] as object),
    tenants: Object.fromEntries(tenants.tenants.map((t) => [t.name, { mark: formatMark(t.mark) }])),
    markMask: formatMark(tenants.markMask)
  }
  return { ...(template as object), plugins: [first, ...plugins.slice(1)] }
}

/** The filled conflist, or why it cannot be installed. */
export const renderConflist = (
  template: unknown,
  podCidrs: ReadonlyArray<string>
): { readonly conflist: Record<string, unknown> } | { readonly issues: ReadonlyArray<Issue> } => {
  if (podCidrs.length === 0)
    return { issues: [{ path: "node.spec.podCIDRs", message: "the node has no pod CIDR" }] }
  const bad = podCidrs.filter((c) => !isCidr(c))
  if (bad.length > 0)
    return { issues: [{ path: "node.spec.podCIDRs", message: `not CIDRs: ${bad.join(", ")}` }] }
  const conflist = fill(template, podCidrs) as Record<string, unknown>
  const plugins = conflist.plugins
  if (typeof conflist !== "object" || conflist === null || !Array.isArray(plugins)) {
    return { issues: [{ path: "plugins", message: "a conflist needs a plugins list" }] }
  }
  const index = plugins.findIndex((p) => (p as { type?: unknown } | null)?.type === PLUGIN_TYPE)
  if (index < 0) return { issues: [{ path: "plugins", message: `no plugin of type ${PLUGIN_TYPE}` }] }
  if (index !== 0)
    return {
      issues: [{ path: formatPath(["plugins", index]), message: `${PLUGIN_TYPE} must be the first plugin` }]
    }
  // libcni hands each plugin the conflist's name and cniVersion: validate what the plugin will see.
  const decoded = decodeConfig({
    ...(plugins[0] as object),
    name: conflist.name,
    cniVersion: conflist.cniVersion
  })
  if (Result.isFailure(decoded)) {
    const e = decoded.failure
    const issues = "issues" in e ? e.issues : [{ path: "cniVersion", message: e.msg }]
    return {
      issues: issues.map((i) => ({
        path: i.path.startsWith("[") ? `plugins[0]${i.path}` : `plugins[0].${i.path}`,
        message: i.message
      }))
    }
  }
  return { conflist }
}
