/**
 * The `rp-filter` check: reverse-path filtering on the interfaces that lead to the tenants' IPv4
 * gateways, which the program finds for the gateways `ipv4GatewaysToProbe` names.
 *
 * Reverse-path filtering, precisely (net/ipv4/fib_frontend.c, `fib_validate_source` and
 * `__fib_validate_source`; include/linux/inetdevice.h). For a packet received on interface D the
 * kernel looks up the route back to the packet's source, with `flowi4_mark = skb->mark` only when
 * `src_valid_mark` is set for D (IN_DEV_ORCONF: `all` OR D), else mark 0. The mode is
 * IN_DEV_MAXCONF(rp_filter) = max(`all`, D); `default` only seeds new interfaces. Strict (1): the
 * lookup must succeed and its next hops must include D, else the packet is dropped (-EXDEV). Loose
 * (2): the lookup must succeed through any interface. Off (0): not checked.
 * What that means for tenant traffic:
 * - Egress, received on the pod's host-side interface with the tenant mark: the route back to the pod
 *   is its /32 in main, which the `suppress_prefixlength 0` rule lets win with or without the mark, so
 *   it passes in every mode (without the suppress rule and with src_valid_mark=1, strict mode would
 *   send the check to the tenant gateway and drop the pod's own packets).
 * - Replies, received on the interface that leads to the tenant gateway (G): the plugin marks only
 *   packets of the original direction, so replies arrive with mark 0 and src_valid_mark changes
 *   nothing for them (it only matters when something restores a mark onto replies, e.g. a CONNMARK
 *   rule, which this plugin does not install). The mark-0 lookup of a remote source skips the tenant
 *   rules and ends at main's default route. Strict mode therefore drops every reply arriving on G
 *   unless main's default route also leaves through G; loose mode passes them when main has a default
 *   route at all. Hence: warn when max(all, G) = 1 and G carries no default route of main, or when
 *   it is 2 and main has no IPv4 default route; the hint sets 2 on whichever of `all` and G is 1.
 *   IPv6 has no rp_filter sysctl (its reverse-path checks are netfilter rules, e.g. firewalld's
 *   IPv6_rpfilter), so it is not checked.
 */
import { canonicalIp } from "../net/Ip.ts"
import { ipFamily } from "../node-setup/NodeSetupConfig.ts"
import { FAMILIES, type IpRule, type Route } from "../node-setup/RoutingPlan.ts"
import { type CheckResult, result } from "./CheckResult.ts"
import { type DoctorFacts, type Fact, isUnreadable, type TenantSource } from "./Facts.ts"
import { gatewayDefaults, tenantRuleIndex } from "./RoutingChecks.ts"

/** The IPv4 gateways whose interfaces the rp_filter check looks at. */
export const ipv4GatewaysToProbe = (
  source: TenantSource,
  rules: Fact<ReadonlyArray<IpRule>>,
  routes: Fact<ReadonlyArray<Route>>
): ReadonlyArray<string> => {
  const gateways = source.tenants.flatMap((t) => {
    if (t.routing !== undefined) return t.routing.gateways.filter((g) => ipFamily(g) === 4)
    if (isUnreadable(rules) || isUnreadable(routes)) return []
    const tables = FAMILIES.flatMap((f) => {
      const i = tenantRuleIndex(rules, t, source.markMask, f)
      return i < 0 ? [] : [rules[i]!.table]
    })
    return tables.flatMap((table) => gatewayDefaults(routes, 4, table).flatMap((r) => r.gateways))
  })
  return [...new Set(gateways.map(canonicalIp))]
}

/** The sysctl key as `sysctl -w` takes it: with `/` separators when the interface name has a dot. */
export const sysctlKey = (iface: string, leaf: string): string =>
  iface.includes(".") ? `net/ipv4/conf/${iface}/${leaf}` : `net.ipv4.conf.${iface}.${leaf}`

export const rpChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const rp = facts.rp
  if (isUnreadable(rp))
    return [
      result(
        "rp-filter",
        "",
        "warn",
        `cannot read reverse-path settings: ${rp.unreadable}`,
        "run doctor as root"
      )
    ]
  if (rp.gateways.length === 0) return []
  const out: Array<CheckResult> = []
  for (const g of rp.gateways.filter((x) => x.iface === undefined)) {
    out.push(
      result(
        "rp-filter",
        g.gateway,
        "warn",
        `gateway ${g.gateway} is not reachable from this node (no route to it)`,
        "give the node an address in the gateway's subnet"
      )
    )
  }
  const ifaces = [...new Set(rp.gateways.flatMap((g) => (g.iface === undefined ? [] : [g.iface])))]
  const all = rp.sysctls.all?.rpFilter
  for (const iface of ifaces) {
    const gws = rp.gateways
      .filter((g) => g.iface === iface)
      .map((g) => g.gateway)
      .join(", ")
    const own = rp.sysctls[iface]?.rpFilter
    if (all === undefined || own === undefined) {
      out.push(
        result(
          "rp-filter",
          iface,
          "warn",
          `cannot read net.ipv4.conf.{all,${iface}}.rp_filter`,
          "run doctor as root"
        )
      )
      continue
    }
    const effective = Math.max(all, own)
    const values = `max(all=${all}, ${iface}=${own}) = ${effective}`
    const carriesDefault = rp.mainDefaultInterfaces.includes(iface)
    if (effective === 0) {
      out.push(result("rp-filter", iface, "ok", `off (${values}); replies from ${gws} pass`))
    } else if (effective === 1 && carriesDefault) {
      out.push(
        result(
          "rp-filter",
          iface,
          "ok",
          `strict (${values}), but ${iface} also carries main's default route, so replies from ${gws} pass`
        )
      )
    } else if (effective === 1) {
      const fix = [
        ...(all === 1 ? [`${sysctlKey("all", "rp_filter")}=2`] : []),
        ...(own === 1 ? [`${sysctlKey(iface, "rp_filter")}=2`] : [])
      ]
      const srcValid = rp.sysctls.all?.srcValidMark === 1 || rp.sysctls[iface]?.srcValidMark === 1
      out.push(
        result(
          "rp-filter",
          iface,
          "warn",
          `strict (${values}) drops replies arriving on ${iface} via tenant gateways ${gws}: replies are unmarked, so their reverse lookup ${rp.mainDefaultInterfaces.length === 0 ? "finds no route (main has no IPv4 default route)" : `leads out through main's default route (${rp.mainDefaultInterfaces.join(", ")})`}${srcValid ? "; src_valid_mark=1 does not help unmarked replies" : ""}`,
          `sysctl -w ${fix.join(" ")} (loose mode; the effective value is the max of all and ${iface}; persist it in /etc/sysctl.d)`
        )
      )
    } else if (rp.mainDefaultInterfaces.length === 0) {
      out.push(
        result(
          "rp-filter",
          iface,
          "warn",
          `loose (${values}), but main has no IPv4 default route: replies from remote sources reverse-route to nothing and are dropped`,
          `sysctl -w ${sysctlKey(iface, "rp_filter")}=0${all === 2 ? ` ${sysctlKey("all", "rp_filter")}=0` : ""}, or give main a default route`
        )
      )
    } else {
      out.push(result("rp-filter", iface, "ok", `loose (${values}); replies from ${gws} pass`))
    }
  }
  return out
}
