/**
 * The `tenant-rule`, `suppress-rule` and `tenant-route` checks: node-setup's rules and routes
 * (docs/DESIGN.md §6) exist. With a tenants file, exactly: `fwmark MARK/MASK lookup TABLE` and a default
 * route via one of the tenant's gateways in each family where it has gateways (missing: fail), the
 * rule and the unreachable default in families where it has none (missing: warn, its marked traffic
 * would leave through the main table instead of being dropped). From a conflist there are no tables:
 * some rule with the tenant's mark and mask must exist, and the table it looks up must hold a default
 * route via a gateway. In both cases `lookup main suppress_prefixlength 0` must come before the tenant
 * rules. Also decides which tables the program reads (`tablesToRead`).
 */
import { canonicalIp, type Family } from "../net/Ip.ts"
import { formatMark } from "../net/Mark.ts"
import { ipFamily } from "../node-setup/NodeSetupConfig.ts"
import {
  FAMILIES,
  type IpRule,
  MAIN_TABLE,
  type Route,
  UNREACHABLE_METRIC
} from "../node-setup/RoutingPlan.ts"
import { type CheckResult, result } from "./CheckResult.ts"
import { type DoctorFacts, type DoctorTenant, type Fact, isUnreadable, type TenantSource } from "./Facts.ts"

const ipv = (f: Family) => `ipv${f}`

const isSuppressRule = (r: IpRule): boolean =>
  r.fwmark === undefined && r.table === MAIN_TABLE && r.suppressPrefixlength === 0 && r.other === undefined

/** The tenant's rule in a family: exact with a tenants file, any rule with its mark and mask otherwise. */
export const tenantRuleIndex = (
  rules: ReadonlyArray<IpRule>,
  t: DoctorTenant,
  mask: number,
  f: Family
): number =>
  rules.findIndex(
    (r) =>
      r.family === f &&
      r.fwmark === t.mark &&
      r.mask === mask &&
      r.other === undefined &&
      (t.routing === undefined ? r.table !== 0 : r.table === t.routing.table)
  )

/** The (family, table) pairs whose routes doctor needs. */
export const tablesToRead = (
  source: TenantSource,
  rules: Fact<ReadonlyArray<IpRule>>
): ReadonlyArray<{ readonly family: Family; readonly table: number }> => {
  // Without a tenants file, the tables the tenant's rules look up, in both families (a table that
  // routes a family whose rule is missing shows that family leaking).
  const tablesOf = (t: DoctorTenant): ReadonlyArray<number> =>
    t.routing !== undefined
      ? [t.routing.table]
      : isUnreadable(rules)
        ? []
        : FAMILIES.flatMap((f) => {
            const i = tenantRuleIndex(rules, t, source.markMask, f)
            return i < 0 ? [] : [rules[i]!.table]
          })
  const pairs = source.tenants.flatMap((t) =>
    tablesOf(t).flatMap((table) => FAMILIES.map((family) => ({ family, table })))
  )
  return pairs.filter((p, i) => pairs.findIndex((q) => q.family === p.family && q.table === p.table) === i)
}

const isDefault = (r: Route): boolean => r.dst === "default"
export const gatewayDefaults = (routes: ReadonlyArray<Route>, f: Family, table: number) =>
  routes.filter(
    (r) =>
      r.family === f && r.table === table && isDefault(r) && r.kind === "unicast" && r.gateways.length > 0
  )
const hasUnreachableDefault = (routes: ReadonlyArray<Route>, f: Family, table: number) =>
  routes.some(
    (r) =>
      r.family === f &&
      r.table === table &&
      isDefault(r) &&
      r.kind === "unreachable" &&
      (r.metric ?? 0) === UNREACHABLE_METRIC
  )

const NODE_SETUP_HINT = "run `tenant-routing node-setup` with the tenants file (it only adds what is missing)"

const ruleText = (mark: number, mask: number, table: number | undefined) =>
  `fwmark ${formatMark(mark)}/${formatMark(mask)} lookup ${table ?? "<table>"}`

const describeRules = (
  rules: ReadonlyArray<IpRule>,
  t: DoctorTenant,
  mask: number,
  families: ReadonlyArray<Family>
): string => {
  const tables = [...new Set(families.map((f) => rules[tenantRuleIndex(rules, t, mask, f)]!.table))]
  return `fwmark ${formatMark(t.mark)}/${formatMark(mask)} lookup ${tables.join("/")}`
}

export const routingChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const { source } = facts.config
  const { rules, routes } = facts
  if (isUnreadable(rules)) {
    return [
      result("tenant-rule", "", "fail", `cannot read ip rules: ${rules.unreadable}`, "run doctor as root")
    ]
  }
  const out: Array<CheckResult> = []
  const mask = source.markMask
  const viaFile = source.kind === "tenants-file"

  // tenant rules, per family (tenants file) or per tenant (conflist/defaults: any family will do)
  const foundIn = new Map<string, Array<Family>>()
  for (const t of source.tenants) {
    const families = FAMILIES.filter((f) => tenantRuleIndex(rules, t, mask, f) >= 0)
    foundIn.set(t.name, families)
    if (t.routing === undefined) {
      const near = rules.find((r) => r.fwmark === t.mark)
      const tables = [...new Set(families.map((f) => rules[tenantRuleIndex(rules, t, mask, f)]!.table))]
      // A family whose table routes via a gateway but whose rule is missing: that family leaks.
      const unruled = isUnreadable(routes)
        ? []
        : FAMILIES.filter((f) => !families.includes(f)).flatMap((f) =>
            tables.flatMap((table) => gatewayDefaults(routes, f, table).map((r) => ({ f, r })))
          )
      if (families.length === 0) {
        out.push(
          result(
            "tenant-rule",
            t.name,
            "fail",
            `no ip rule "fwmark ${formatMark(t.mark)}/${formatMark(mask)}" in either family${near === undefined ? "" : `; found "${ruleText(near.fwmark!, near.mask ?? 0xffffffff, near.table)}" (IPv${near.family}) instead`}: its marked traffic leaves through the main table`,
            NODE_SETUP_HINT
          )
        )
      } else if (unruled.length > 0) {
        const { f, r } = unruled[0]!
        out.push(
          result(
            "tenant-rule",
            t.name,
            "fail",
            `no IPv${f} rule "fwmark ${formatMark(t.mark)}/${formatMark(mask)}", although table ${r.table} routes IPv${f} via ${r.gateways.join(", ")}: its marked IPv${f} traffic leaves through the main table`,
            NODE_SETUP_HINT
          )
        )
      } else {
        out.push(
          result(
            "tenant-rule",
            t.name,
            "ok",
            `${families.map(ipv).join(", ")}: ${describeRules(rules, t, mask, families)}`
          )
        )
      }
      continue
    }
    for (const f of FAMILIES) {
      const hasGateways = t.routing.gateways.some((g) => ipFamily(g) === f)
      const subject = `${t.name}/${ipv(f)}`
      const want = ruleText(t.mark, mask, t.routing.table)
      const i = tenantRuleIndex(rules, t, mask, f)
      if (i >= 0) {
        const r = rules[i]!
        const where =
          r.priority === t.routing.priority
            ? ""
            : ` at priority ${r.priority} (the tenants file says ${t.routing.priority})`
        out.push(result("tenant-rule", subject, "ok", `${want}${where}`))
        continue
      }
      const near = rules.find((r) => r.family === f && r.fwmark === t.mark)
      const nearText =
        near === undefined
          ? ""
          : `; found "${ruleText(near.fwmark!, near.mask ?? 0xffffffff, near.table)}" instead`
      out.push(
        hasGateways
          ? result(
              "tenant-rule",
              subject,
              "fail",
              `no ip rule "${want}"${nearText}: its marked IPv${f} traffic leaves through the main table`,
              NODE_SETUP_HINT
            )
          : result(
              "tenant-rule",
              subject,
              "warn",
              `no ip rule "${want}"${nearText}: without IPv${f} gateways its IPv${f} traffic should be dropped, but leaves through the main table`,
              NODE_SETUP_HINT
            )
      )
    }
  }

  // the suppress rule, per family where tenant rules exist or are expected
  for (const f of FAMILIES) {
    const tenantIdx = source.tenants
      .map((t) => ({ t, i: tenantRuleIndex(rules, t, mask, f) }))
      .filter((x) => x.i >= 0)
    const expected = viaFile && source.tenants.some((t) => t.routing?.gateways.some((g) => ipFamily(g) === f))
    if (tenantIdx.length === 0 && !expected) continue
    const s = rules.findIndex((r) => r.family === f && isSuppressRule(r))
    const first = tenantIdx.reduce<{ t: DoctorTenant; i: number } | undefined>(
      (m, x) => (m === undefined || x.i < m.i ? x : m),
      undefined
    )
    if (s < 0) {
      out.push(
        result(
          "suppress-rule",
          ipv(f),
          "fail",
          `no "lookup main suppress_prefixlength 0" rule: marked traffic to pod, service and node networks follows the tenant default routes`,
          NODE_SETUP_HINT
        )
      )
    } else if (first !== undefined && first.i < s) {
      out.push(
        result(
          "suppress-rule",
          ipv(f),
          "fail",
          `"lookup main suppress_prefixlength 0" (priority ${rules[s]!.priority}) comes after ${first.t.name}'s rule (priority ${rules[first.i]!.priority}): more specific main routes do not win for marked traffic`,
          "give the suppress rule a priority below every tenant rule (node-setup uses the lowest tenant priority - 1)"
        )
      )
    } else {
      out.push(
        result(
          "suppress-rule",
          ipv(f),
          "ok",
          `"lookup main suppress_prefixlength 0" at priority ${rules[s]!.priority}, before the tenant rules`
        )
      )
    }
  }

  // routes
  if (isUnreadable(routes)) {
    out.push(
      result(
        "tenant-route",
        "",
        "fail",
        `cannot read the tenant tables: ${routes.unreadable}`,
        "run doctor as root"
      )
    )
    return out
  }
  for (const t of source.tenants) {
    if (t.routing === undefined) {
      const families = foundIn.get(t.name) ?? []
      if (families.length === 0) continue // the rule's failure says it all
      // Which families a table should route is unknown without a tenants file: one will do, and a
      // family routed without its rule is the rule check's failure.
      const tables = [...new Set(families.map((f) => rules[tenantRuleIndex(rules, t, mask, f)]!.table))]
      const withGateway = FAMILIES.flatMap((f) =>
        tables.flatMap((table) => gatewayDefaults(routes, f, table).map((r) => ({ f, r })))
      )
      out.push(
        withGateway.length > 0
          ? result(
              "tenant-route",
              t.name,
              "ok",
              withGateway
                .map(({ f, r }) => `${ipv(f)} default via ${r.gateways.join(", ")} in table ${r.table}`)
                .join("; ")
            )
          : result(
              "tenant-route",
              t.name,
              "fail",
              `table ${tables.join(", ")}, which its rules look up, holds no default route via a gateway in either family: its traffic is dropped`,
              "add the tenant's gateway route (a tenants file with `node-setup` does it)"
            )
      )
      continue
    }
    const table = t.routing.table
    for (const f of FAMILIES) {
      const wanted = t.routing.gateways.filter((g) => ipFamily(g) === f)
      const subject = `${t.name}/${ipv(f)}`
      const unreachable = hasUnreachableDefault(routes, f, table)
      if (wanted.length === 0) {
        out.push(
          unreachable
            ? result(
                "tenant-route",
                subject,
                "ok",
                `no IPv${f} gateways: table ${table} drops its IPv${f} traffic (unreachable default)`
              )
            : result(
                "tenant-route",
                subject,
                "warn",
                `no IPv${f} gateways and no unreachable default in table ${table}: its marked IPv${f} traffic falls through to the main table`,
                NODE_SETUP_HINT
              )
        )
        continue
      }
      const defaults = gatewayDefaults(routes, f, table)
      const matching = defaults.find((r) => r.gateways.some((g) => wanted.includes(canonicalIp(g))))
      if (matching === undefined) {
        out.push(
          result(
            "tenant-route",
            subject,
            "fail",
            defaults.length === 0
              ? `no default route via ${wanted.join(", ")} in table ${table}`
              : `the default route of table ${table} goes via ${defaults.flatMap((r) => r.gateways).join(", ")}, not the tenant's ${wanted.join(", ")}`,
            NODE_SETUP_HINT
          )
        )
        continue
      }
      const missing = wanted.filter((g) => !matching.gateways.map(canonicalIp).includes(g))
      if (missing.length > 0) {
        out.push(
          result(
            "tenant-route",
            subject,
            "warn",
            `default route in table ${table} via ${matching.gateways.join(", ")}; ${missing.join(", ")} missing from it`,
            NODE_SETUP_HINT
          )
        )
      } else if (!unreachable) {
        out.push(
          result(
            "tenant-route",
            subject,
            "warn",
            `default via ${matching.gateways.join(", ")} in table ${table}, but no unreachable default behind it: if that route goes away, the traffic falls through to the main table`,
            NODE_SETUP_HINT
          )
        )
      } else {
        out.push(
          result(
            "tenant-route",
            subject,
            "ok",
            `default via ${matching.gateways.join(", ")} in table ${table}`
          )
        )
      }
    }
  }
  return out
}
