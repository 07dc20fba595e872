/**
 * `Routing` on the real kernel through iproute2's `ip`, run as an argument array (never a shell).
 *
 * Reads use `ip -j -N -d` and decode its JSON with Schema; nothing parses ip's text output. `-N`
 * prints tables, protocols and route types as numbers, whatever rt_tables or rt_protos(.d) name them
 * (a local file could give our protocol number another name); `-d` prints the protocol of every
 * entry, the defaults included (without it ip hides a rule's unspec/kernel and a route's boot).
 * Observed output this relies on (iproute2 6.1, Linux 6.x):
 * - rules: `{"priority":1000,"src":"all","fwmark":"0x10","fwmask":"0x30","table":"100","protocol":"158"}`;
 *   the mask is omitted when it is 0xffffffff; `suppress_prefixlength` prints as `"suppress_prefixlen":0`.
 * - routes of `show table N`: `"type":"1"` (RTN_UNICAST), `"7"` unreachable, ... ; the table is
 *   omitted; multipath has `"nexthops":[{"gateway":...}]`; an IPv4 metric of 0 is omitted; showing an
 *   IPv4 table that was never created fails with "FIB table does not exist", which is read as an
 *   empty table. `show table all proto P` adds `"table"` and, being filtered by it, omits the protocol.
 * `netns` runs every command as `ip -n NETNS ...` (tests use a throwaway namespace).
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { ChildProcessSpawner } from "effect/process"
import * as Schema from "effect/Schema"
import { canonicalIp, type Family } from "../../domain/net/Ip.ts"
import { parseMarkLiteral } from "../../domain/net/Mark.ts"
import { Routing, RoutingError } from "../../domain/node-setup/Routing.ts"
import {
  type Change,
  type IpRule,
  ipWords,
  ROUTE_DEFAULT_PROTOCOL,
  type Route,
  RULE_DEFAULT_PROTOCOL
} from "../../domain/node-setup/RoutingPlan.ts"
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
    suppress_prefixlen: Schema.optionalKey(Schema.Number),
    protocol: Schema.optionalKey(Schema.String)
  }),
  Rest
)

const RouteJson = Schema.StructWithRest(
  Schema.Struct({
    type: Schema.optionalKey(Schema.String),
    dst: Schema.String,
    table: Schema.optionalKey(Schema.String),
    protocol: Schema.optionalKey(Schema.String),
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
  "suppress_prefixlen",
  "protocol"
])
/** Route fields that make a route something node-setup never installs; the rest (dev, flags, ...) do not. */
const FOREIGN_ROUTE_KEYS = ["nhid", "encap", "via", "tos", "dsfield"]

/** Route types by number (linux/rtnetlink.h RTN_*, kernel ABI), as `-N` prints them. */
const ROUTE_TYPES: Readonly<Record<string, string>> = {
  "1": "unicast",
  "2": "local",
  "3": "broadcast",
  "4": "anycast",
  "5": "multicast",
  "6": "blackhole",
  "7": "unreachable",
  "8": "prohibit",
  "9": "throw",
  "10": "nat",
  "11": "xresolve"
}

/** A protocol as `-N -d` prints it (decimal); a default one is left out, as the domain model wants. */
const protocolOf = (text: string | undefined, otherwise: number): number | undefined => {
  const n = text === undefined ? otherwise : Number(text)
  return n === otherwise ? undefined : n
}

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
    ...withProtocol(protocolOf(j.protocol, RULE_DEFAULT_PROTOCOL)),
    ...(other.length === 0 ? {} : { other: other.join(" ") })
  }
}

const withProtocol = (protocol: number | undefined) => (protocol === undefined ? {} : { protocol })

const toRoute = (family: Family, table: number, j: typeof RouteJson.Type, protocol?: number): Route => {
  const type = j.type === undefined ? "unicast" : (ROUTE_TYPES[j.type] ?? `type ${j.type}`)
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
    ...withProtocol(
      protocolOf(protocol === undefined ? j.protocol : String(protocol), ROUTE_DEFAULT_PROTOCOL)
    ),
    ...(other.length === 0 ? {} : { other: other.join(" ") })
  }
}

/** Run `ip` and collect its output; a non-zero exit is data here, the caller decides. */
const runIp = (ip: string, args: ReadonlyArray<string>) =>
  // ip talks to the kernel over netlink and returns at once; a hang means something is badly wrong.
  runTool([ip, ...args], { timeout: "30 seconds" }).pipe(
    Effect.flatMap((r) =>
      r === "missing"
        ? Effect.fail(new RoutingError({ msg: `ip ${args.join(" ")}: cannot run ${ip}: not found` }))
        : Effect.succeed({ ...r, stderr: r.stderr.trim() })
    ),
    Effect.mapError((e) => (e._tag === "ToolError" ? new RoutingError({ msg: e.msg }) : e))
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
      new RoutingError({ msg: `ip ${[...prefix, ...args].join(" ")}: ${detail}` })

    const rules = Effect.fn("Routing.rules")(function* (family: Family) {
      const args = ["-j", "-N", "-d", `-${family}`, "rule", "show"]
      const out = yield* run(args)
      if (out.exitCode !== 0) return yield* failed(args, out.stderr || `exit ${out.exitCode}`)
      const decoded = yield* Schema.decodeUnknownEffect(RulesJson)(out.stdout).pipe(
        Effect.mapError((e) => failed(args, `unexpected JSON: ${e.message}`))
      )
      return decoded.map((j) => toRule(family, j))
    })

    const readRoutes = Effect.fnUntraced(function* (family: Family, selector: ReadonlyArray<string>) {
      const args = ["-j", "-N", "-d", `-${family}`, "route", "show", ...selector]
      const out = yield* run(args)
      if (out.exitCode !== 0) {
        // The kernel creates an IPv4 table with its first route; before that, reading it is an error.
        if (out.stderr.includes("FIB table does not exist")) return []
        return yield* failed(args, out.stderr || `exit ${out.exitCode}`)
      }
      return yield* Schema.decodeUnknownEffect(RoutesJson)(out.stdout).pipe(
        Effect.mapError((e) => failed(args, `unexpected JSON: ${e.message}`))
      )
    })

    const routes = Effect.fn("Routing.routes")(function* (family: Family, table: number) {
      const decoded = yield* readRoutes(family, ["table", String(table)])
      return decoded.map((j) => toRoute(family, table, j))
    })

    const routesWithProtocol = Effect.fn("Routing.routesWithProtocol")(function* (
      family: Family,
      protocol: number
    ) {
      const decoded = yield* readRoutes(family, ["table", "all", "proto", String(protocol)])
      // -d prints the table of every route listed from all tables, main (254) included.
      return decoded.map((j) => toRoute(family, Number(j.table ?? "254"), j, protocol))
    })

    const apply = Effect.fn("Routing.apply")(function* (change: Change) {
      const args = ipWords(change)
      const out = yield* run(args)
      if (out.exitCode !== 0) return yield* failed(args, out.stderr || `exit ${out.exitCode}`)
    })

    return Routing.of({ rules, routes, routesWithProtocol, apply })
  })

export const layer = (
  options: RoutingIproute2Options = {}
): Layer.Layer<Routing, never, ChildProcessSpawner.ChildProcessSpawner> =>
  Layer.effect(Routing, make(options))
