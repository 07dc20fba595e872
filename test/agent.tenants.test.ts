/**
 * `agent --tenants FILE` (src/programs/agentTenants.ts) over the memory Routing interpreter and the
 * real file system: the file is applied at start, a change (written by rename, as ConfigMaps and
 * editors do) is applied, a touch that leaves the content alone applies nothing, an invalid file is
 * logged with its field and changes nothing, and periodic runs repair routing edited by hand —
 * counted as drift — also while the file on disk is invalid.
 */
import { renameSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Layer, Logger, Metric, References, Scope } from "effect"
import { Routing } from "../src/domain/node-setup/Routing.ts"
import type { RoutingState } from "../src/domain/node-setup/RoutingPlan.ts"
import * as RoutingMemoryModule from "../src/interpreters/memory/RoutingMemory.ts"
import { nodeSetupDrift, nodeSetupRuns } from "../src/programs/agentMetrics.ts"
import { keepNodeSetupConverged } from "../src/programs/agentTenants.ts"
import { removePath, tempDir } from "./sim/netns.ts"

const { RoutingMemory } = RoutingMemoryModule

const dirs: Array<string> = []
afterAll(() => {
  for (const d of dirs) removePath(d)
})

const tenantA = { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 }
const tenantB = { mark: "0x20", table: 200, gateways: ["198.51.100.2"], priority: 1001 }

/** Written beside the file, then renamed over it: the way ConfigMap updates and editors replace it. */
const replace = (file: string, content: unknown) => {
  const tmp = `${file}.tmp`
  writeFileSync(tmp, typeof content === "string" ? content : JSON.stringify(content))
  renameSync(tmp, file)
}

interface Line {
  readonly level: string
  readonly message: string
  readonly fields: Record<string, unknown>
}

/** Waits for `ok`; a wait that never ends is ended by the test's own timeout, naming `what`. */
const until = async (what: string, ok: () => boolean | Promise<boolean>) => {
  waitingFor = what
  while (!(await ok())) await new Promise((r) => setTimeout(r, 20))
  waitingFor = ""
}
let waitingFor = ""
afterAll(() => assert.strictEqual(waitingFor, "", "a wait that never ended"))

const startLoop = async (options: { readonly interval?: Duration.Input; readonly initial: unknown }) => {
  const dir = tempDir("trw-agent-tenants-")
  dirs.push(dir)
  const file = join(dir, "tenants.json")
  replace(file, options.initial)
  const logs: Array<Line> = []
  const capture = Logger.make((o) => {
    const [message, fields] = o.message as [string, Record<string, unknown> | undefined]
    logs.push({ level: o.logLevel, message, fields: fields ?? {} })
  })
  const registry = new Map()
  const scope = Effect.runSync(Scope.make())
  const services = await Effect.runPromise(
    Layer.buildWithScope(Layer.mergeAll(RoutingMemoryModule.layer(), NodeServices.layer), scope)
  )
  const run = <A, E>(effect: Effect.Effect<A, E, Routing | RoutingMemoryModule.RoutingMemory>) =>
    Effect.runPromise(
      effect.pipe(
        Effect.provideContext(services),
        Effect.provideService(Metric.MetricRegistry, registry),
        Effect.provideService(References.MinimumLogLevel, "Debug"),
        Effect.provide(Logger.layer([capture]))
      )
    )
  await Effect.runPromise(
    keepNodeSetupConverged({ file, interval: options.interval ?? "10 minutes", settle: "50 millis" }).pipe(
      Effect.provideContext(services),
      Effect.provideService(Metric.MetricRegistry, registry),
      Effect.provideService(References.MinimumLogLevel, "Debug"),
      Effect.provide(Logger.layer([capture])),
      Scope.provide(scope)
    )
  )
  const state = () => run(RoutingMemory.use((m) => m.snapshot))
  const applyCalls = () => run(RoutingMemory.use((m) => m.applyCalls))
  const runs = (reason?: string) =>
    logs.filter((l) => l.message === "node-setup run" && (reason === undefined || l.fields.reason === reason))
  const counter = (metric: Metric.Counter<number>) => run(Metric.value(metric)).then((s) => s.count)
  return {
    file,
    logs,
    state,
    applyCalls,
    runs,
    counter,
    run,
    stop: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** The tenant tables the fwmark rules look up, in order. */
const tables = (s: RoutingState) =>
  [...new Set(s.rules.filter((r) => r.fwmark !== undefined && r.table !== 254).map((r) => r.table))].sort()

/** Rules and routes as sets: a repaired rule goes after others of its priority, which is the same routing. */
const asSets = (s: RoutingState) => ({
  rules: s.rules.map((r) => JSON.stringify(r)).sort(),
  routes: s.routes.map((r) => JSON.stringify(r)).sort()
})

describe("agent --tenants: node-setup kept converged", () => {
  it("applies the file at start; a file replaced by rename is applied; a touch or another file in the directory applies nothing", async () => {
    const loop = await startLoop({ initial: { tenants: { a: tenantA } } })
    try {
      assert.strictEqual(loop.runs("start").length, 1)
      assert.isAbove(loop.runs("start")[0]!.fields.changes as number, 0)
      assert.deepStrictEqual(tables(await loop.state()), [100])

      replace(loop.file, { tenants: { a: tenantA, b: tenantB } })
      await until("the change run", () => loop.runs("change").length === 1)
      assert.deepStrictEqual(tables(await loop.state()), [100, 200])

      const calls = await loop.applyCalls()
      const unchangedBefore = loop.logs.filter((l) => l.message === "tenants file unchanged").length
      // Same bytes, new inode: what a ConfigMap resync without an edit looks like.
      replace(loop.file, { tenants: { a: tenantA, b: tenantB } })
      await until(
        "the touch seen",
        () => loop.logs.filter((l) => l.message === "tenants file unchanged").length > unchangedBefore
      )
      const seen = loop.logs.filter((l) => l.message === "tenants file unchanged").length
      writeFileSync(join(loop.file, "..", "unrelated.txt"), "x")
      await until(
        "the other file seen",
        () => loop.logs.filter((l) => l.message === "tenants file unchanged").length > seen
      )
      assert.strictEqual(loop.runs().length, 2, "no run for a touch or another file")
      assert.strictEqual(await loop.applyCalls(), calls)
    } finally {
      await loop.stop()
    }
  }, 60_000)

  it("an invalid file is logged with the field at fault and changes nothing; fixing it applies", async () => {
    const loop = await startLoop({ initial: { tenants: { a: tenantA } } })
    try {
      const before = await loop.state()
      const calls = await loop.applyCalls()
      replace(loop.file, { tenants: { a: tenantA, b: { ...tenantB, priority: 1 } } })
      await until("the invalid file seen", () =>
        loop.logs.some((l) => l.message === "tenants file invalid; the last valid one stays in force")
      )
      const warning = loop.logs.find((l) => l.message.startsWith("tenants file invalid"))!
      assert.strictEqual(warning.level, "Warn")
      assert.deepStrictEqual(
        (warning.fields.issues as Array<{ field: string }>).map((i) => i.field),
        ["tenants.b.priority"]
      )
      assert.deepStrictEqual(await loop.state(), before)
      assert.strictEqual(await loop.applyCalls(), calls)
      assert.strictEqual(
        await loop
          .run(Metric.value(Metric.withAttributes(nodeSetupRuns, { reason: "change", outcome: "invalid" })))
          .then((s) => s.count),
        1
      )

      replace(loop.file, { tenants: { a: tenantA, b: tenantB } })
      await until("the fixed file applied", () => loop.runs("change").length === 1)
      assert.deepStrictEqual(tables(await loop.state()), [100, 200])
    } finally {
      await loop.stop()
    }
  }, 60_000)

  it("a periodic run repairs routing edited by hand and counts it as drift, also while the file on disk is invalid", async () => {
    const loop = await startLoop({ initial: { tenants: { a: tenantA } }, interval: "200 millis" })
    try {
      const converged = asSets(await loop.state())
      // Periodic runs over an unchanged, untouched node: nothing to do, no drift.
      await until("two periodic runs", () => loop.runs("periodic").length >= 2)
      assert.strictEqual(await loop.counter(nodeSetupDrift), 0)
      assert.isTrue(loop.runs("periodic").every((l) => l.fields.changes === 0))

      const dropRule = loop.run(
        Effect.gen(function* () {
          const rule = (yield* RoutingMemory.use((m) => m.snapshot)).rules.find((r) => r.fwmark === 0x10)!
          yield* Routing.use((r) => r.apply({ op: "remove", entry: { _tag: "Rule", rule } }))
        })
      )
      await dropRule
      assert.notDeepEqual(asSets(await loop.state()), converged)
      await until("the drift repaired", async () => (await loop.counter(nodeSetupDrift)) >= 1)
      assert.strictEqual(await loop.counter(nodeSetupDrift), 1)
      assert.deepStrictEqual(asSets(await loop.state()), converged)
      assert.isTrue(loop.runs("periodic").some((l) => l.fields.changes === 1))

      replace(loop.file, "{ not json")
      await until("the invalid file seen", () =>
        loop.logs.some((l) => l.message.startsWith("tenants file invalid"))
      )
      await loop.run(
        Effect.gen(function* () {
          const rule = (yield* RoutingMemory.use((m) => m.snapshot)).rules.find((r) => r.fwmark === 0x10)!
          yield* Routing.use((r) => r.apply({ op: "remove", entry: { _tag: "Rule", rule } }))
        })
      )
      await until("the drift repaired again", async () => (await loop.counter(nodeSetupDrift)) >= 2)
      assert.deepStrictEqual(asSets(await loop.state()), converged)
    } finally {
      await loop.stop()
    }
  }, 60_000)
})
