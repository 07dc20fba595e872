/**
 * The tenants file of `node-setup` (docs/DESIGN.md §6): its JSON shape as a Schema, the cross-field rules
 * a Schema cannot see (unique marks and tables, marks inside `markMask`), and the pure IP parsing the
 * gateways need.
 *
 * Decoding never throws: it returns the config, or every problem found as `{path, message}` with a
 * dotted path naming the field (`tenants.tenant-a.table`), so the CLI can exit 2 with a useful
 * message. Gateways come out in one canonical text form (lowercase, RFC 5952 compression), the same
 * form `ip -j` prints, so plans compare them as strings. Limits: link-local IPv6 gateways are refused,
 * since a route through one needs an interface and node-setup does not configure interfaces.
 */
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { formatPath, type Issue, schemaIssues } from "../decode/Issue.ts"

import { isDnsLabel } from "../net/DnsNames.ts"
import { canonicalIp, type Family, parseIp, parseV6Groups } from "../net/Ip.ts"
import {
  and32,
  formatMark,
  isMarkValue,
  not32,
  or32,
  parseMarkLiteral,
  reservedBitsProblem
} from "../net/Mark.ts"

export type { Family }

export const ipFamily = (text: string): Family | undefined => parseIp(text)?.family

/** Why an address cannot be a next hop, or undefined when it can. */
export const gatewayProblem = (text: string): string | undefined => {
  const ip = parseIp(text)
  if (ip?.family === 4) {
    const a = Number(ip.text.split(".")[0])
    if (a === 0) return `${text} is not a usable gateway (0.0.0.0/8)`
    if (a === 127) return `${text} is a loopback address`
    if (a >= 224) return `${text} is a multicast or reserved address`
    return undefined
  }
  const v6 = parseV6Groups(text)
  if (ip === undefined || v6 === undefined)
    return `expected an IPv4 or IPv6 address, got ${JSON.stringify(text)}`
  const [g0] = v6 as [number]
  if (v6.every((g) => g === 0)) return `${text} is the unspecified address`
  if (v6.slice(0, 7).every((g) => g === 0) && v6[7] === 1) return `${text} is the loopback address`
  if (g0 >= 0xff00) return `${text} is a multicast address`
  if ((g0 & 0xffc0) === 0xfe80) {
    return `${text} is link-local: a route through it needs an interface, which node-setup does not configure`
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------------
// The wire shape. Cross-field rules live in `crossFieldIssues` below.

/** Where node-setup and doctor read the tenants file when `--config` is not given. */
export const DEFAULT_TENANTS_FILE = "/etc/tenant-routing/tenants.json"

/** The lowest tenant priority: the suppress rule takes the one below it, and 0 is the kernel's. */
export const MIN_PRIORITY = 2

/** rt_tables names: not numeric (ip would read a number as a table id), no spaces or `#`. */
const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/
/** Table ids the kernel reserves: 0 unspec, 253 default, 254 main, 255 local. */
const RESERVED_TABLES: Readonly<Record<number, string>> = {
  0: "unspec",
  253: "default",
  254: "main",
  255: "local"
}

const markValue = (input: string | number): number | undefined =>
  typeof input === "number" ? input : parseMarkLiteral(input)

const MarkWire = Schema.Union([Schema.String, Schema.Number]).check(
  Schema.makeFilter((input: string | number) => {
    const n = markValue(input)
    if (n === undefined)
      return `expected a mark literal (0x-hex or decimal) or a number, got ${JSON.stringify(input)}`
    return isMarkValue(n) || `expected a mark in 1..0xffffffff, got ${JSON.stringify(input)}`
  })
)

const TenantWire = Schema.Struct({
  mark: MarkWire.annotate({ description: 'fwmark of the tenant\'s pods, e.g. "0x10"' }),
  table: Schema.Number.check(
    Schema.makeFilter((n: number) => {
      if (!Number.isInteger(n) || n < 1 || n > 0xffffffff)
        return `expected a table id in 1..4294967295, got ${n}`
      const reserved = RESERVED_TABLES[n]
      return reserved === undefined || `table ${n} is reserved for the kernel's ${reserved} table`
    })
  ).annotate({ description: "routing table holding the tenant's default routes" }),
  tableName: Schema.optionalKey(
    Schema.String.check(
      Schema.makeFilter(
        (s: string) =>
          (TABLE_NAME.test(s) && !["local", "main", "default", "unspec"].includes(s)) ||
          `expected a table name (letters, digits, _ . -, not starting with a digit, not a reserved name), got ${JSON.stringify(s)}`
      )
    )
  ).annotate({
    description: "name written to /etc/iproute2/rt_tables with --write-rt-tables (default: the tenant name)"
  }),
  gateways: Schema.Array(
    Schema.String.check(Schema.makeFilter((s: string) => gatewayProblem(s) ?? true))
  ).annotate({
    description: "next hops of the tenant's default route; IPv4 and/or IPv6, several make it multipath"
  }),
  priority: Schema.Number.check(
    Schema.makeFilter((n: number) => {
      if (!Number.isInteger(n) || n < MIN_PRIORITY - 1 || n > 32766)
        return `expected a rule priority in ${MIN_PRIORITY}..32766, got ${n}`
      // The suppress rule goes one below the lowest tenant priority (RoutingPlan.desired); at 0 it
      // would sit beside the kernel's own `lookup local` rule, which every run would then report.
      return (
        n >= MIN_PRIORITY ||
        `priority ${n} would put node-setup's suppress rule at priority ${n - 1}, beside the kernel's \`lookup local\` rule; use ${MIN_PRIORITY} or more`
      )
    })
  ).annotate({ description: "priority of the tenant's fwmark rule (2..32766, one per tenant)" })
})

/**
 * The top level. Tenants are decoded one by one (`decodeNodeSetupConfig`), so one tenant's bad field
 * never hides another tenant's problem, a bad name, or a clash between the tenants that did decode.
 */
const FileWire = Schema.Struct({
  markMask: Schema.optionalKey(
    MarkWire.annotate({ description: "mark bits the tenants use (default: the union of their marks)" })
  ),
  tenants: Schema.Record(Schema.String, Schema.Unknown)
})

export const NodeSetupConfigWire = Schema.Struct({
  markMask: FileWire.fields.markMask,
  tenants: Schema.Record(Schema.String, TenantWire)
})
export type NodeSetupConfigWire = typeof NodeSetupConfigWire.Encoded

// ---------------------------------------------------------------------------------------------------
// The decoded config.

/** A tenant as node-setup sees it: its mark and where marked traffic goes (not the CNI config's Tenant). */
export interface TenantRoute {
  readonly name: string
  readonly mark: number
  readonly table: number
  readonly tableName: string
  /** Canonical text, in file order, duplicates removed. */
  readonly gateways: ReadonlyArray<string>
  readonly priority: number
}

export interface NodeSetupConfig {
  readonly markMask: number
  /** Sorted by name, so plans and reports do not depend on key order in the file. */
  readonly tenants: ReadonlyArray<TenantRoute>
}

export const gatewaysOf = (tenant: TenantRoute, family: Family): ReadonlyArray<string> =>
  tenant.gateways.filter((g) => ipFamily(g) === family)

const crossFieldIssues = (config: NodeSetupConfig, maskGiven: boolean): Array<Issue> => {
  const issues: Array<Issue> = []
  const at = (t: TenantRoute, field: string) => `tenants.${t.name}.${field}`
  if (config.tenants.length === 0) issues.push({ path: "tenants", message: "expected at least one tenant" })
  const reservedProblem = reservedBitsProblem
  const maskProblem = maskGiven ? reservedProblem(config.markMask) : undefined
  if (maskProblem !== undefined) issues.push({ path: "markMask", message: maskProblem })
  const seen = {
    mark: new Map<number, string>(),
    table: new Map<number, string>(),
    priority: new Map<number, string>(),
    name: new Map<string, string>()
  }
  for (const t of config.tenants) {
    const markProblem = reservedProblem(t.mark)
    if (markProblem !== undefined)
      issues.push({ path: at(t, "mark"), message: `mark ${formatMark(t.mark)}: ${markProblem}` })
    if (and32(t.mark, not32(config.markMask)) !== 0) {
      issues.push({
        path: at(t, "mark"),
        message: `mark ${formatMark(t.mark)} has bits outside markMask ${formatMark(config.markMask)}`
      })
    }
    const clash = (kind: "mark" | "table" | "priority", value: number, text: string) => {
      const other = seen[kind].get(value)
      if (other !== undefined)
        issues.push({ path: at(t, kind), message: `${kind} ${text} is also tenant ${other}'s` })
      else seen[kind].set(value, t.name)
    }
    clash("mark", t.mark, formatMark(t.mark))
    clash("table", t.table, String(t.table))
    clash("priority", t.priority, String(t.priority))
    const otherName = seen.name.get(t.tableName)
    if (otherName !== undefined) {
      issues.push({
        path: at(t, "tableName"),
        message: `table name ${t.tableName} is also tenant ${otherName}'s`
      })
    } else seen.name.set(t.tableName, t.name)
  }
  return issues
}

const toTenant = (name: string, t: typeof TenantWire.Type): TenantRoute => ({
  name,
  mark: markValue(t.mark)!,
  table: t.table,
  tableName: t.tableName ?? name,
  gateways: [...new Set(t.gateways.map(canonicalIp))],
  priority: t.priority
})

const DECODE_OPTIONS = { errors: "all", onExcessProperty: "error" } as const

const byName = ([a]: readonly [string, unknown], [b]: readonly [string, unknown]) =>
  a < b ? -1 : a > b ? 1 : 0

/**
 * Decode an already-parsed JSON value, reporting every problem at once: the top level, each tenant's
 * name and fields, and the cross-field rules among the tenants that decoded (a tenant with a bad field
 * takes no part in them, so its problem is not reported twice).
 */
export const decodeNodeSetupConfig = (
  input: unknown
): Result.Result<NodeSetupConfig, ReadonlyArray<Issue>> => {
  const file = Schema.decodeUnknownResult(FileWire)(input, DECODE_OPTIONS)
  if (Result.isFailure(file)) {
    const issues = schemaIssues(file.failure.issue, [])
    const tenants = (input as { tenants?: unknown } | null)?.tenants
    // A broken top level (say, a misspelt markMask) still lets the tenants be checked.
    if (typeof tenants !== "object" || tenants === null || Array.isArray(tenants)) return Result.fail(issues)
    const rest = decodeNodeSetupConfig({ tenants })
    return Result.fail([...issues, ...(Result.isFailure(rest) ? rest.failure : [])])
  }
  const issues: Array<Issue> = []
  const tenants: Array<TenantRoute> = []
  for (const [name, value] of Object.entries(file.success.tenants).sort(byName)) {
    if (!isDnsLabel(name))
      issues.push({
        path: formatPath(["tenants", name]),
        message: `tenant name ${JSON.stringify(name)} is not a DNS label (RFC 1123)`
      })
    const tenant = Schema.decodeUnknownResult(TenantWire)(value, DECODE_OPTIONS)
    if (Result.isFailure(tenant)) issues.push(...schemaIssues(tenant.failure.issue, ["tenants", name]))
    else tenants.push(toTenant(name, tenant.success))
  }
  const markMask =
    file.success.markMask === undefined
      ? tenants.reduce((m, t) => or32(m, t.mark), 0)
      : markValue(file.success.markMask)!
  const config: NodeSetupConfig = { markMask, tenants }
  const cross = crossFieldIssues(config, file.success.markMask !== undefined)
  // "expected at least one tenant" only when the file really has none, not when all of them are bad.
  const all = [
    ...issues,
    ...cross.filter((i) => i.path !== "tenants" || Object.keys(file.success.tenants).length === 0)
  ]
  return all.length > 0 ? Result.fail(all) : Result.succeed(config)
}

/** Decode the text of a tenants file. */
export const decodeNodeSetupConfigJson = (
  text: string
): Result.Result<NodeSetupConfig, ReadonlyArray<Issue>> => {
  const parsed = Result.try({ try: () => JSON.parse(text) as unknown, catch: (e) => String(e) })
  return Result.isFailure(parsed)
    ? Result.fail([{ path: "", message: `not valid JSON: ${parsed.failure}` }])
    : decodeNodeSetupConfig(parsed.success)
}
