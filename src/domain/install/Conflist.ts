/**
 * The conflist the DaemonSet installs on each node: a template from a ConfigMap, filled with the
 * node's pod CIDRs (host-local ranges must differ per node), and checked with the plugin's own config
 * decoder before it is written, so a bad ConfigMap never reaches the runtime.
 *
 * Placeholders: the string `"__POD_CIDR__"` becomes the first pod CIDR; a value `"__POD_CIDR_RANGES__"`
 * becomes host-local `ranges` with one range set per pod CIDR (dual-stack nodes have two).
 */
import { decodeConfig } from "../cni/Config.ts"
import type { Issue } from "../cni/Errors.ts"
import { isCidr } from "../net/Ip.ts"

export const PLUGIN_TYPE = "tenant-routing-wrapper"
export const POD_CIDR = "__POD_CIDR__"
export const POD_CIDR_RANGES = "__POD_CIDR_RANGES__"

const fill = (value: unknown, cidrs: ReadonlyArray<string>): unknown => {
  if (value === POD_CIDR) return cidrs[0]
  if (value === POD_CIDR_RANGES) return cidrs.map((subnet) => [{ subnet }])
  if (Array.isArray(value)) return value.map((v) => fill(v, cidrs))
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fill(v, cidrs)]))
  }
  return value
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
    return { issues: [{ path: `plugins.${index}`, message: `${PLUGIN_TYPE} must be the first plugin` }] }
  // libcni hands each plugin the conflist's name and cniVersion: validate what the plugin will see.
  const decoded = decodeConfig({
    ...(plugins[0] as object),
    name: conflist.name,
    cniVersion: conflist.cniVersion
  })
  if ("error" in decoded) {
    const issues =
      "issues" in decoded.error ? decoded.error.issues : [{ path: "cniVersion", message: decoded.error.msg }]
    return { issues: issues.map((i) => ({ path: `plugins.0.${i.path}`, message: i.message })) }
  }
  return { conflist }
}
