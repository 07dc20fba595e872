/**
 * `tenant-routing doctor` decided purely (docs/DESIGN.md §7): facts gathered from the node go in
 * (`Facts.ts`), named check results (ok / warn / fail, a one-line reason, a hint) come out
 * (`CheckResult.ts`). `programs/doctor.ts` gathers the facts through the services and never judges
 * them; everything a reviewer needs to know about what doctor calls healthy is in this folder.
 *
 * Checks, in the order `diagnose` reports them:
 * - `config` (here, with `DoctorConfig.ts`): the tenants file and the installed conflist decode, and
 *   agree with each other.
 * - `backend` (here): the conflist's backend (`auto`: nftables when usable, else iptables) works here.
 * - `tenant-rule`, `suppress-rule`, `tenant-route` (`RoutingChecks.ts`): node-setup's rules and
 *   routes (§6) exist.
 * - `rp-filter` (`ReversePathChecks.ts`): reverse-path filtering lets replies from the tenant gateways in.
 * - `stale-entries`, `stale-records`, `unknown-marks` (`StaleChecks.ts`): netfilter entries and state
 *   records match, and every entry carries a tenant's mark.
 * - `mark-clash` (`MarkUsers.ts`): the marks' bits against the bits other installed software uses.
 * - `cilium-host-routing` (`CiliumChecks.ts`): with Cilium present, its host routing must be `Legacy`.
 * - `cni-chaining` (`ChainingChecks.ts`): our conflist sorts first, and `cilium-cni` after us has a
 *   chaining mode it accepts.
 * - `namespace-read` (`ApiChecks.ts`): with a kubeconfig, the configured identity may read namespaces.
 */
import { formatMark } from "../net/Mark.ts"
import { apiChecks } from "./ApiChecks.ts"
import { chainingChecks } from "./ChainingChecks.ts"
import { type CheckResult, result } from "./CheckResult.ts"
import { ciliumChecks } from "./CiliumChecks.ts"
import { disagreements } from "./DoctorConfig.ts"
import type { DoctorFacts } from "./Facts.ts"
import { clashChecks } from "./MarkUsers.ts"
import { rpChecks } from "./ReversePathChecks.ts"
import { routingChecks } from "./RoutingChecks.ts"
import { staleChecks } from "./StaleChecks.ts"

const configChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const { source, plugin, problems } = facts.config
  const out = problems.map((p) =>
    result("config", "", "fail", p, "fix the file; doctor checked the rest with the tenants it could find")
  )
  const from =
    source.kind === "defaults"
      ? "the defaults (no tenants file, no conflist with the plugin)"
      : `${source.kind} ${source.path}`
  out.push(
    result(
      "config",
      "tenants",
      "ok",
      `${source.tenants.length} tenants from ${from}, markMask ${formatMark(source.markMask)}`
    )
  )
  if (plugin !== undefined) {
    const diff = disagreements(source, plugin)
    out.push(
      diff.length === 0
        ? result(
            "config",
            "conflist",
            "ok",
            `plugin config from ${plugin.conflist} (network ${plugin.network})`
          )
        : result(
            "config",
            "conflist",
            "warn",
            `${plugin.conflist} and the tenants file disagree: ${diff.join("; ")}`,
            "ADD marks by the conflist and node-setup routes by the tenants file: make them name the same tenants, marks and markMask"
          )
    )
  }
  return out
}

const backendChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const configured = facts.config.plugin?.backend ?? "auto"
  const { iptables, nftables } = facts.backends
  if (configured === "auto") {
    if (nftables)
      return [result("backend", "nftables", "ok", "backend auto: nft works, so ADD uses nftables")]
    if (iptables)
      return [result("backend", "iptables", "ok", "backend auto: nft is not usable, so ADD uses iptables")]
    return [
      result(
        "backend",
        "auto",
        "fail",
        "neither nft nor iptables-save/ip6tables-save works: every ADD fails (STATUS reports 50)",
        "install nftables or iptables"
      )
    ]
  }
  const ok = configured === "iptables" ? iptables : nftables
  return [
    ok
      ? result("backend", configured, "ok", `${configured} is usable`)
      : result(
          "backend",
          configured,
          "fail",
          `backend ${configured} is not usable here: every ADD fails (STATUS reports 50)`,
          configured === "iptables"
            ? "install iptables (iptables-save, ip6tables-save) or set backend auto"
            : "install nftables or set backend auto"
        )
  ]
}

/** Every check's results, in a fixed order. */
export const diagnose = (facts: DoctorFacts): ReadonlyArray<CheckResult> => [
  ...configChecks(facts),
  ...backendChecks(facts),
  ...routingChecks(facts),
  ...rpChecks(facts),
  ...staleChecks(facts),
  ...clashChecks(facts),
  ...ciliumChecks(facts),
  ...chainingChecks(facts),
  ...apiChecks(facts)
]
