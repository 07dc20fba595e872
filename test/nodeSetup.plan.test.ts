/**
 * node-setup on the in-memory kernel model: the planner's output for known configs (golden), and its
 * laws under fast-check — idempotence, any sequence of tenants files ending with exactly the last
 * one's rules and routes (all tagged with our protocol, foreign ones untouched), remove restoring the
 * initial foreign-only state, adoption of the previous version's untagged entries, and safety plus
 * convergence after a failure half-way. The laws check against `expectedState`, written here from
 * the config alone, not against the planner. Each property run builds a fresh memory layer.
 */

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { assert, describe, it } from "@effect/vitest"
import { Effect, type FileSystem, Layer, type Path, Result } from "effect"
import * as fc from "fast-check"
import { type CliEnv, runCli } from "../bin/cli.ts"
import { and32, not32, RESERVED_BITS } from "../src/domain/net/Mark.ts"
import {
  decodeNodeSetupConfig,
  type Family,
  gatewayProblem,
  ipFamily,
  type NodeSetupConfig,
  type NodeSetupConfigWire
} from "../src/domain/node-setup/NodeSetupConfig.ts"
import type { Routing } from "../src/domain/node-setup/Routing.ts"
import {
  describeChange,
  describe as describeEntry,
  desired,
  type IpRule,
  OUR_PROTOCOL,
  plan,
  planRemove,
  type Route,
  type RoutingState,
  RT_PROTOS_TEXT,
  rtTablesWith,
  rtTablesWithout,
  ruleDeleteMatches,
  sameRule,
  sameSlot,
  steps,
  UNREACHABLE_METRIC
} from "../src/domain/node-setup/RoutingPlan.ts"
import * as RoutingMemory from "../src/interpreters/memory/RoutingMemory.ts"
import { formatReport, type NodeSetupOptions, nodeSetup } from "../src/programs/nodeSetup.ts"

const runNodeSetup = (argv: ReadonlyArray<string>, env: CliEnv) => runCli(["node-setup", ...argv], env)

const decodeOk = (wire: unknown): NodeSetupConfig => {
  const r = decodeNodeSetupConfig(wire)
  if (Result.isFailure(r)) throw new Error(`config rejected: ${JSON.stringify(r.failure)}`)
  return r.success
}

const example = decodeOk({
  tenants: {
    "tenant-a": { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 },
    "tenant-b": {
      mark: "0x20",
      table: 200,
      gateways: ["198.51.100.2", "198.51.100.3", "2001:db8::2"],
      priority: 1001
    }
  }
})

const platform = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer)

const run = (config: NodeSetupConfig | undefined, options: NodeSetupOptions) => nodeSetup(config, options)

/** Provide a fresh memory kernel (and the file system rt_tables needs) to one test or property run. */
const withKernel = <A, E>(
  effect: Effect.Effect<A, E, RoutingMemory.RoutingMemory | Routing | FileSystem.FileSystem | Path.Path>,
  options: RoutingMemory.RoutingMemoryOptions = {}
) => effect.pipe(Effect.provide(Layer.mergeAll(RoutingMemory.layer(options), platform)))

const snapshot = Effect.flatMap(RoutingMemory.RoutingMemory, (m) => m.snapshot)

describe("node-setup plan (golden)", () => {
  it("desired: one suppress rule per family below the lowest tenant, fwmark rules, gateway and unreachable routes, all tagged", () => {
    const want = desired(example)
    assert.deepStrictEqual(
      want.rules.map((r) => describeEntry({ _tag: "Rule", rule: r })),
      [
        "ip -4 rule priority 999 lookup main suppress_prefixlength 0 protocol 158",
        "ip -4 rule priority 1000 fwmark 0x10/0x30 lookup 100 protocol 158",
        "ip -4 rule priority 1001 fwmark 0x20/0x30 lookup 200 protocol 158",
        "ip -6 rule priority 999 lookup main suppress_prefixlength 0 protocol 158",
        "ip -6 rule priority 1000 fwmark 0x10/0x30 lookup 100 protocol 158",
        "ip -6 rule priority 1001 fwmark 0x20/0x30 lookup 200 protocol 158"
      ]
    )
    assert.deepStrictEqual(
      want.routes.map((r) => describeEntry({ _tag: "Route", route: r })),
      [
        "ip -4 route default via 192.0.2.2 table 100 proto 158",
        "ip -4 route unreachable default table 100 metric 4294967295 proto 158",
        "ip -6 route unreachable default table 100 metric 4294967295 proto 158",
        "ip -4 route default table 200 proto 158 nexthop via 198.51.100.2 nexthop via 198.51.100.3",
        "ip -4 route unreachable default table 200 metric 4294967295 proto 158",
        "ip -6 route default via 2001:db8::2 table 200 proto 158",
        "ip -6 route unreachable default table 200 metric 4294967295 proto 158"
      ]
    )
  })

  it("steps: unreachable routes first, then gateway routes, then the suppress rule, then fwmark rules", () => {
    const lines = steps(plan(desired(example), { rules: [], routes: [] })).map(describeChange)
    assert.deepStrictEqual(lines, [
      "ip -4 route add unreachable default table 100 metric 4294967295 proto 158",
      "ip -6 route add unreachable default table 100 metric 4294967295 proto 158",
      "ip -4 route add unreachable default table 200 metric 4294967295 proto 158",
      "ip -6 route add unreachable default table 200 metric 4294967295 proto 158",
      "ip -4 route add default via 192.0.2.2 table 100 proto 158",
      "ip -4 route add default table 200 proto 158 nexthop via 198.51.100.2 nexthop via 198.51.100.3",
      "ip -6 route add default via 2001:db8::2 table 200 proto 158",
      "ip -4 rule add priority 999 lookup main suppress_prefixlength 0 protocol 158",
      "ip -6 rule add priority 999 lookup main suppress_prefixlength 0 protocol 158",
      "ip -4 rule add priority 1000 fwmark 0x10/0x30 lookup 100 protocol 158",
      "ip -4 rule add priority 1001 fwmark 0x20/0x30 lookup 200 protocol 158",
      "ip -6 rule add priority 1000 fwmark 0x10/0x30 lookup 100 protocol 158",
      "ip -6 rule add priority 1001 fwmark 0x20/0x30 lookup 200 protocol 158"
    ])
  })

  it("removal names the type, metric and protocol, and the next hops in the kernel's order", () => {
    const current: RoutingState = {
      rules: desired(example).rules,
      routes: desired(example).routes.map((r) =>
        r.gateways.length > 1 ? { ...r, gateways: [...r.gateways].reverse(), metric: 0 } : r
      )
    }
    const lines = steps(planRemove({ rules: [], routes: [] }, current)).map(describeChange)
    assert.include(
      lines,
      "ip -4 route del unicast default table 200 metric 0 proto 158 nexthop via 198.51.100.3 nexthop via 198.51.100.2"
    )
    assert.include(lines, "ip -6 route del unicast default via 2001:db8::2 table 200 metric 1024 proto 158")
    assert.include(lines, "ip -4 route del unreachable default table 100 metric 4294967295 proto 158")
    assert.strictEqual(lines[0], "ip -4 rule del priority 1000 fwmark 0x10/0x30 lookup 100 protocol 158")
    assert.strictEqual(lines.length, 13)
  })

  it("edge values: priority 2 puts the suppress rule at 1, above the kernel's local rule at 0; tables 1 and 4294967295; IPv6 multipath", () => {
    const config = decodeOk({
      markMask: "0x1fff",
      tenants: {
        low: { mark: 1, table: 1, gateways: ["2001:DB8:0::2", "2001:db8::3"], priority: 2 },
        high: { mark: "0x1000", table: 4294967295, gateways: [], priority: 32766 }
      }
    })
    const want = desired(config)
    assert.deepStrictEqual(want.rules[0], {
      family: 4,
      priority: 1,
      table: 254,
      suppressPrefixlength: 0,
      protocol: OUR_PROTOCOL
    })
    assert.deepStrictEqual(
      want.rules.filter((r) => r.family === 6).map((r) => r.priority),
      [1, 2, 32766]
    )
    assert.deepStrictEqual(
      want.routes.map((r) => describeEntry({ _tag: "Route", route: r })),
      [
        "ip -4 route unreachable default table 4294967295 metric 4294967295 proto 158",
        "ip -6 route unreachable default table 4294967295 metric 4294967295 proto 158",
        "ip -4 route unreachable default table 1 metric 4294967295 proto 158",
        "ip -6 route default table 1 proto 158 nexthop via 2001:db8::2 nexthop via 2001:db8::3",
        "ip -6 route unreachable default table 1 metric 4294967295 proto 158"
      ]
    )
  })

  it("our default route via other gateways is replaced in place; an untagged one blocks; another slot is foreign", () => {
    const ours: Route = {
      family: 4,
      table: 100,
      kind: "unicast",
      dst: "default",
      gateways: ["192.0.2.9"],
      protocol: OUR_PROTOCOL
    }
    const other: Route = { ...ours, metric: 50, protocol: 4 }
    const p = plan(desired(example), { rules: [], routes: [ours, other] })
    assert.deepStrictEqual(p.remove, [])
    assert.deepStrictEqual(
      steps(p)
        .filter((c) => c.op === "replace")
        .map(describeChange),
      ["ip -4 route replace default via 192.0.2.2 table 100 proto 158"]
    )
    assert.deepStrictEqual(p.foreign, [{ _tag: "Route", route: other }])
    // The same route untagged is not ours: never touched, so it blocks the gateway route.
    const { protocol: _, ...untagged } = ours
    const q = plan(desired(example), { rules: [], routes: [untagged] })
    assert.deepStrictEqual(q.replace, [])
    assert.match(describeEntry(q.blocked[0]!.entry), /^ip -4 route default via 192\.0\.2\.2 table 100/)
  })

  it("a tenant dropped from the file loses its rules and routes on the next apply; foreign ones stay", () => {
    const onlyA = decodeOk({
      markMask: "0x30",
      tenants: { "tenant-a": { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 } }
    })
    // The previous version's untagged rule for tenant-b: not ours, and not asked for any more.
    const foreign: IpRule = { family: 4, priority: 1001, fwmark: 0x20, mask: 0x30, table: 200 }
    const current: RoutingState = {
      rules: [...desired(example).rules, foreign],
      routes: desired(example).routes
    }
    const p = plan(desired(onlyA), current)
    assert.deepStrictEqual(steps(p).map(describeChange), [
      "ip -4 rule del priority 1001 fwmark 0x20/0x30 lookup 200 protocol 158",
      "ip -6 rule del priority 1001 fwmark 0x20/0x30 lookup 200 protocol 158",
      "ip -4 route del unicast default table 200 metric 0 proto 158 nexthop via 198.51.100.2 nexthop via 198.51.100.3",
      "ip -6 route del unicast default via 2001:db8::2 table 200 metric 1024 proto 158",
      "ip -4 route del unreachable default table 200 metric 4294967295 proto 158",
      "ip -6 route del unreachable default table 200 metric 4294967295 proto 158"
    ])
    assert.deepStrictEqual(p.foreign, [{ _tag: "Rule", rule: foreign }])
    // And remove without any file takes out everything tagged, the foreign rule staying.
    const r = planRemove(desired(undefined), current)
    assert.strictEqual(r.remove.length, 13)
    assert.deepStrictEqual(r.blocked, [])
  })

  it("an untagged copy of a wanted rule is retired after its tagged twin is in, unless its delete could hit an earlier rule", () => {
    const want = desired(example)
    const strip = ({ protocol: _, ...rest }: IpRule): IpRule => rest
    const legacy = want.rules.map(strip)
    const lines = steps(plan(want, { rules: legacy, routes: [] })).map(describeChange)
    assert.deepStrictEqual(lines.slice(7, 10), [
      "ip -4 rule add priority 999 lookup main suppress_prefixlength 0 protocol 158",
      "ip -6 rule add priority 999 lookup main suppress_prefixlength 0 protocol 158",
      "ip -4 rule add priority 1000 fwmark 0x10/0x30 lookup 100 protocol 158"
    ])
    assert.include(lines, "ip -4 rule del priority 1000 fwmark 0x10/0x30 lookup 100")
    assert.strictEqual(lines.filter((l) => l.includes(" rule del ")).length, 6)
    // A foreign rule with an iif listed before the untagged copy: `ip rule del` of the copy would hit it.
    const shadow: IpRule = { ...legacy[1]!, other: "iif lo", protocol: 4 }
    const p = plan(want, { rules: [shadow, ...legacy], routes: [] })
    assert.notInclude(
      steps(p).map(describeChange),
      "ip -4 rule del priority 1000 fwmark 0x10/0x30 lookup 100"
    )
    assert.deepStrictEqual(p.blocked, [])
    assert.isTrue(p.foreign.some((e) => e._tag === "Rule" && sameRule(e.rule, legacy[1]!)))
  })

  it("a foreign route of another type in our slot blocks the apply, which then changes nothing", () =>
    Effect.runPromise(
      withKernel(
        Effect.gen(function* () {
          const result = yield* Effect.result(run(example, { mode: "apply" }))
          assert.isTrue(Result.isFailure(result))
          const state = yield* snapshot
          assert.strictEqual(state.rules.length, 0)
          assert.strictEqual(state.routes.length, 1)
        }),
        {
          initial: {
            rules: [],
            routes: [
              { family: 4, table: 100, kind: "other", other: "blackhole", dst: "default", gateways: [] }
            ]
          }
        }
      )
    ))

  it("remove deletes ours by protocol even when a foreign rule with the same fields is listed first", () => {
    const want = desired(example)
    const ours = want.rules.find((r) => r.family === 4 && r.priority === 1000)!
    const { protocol: _, ...twin } = ours
    const current: RoutingState = { rules: [twin, ...want.rules], routes: want.routes }
    const p = planRemove(want, current)
    assert.deepStrictEqual(p.blocked, [])
    assert.isTrue(p.remove.some((e) => e._tag === "Rule" && sameRule(e.rule, ours)))
    assert.deepStrictEqual(p.foreign, [{ _tag: "Rule", rule: twin }])
  })

  it("rt_tables: names are added once, conflicts reported, and removal takes out only our lines", () => {
    const names = [
      { table: 100, name: "tenant-a" },
      { table: 200, name: "tenant-b" },
      { table: 300, name: "tenant-c" }
    ]
    const text = "255\tlocal\n254\tmain\n# a comment\n200 someone-else\n"
    const added = rtTablesWith(text, names)
    assert.deepStrictEqual(added.added, ["100\ttenant-a", "300\ttenant-c"])
    assert.deepStrictEqual(added.conflicts, ["table 200 is already named someone-else, not tenant-b"])
    assert.deepStrictEqual(rtTablesWith(added.text, names).added, [])
    const removed = rtTablesWithout(added.text, names)
    assert.strictEqual(removed.text, text)
  })
})

// ---------------------------------------------------------------------------------------------------
// Generators

const markArb = fc
  .oneof(fc.integer({ min: 1, max: 0xffffffff }), fc.constantFrom(1, 0x10, 0x20, 0x1000, 0xffff1fff))
  .map((m) => and32(m, not32(RESERVED_BITS)))
  .filter((m) => m !== 0)
const tableArb = fc
  .oneof(fc.constantFrom(1, 4294967295, 100, 200, 252, 256), fc.integer({ min: 1, max: 0xffffffff }))
  .filter((t) => ![253, 254, 255].includes(t))
/** Tenant priorities: 2 is the lowest a tenants file may use (1 would put the suppress rule at 0). */
const priorityArb = fc.oneof(fc.constantFrom(2, 3, 1000, 32765, 32766), fc.integer({ min: 2, max: 32766 }))
const usable = (ip: string) => gatewayProblem(ip) === undefined
const gatewayArb = fc.oneof(fc.ipV4().filter(usable), fc.ipV6().filter(usable))

const configArb: fc.Arbitrary<NodeSetupConfig> = fc
  .integer({ min: 1, max: 4 })
  .chain((n) =>
    fc.record({
      marks: fc.uniqueArray(markArb, { minLength: n, maxLength: n }),
      tables: fc.uniqueArray(tableArb, { minLength: n, maxLength: n }),
      priorities: fc.uniqueArray(priorityArb, { minLength: n, maxLength: n }),
      gateways: fc.array(fc.uniqueArray(gatewayArb, { maxLength: 3 }), { minLength: n, maxLength: n }),
      markAsText: fc.array(fc.boolean(), { minLength: n, maxLength: n })
    })
  )
  .map(({ marks, tables, priorities, gateways, markAsText }) => {
    const wire: NodeSetupConfigWire = {
      tenants: Object.fromEntries(
        marks.map((mark, i) => [
          `tenant-${i}`,
          {
            mark: markAsText[i] ? "0x" + mark.toString(16) : mark,
            table: tables[i]!,
            gateways: gateways[i]!,
            priority: priorities[i]!
          }
        ])
      )
    }
    return decodeOk(wire)
  })

const defaultMetric = (family: Family) => (family === 6 ? 1024 : 0)
const FAMILIES_T: ReadonlyArray<Family> = [4, 6]

/**
 * What node-setup must leave for a config, written from §6 without the planner: per family a suppress
 * rule one below the lowest tenant priority and a fwmark rule per tenant; per tenant and family an
 * unreachable default at the highest metric and, with gateways in that family, a default route via
 * them; everything tagged with our protocol.
 */
const expectedState = (config: NodeSetupConfig): RoutingState => {
  const lowest = Math.min(...config.tenants.map((t) => t.priority))
  const p = OUR_PROTOCOL
  return {
    rules: FAMILIES_T.flatMap(
      (family): Array<IpRule> => [
        { family, priority: lowest - 1, table: 254, suppressPrefixlength: 0, protocol: p },
        ...config.tenants.map((t) => ({
          family,
          priority: t.priority,
          fwmark: t.mark,
          mask: config.markMask,
          table: t.table,
          protocol: p
        }))
      ]
    ),
    routes: config.tenants.flatMap((t) =>
      FAMILIES_T.flatMap((family): Array<Route> => {
        const gateways = t.gateways.filter((g) => ipFamily(g) === family)
        const unreachable: Route = {
          family,
          table: t.table,
          kind: "unreachable",
          dst: "default",
          gateways: [],
          metric: UNREACHABLE_METRIC,
          protocol: p
        }
        return gateways.length === 0
          ? [unreachable]
          : [{ family, table: t.table, kind: "unicast", dst: "default", gateways, protocol: p }, unreachable]
      })
    )
  }
}

/** The count of entries a clean install makes: one change each. */
const entryCount = (config: NodeSetupConfig) => {
  const e = expectedState(config)
  return e.rules.length + e.routes.length
}

/** Keys as the kernel identifies entries (defaults made explicit), for multiset comparison. */
const ruleKey = (r: IpRule) =>
  [
    r.family,
    r.priority,
    r.fwmark ?? "",
    r.mask ?? "",
    r.table,
    r.suppressPrefixlength ?? "",
    r.protocol ?? 0,
    r.other ?? ""
  ].join("|")
const routeKey = (r: Route) =>
  [
    r.family,
    r.table,
    r.kind,
    r.dst,
    r.gateways.join(","),
    r.metric ?? defaultMetric(r.family),
    r.protocol ?? 3,
    r.other ?? ""
  ].join("|")
const keys = (state: RoutingState) => ({
  rules: state.rules.map(ruleKey).sort(),
  routes: state.routes.map(routeKey).sort()
})
const union = (a: RoutingState, b: RoutingState): RoutingState => ({
  rules: [...a.rules, ...b.rules],
  routes: [...a.routes, ...b.routes]
})
/** The entries as the previous version wrote them: no protocol (unspec rules, boot routes). */
const untaggedState = (s: RoutingState): RoutingState => ({
  rules: s.rules.map(({ protocol: _, ...r }) => r),
  routes: s.routes.map(({ protocol: _, ...r }) => r)
})

/**
 * Foreign rules at the configs' priorities (and elsewhere) and foreign routes in their tables, with
 * protocols around ours (unspec, kernel, static, bird, 157, 159, 255) but never ours, and never an
 * untagged copy of a rule one of the configs asks for (that is the previous version's, adopted). Rules
 * may share priority and selector with ours. `legacySafe` also keeps out rules that the untagged
 * delete of such a copy could hit, for the adoption law.
 */
const foreignArb = (
  configs: ReadonlyArray<NodeSetupConfig>,
  legacySafe = false
): fc.Arbitrary<RoutingState> => {
  const wanted = configs.map(expectedState)
  const wantRules = wanted.flatMap((w) => w.rules)
  const ruleArb = fc
    .record({
      base: fc.constantFrom(...wantRules),
      priority: fc.option(priorityArb, { nil: undefined }),
      fwmark: fc.option(fc.option(markArb, { nil: undefined }), { nil: undefined }),
      mask: fc.constantFrom(configs[0]!.markMask, 0xffffffff, 0xff),
      table: fc.oneof(fc.constant(undefined), tableArb, fc.constant(254)),
      suppress: fc.option(fc.option(fc.constantFrom(0, 8), { nil: undefined }), { nil: undefined }),
      protocol: fc.constantFrom(undefined, 2, 4, 12, OUR_PROTOCOL - 1, OUR_PROTOCOL + 1, 255),
      other: fc.option(fc.constantFrom("from 10.0.0.0/8", "iif lo", "not"), { nil: undefined })
    })
    .map(({ base, priority, fwmark, mask, table, suppress, protocol, other }): IpRule => {
      const mark = fwmark === undefined ? base.fwmark : fwmark
      const supp = suppress === undefined ? base.suppressPrefixlength : suppress
      return {
        family: base.family,
        priority: priority ?? base.priority,
        table: table ?? base.table,
        ...(mark === undefined ? {} : { fwmark: mark, mask }),
        ...(supp === undefined ? {} : { suppressPrefixlength: supp }),
        ...(protocol === undefined ? {} : { protocol }),
        ...(other === undefined ? {} : { other })
      }
    })
    .filter(
      (r) =>
        !wantRules.some((w) => {
          const { protocol: _, ...copy } = w
          return sameRule(copy, r) || (legacySafe && ruleDeleteMatches(copy, r))
        })
    )
  const tables = wanted.flatMap((w) => w.routes.map((r) => ({ family: r.family, table: r.table })))
  const routeArb = fc
    .record({
      at: fc.constantFrom(...tables),
      kind: fc.constantFrom("unicast" as const, "unreachable" as const, "other" as const),
      dst: fc.constantFrom("default", "10.0.0.0/8", "2001:db8:1::/48"),
      gateway: gatewayArb,
      metric: fc.oneof(fc.constant(undefined), fc.integer({ min: 0, max: 4294967295 })),
      protocol: fc.constantFrom(undefined, 2, 4, 16, OUR_PROTOCOL - 1, OUR_PROTOCOL + 1)
    })
    .map(
      ({ at, kind, dst, gateway, metric, protocol }): Route => ({
        family: at.family,
        table: at.table,
        kind,
        dst,
        gateways: kind === "unicast" && ipFamily(gateway) === at.family ? [gateway] : [],
        ...(metric === undefined ? {} : { metric }),
        ...(protocol === undefined ? {} : { protocol }),
        ...(kind === "other" ? { other: "blackhole" } : {})
      })
    )
    // Our slots (default at the default metric or at the unreachable metric) hold our routes only.
    .filter(
      (r) =>
        r.dst !== "default" ||
        ![defaultMetric(r.family), UNREACHABLE_METRIC].includes(r.metric ?? defaultMetric(r.family))
    )
  const baseline: Array<IpRule> = [
    { family: 4, priority: 0, table: 255, protocol: 2 },
    { family: 4, priority: 32766, table: 254, protocol: 2 },
    { family: 4, priority: 32767, table: 253, protocol: 2 },
    { family: 6, priority: 0, table: 255, protocol: 2 },
    { family: 6, priority: 32766, table: 254, protocol: 2 }
  ]
  return fc
    .record({ rules: fc.array(ruleArb, { maxLength: 8 }), routes: fc.array(routeArb, { maxLength: 8 }) })
    .map(({ rules, routes }) => ({
      // The kernel holds no two equal rules and no two routes in one slot.
      rules: [...baseline, ...rules].filter((r, i, all) => all.findIndex((o) => sameRule(o, r)) === i),
      routes: routes.filter((r, i, all) => all.findIndex((o) => sameSlot(o, r)) === i)
    }))
}

const scenarioArb = configArb.chain((config) =>
  fc.record({ config: fc.constant(config), initial: foreignArb([config]) })
)
/** Tenants files applied one after the other (one to four), over foreign entries. */
const sequenceArb = fc
  .array(configArb, { minLength: 1, maxLength: 4 })
  .chain((configs) => fc.record({ configs: fc.constant(configs), initial: foreignArb(configs) }))

/** Every fwmark rule of ours looks up a table that holds an unreachable default in its family. */
const neverLeaks = (state: RoutingState) => {
  for (const rule of state.rules) {
    if (rule.protocol !== OUR_PROTOCOL || rule.fwmark === undefined) continue
    assert.isTrue(
      state.routes.some(
        (r) =>
          r.family === rule.family &&
          r.table === rule.table &&
          r.kind === "unreachable" &&
          r.dst === "default"
      ),
      `rule ${describeEntry({ _tag: "Rule", rule })} without its unreachable route`
    )
  }
}

const PROPERTY_RUNS = { numRuns: 150 }

describe("node-setup laws (memory kernel, fast-check)", () => {
  it("node-setup is idempotent: a clean apply makes one change per expected entry, a second one none and leaves the state", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, ({ config, initial }) =>
        Effect.runPromise(
          withKernel(
            Effect.gen(function* () {
              const first = yield* run(config, { mode: "apply" })
              assert.strictEqual(first.changes, entryCount(config))
              const afterFirst = yield* snapshot
              assert.deepStrictEqual(keys(afterFirst), keys(union(initial, expectedState(config))))
              const second = yield* run(config, { mode: "apply" })
              assert.strictEqual(second.changes, 0)
              assert.match(formatReport(second), /^apply: 0 changes/)
              assert.deepStrictEqual(yield* snapshot, afterFirst)
              const dry = yield* run(config, { mode: "apply", dryRun: true })
              assert.strictEqual(dry.changes, 0)
            }),
            { initial }
          )
        )
      ),
      PROPERTY_RUNS
    )
  })

  it("any sequence of tenants files ends with exactly the last file's entries, all tagged, foreign ones untouched; remove (with the last file or none) restores the initial state", async () => {
    await fc.assert(
      fc.asyncProperty(sequenceArb, fc.boolean(), ({ configs, initial }, withFile) =>
        Effect.runPromise(
          withKernel(
            Effect.gen(function* () {
              const before = yield* snapshot
              for (const config of configs) {
                const report = yield* run(config, { mode: "apply" })
                assert.deepStrictEqual(report.blocked, [])
                const now = yield* snapshot
                assert.deepStrictEqual(keys(now), keys(union(initial, expectedState(config))))
                neverLeaks(now)
              }
              const last = configs.at(-1)!
              const removed = yield* run(withFile ? last : undefined, { mode: "remove" })
              assert.deepStrictEqual(removed.blocked, [])
              assert.strictEqual(removed.changes, entryCount(last))
              assert.deepStrictEqual(yield* snapshot, before)
              assert.strictEqual((yield* run(undefined, { mode: "remove" })).changes, 0)
            }),
            { initial }
          )
        )
      ),
      PROPERTY_RUNS
    )
  })

  it("foreign rules and routes in scope are reported by apply and remove, whatever their protocol", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, ({ config, initial }) =>
        Effect.runPromise(
          withKernel(
            Effect.gen(function* () {
              const before = yield* snapshot
              const applied = yield* run(config, { mode: "apply" })
              const removed = yield* run(config, { mode: "remove" })
              const want = expectedState(config)
              const inScope = before.rules.filter((r) =>
                want.rules.some((w) => w.family === r.family && w.priority === r.priority)
              )
              const inTables = before.routes.filter((r) =>
                want.routes.some((w) => w.family === r.family && w.table === r.table)
              )
              for (const report of [applied, removed]) {
                for (const r of inScope)
                  assert.include(report.foreign, describeEntry({ _tag: "Rule", rule: r }))
                for (const r of inTables)
                  assert.include(report.foreign, describeEntry({ _tag: "Route", route: r }))
              }
            }),
            { initial }
          )
        )
      ),
      PROPERTY_RUNS
    )
  })

  it("the previous version's untagged entries for the file are adopted: one apply leaves exactly the tagged ones, foreign ones untouched", async () => {
    const adoptionArb = configArb.chain((config) =>
      fc.record({ config: fc.constant(config), foreign: foreignArb([config], true) })
    )
    await fc.assert(
      fc.asyncProperty(adoptionArb, ({ config, foreign }) =>
        Effect.runPromise(
          withKernel(
            Effect.gen(function* () {
              const want = expectedState(config)
              const report = yield* run(config, { mode: "apply" })
              // Each rule: tagged copy added, untagged one deleted; each route replaced in place.
              assert.strictEqual(report.changes, 2 * want.rules.length + want.routes.length)
              const now = yield* snapshot
              assert.deepStrictEqual(keys(now), keys(union(foreign, want)))
              neverLeaks(now)
              assert.strictEqual((yield* run(config, { mode: "apply" })).changes, 0)
            }),
            { initial: union(foreign, untaggedState(expectedState(config))) }
          )
        )
      ),
      PROPERTY_RUNS
    )
  })

  it("a failure at any step leaves no fwmark rule of ours without its unreachable route, and a rerun converges", async () => {
    const failureArb = fc
      .tuple(configArb, fc.option(configArb, { nil: undefined }))
      .chain(([config, previous]) =>
        fc.record({
          config: fc.constant(config),
          previous: fc.constant(previous),
          foreign: foreignArb(previous === undefined ? [config] : [config, previous]),
          failAt: fc.integer({ min: 1, max: 30 })
        })
      )
    await fc.assert(
      fc.asyncProperty(failureArb, ({ config, previous, foreign, failAt }) =>
        Effect.runPromise(
          withKernel(
            Effect.gen(function* () {
              const first = yield* Effect.result(run(config, { mode: "apply" }))
              // From a clean start (no earlier file) every expected entry is one change.
              if (previous === undefined)
                assert.strictEqual(Result.isFailure(first), failAt <= entryCount(config))
              neverLeaks(yield* snapshot)
              yield* run(config, { mode: "apply" })
              assert.deepStrictEqual(keys(yield* snapshot), keys(union(foreign, expectedState(config))))
              assert.strictEqual((yield* run(config, { mode: "apply" })).changes, 0)
            }),
            {
              initial: previous === undefined ? foreign : union(foreign, expectedState(previous)),
              failAt
            }
          )
        )
      ),
      PROPERTY_RUNS
    )
  })
})

describe("node-setup CLI on the memory kernel", () => {
  it("apply, apply again (0 changes), dry-run remove, remove; rt_tables and rt_protos.d only with --write-rt-tables; remove without the file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trw-node-setup-"))
    try {
      const file = join(dir, "tenants.json")
      const rtTables = join(dir, "rt_tables")
      const rtProtos = join(dir, "rt_protos.d", "tenant-routing.conf")
      const tenantA = { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 }
      writeFileSync(file, JSON.stringify({ tenants: { "tenant-a": tenantA } }))
      // One kernel for the whole CLI session: build the memory layer once (it has no finalizers).
      const kernel = Layer.succeedContext(
        await Effect.runPromise(Effect.scoped(Layer.build(RoutingMemory.layer())))
      )
      const out: Array<string> = []
      const envShared = {
        routing: kernel,
        rtTablesPath: rtTables,
        rtProtosPath: rtProtos,
        stdout: (t: string) => void out.push(t),
        stderr: (t: string) => void out.push("ERR " + t)
      }
      assert.strictEqual(await runNodeSetup(["--config", file, "--write-rt-tables"], envShared), 0)
      assert.match(out.at(-1)!, /^apply: 9 changes\n/)
      assert.include(out.at(-1)!, `${rtTables}: + 100\ttenant-a`)
      assert.include(out.at(-1)!, `${rtProtos}: + 158\ttenant-routing`)
      assert.include(readFileSync(rtTables, "utf8"), "254\tmain\n")
      assert.strictEqual(readFileSync(rtProtos, "utf8"), RT_PROTOS_TEXT)
      assert.strictEqual(await runNodeSetup(["--config", file, "--write-rt-tables"], envShared), 0)
      assert.match(out.at(-1)!, /^apply: 0 changes\n/)
      assert.strictEqual(await runNodeSetup(["--config", file, "--remove", "--dry-run"], envShared), 0)
      assert.match(out.at(-1)!, /^remove \(dry run\): 7 changes planned\n/)
      assert.strictEqual(
        await runNodeSetup(["--config", file, "--remove", "--write-rt-tables"], envShared),
        0
      )
      assert.match(out.at(-1)!, /^remove: 9 changes\n/)
      assert.notInclude(readFileSync(rtTables, "utf8"), "tenant-a")
      assert.isFalse(existsSync(rtProtos))
      assert.strictEqual(await runNodeSetup(["--bogus"], envShared), 2)

      // Apply two tenants, drop one from the file: the next apply removes its 5 entries.
      const tenantB = { mark: "0x20", table: 200, gateways: ["2001:db8::2"], priority: 1001 }
      writeFileSync(
        file,
        JSON.stringify({ markMask: "0x30", tenants: { "tenant-a": tenantA, "tenant-b": tenantB } })
      )
      assert.strictEqual(await runNodeSetup(["--config", file], envShared), 0)
      writeFileSync(file, JSON.stringify({ markMask: "0x30", tenants: { "tenant-a": tenantA } }))
      assert.strictEqual(await runNodeSetup(["--config", file], envShared), 0)
      assert.match(out.at(-1)!, /^apply: 5 changes\n/)
      assert.include(
        out.at(-1)!,
        "ip -6 route del unicast default via 2001:db8::2 table 200 metric 1024 proto 158"
      )
      // Without the file, --remove still takes out everything tagged; apply without it is a usage error.
      rmSync(file)
      assert.strictEqual(await runNodeSetup(["--config", file], envShared), 2)
      assert.strictEqual(await runNodeSetup(["--config", file, "--remove"], envShared), 0)
      assert.match(out.at(-1)!, /^remove: 7 changes\n/)
      const state = await Effect.runPromise(
        Effect.flatMap(RoutingMemory.RoutingMemory, (m) => m.snapshot).pipe(Effect.provide(kernel))
      )
      assert.deepStrictEqual(state, { rules: [], routes: [] })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("exit 1 when applying fails, with the kernel's message on stderr", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trw-node-setup-"))
    try {
      const file = join(dir, "tenants.json")
      writeFileSync(
        file,
        JSON.stringify({ tenants: { a: { mark: 16, table: 100, gateways: [], priority: 10 } } })
      )
      const err: Array<string> = []
      const code = await runNodeSetup(["--config", file], {
        routing: RoutingMemory.layer({ failAt: 2 }),
        stdout: () => undefined,
        stderr: (t) => void err.push(t)
      })
      assert.strictEqual(code, 1)
      assert.match(err.join(""), /injected failure at apply #2[\s\S]*1 of 6 changes made/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
