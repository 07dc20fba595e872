/**
 * The pure half of `node-setup` (docs/DESIGN.md §6): the ip rules and routes a tenants file asks for, and
 * the changes that take the kernel from what `ip -j` shows now to that, or back.
 *
 * Ownership is by the kernel's own tag: every rule and route node-setup makes carries the routing
 * protocol `OUR_PROTOCOL`, which the kernel keeps and `ip -j -d` shows. An entry with that protocol is
 * ours, whatever the file says now: apply removes the ones the file no longer asks for, remove removes
 * them all. An entry with any other protocol is foreign: at our priorities or in our tables it is
 * reported, and it is never changed.
 *
 * One exception, for rules and routes the previous version wrote before it tagged anything (a rule
 * then had protocol unspec, a route `boot`): on apply, such an untagged entry that equals field for
 * field one the file asks for is adopted. A route is replaced in place by its tagged copy
 * (`ip route replace`, atomic); a rule gets its tagged copy added first and is deleted after, unless
 * that delete could hit another rule (below), in which case it is left and reported as foreign.
 * Nothing else untagged is ever adopted, so a foreign route in a slot a tenant needs blocks the apply.
 *
 * Two kernel behaviours shape the plan (both verified with ip on Linux 6.x):
 * - `ip rule del` deletes the first rule that matches the fields given, treating the others as
 *   wildcards, protocol included when it is not given (an untagged rule cannot be named by protocol:
 *   0 is the wildcard). Deletes of ours name our protocol, so they only ever match ours; a delete that
 *   would still match an earlier rule that stays is kept and reported (`blocked`).
 * - `ip route del` of an IPv4 multipath route needs its next hops in the installed order; removals
 *   therefore name the route as it was read, not as the config spells it.
 *
 * `ipWords` gives the iproute2 words of every change; the live interpreter runs exactly those, so a
 * dry run prints what an apply would run.
 */

import { canonicalIp } from "../net/Ip.ts"
import { formatMark } from "../net/Mark.ts"
import type { Family, NodeSetupConfig } from "./NodeSetupConfig.ts"
import { gatewaysOf } from "./NodeSetupConfig.ts"

export const FAMILIES: ReadonlyArray<Family> = [4, 6]
/** The kernel's main table: what the `suppress_prefixlength 0` rule looks up. */
export const MAIN_TABLE = 254
/** Metric of the unreachable default route: the highest, so any gateway route wins over it. */
export const UNREACHABLE_METRIC = 4294967295

/**
 * The routing protocol (rtm_protocol / FRA_PROTOCOL, 8 bits) that marks node-setup's rules and routes.
 * The kernel interprets only 0-4 (unspec, redirect, kernel, boot, static) and passes the rest through;
 * above those, numbers are taken by convention, not reserved. 158 is clear of every use we know:
 * iproute2's rt_protos (8-18 gated..keepalived, 42 babel, 99 openr, 186-192 bgp..eigrp), FRR's
 * daemons (186-198), the gated/* names older rt_protos gave 246-254, Calico's route protocol (80) and
 * those of systemd-networkd and NetworkManager (boot, static, dhcp, ra).
 */
export const OUR_PROTOCOL = 158
/** The name `--write-rt-tables` gives `OUR_PROTOCOL` in rt_protos.d, so `ip rule` shows `proto tenant-routing`. */
export const OUR_PROTOCOL_NAME = "tenant-routing"
/** What the kernel records for a rule added without a protocol (`ip rule add` sends none): unspec. */
export const RULE_DEFAULT_PROTOCOL = 0
/** What `ip route add` sends when told no protocol: `boot`. */
export const ROUTE_DEFAULT_PROTOCOL = 3

export interface IpRule {
  readonly family: Family
  readonly priority: number
  readonly fwmark?: number
  /** Present whenever `fwmark` is; 0xffffffff when ip prints no mask. */
  readonly mask?: number
  /** 0 when the rule looks up no table (its action is then in `other`). */
  readonly table: number
  readonly suppressPrefixlength?: number
  /** Undefined means unspec (0), what a rule added without one gets. */
  readonly protocol?: number
  /** Selectors or actions this model does not capture (`from 10.0.0.0/8`, `iif lo`, `goto 1001`). */
  readonly other?: string
}

export interface Route {
  readonly family: Family
  readonly table: number
  /** "other" covers blackhole, prohibit, throw, ...; the type name is then in `other`. */
  readonly kind: "unicast" | "unreachable" | "other"
  /** "default" for 0.0.0.0/0 and ::/0 (the only destination node-setup installs), else as ip prints it. */
  readonly dst: string
  /** Several make a multipath route; in the kernel's order when read from it. */
  readonly gateways: ReadonlyArray<string>
  /** Undefined means the kernel default: 0 for IPv4, 1024 for IPv6. */
  readonly metric?: number
  /** Undefined means `boot` (3), what `ip route add` gives a route told no protocol. */
  readonly protocol?: number
  readonly other?: string
}

/** Rules (both families, in kernel order) and routes (of the tables concerned). */
export interface RoutingState {
  readonly rules: ReadonlyArray<IpRule>
  readonly routes: ReadonlyArray<Route>
}

export type RouteEntry = { readonly _tag: "Route"; readonly route: Route }
export type Entry = { readonly _tag: "Rule"; readonly rule: IpRule } | RouteEntry

/** `replace` exists for routes only: it swaps the route in the new one's slot for it, atomically. */
export type Change =
  | { readonly op: "add" | "remove"; readonly entry: Entry }
  | { readonly op: "replace"; readonly entry: RouteEntry }

export interface Blocked {
  readonly entry: Entry
  readonly reason: string
}

export interface Plan {
  readonly add: ReadonlyArray<Entry>
  /** Routes that take the place of the one in their slot (ours, or an untagged copy being adopted). */
  readonly replace: ReadonlyArray<RouteEntry>
  /** Ours no longer asked for, and untagged copies of rules now held tagged; in kernel order. */
  readonly remove: ReadonlyArray<Entry>
  /** Not ours, at our priorities or in our tables: left alone, reported. */
  readonly foreign: ReadonlyArray<Entry>
  /** Changes the plan refuses to make, and why. */
  readonly blocked: ReadonlyArray<Blocked>
}

export const ruleEntry = (rule: IpRule): Entry => ({ _tag: "Rule", rule })
export const routeEntry = (route: Route): RouteEntry => ({ _tag: "Route", route })

// ---------------------------------------------------------------------------------------------------
// Identity

export const effectiveMetric = (route: Route): number => route.metric ?? (route.family === 6 ? 1024 : 0)
export const ruleProtocol = (rule: IpRule): number => rule.protocol ?? RULE_DEFAULT_PROTOCOL
export const routeProtocol = (route: Route): number => route.protocol ?? ROUTE_DEFAULT_PROTOCOL

export const isOurRule = (rule: IpRule): boolean => ruleProtocol(rule) === OUR_PROTOCOL
export const isOurRoute = (route: Route): boolean => routeProtocol(route) === OUR_PROTOCOL
export const isOurs = (e: Entry): boolean => (e._tag === "Rule" ? isOurRule(e.rule) : isOurRoute(e.route))

/** The rule as an entry that says nothing of its protocol (what the previous version wrote). */
const untagged = <A extends { readonly protocol?: number }>(a: A): A => {
  const { protocol: _, ...rest } = a
  return rest as A
}

const ruleKey = (r: IpRule): string =>
  [
    r.family,
    r.priority,
    r.fwmark ?? "",
    r.mask ?? "",
    r.table,
    r.suppressPrefixlength ?? "",
    ruleProtocol(r),
    r.other ?? ""
  ].join("|")

/** Equal field for field, protocol included: the kernel holds two rules that differ only in it. */
export const sameRule = (a: IpRule, b: IpRule): boolean => ruleKey(a) === ruleKey(b)

/**
 * Whether `ip rule del <request>` may delete `candidate`: fields the request leaves out are wildcards,
 * and so is a protocol of 0 (the kernel cannot be asked for unspec rules only).
 */
export const ruleDeleteMatches = (request: IpRule, candidate: IpRule): boolean =>
  request.family === candidate.family &&
  request.priority === candidate.priority &&
  request.table === candidate.table &&
  (request.fwmark === undefined ||
    (request.fwmark === candidate.fwmark && request.mask === candidate.mask)) &&
  (request.suppressPrefixlength === undefined ||
    request.suppressPrefixlength === candidate.suppressPrefixlength) &&
  (ruleProtocol(request) === RULE_DEFAULT_PROTOCOL || ruleProtocol(request) === ruleProtocol(candidate)) &&
  (request.other === undefined || request.other === candidate.other)

const sortedGateways = (route: Route): string => route.gateways.map(canonicalIp).sort().join(",")

/** The key the kernel refuses to hold twice (with NLM_F_EXCL): table, family, destination, metric. */
export const sameSlot = (a: Route, b: Route): boolean =>
  a.family === b.family && a.table === b.table && a.dst === b.dst && effectiveMetric(a) === effectiveMetric(b)

/** Equal as routes, protocol included, whatever the order of the next hops. */
export const sameRoute = (a: Route, b: Route): boolean =>
  sameSlot(a, b) &&
  a.kind === b.kind &&
  a.other === b.other &&
  routeProtocol(a) === routeProtocol(b) &&
  sortedGateways(a) === sortedGateways(b)

export const sameEntry = (a: Entry, b: Entry): boolean =>
  a._tag === "Rule"
    ? b._tag === "Rule" && sameRule(a.rule, b.rule)
    : b._tag === "Route" && sameRoute(a.route, b.route)

/** An untagged rule equal to `want` but for the protocol: the previous version's copy of it. */
export const isLegacyRuleOf = (want: IpRule, rule: IpRule): boolean =>
  ruleProtocol(rule) === RULE_DEFAULT_PROTOCOL && sameRule(untagged(rule), untagged(want))

/** A `boot` route equal to `want` but for the protocol: the previous version's copy of it. */
export const isLegacyRouteOf = (want: Route, route: Route): boolean =>
  routeProtocol(route) === ROUTE_DEFAULT_PROTOCOL &&
  sameRoute(untagged(route), { ...untagged(want), protocol: ROUTE_DEFAULT_PROTOCOL })

// ---------------------------------------------------------------------------------------------------
// Desired state

/** The rules and routes §6 asks for, rules in priority order, all tagged with `OUR_PROTOCOL`. */
export const desired = (config: NodeSetupConfig | undefined): RoutingState => {
  if (config === undefined || config.tenants.length === 0) return { rules: [], routes: [] }
  const lowest = Math.min(...config.tenants.map((t) => t.priority))
  const byPriority = [...config.tenants].sort((a, b) => a.priority - b.priority || a.mark - b.mark)
  const protocol = OUR_PROTOCOL
  const rules = FAMILIES.flatMap(
    (family): Array<IpRule> => [
      // Only defaults are replaced: anything more specific than /0 in main still wins for marked traffic.
      { family, priority: lowest - 1, table: MAIN_TABLE, suppressPrefixlength: 0, protocol },
      ...byPriority.map((t) => ({
        family,
        priority: t.priority,
        fwmark: t.mark,
        mask: config.markMask,
        table: t.table,
        protocol
      }))
    ]
  )
  const routes = config.tenants.flatMap((t) =>
    FAMILIES.flatMap((family): Array<Route> => {
      const gateways = gatewaysOf(t, family)
      // Unreachable in both families, so a tenant whose gateway route is missing is dropped, not
      // leaked through the main table.
      const unreachable: Route = {
        family,
        table: t.table,
        kind: "unreachable",
        dst: "default",
        gateways: [],
        metric: UNREACHABLE_METRIC,
        protocol
      }
      return gateways.length === 0
        ? [unreachable]
        : [{ family, table: t.table, kind: "unicast", dst: "default", gateways, protocol }, unreachable]
    })
  )
  return { rules, routes }
}

/** The (family, table) pairs whose routes a plan needs to see: those `want` fills and those our rules look up. */
export const tablesOf = (
  state: RoutingState
): ReadonlyArray<{ readonly family: Family; readonly table: number }> => {
  const seen = new Set<string>()
  const pairs = [
    ...state.routes.map((r) => ({ family: r.family, table: r.table })),
    ...state.rules
      .filter((r) => isOurRule(r) && r.table !== 0)
      .map((r) => ({ family: r.family, table: r.table }))
  ]
  return pairs.filter((p) => {
    const key = `${p.family}|${p.table}`
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

/** Our priorities and tables: those the file asks for and those our tagged entries use now. */
const inScope = (want: RoutingState, current: RoutingState) => {
  const ourRules = [...want.rules, ...current.rules.filter(isOurRule)]
  const priorities = new Set(ourRules.map((r) => `${r.family}|${r.priority}`))
  const tables = new Set([
    ...want.routes.map((r) => `${r.family}|${r.table}`),
    ...current.routes.filter(isOurRoute).map((r) => `${r.family}|${r.table}`),
    ...ourRules.filter((r) => r.table !== 0).map((r) => `${r.family}|${r.table}`)
  ])
  return {
    rule: (r: IpRule) => priorities.has(`${r.family}|${r.priority}`),
    route: (r: Route) => tables.has(`${r.family}|${r.table}`)
  }
}

/** Everything in scope that is not tagged ours and that this plan does not touch. */
const foreignOf = (
  want: RoutingState,
  current: RoutingState,
  touched: ReadonlyArray<Entry>
): Array<Entry> => {
  const scope = inScope(want, current)
  return [
    ...current.rules.filter(scope.rule).map(ruleEntry),
    ...current.routes.filter(scope.route).map(routeEntry)
  ].filter((e) => !isOurs(e) && !touched.some((t) => sameEntry(t, e)))
}

/**
 * Which of `doomed` (rules of `current`) can be deleted, in kernel order, without `ip rule del` hitting
 * another rule first: one listed earlier that the request matches and that is still there then. An
 * earlier rule that is itself deleted is gone by then: within a kind deletes run in kernel order, and
 * fwmark rules (which only a fwmark request can match) go before the others (see `steps`).
 */
const deletableRules = (
  current: ReadonlyArray<IpRule>,
  doomed: (rule: IpRule) => boolean
): { readonly remove: Array<IpRule>; readonly kept: Array<{ rule: IpRule; shadow: IpRule }> } => {
  const remove: Array<IpRule> = []
  const kept: Array<{ rule: IpRule; shadow: IpRule }> = []
  current.forEach((rule, i) => {
    if (!doomed(rule)) return
    const shadow = current.slice(0, i).find((c) => !remove.includes(c) && ruleDeleteMatches(rule, c))
    if (shadow === undefined) remove.push(rule)
    else kept.push({ rule, shadow })
  })
  return { remove, kept }
}

const shadowReason = (shadow: IpRule): string =>
  `ip rule del would delete the rule "${describe(ruleEntry(shadow))}" listed before it`

// ---------------------------------------------------------------------------------------------------
// Plans

/**
 * Changes that make `current` hold exactly `want` of ours: what is missing is added (or replaces
 * what holds its slot when that is ours or an untagged copy), ours no longer wanted is removed,
 * untagged copies of wanted rules are retired.
 */
export const plan = (want: RoutingState, current: RoutingState): Plan => {
  const add: Array<Entry> = []
  const replace: Array<RouteEntry> = []
  const blocked: Array<Blocked> = []
  for (const rule of want.rules) {
    if (!current.rules.some((c) => sameRule(c, rule))) add.push(ruleEntry(rule))
  }
  const replaced: Array<Route> = []
  for (const route of want.routes) {
    if (current.routes.some((c) => sameRoute(c, route))) continue
    const occupant = current.routes.find((c) => sameSlot(c, route))
    if (occupant === undefined) {
      add.push(routeEntry(route))
    } else if (isOurRoute(occupant) || isLegacyRouteOf(route, occupant)) {
      replace.push(routeEntry(route))
      replaced.push(occupant)
    } else {
      blocked.push({
        entry: routeEntry(route),
        reason: `the foreign route "${describe(routeEntry(occupant))}" holds its place (same table and metric)`
      })
    }
  }
  const staleRule = (r: IpRule) =>
    (isOurRule(r) && !want.rules.some((w) => sameRule(w, r))) || want.rules.some((w) => isLegacyRuleOf(w, r))
  const rules = deletableRules(current.rules, staleRule)
  for (const { rule, shadow } of rules.kept) {
    // An untagged copy that cannot be deleted safely stays, harmless beside its tagged twin: foreign.
    if (isOurRule(rule)) blocked.push({ entry: ruleEntry(rule), reason: shadowReason(shadow) })
  }
  const staleRoutes = current.routes.filter(
    (r) => isOurRoute(r) && !want.routes.some((w) => sameRoute(w, r)) && !replaced.includes(r)
  )
  const remove = [...rules.remove.map(ruleEntry), ...staleRoutes.map(routeEntry)]
  return {
    add,
    replace,
    remove,
    foreign: foreignOf(want, current, [...remove, ...replaced.map(routeEntry)]),
    blocked
  }
}

/**
 * Changes that remove every rule and route carrying our protocol from `current`, and nothing else.
 * `want` (what the file asks for, if there is one) only widens what is reported as foreign.
 */
export const planRemove = (want: RoutingState, current: RoutingState): Plan => {
  const blocked: Array<Blocked> = []
  const rules = deletableRules(current.rules, isOurRule)
  // A kept fwmark rule keeps its table's routes, so its tenant stays dropped rather than leaked.
  const keptTables = new Set<string>()
  for (const { rule, shadow } of rules.kept) {
    blocked.push({ entry: ruleEntry(rule), reason: shadowReason(shadow) })
    if (rule.fwmark !== undefined) keptTables.add(`${rule.family}|${rule.table}`)
  }
  const remove: Array<Entry> = rules.remove.map(ruleEntry)
  for (const route of current.routes.filter(isOurRoute)) {
    if (keptTables.has(`${route.family}|${route.table}`)) {
      blocked.push({ entry: routeEntry(route), reason: "the tenant's rule in this family stays (see above)" })
    } else {
      remove.push(routeEntry(route))
    }
  }
  return { add: [], replace: [], remove, foreign: foreignOf(want, current, remove), blocked }
}

/**
 * The changes of a plan in an order that never lets marked traffic leak to the main table, even when
 * a step fails half-way, and makes before it breaks: unreachable routes first, then gateway routes,
 * then the suppress rule, then fwmark rules; only then removals, rules (fwmark ones first) before
 * routes (unreachable ones last). Each fwmark rule thus only ever exists while its table holds the
 * unreachable route, and an old rule goes only once its replacement is in.
 */
export const steps = (p: Plan): ReadonlyArray<Change> => {
  const rank = (c: Change): number => {
    const e = c.entry
    if (c.op !== "remove") {
      if (e._tag === "Route") return e.route.kind === "unreachable" ? 0 : 1
      return e.rule.fwmark === undefined ? 2 : 3
    }
    if (e._tag === "Rule") return e.rule.fwmark === undefined ? 5 : 4
    return e.route.kind === "unreachable" ? 7 : 6
  }
  const changes: Array<Change> = [
    ...p.add.map((entry) => ({ op: "add" as const, entry })),
    ...p.replace.map((entry) => ({ op: "replace" as const, entry })),
    ...p.remove.map((entry) => ({ op: "remove" as const, entry }))
  ]
  // Array.prototype.sort is stable, so the plan's own order (kernel order for removals) holds within a rank.
  return changes.sort((a, b) => rank(a) - rank(b))
}

// ---------------------------------------------------------------------------------------------------
// iproute2 words

const tableWord = (table: number): string => (table === MAIN_TABLE ? "main" : String(table))

const ruleWords = (r: IpRule): Array<string> => [
  "priority",
  String(r.priority),
  ...(r.fwmark === undefined
    ? []
    : ["fwmark", `${formatMark(r.fwmark)}/${formatMark(r.mask ?? 0xffffffff)}`]),
  ...(r.table === 0 ? [] : ["lookup", tableWord(r.table)]),
  ...(r.suppressPrefixlength === undefined ? [] : ["suppress_prefixlength", String(r.suppressPrefixlength)]),
  // By number, never by name: the name needs rt_protos.d, which only --write-rt-tables writes.
  ...(ruleProtocol(r) === RULE_DEFAULT_PROTOCOL ? [] : ["protocol", String(ruleProtocol(r))]),
  ...(r.other === undefined ? [] : r.other.split(" "))
]

const routeWords = (r: Route, op: Change["op"] | "show"): Array<string> => {
  // On delete the type is named, else the kernel treats it as a wildcard (verified: a bare
  // `ip route del default table T metric M` deleted an unreachable route).
  const type =
    r.kind === "unreachable"
      ? ["unreachable"]
      : r.kind === "other"
        ? [r.other ?? "other"]
        : op === "remove"
          ? ["unicast"]
          : []
  const metric = op === "remove" ? effectiveMetric(r) : r.metric
  const hops =
    r.gateways.length === 1 ? ["via", r.gateways[0]!] : r.gateways.flatMap((g) => ["nexthop", "via", g])
  const single = r.gateways.length === 1
  // A delete always names the protocol, so it can only hit the route it read (0 would be a wildcard;
  // no route node-setup reads has it). Otherwise named when it is not ip's default, boot.
  const protocol = op === "remove" || r.protocol !== undefined ? ["proto", String(routeProtocol(r))] : []
  return [
    ...type,
    r.dst,
    ...(single ? hops : []),
    "table",
    String(r.table),
    ...(metric === undefined ? [] : ["metric", String(metric)]),
    ...protocol,
    ...(single ? [] : hops)
  ]
}

/** Arguments of `ip` (without any `-n NETNS`) that make one change. */
export const ipWords = (change: Change): ReadonlyArray<string> => {
  const e = change.entry
  const verb = change.op === "remove" ? "del" : change.op
  return e._tag === "Rule"
    ? [`-${e.rule.family}`, "rule", verb, ...ruleWords(e.rule)]
    : [`-${e.route.family}`, "route", verb, ...routeWords(e.route, change.op)]
}

/** One line naming an entry, as ip would be told to add it. */
export const describe = (e: Entry): string =>
  e._tag === "Rule"
    ? ["ip", `-${e.rule.family}`, "rule", ...ruleWords(e.rule)].join(" ")
    : ["ip", `-${e.route.family}`, "route", ...routeWords(e.route, "show")].join(" ")

export const describeChange = (c: Change): string => ["ip", ...ipWords(c)].join(" ")

// ---------------------------------------------------------------------------------------------------
// /etc/iproute2/rt_tables (only with --write-rt-tables)

export interface TableName {
  readonly table: number
  readonly name: string
}

export interface RtTablesEdit {
  /** The new file text (equal to the input when nothing changes). */
  readonly text: string
  readonly added: ReadonlyArray<string>
  readonly removed: ReadonlyArray<string>
  /** Names not written because the file gives the id or the name another meaning. */
  readonly conflicts: ReadonlyArray<string>
}

/** What a fresh rt_tables holds: without these lines ip would print numbers for main, local, default. */
export const RT_TABLES_STOCK = "#\n# reserved values\n#\n255\tlocal\n254\tmain\n253\tdefault\n0\tunspec\n"

/** The whole of our rt_protos.d file: it names our protocol for ip's output, and holds nothing else. */
export const RT_PROTOS_TEXT = `# written by tenant-routing node-setup --write-rt-tables\n${OUR_PROTOCOL}\t${OUR_PROTOCOL_NAME}\n`

export const tableNamesOf = (config: NodeSetupConfig): ReadonlyArray<TableName> =>
  config.tenants.map((t) => ({ table: t.table, name: t.tableName }))

/** `id name` of each line that has one; ids may be decimal or 0x-hex, as iproute2 reads them. */
const rtEntries = (
  text: string
): Array<{ readonly line: number; readonly table: number; readonly name: string }> =>
  text.split("\n").flatMap((raw, line) => {
    const [id, name] = raw.replace(/#.*/, "").trim().split(/\s+/)
    if (id === undefined || name === undefined || id === "") return []
    const table = /^(0x[0-9a-fA-F]+|\d+)$/.test(id) ? Number(id) : Number.NaN
    return Number.isNaN(table) ? [] : [{ line, table, name }]
  })

const entryLine = (n: TableName): string => `${n.table}\t${n.name}`

/** Name our tables; an id or name that already means something else is left alone and reported. */
export const rtTablesWith = (text: string, names: ReadonlyArray<TableName>): RtTablesEdit => {
  const existing = rtEntries(text)
  const added: Array<string> = []
  const conflicts: Array<string> = []
  for (const n of names) {
    if (existing.some((e) => e.table === n.table && e.name === n.name)) continue
    const byId = existing.find((e) => e.table === n.table)
    const byName = existing.find((e) => e.name === n.name)
    if (byId !== undefined) conflicts.push(`table ${n.table} is already named ${byId.name}, not ${n.name}`)
    else if (byName !== undefined)
      conflicts.push(`name ${n.name} already names table ${byName.table}, not ${n.table}`)
    else added.push(entryLine(n))
  }
  const base = text === "" || text.endsWith("\n") ? text : text + "\n"
  return {
    text: added.length === 0 ? text : base + added.map((l) => l + "\n").join(""),
    added,
    removed: [],
    conflicts
  }
}

/** Remove the lines that name our tables exactly as we name them, and nothing else. */
export const rtTablesWithout = (text: string, names: ReadonlyArray<TableName>): RtTablesEdit => {
  const ours = rtEntries(text).filter((e) => names.some((n) => n.table === e.table && n.name === e.name))
  const drop = new Set(ours.map((e) => e.line))
  const lines = text.split("\n")
  return {
    text: drop.size === 0 ? text : lines.filter((_, i) => !drop.has(i)).join("\n"),
    added: [],
    removed: ours.map((e) => lines[e.line]!.trim()),
    conflicts: []
  }
}
