/**
 * Group commit laws (src/domain/datapath/Committer.ts): calls that arrive together through one shared
 * committer end exactly as the same calls run one after another in arrival order, and pay one
 * transaction per backend and family. Each batch is made to arrive together by holding the node lock
 * until every call of it has queued; the reference is a second node running the same calls serially.
 * Calls are the datapath steps of ADD, DEL and GC (src/programs/datapath.ts) on a small pool of IPs,
 * so IPs collide (a stale entry of another owner on a new pod's IP) and one attachment may be added
 * and deleted within one batch.
 */
import { describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as fc from "fast-check"
import { assert } from "vitest"
import type { Backend, PluginConfig } from "../src/domain/cni/Config.ts"
import type { Fault } from "../src/interpreters/memory/Faults.ts"
import { attach, collect, detach } from "../src/programs/datapath.ts"
import { World } from "./support/memoryWorld.ts"

const STATE = "/var/lib/cni/tenant-routing"
const POOL = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "0.0.0.0", "255.255.255.255", "fd00::1", "ffff::ffff"]

const config = (network: string, backend: Backend | "auto"): PluginConfig => ({
  cniVersion: "1.1.0",
  name: network,
  delegate: undefined,
  kubeconfig: undefined,
  annotationKey: "tenant.routing/fwmark",
  tenants: [],
  markMask: 0xffffffff,
  backend,
  failurePolicy: "closed",
  pinning: "best-effort",
  apiTimeoutMs: 1000,
  delegateTimeoutMs: 1000,
  stateDir: STATE,
  logFile: undefined,
  logLevel: "info",
  logMaxBytes: 1,
  prevResult: undefined,
  validAttachments: undefined,
  podAnnotations: undefined,
  runtimeConfig: undefined
})

const opArb = fc.record({
  verb: fc.constantFrom("ADD", "ADD", "ADD", "DEL", "DEL", "GC"),
  network: fc.constantFrom("net-a", "net-b"),
  containerId: fc.constantFrom("c1", "c2", "c3", "c4"),
  ips: fc.subarray(POOL, { minLength: 1, maxLength: 2 }),
  mark: fc.constantFrom(0x10, 0x20, 0xffffffff, null),
  backend: fc.constantFrom<Backend | "auto">("iptables", "nftables", "auto"),
  keep: fc.subarray(["c1", "c2", "c3", "c4"])
})
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never

/** One datapath call; its outcome as comparable data. */
const callOf = (op: Op) => {
  const cfg = config(op.network, op.backend)
  const a = { network: op.network, containerId: op.containerId, ifname: "eth0" }
  const tenant = op.mark === null ? null : { name: `t${op.mark}`, mark: op.mark }
  const effect: Effect.Effect<unknown, { readonly _tag: string }, never> =
    op.verb === "ADD"
      ? (attach(cfg, a, op.ips, tenant, false) as never)
      : op.verb === "DEL"
        ? (detach(cfg, a) as never)
        : (collect(
            cfg,
            op.keep.map((containerId) => ({ containerId, ifname: "eth0" }))
          ) as never)
  return effect.pipe(
    Effect.map((value) => ({
      ok: JSON.parse(JSON.stringify(value, (_, v) => (v instanceof Set ? [...v] : v)))
    })),
    Effect.catch((e) => Effect.succeed({ failed: e._tag }))
  )
}

const inWorld = <A>(w: World, self: Effect.Effect<A, never, never>) =>
  Effect.runPromise(self.pipe(Effect.provide(w.layer())) as Effect.Effect<A>)

/** The batch through the shared committer, arriving together: the lock is held until all queued. */
const together = (w: World, ops: ReadonlyArray<Op>) =>
  inWorld(
    w,
    Effect.gen(function* () {
      const holder = yield* Effect.forkChild(
        w.lock.withLock(
          Effect.gen(function* () {
            while (w.committer.queued() < ops.length) yield* Effect.yieldNow
          })
        )
      )
      yield* Effect.yieldNow
      const fibers = []
      for (const op of ops) fibers.push(yield* Effect.forkChild(callOf(op) as Effect.Effect<unknown>))
      yield* Fiber.join(holder)
      return yield* Effect.forEach(fibers, (f) => Fiber.join(f))
    }) as unknown as Effect.Effect<ReadonlyArray<unknown>>
  )

const serially = (w: World, ops: ReadonlyArray<Op>) =>
  inWorld(
    w,
    Effect.forEach(ops, (op) => callOf(op) as Effect.Effect<unknown>)
  )

const state = (w: World) => ({ entries: w.kernel.snapshot(), records: w.records.snapshot() })

const oneEntryPerIp = (w: World) => {
  const perIp = new Map<string, number>()
  for (const e of [...w.kernel.entries.iptables, ...w.kernel.entries.nftables])
    perIp.set(e.ip, (perIp.get(e.ip) ?? 0) + 1)
  for (const [ip, n] of perIp) assert.strictEqual(n, 1, `${ip} carries ${n} entries`)
}

/** Transactions since `from`, per backend and family. */
const transactionsSince = (w: World, from: number) => {
  const per = new Map<string, number>()
  for (const t of w.kernel.transactions.slice(from)) {
    const k = `${t.backend}/v${t.family}`
    per.set(k, (per.get(k) ?? 0) + 1)
  }
  return per
}

describe("group commit laws", () => {
  it("concurrent ADD/DEL/GC through one committer end exactly as the same calls run alone in arrival order: each outcome, every entry and record; one entry per IP", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { maxLength: 6 }),
        fc.array(opArb, { minLength: 1, maxLength: 10 }),
        async (prelude, batch) => {
          const grouped = new World()
          const alone = new World()
          await serially(grouped, prelude)
          await serially(alone, prelude)
          const from = grouped.kernel.transactions.length
          const got = await together(grouped, batch)
          const want = await serially(alone, batch)
          assert.deepStrictEqual(got, want, "each call's outcome")
          assert.deepStrictEqual(state(grouped), state(alone), "entries and records")
          oneEntryPerIp(grouped)
          // Without GC (which runs alone) and without faults: one transaction per backend and family.
          if (!batch.some((o) => o.verb === "GC")) {
            for (const [k, n] of transactionsSince(grouped, from))
              assert.isAtMost(n, 1, `${k}: ${n} transactions`)
          }
        }
      ),
      { numRuns: 300 }
    )
  })

  it("a batch of N concurrent ADDs, then N concurrent DELs, makes at most one transaction per backend and family each", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 40 }),
        fc.constantFrom<Backend | "auto">("iptables", "nftables", "auto"),
        fc.boolean(),
        async (n, backend, dualStack) => {
          const w = new World()
          const ops = Array.from({ length: n }, (_, i) => ({
            network: "net-a",
            containerId: `pod${i}`,
            ips: dualStack
              ? [`10.1.${i >> 8}.${i & 255}`, `fd00::${i.toString(16)}`]
              : [`10.1.${i >> 8}.${i & 255}`],
            mark: 0x10 << (i % 2),
            backend,
            keep: []
          }))
          const adds = ops.map((o) => ({ ...o, verb: "ADD" }) as Op)
          const dels = ops.map((o) => ({ ...o, verb: "DEL" }) as Op)
          const before = w.kernel.transactions.length
          const added = await together(w, adds)
          for (const r of added) assert.property(r, "ok")
          const afterAdds = w.kernel.transactions.length
          assert.strictEqual(afterAdds - before, dualStack ? 2 : 1, "one transaction per family for all ADDs")
          assert.strictEqual(
            w.kernel.entries.iptables.length + w.kernel.entries.nftables.length,
            n * (dualStack ? 2 : 1)
          )
          assert.strictEqual(w.records.byPath.size, n)
          const deleted = await together(w, dels)
          for (const r of deleted) assert.deepStrictEqual(r, { ok: dualStack ? 2 : 1 })
          assert.strictEqual(w.kernel.transactions.length - afterAdds, dualStack ? 2 : 1)
          assert.deepStrictEqual(state(w), { entries: { iptables: [], nftables: [] }, records: [] })
        }
      ),
      { numRuns: 60 }
    )
  })

  it("a failed merged transaction leaves nothing of it: every call then ends as it would alone, in arrival order", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { maxLength: 6 }),
        fc.array(
          opArb.filter((o) => o.verb !== "GC"),
          { minLength: 2, maxLength: 8 }
        ),
        fc.integer({ min: 1, max: 2 }),
        async (prelude, batch, nth) => {
          const grouped = new World()
          const alone = new World()
          await serially(grouped, prelude)
          await serially(alone, prelude)
          // The merged change's nth backend apply fails (a second one undoes the first).
          grouped.faults.faults = [
            { op: "netfilter.apply", nth: grouped.faults.count("netfilter.apply") + nth, kind: "fail" }
          ] satisfies ReadonlyArray<Fault>
          const got = await together(grouped, batch)
          const want = await serially(alone, batch)
          assert.deepStrictEqual(got, want, "each call's outcome")
          assert.deepStrictEqual(state(grouped), state(alone), "entries and records")
          oneEntryPerIp(grouped)
        }
      ),
      { numRuns: 200 }
    )
  })

  it("a call whose record cannot be written fails alone: its entries go, the others' stay as if it had never run", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { maxLength: 6 }),
        fc.array(
          opArb.filter((o) => o.verb !== "GC"),
          { minLength: 2, maxLength: 8 }
        ),
        fc.nat(),
        async (prelude, batch, pick) => {
          const grouped = new World()
          const alone = new World()
          await serially(grouped, prelude)
          await serially(alone, prelude)
          const adds = batch.filter((o) => o.verb === "ADD").length
          fc.pre(adds > 0)
          // The k-th record write of the batch fails, in both worlds (writes happen in arrival order).
          for (const w of [grouped, alone]) {
            w.faults.faults = [
              { op: "store.write", nth: w.faults.count("store.write") + 1 + (pick % adds), kind: "fail" }
            ]
          }
          const got = await together(grouped, batch)
          const want = await serially(alone, batch)
          assert.deepStrictEqual(got, want, "each call's outcome")
          assert.deepStrictEqual(state(grouped), state(alone), "entries and records")
          oneEntryPerIp(grouped)
        }
      ),
      { numRuns: 200 }
    )
  })
})
