/**
 * The `cilium-host-routing` check, only when Cilium is present (`presenceOf` in `MarkUsers.ts`): its
 * host routing must be `Legacy`. Cilium's BPF host routing (`bpf.hostLegacyRouting=false`, the
 * default where supported) hands pod egress from the pod's interface straight to the native device
 * with bpf_redirect_neigh, so mangle PREROUTING never sees it and no tenant mark is ever set. Read
 * from `cilium-dbg status`: the line `Host Routing: BPF|Legacy` (older agents) or
 * `Routing: Network: … Host: BPF|Legacy` (newer).
 */

import { type CheckResult, result } from "./CheckResult.ts"
import { type DoctorFacts, type Fact, isUnreadable, type PluginSettings } from "./Facts.ts"
import { presenceOf } from "./MarkUsers.ts"
import type { NetfilterInventory } from "./NodeFacts.ts"

/** `BPF` or `Legacy` from `cilium-dbg status` text, in either of the formats Cilium has printed. */
export const parseHostRouting = (text: string): "BPF" | "Legacy" | undefined => {
  const m = /^Host Routing:\s+(BPF|Legacy)\b/m.exec(text) ?? /^Routing:.*\bHost:\s+(BPF|Legacy)\b/m.exec(text)
  return m === null ? undefined : (m[1] as "BPF" | "Legacy")
}

export const ciliumChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const inv = facts.inventory
  const presence = presenceOf(
    isUnreadable(inv) ? { chains: [], markSets: [], nftTables: [] } : inv,
    facts.files,
    facts.config.plugin
  )
  if (presence.cilium === undefined) return []
  const hint =
    "set bpf.hostLegacyRouting=true in Cilium's Helm values (enable-host-legacy-routing: true) and restart the agents"
  const status = facts.cilium
  if (isUnreadable(status))
    return [
      result(
        "cilium-host-routing",
        "",
        "warn",
        `Cilium found (${presence.cilium}), but its status is unreadable: ${status.unreadable}`,
        hint
      )
    ]
  if (status === undefined) {
    return [
      result(
        "cilium-host-routing",
        "",
        "warn",
        `Cilium found (${presence.cilium}); cannot tell its host routing mode (cilium-dbg not installed here): BPF host routing bypasses netfilter, so no tenant mark is ever set`,
        `check \`cilium-dbg status\` in the agent pod shows Host Routing: Legacy; else ${hint}`
      )
    ]
  }
  const mode = parseHostRouting(status.text)
  if (mode === "Legacy")
    return [
      result("cilium-host-routing", "", "ok", "Cilium host routing is Legacy: pod egress passes netfilter")
    ]
  if (mode === "BPF") {
    return [
      result(
        "cilium-host-routing",
        "",
        "fail",
        "Cilium host routing is BPF: pod egress bypasses netfilter, so no tenant mark is ever set",
        hint
      )
    ]
  }
  return [
    result(
      "cilium-host-routing",
      "",
      "warn",
      `Cilium found (${presence.cilium}); \`cilium-dbg status\` (exit ${status.exitCode}) shows no host routing mode`,
      `make sure Host Routing is Legacy; else ${hint}`
    )
  ]
}

/** Whether `cilium-dbg status` is worth running (only when Cilium is present). */
export const ciliumPresent = (
  inventory: Fact<NetfilterInventory>,
  files: DoctorFacts["files"],
  plugin: PluginSettings | undefined
): boolean =>
  presenceOf(isUnreadable(inventory) ? { chains: [], markSets: [], nftTables: [] } : inventory, files, plugin)
    .cilium !== undefined
