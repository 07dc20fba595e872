/**
 * node-setup on the in-memory kernel model: the planner's output for known configs (golden), and its
 * laws under fast-check — idempotence, remove restoring the initial state, foreign rules and routes
 * never touched, and safety plus convergence after a failure half-way. Each property run builds a
 * fresh memory layer.
 */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
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
  plan,
  planRemove,
  type Route,
  type RoutingState,
  rtTablesWith,
  rtTablesWithout,
  ruleDeleteMatches,
  sameRoute,
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

const run = (config: NodeSetupConfig, options: NodeSetupOptions) => nodeSetup(config, options)

/** Provide a fresh memory kernel (and the file system rt_tables needs) to one test or property run. */
const withKernel = <A, E>(
  effect: Effect.Effect<A, E, RoutingMemory.RoutingMemory | Routing | FileSystem.FileSystem | Path.Path>,
  options: RoutingMemory.RoutingMemoryOptions = {}
) => effect.pipe(Effect.provide(Layer.mergeAll(RoutingMemory.layer(options), platform)))

const snapshot = Effect.flatMap(RoutingMemory.RoutingMemory, (m) => m.snapshot)

describe("node-setup plan (golden)", () => {
  it("desired: one suppress rule per family below the lowest tenant, fwmark rules, gateway and unreachable routes", () => {
    const want = desired(example)
    assert.deepStrictEqual(
      want.rules.map((r) => describeEntry({ _tag: "Rule", rule: r })),
      [
        "ip -4 rule priority 999 lookup main suppress_prefixlength 0",
        "ip -4 rule priority 1000 fwmark 0x10/0x30 lookup 100",
        "ip -4 rule priority 1001 fwmark 0x20/0x30 lookup 200",
        "ip -6 rule priority 999 lookup main suppress_prefixlength 0",
        "ip -6 rule priority 1000 fwmark 0x10/0x30 lookup 100",
        "ip -6 rule priority 1001 fwmark 0x20/0x30 lookup 200"
      ]
    )
    assert.deepStrictEqual(
      want.routes.map((r) => describeEntry({ _tag: "Route", route: r })),
      [
        "ip -4 route default via 192.0.2.2 table 100",
        "ip -4 route unreachable default table 100 metric 4294967295",
        "ip -6 route unreachable default table 100 metric 4294967295",
        "ip -4 route default table 200 nexthop via 198.51.100.2 nexthop via 198.51.100.3",
        "ip -4 route unreachable default table 200 metric 4294967295",
        "ip -6 route default via 2001:db8::2 table 200",
        "ip -6 route unreachable default table 200 metric 4294967295"
      ]
    )
  })

  it("steps: unreachable routes first, then gateway routes, then the suppress rule, then fwmark rules", () => {
    const lines = steps(plan(desired(example), { rules: [], routes: [] })).map(describeChange)
    assert.deepStrictEqual(lines, [
      "ip -4 route add unreachable default table 100 metric 4294967295",
      "ip -6 route add unreachable default table 100 metric 4294967295",
      "ip -4 route add unreachable default table 200 metric 4294967295",
      "ip -6 route add unreachable default table 200 metric 4294967295",
      "ip -4 route add default via 192.0.2.2 table 100",
      "ip -4 route add default table 200 nexthop via 198.51.100.2 nexthop via 198.51.100.3",
      "ip -6 route add default via 2001:db8::2 table 200",
      "ip -4 rule add priority 999 lookup main suppress_prefixlength 0",
      "ip -6 rule add priority 999 lookup main suppress_prefixlength 0",
      "ip -4 rule add priority 1000 fwmark 0x10/0x30 lookup 100",
      "ip -4 rule add priority 1001 fwmark 0x20/0x30 lookup 200",
      "ip -6 rule add priority 1000 fwmark 0x10/0x30 lookup 100",
      "ip -6 rule add priority 1001 fwmark 0x20/0x30 lookup 200"
    ])
  })

  it("removal names the type and metric, and the next hops in the kernel's order", () => {
    const current: RoutingState = {
      rules: desired(example).rules,
      routes: desired(example).routes.map((r) =>
        r.gateways.length > 1 ? { ...r, gateways: [...r.gateways].reverse(), metric: 0 } : r
      )
    }
    const lines = steps(planRemove(desired(example), current)).map(describeChange)
    assert.include(
      lines,
      "ip -4 route del unicast default table 200 metric 0 nexthop via 198.51.100.3 nexthop via 198.51.100.2"
    )
    assert.include(lines, "ip -6 route del unicast default via 2001:db8::2 table 200 metric 1024")
    assert.include(lines, "ip -4 route del unreachable default table 100 metric 4294967295")
    assert.strictEqual(lines[0], "ip -4 rule del priority 1000 fwmark 0x10/0x30 lookup 100")
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
    assert.deepStrictEqual(want.rules[0], { family: 4, priority: 1, table: 254, suppressPrefixlength: 0 })
    assert.deepStrictEqual(
      want.rules.filter((r) => r.family === 6).map((r) => r.priority),
      [1, 2, 32766]
    )
    assert.deepStrictEqual(
      want.routes.map((r) => describeEntry({ _tag: "Route", route: r })),
      [
        "ip -4 route unreachable default table 4294967295 metric 4294967295",
        "ip -6 route unreachable default table 4294967295 metric 4294967295",
        "ip -4 route unreachable default table 1 metric 4294967295",
        "ip -6 route default table 1 nexthop via 2001:db8::2 nexthop via 2001:db8::3",
        "ip -6 route unreachable default table 1 metric 4294967295"
      ]
    )
  })

  it("a default route via other gateways in a tenant table is replaced; one in another slot is foreign", () => {
    const old: Route = { family: 4, table: 100, kind: "unicast", dst: "default", gateways: ["192.0.2.9"] }
    const other: Route = { ...old, metric: 50 }
    const p = plan(desired(example), { rules: [], routes: [old, other] })
    assert.deepStrictEqual(p.remove, [{ _tag: "Route", route: old }])
    assert.isTrue(p.add.some((e) => e._tag === "Route" && e.route.gateways[0] === "192.0.2.2"))
    assert.deepStrictEqual(p.foreign, [{ _tag: "Route", route: other }])
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

  it("remove keeps our rule when ip rule del would hit a foreign rule listed first, and keeps its table", () => {
    const want = desired(example)
    const ours = want.rules.find((r) => r.family === 4 && r.priority === 1000)!
    const shadow: IpRule = { ...ours, other: "iif lo" }
    const current: RoutingState = { rules: [shadow, ...want.rules], routes: want.routes }
    const p = planRemove(want, current)
    assert.isTrue(p.blocked.some((b) => b.entry._tag === "Rule" && sameRule(b.entry.rule, ours)))
    assert.isFalse(p.remove.some((e) => e._tag === "Rule" && sameRule(e.rule, ours)))
    assert.isFalse(p.remove.some((e) => e._tag === "Route" && e.route.family === 4 && e.route.table === 100))
    assert.isTrue(p.remove.some((e) => e._tag === "Route" && e.route.family === 6 && e.route.table === 100))
    assert.deepStrictEqual(p.foreign, [{ _tag: "Rule", rule: shadow }])
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

/**
 * Foreign rules at our priorities (and elsewhere) and foreign routes in our tables. `hazards` also
 * allows foreign rules that `ip rule del` of ours would match (same fields plus a selector we don't
 * model), which remove must never delete.
 */
const foreignArb = (config: NodeSetupConfig, hazards: boolean): fc.Arbitrary<RoutingState> => {
  const want = desired(config)
  const ruleArb = fc
    .record({
      base: fc.constantFrom(...want.rules),
      priority: fc.option(priorityArb, { nil: undefined }),
      fwmark: fc.option(fc.option(markArb, { nil: undefined }), { nil: undefined }),
      mask: fc.constantFrom(config.markMask, 0xffffffff, 0xff),
      table: fc.oneof(fc.constant(undefined), tableArb, fc.constant(254)),
      suppress: fc.option(fc.option(fc.constantFrom(0, 8), { nil: undefined }), { nil: undefined }),
      other: fc.option(fc.constantFrom("from 10.0.0.0/8", "iif lo", "not"), { nil: undefined })
    })
    .map(({ base, priority, fwmark, mask, table, suppress, other }): IpRule => {
      const mark = fwmark === undefined ? base.fwmark : fwmark
      const supp = suppress === undefined ? base.suppressPrefixlength : suppress
      return {
        family: base.family,
        priority: priority ?? base.priority,
        table: table ?? base.table,
        ...(mark === undefined ? {} : { fwmark: mark, mask }),
        ...(supp === undefined ? {} : { suppressPrefixlength: supp }),
        ...(other === undefined ? {} : { other })
      }
    })
    .filter((r) => !want.rules.some((w) => sameRule(w, r) || (!hazards && ruleDeleteMatches(w, r))))
  const tables = want.routes.map((r) => ({ family: r.family, table: r.table }))
  const routeArb = fc
    .record({
      at: fc.constantFrom(...tables),
      kind: fc.constantFrom("unicast" as const, "unreachable" as const, "other" as const),
      dst: fc.constantFrom("default", "10.0.0.0/8", "2001:db8:1::/48"),
      gateway: gatewayArb,
      metric: fc.oneof(fc.constant(undefined), fc.integer({ min: 0, max: 4294967295 }))
    })
    .map(
      ({ at, kind, dst, gateway, metric }): Route => ({
        family: at.family,
        table: at.table,
        kind,
        dst,
        gateways: kind === "unicast" && ipFamily(gateway) === at.family ? [gateway] : [],
        ...(metric === undefined ? {} : { metric }),
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
    { family: 4, priority: 0, table: 255 },
    { family: 4, priority: 32766, table: 254 },
    { family: 4, priority: 32767, table: 253 },
    { family: 6, priority: 0, table: 255 },
    { family: 6, priority: 32766, table: 254 }
  ]
  return fc
    .record({ rules: fc.array(ruleArb, { maxLength: 8 }), routes: fc.array(routeArb, { maxLength: 8 }) })
    .map(({ rules, routes }) => ({
      // The kernel holds no two equal rules and no two routes in one slot.
      rules: [...baseline, ...rules].filter((r, i, all) => all.findIndex((o) => sameRule(o, r)) === i),
      routes: routes.filter((r, i, all) => all.findIndex((o) => sameSlot(o, r)) === i)
    }))
}

const scenarioArb = (hazards: boolean) =>
  configArb.chain((config) =>
    fc.record({ config: fc.constant(config), initial: foreignArb(config, hazards) })
  )

const contains = (state: RoutingState, want: RoutingState): boolean =>
  want.rules.every((w) => state.rules.some((r) => sameRule(r, w))) &&
  want.routes.every((w) => state.routes.some((r) => sameRoute(r, w)))

const PROPERTY_RUNS = { numRuns: 150 }

describe("node-setup laws (memory kernel, fast-check)", () => {
  it("node-setup is idempotent: a second apply makes 0 changes and leaves the state as the first left it", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb(true), ({ config, initial }) =>
        Effect.runPromise(
          withKernel(
            Effect.gen(function* () {
              const first = yield* run(config, { mode: "apply" })
              const afterFirst = yield* snapshot
              assert.isTrue(contains(afterFirst, desired(config)))
              assert.strictEqual(first.changes, steps(plan(desired(config), initial)).length)
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

  it("setup then remove restores the initial rules and routes", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb(false), ({ config, initial }) =>
        Effect.runPromise(
          withKernel(
            Effect.gen(function* () {
              const before = yield* snapshot
              yield* run(config, { mode: "apply" })
              const removed = yield* run(config, { mode: "remove" })
              assert.deepStrictEqual(removed.blocked, [])
              assert.deepStrictEqual(yield* snapshot, before)
              assert.strictEqual((yield* run(config, { mode: "remove" })).changes, 0)
            }),
            { initial }
          )
        )
      ),
      PROPERTY_RUNS
    )
  })

  it("foreign rules and routes are never touched, even at our priorities, in our tables, or shadowing ours", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb(true), ({ config, initial }) =>
        Effect.runPromise(
          withKernel(
            Effect.gen(function* () {
              const before = yield* snapshot
              const survives = (state: RoutingState) => {
                for (const r of before.rules)
                  assert.isTrue(
                    state.rules.some((s) => sameRule(s, r)),
                    `rule ${JSON.stringify(r)}`
                  )
                for (const r of before.routes)
                  assert.isTrue(
                    state.routes.some((s) => sameRoute(s, r)),
                    `route ${JSON.stringify(r)}`
                  )
              }
              const applied = yield* run(config, { mode: "apply" })
              survives(yield* snapshot)
              const removed = yield* run(config, { mode: "remove" })
              survives(yield* snapshot)
              // What was there before and is in scope is reported as foreign by both runs.
              const want = desired(config)
              const inScope = before.rules.filter((r) =>
                want.rules.some((w) => w.family === r.family && w.priority === r.priority)
              )
              for (const report of [applied, removed]) {
                for (const r of inScope)
                  assert.include(report.foreign, describeEntry({ _tag: "Rule", rule: r }))
              }
            }),
            { initial }
          )
        )
      ),
      PROPERTY_RUNS
    )
  })

  it("a failure at any step leaves no fwmark rule without its unreachable route, and a rerun converges", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb(false), fc.integer({ min: 1, max: 30 }), ({ config, initial }, failAt) =>
        Effect.runPromise(
          withKernel(
            Effect.gen(function* () {
              const want = desired(config)
              const first = yield* Effect.result(run(config, { mode: "apply" }))
              const total = steps(plan(want, initial)).length
              assert.strictEqual(Result.isFailure(first), failAt <= total)
              const state = yield* snapshot
              for (const rule of state.rules) {
                if (!want.rules.some((w) => sameRule(w, rule)) || rule.fwmark === undefined) continue
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
              yield* run(config, { mode: "apply" })
              assert.isTrue(contains(yield* snapshot, want))
              assert.strictEqual((yield* run(config, { mode: "apply" })).changes, 0)
            }),
            { initial, failAt }
          )
        )
      ),
      PROPERTY_RUNS
    )
  })
})

describe("node-setup CLI on the memory kernel", () => {
  it("apply, apply again (0 changes), dry-run remove, remove; rt_tables only with --write-rt-tables", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trw-node-setup-"))
    try {
      const file = join(dir, "tenants.json")
      const rtTables = join(dir, "rt_tables")
      writeFileSync(
        file,
        JSON.stringify({
          tenants: { "tenant-a": { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 } }
        })
      )
      // One kernel for the whole CLI session: build the memory layer once (it has no finalizers).
      const kernel = Layer.succeedContext(
        await Effect.runPromise(Effect.scoped(Layer.build(RoutingMemory.layer())))
      )
      const out: Array<string> = []
      const envShared = {
        routing: kernel,
        rtTablesPath: rtTables,
        stdout: (t: string) => void out.push(t),
        stderr: (t: string) => void out.push("ERR " + t)
      }
      assert.strictEqual(await runNodeSetup(["--config", file, "--write-rt-tables"], envShared), 0)
      assert.match(out.at(-1)!, /^apply: 8 changes\n/)
      assert.include(out.at(-1)!, `${rtTables}: + 100\ttenant-a`)
      assert.include(readFileSync(rtTables, "utf8"), "254\tmain\n")
      assert.strictEqual(await runNodeSetup(["--config", file, "--write-rt-tables"], envShared), 0)
      assert.match(out.at(-1)!, /^apply: 0 changes\n/)
      assert.strictEqual(await runNodeSetup(["--config", file, "--remove", "--dry-run"], envShared), 0)
      assert.match(out.at(-1)!, /^remove \(dry run\): 7 changes planned\n/)
      assert.strictEqual(
        await runNodeSetup(["--config", file, "--remove", "--write-rt-tables"], envShared),
        0
      )
      assert.match(out.at(-1)!, /^remove: 8 changes\n/)
      assert.notInclude(readFileSync(rtTables, "utf8"), "tenant-a")
      assert.strictEqual(await runNodeSetup(["--bogus"], envShared), 2)
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
