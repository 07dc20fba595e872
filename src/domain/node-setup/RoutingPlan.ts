/**
 * The pure half of `node-setup` (docs/DESIGN.md §6): the ip rules and routes a tenants file asks for, and
 * the changes that take the kernel from what `ip -j` shows now to that, or back.
 *
 * Ownership is by exact match, since the kernel keeps no owner tag on rules or routes: a rule is ours
 * when it equals a desired rule field for field; a route is ours when it is a desired default or
 * unreachable-default route of a tenant table. Everything else at our priorities or in our tables is
 * foreign: reported, never changed. One exception, on apply only: a default route in the slot our
 * gateway route needs (same table, family and metric) but via other gateways is replaced, because the
 * kernel refuses a second route in one slot and the table is the tenant's.
 *
 * Two kernel behaviours shape the plan (both verified with ip on Linux 6.x):
 * - `ip rule del` deletes the first rule that matches the fields given, treating the others as
 *   wildcards; so when a foreign rule that the request also matches precedes ours, deleting ours
 *   would delete the foreign one. Such a rule of ours is kept and reported (`blocked`).
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

export interface IpRule {
  readonly family: Family
  readonly priority: number
  readonly fwmark?: number
  /** Present whenever `fwmark` is; 0xffffffff when ip prints no mask. */
  readonly mask?: number
  /** 0 when the rule looks up no table (its action is then in `other`). */
  readonly table: number
  readonly suppressPrefixlength?: number
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
  readonly other?: string
}

/** Rules (both families, in kernel order) and routes (of the tables concerned). */
export interface RoutingState {
  readonly rules: ReadonlyArray<IpRule>
  readonly routes: ReadonlyArray<Route>
}

export type Entry =
  | { readonly _tag: "Rule"; readonly rule: IpRule }
  | { readonly _tag: "Route"; readonly route: Route }

export interface Change {
  readonly op: "add" | "remove"
  readonly entry: Entry
}

export interface Blocked {
  readonly entry: Entry
  readonly reason: string
}

export interface Plan {
  readonly add: ReadonlyArray<Entry>
  readonly remove: ReadonlyArray<Entry>
  /** Not ours, at our priorities or in our tables: left alone, reported. */
  readonly foreign: ReadonlyArray<Entry>
  /** Changes the plan refuses to make, and why. */
  readonly blocked: ReadonlyArray<Blocked>
}

export const ruleEntry = (rule: IpRule): Entry => ({ _tag: "Rule", rule })
export const routeEntry = (route: Route): Entry => ({ _tag: "Route", route })

// ---------------------------------------------------------------------------------------------------
// Identity

export const effectiveMetric = (route: Route): number => route.metric ?? (route.family === 6 ? 1024 : 0)

const ruleKey = (r: IpRule): string =>
  [
    r.family,
    r.priority,
    r.fwmark ?? "",
    r.mask ?? "",
    r.table,
    r.suppressPrefixlength ?? "",
    r.other ?? ""
  ].join("|")

export const sameRule = (a: IpRule, b: IpRule): boolean => ruleKey(a) === ruleKey(b)

/** Whether `ip rule del <request>` may delete `candidate`: fields the request leaves out are wildcards. */
export const ruleDeleteMatches = (request: IpRule, candidate: IpRule): boolean =>
  request.family === candidate.family &&
  request.priority === candidate.priority &&
  request.table === candidate.table &&
  (request.fwmark === undefined ||
    (request.fwmark === candidate.fwmark && request.mask === candidate.mask)) &&
  (request.suppressPrefixlength === undefined ||
    request.suppressPrefixlength === candidate.suppressPrefixlength) &&
  (request.other === undefined || request.other === candidate.other)

const sortedGateways = (route: Route): string => route.gateways.map(canonicalIp).sort().join(",")

/** The key the kernel refuses to hold twice (with NLM_F_EXCL): table, family, destination, metric. */
export const sameSlot = (a: Route, b: Route): boolean =>
  a.family === b.family && a.table === b.table && a.dst === b.dst && effectiveMetric(a) === effectiveMetric(b)

/** Equal as routes, whatever the order of the next hops. */
export const sameRoute = (a: Route, b: Route): boolean =>
  sameSlot(a, b) && a.kind === b.kind && a.other === b.other && sortedGateways(a) === sortedGateways(b)

export const sameEntry = (a: Entry, b: Entry): boolean =>
  a._tag === "Rule"
    ? b._tag === "Rule" && sameRule(a.rule, b.rule)
    : b._tag === "Route" && sameRoute(a.route, b.route)

// ---------------------------------------------------------------------------------------------------
// Desired state

/** The rules and routes §6 asks for, rules in priority order. */
export const desired = (config: NodeSetupConfig): RoutingState => {
  if (config.tenants.length === 0) return { rules: [], routes: [] }
  const lowest = Math.min(...config.tenants.map((t) => t.priority))
  const byPriority = [...config.tenants].sort((a, b) => a.priority - b.priority || a.mark - b.mark)
  const rules = FAMILIES.flatMap(
    (family): Array<IpRule> => [
      // Only defaults are replaced: anything more specific than /0 in main still wins for marked traffic.
      { family, priority: lowest - 1, table: MAIN_TABLE, suppressPrefixlength: 0 },
      ...byPriority.map((t) => ({
        family,
        priority: t.priority,
        fwmark: t.mark,
        mask: config.markMask,
        table: t.table
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
        metric: UNREACHABLE_METRIC
      }
      return gateways.length === 0
        ? [unreachable]
        : [{ family, table: t.table, kind: "unicast", dst: "default", gateways }, unreachable]
    })
  )
  return { rules, routes }
}

/** The (family, table) pairs whose routes a plan needs to see. */
export const tablesOf = (
  state: RoutingState
): ReadonlyArray<{ readonly family: Family; readonly table: number }> => {
  const seen = new Set<string>()
  return state.routes.flatMap((r) => {
    const key = `${r.family}|${r.table}`
    if (seen.has(key)) return []
    seen.add(key)
    return [{ family: r.family, table: r.table }]
  })
}

const inScope = (want: RoutingState) => {
  const priorities = new Set(want.rules.map((r) => `${r.family}|${r.priority}`))
  const tables = new Set(want.routes.map((r) => `${r.family}|${r.table}`))
  return {
    rule: (r: IpRule) => priorities.has(`${r.family}|${r.priority}`),
    route: (r: Route) => tables.has(`${r.family}|${r.table}`)
  }
}

const foreignOf = (want: RoutingState, current: RoutingState, mine: ReadonlyArray<Entry>): Array<Entry> => {
  const scope = inScope(want)
  const isMine = (e: Entry) => mine.some((m) => sameEntry(m, e))
  return [
    ...current.rules.filter(scope.rule).map(ruleEntry),
    ...current.routes.filter(scope.route).map(routeEntry)
  ].filter((e) => !isMine(e))
}

// ---------------------------------------------------------------------------------------------------
// Plans

/** Changes that make `current` contain `want`; nothing when it already does. */
export const plan = (want: RoutingState, current: RoutingState): Plan => {
  const add: Array<Entry> = []
  const remove: Array<Entry> = []
  const blocked: Array<Blocked> = []
  for (const rule of want.rules) {
    if (!current.rules.some((c) => sameRule(c, rule))) add.push(ruleEntry(rule))
  }
  for (const route of want.routes) {
    if (current.routes.some((c) => sameRoute(c, route))) continue
    const occupant = current.routes.find((c) => sameSlot(c, route))
    if (occupant === undefined) {
      add.push(routeEntry(route))
    } else if (occupant.kind === "unicast" && route.kind === "unicast" && occupant.other === undefined) {
      remove.push(routeEntry(occupant))
      add.push(routeEntry(route))
    } else {
      blocked.push({
        entry: routeEntry(route),
        reason: `the foreign route "${describe(routeEntry(occupant))}" holds its place (same table and metric)`
      })
    }
  }
  // Our rules and routes that already exist count as ours, as do the routes being replaced.
  const mine = [...want.rules.map(ruleEntry), ...want.routes.map(routeEntry), ...remove]
  return { add, remove, foreign: foreignOf(want, current, mine), blocked }
}

/** Changes that remove what `want` installs from `current`, and nothing else. */
export const planRemove = (want: RoutingState, current: RoutingState): Plan => {
  const remove: Array<Entry> = []
  const blocked: Array<Blocked> = []
  const keptTables = new Set<string>()
  for (const rule of want.rules) {
    const index = current.rules.findIndex((c) => sameRule(c, rule))
    if (index < 0) continue
    const shadow = current.rules.slice(0, index).find((c) => !sameRule(c, rule) && ruleDeleteMatches(rule, c))
    if (shadow === undefined) {
      remove.push(ruleEntry(current.rules[index]!))
      continue
    }
    blocked.push({
      entry: ruleEntry(rule),
      reason: `ip rule del would delete the foreign rule "${describe(ruleEntry(shadow))}" listed before it`
    })
    // A kept fwmark rule keeps its table's routes, so its tenant stays dropped rather than leaked.
    if (rule.fwmark !== undefined) keptTables.add(`${rule.family}|${rule.table}`)
  }
  for (const route of want.routes) {
    const existing = current.routes.find((c) => sameRoute(c, route))
    if (existing === undefined) continue
    if (keptTables.has(`${route.family}|${route.table}`)) {
      blocked.push({
        entry: routeEntry(existing),
        reason: "the tenant's rule in this family stays (see above)"
      })
    } else {
      remove.push(routeEntry(existing))
    }
  }
  const mine = [...remove, ...blocked.map((b) => b.entry)]
  return { add: [], remove, foreign: foreignOf(want, current, mine), blocked }
}

/**
 * The changes of a plan in the order that never lets marked traffic leak to the main table, even when
 * a step fails half-way: unreachable routes first, then removals (rules before routes), then gateway
 * routes, then rules (the suppress rule before the fwmark rules). Each fwmark rule thus only ever
 * exists while its table holds the unreachable route.
 */
export const steps = (p: Plan): ReadonlyArray<Change> => {
  const rank = (c: Change): number => {
    const e = c.entry
    if (c.op === "add") {
      if (e._tag === "Route") return e.route.kind === "unreachable" ? 0 : 4
      return e.rule.fwmark === undefined ? 5 : 6
    }
    if (e._tag === "Rule") return e.rule.fwmark === undefined ? 2 : 1
    return e.route.kind === "unreachable" ? 3.5 : 3
  }
  const changes: Array<Change> = [
    ...p.add.map((entry) => ({ op: "add" as const, entry })),
    ...p.remove.map((entry) => ({ op: "remove" as const, entry }))
  ]
  // Array.prototype.sort is stable, so the plan's own order holds within a rank.
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
  ...(r.other === undefined ? [] : r.other.split(" "))
]

const routeWords = (r: Route, op: "add" | "remove" | "show"): Array<string> => {
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
  return [
    ...type,
    r.dst,
    ...(single ? hops : []),
    "table",
    String(r.table),
    ...(metric === undefined ? [] : ["metric", String(metric)]),
    ...(single ? [] : hops)
  ]
}

/** Arguments of `ip` (without any `-n NETNS`) that make one change. */
export const ipWords = (change: Change): ReadonlyArray<string> => {
  const e = change.entry
  const verb = change.op === "add" ? "add" : "del"
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
