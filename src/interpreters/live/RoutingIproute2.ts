/**
 * `Routing` on the real kernel through iproute2's `ip`, run as an argument array (never a shell).
 *
 * Reads use `ip -j` and decode its JSON with Schema; nothing parses ip's text output. Observed output
 * this relies on (iproute2 6.1, Linux 6.x):
 * - rules: `{"priority":1000,"src":"all","fwmark":"0x10","fwmask":"0x30","table":"100"}`; the mask is
 *   omitted when it is 0xffffffff; `suppress_prefixlength` prints as `"suppress_prefixlen":0`. Rules are
 *   read with `-N` so tables print as numbers whatever /etc/iproute2/rt_tables names them.
 * - routes of `show table N` omit the table; `"type":"unreachable"` marks unreachable routes (plain
 *   unicast has no type); multipath has `"nexthops":[{"gateway":...}]`; an IPv4 metric of 0 is
 *   omitted; showing an IPv4 table that was never created fails with "FIB table does not exist",
 *   which is read as an empty table.
 * Fields this model does not capture (a `from` selector, an `iif`, a `goto`, a route's `nhid`) are kept
 * as `other`, so such entries never pass for ours.
 *
 * `netns` runs every command as `ip -n NETNS ...` (tests use a throwaway namespace).
 */
import { Effect, Layer, Schema } from "effect"
import { ChildProcessSpawner } from "effect/process"
import { canonicalIp, type Family } from "../../domain/net/Ip.ts"
import { parseMarkLiteral } from "../../domain/net/Mark.ts"
import { Routing, RoutingError } from "../../domain/node-setup/Routing.ts"
import { type Change, type IpRule, ipWords, type Route } from "../../domain/node-setup/RoutingPlan.ts"
import { runTool } from "./runTool.ts"

export interface RoutingIproute2Options {
  /** Name of a network namespace (as `ip netns` knows it) to act in instead of the current one. */
  readonly netns?: string
  /** The ip binary; default `ip` from PATH. */
  readonly ip?: string
}

const Rest = [Schema.Record(Schema.String, Schema.Unknown)] as const

const RuleJson = Schema.StructWithRest(
  Schema.Struct({
    priority: Schema.Number,
    src: Schema.optionalKey(Schema.String),
    srclen: Schema.optionalKey(Schema.Number),
    fwmark: Schema.optionalKey(Schema.String),
    fwmask: Schema.optionalKey(Schema.String),
    table: Schema.optionalKey(Schema.String),
    suppress_prefixlen: Schema.optionalKey(Schema.Number)
  }),
  Rest
)

const RouteJson = Schema.StructWithRest(
  Schema.Struct({
    type: Schema.optionalKey(Schema.String),
    dst: Schema.String,
    gateway: Schema.optionalKey(Schema.String),
    metric: Schema.optionalKey(Schema.Number),
    nexthops: Schema.optionalKey(Schema.Array(Schema.Struct({ gateway: Schema.optionalKey(Schema.String) })))
  }),
  Rest
)

const RulesJson = Schema.fromJsonString(Schema.Array(RuleJson))
const RoutesJson = Schema.fromJsonString(Schema.Array(RouteJson))

const MODELLED_RULE_KEYS = new Set([
  "priority",
  "src",
  "srclen",
  "fwmark",
  "fwmask",
  "table",
  "suppress_prefixlen"
])
/** Route fields that make a route something node-setup never installs; the rest (dev, flags, ...) do not. */
const FOREIGN_ROUTE_KEYS = ["nhid", "encap", "via", "tos", "dsfield"]

const word = (key: string, value: unknown): string =>
  value === null ? key : `${key} ${typeof value === "object" ? JSON.stringify(value) : String(value)}`

const toRule = (family: Family, j: typeof RuleJson.Type): IpRule => {
  const other = [
    ...(j.src !== undefined && j.src !== "all"
      ? [`from ${j.src}${j.srclen === undefined ? "" : "/" + j.srclen}`]
      : []),
    ...Object.entries(j)
      .filter(([k]) => !MODELLED_RULE_KEYS.has(k))
      .map(([k, v]) => word(k, v))
  ]
  const fwmark = j.fwmark === undefined ? undefined : parseMarkLiteral(j.fwmark)
  const mask = j.fwmask === undefined ? 0xffffffff : parseMarkLiteral(j.fwmask)
  return {
    family,
    priority: j.priority,
    table: j.table === undefined ? 0 : Number(j.table),
    ...(fwmark === undefined ? {} : { fwmark, ...(mask === undefined ? {} : { mask }) }),
    ...(j.suppress_prefixlen === undefined ? {} : { suppressPrefixlength: j.suppress_prefixlen }),
    ...(other.length === 0 ? {} : { other: other.join(" ") })
  }
}

const toRoute = (family: Family, table: number, j: typeof RouteJson.Type): Route => {
  const type = j.type ?? "unicast"
  const kind = type === "unicast" || type === "unreachable" ? type : "other"
  const other = [
    ...(kind === "other" ? [type] : []),
    ...FOREIGN_ROUTE_KEYS.filter((k) => k in j).map((k) => word(k, j[k]))
  ]
  const gateways =
    j.nexthops?.flatMap((h) => (h.gateway === undefined ? [] : [h.gateway])) ??
    (j.gateway === undefined ? [] : [j.gateway])
  return {
    family,
    table,
    kind,
    dst: j.dst,
    gateways: gateways.map(canonicalIp),
    ...(j.metric === undefined ? {} : { metric: j.metric }),
    ...(other.length === 0 ? {} : { other: other.join(" ") })
  }
}

/** Run `ip` and collect its output; a non-zero exit is data here, the caller decides. */
const runIp = (ip: string, args: ReadonlyArray<string>) =>
  // ip talks to the kernel over netlink and returns at once; a hang means something is badly wrong.
  runTool([ip, ...args], { timeout: "30 seconds" }).pipe(
    Effect.flatMap((r) =>
      r === "missing"
        ? Effect.fail(new RoutingError({ message: `ip ${args.join(" ")}: cannot run ${ip}: not found` }))
        : Effect.succeed({ ...r, stderr: r.stderr.trim() })
    ),
    Effect.mapError((e) => (e._tag === "ToolError" ? new RoutingError({ message: e.message }) : e))
  )

export const make = (options: RoutingIproute2Options = {}) =>
  Effect.gen(function* () {
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    const ip = options.ip ?? "ip"
    const prefix = options.netns === undefined ? [] : ["-n", options.netns]
    const run = (args: ReadonlyArray<string>) =>
      runIp(ip, [...prefix, ...args]).pipe(
        Effect.provideService(ChildProcessSpawner.ChildProcessSpawner, spawner)
      )
    const failed = (args: ReadonlyArray<string>, detail: string) =>
      new RoutingError({ message: `ip ${[...prefix, ...args].join(" ")}: ${detail}` })

    const rules = Effect.fn("Routing.rules")(function* (family: Family) {
      const args = ["-j", "-N", `-${family}`, "rule", "show"]
      const out = yield* run(args)
      if (out.exitCode !== 0) return yield* failed(args, out.stderr || `exit ${out.exitCode}`)
      const decoded = yield* Schema.decodeUnknownEffect(RulesJson)(out.stdout).pipe(
        Effect.mapError((e) => failed(args, `unexpected JSON: ${e.message}`))
      )
      return decoded.map((j) => toRule(family, j))
    })

    const routes = Effect.fn("Routing.routes")(function* (family: Family, table: number) {
      const args = ["-j", `-${family}`, "route", "show", "table", String(table)]
      const out = yield* run(args)
      if (out.exitCode !== 0) {
        // The kernel creates an IPv4 table with its first route; before that, reading it is an error.
        if (out.stderr.includes("FIB table does not exist")) return []
        return yield* failed(args, out.stderr || `exit ${out.exitCode}`)
      }
      const decoded = yield* Schema.decodeUnknownEffect(RoutesJson)(out.stdout).pipe(
        Effect.mapError((e) => failed(args, `unexpected JSON: ${e.message}`))
      )
      return decoded.map((j) => toRoute(family, table, j))
    })

    const apply = Effect.fn("Routing.apply")(function* (change: Change) {
      const args = ipWords(change)
      const out = yield* run(args)
      if (out.exitCode !== 0) return yield* failed(args, out.stderr || `exit ${out.exitCode}`)
    })

    return Routing.of({ rules, routes, apply })
  })

export const layer = (
  options: RoutingIproute2Options = {}
): Layer.Layer<Routing, never, ChildProcessSpawner.ChildProcessSpawner> =>
  Layer.effect(Routing, make(options))
