/**
 * Laws of ADD and DEL over the in-memory node (issue 2, laws 1, 2, 4, 5).
 */
import { describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { assert } from "vitest"
import {
  containerIdArb,
  hostileValueArb,
  spellingArb,
  tenantsArb,
  tenantsConf
} from "./support/arbitraries.ts"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"

const podArb = (tenants: ReadonlyArray<{ name: string; mark: number }>) =>
  fc.record({
    containerId: containerIdArb,
    value: fc.option(fc.oneof(...tenants.map(spellingArb)), { nil: undefined }),
    runtime: fc.boolean(),
    ifname: fc.constantFrom("eth0", "net1")
  })

const setupPod = (w: World, pod: { containerId: string; value: string | undefined; runtime: boolean }) => {
  const annotations: Record<string, string> = pod.value === undefined ? {} : { [KEY]: pod.value }
  if (!pod.runtime) w.cluster.setPod("default", pod.containerId, annotations)
  return pod.runtime ? { runtimeConfig: { "io.kubernetes.cri.pod-annotations": annotations } } : {}
}

describe("ADD and DEL laws", () => {
  it("ADD is idempotent: a repeated ADD leaves the same entries, records and leases, with the delegate's own answer and nothing undone", async () => {
    await fc.assert(
      fc.asyncProperty(
        tenantsArb.chain((ts) =>
          fc.tuple(fc.constant(ts), podArb(ts), fc.constantFrom("iptables", "nftables", "auto"))
        ),
        // host-local refuses a second ADD for the same attachment; other IPAMs answer it again.
        fc.constantFrom("refuse" as const, "same-lease" as const),
        async ([tenants, pod, backend], repeatedAdd) => {
          const w = new World()
          w.leases.repeatedAdd = repeatedAdd
          const extra = setupPod(w, pod)
          const conf = originalConf({ tenants: tenantsConf(tenants), backend, ...extra })
          const ref = {
            containerId: pod.containerId,
            ifname: pod.ifname,
            namespace: "default",
            name: pod.containerId
          }
          const first = await w.run(cniEnv("ADD", ref), conf)
          assert.strictEqual(first.exitCode, 0, first.stdout)
          const once = w.snapshot()
          const second = await w.run(cniEnv("ADD", ref), conf)
          assert.deepStrictEqual(w.snapshot(), once)
          if (repeatedAdd === "same-lease") assert.deepStrictEqual(parse(second), parse(first))
          else {
            const doc = parse(second) as { code: number; msg: string }
            assert.strictEqual(doc.code, 999)
            assert.include(doc.msg, "ptp: ")
            assert.include(doc.msg, "duplicate allocation is not allowed")
          }
        }
      ),
      { numRuns: 150 }
    )
  })

  it("ADD is idempotent in chained mode: same state and the same result", async () => {
    await fc.assert(
      fc.asyncProperty(
        tenantsArb.chain((ts) => fc.tuple(fc.constant(ts), podArb(ts))),
        async ([tenants, pod]) => {
          const w = new World()
          const extra = setupPod(w, pod)
          const prevResult = {
            cniVersion: "1.0.0",
            interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
            ips: [
              { address: "10.1.2.3/24", interface: 0 },
              { address: "FD00::0:3/64", interface: 0 }
            ]
          }
          const { delegate: _none, ...chained } = originalConf({
            tenants: tenantsConf(tenants),
            prevResult,
            ...extra
          })
          const ref = { containerId: pod.containerId, namespace: "default", name: pod.containerId }
          const first = await w.run(cniEnv("ADD", ref), chained)
          const once = w.snapshot()
          const second = await w.run(cniEnv("ADD", ref), chained)
          assert.strictEqual(first.exitCode, 0, first.stdout)
          assert.strictEqual(first.stdout, second.stdout)
          assert.deepStrictEqual(w.snapshot(), once)
          assert.deepStrictEqual(w.leases.calls, [])
        }
      ),
      { numRuns: 100 }
    )
  })

  it("ADD then DEL restores the initial state, for any sequence of pods", async () => {
    await fc.assert(
      fc.asyncProperty(
        tenantsArb.chain((ts) =>
          fc.tuple(
            fc.constant(ts),
            fc.uniqueArray(podArb(ts), { maxLength: 12, selector: (p) => `${p.containerId}/${p.ifname}` })
          )
        ),
        fc.boolean(),
        async ([tenants, pods], dualStack) => {
          const w = new World({ dualStack })
          const initial = w.snapshot()
          const confs = pods.map((p) => originalConf({ tenants: tenantsConf(tenants), ...setupPod(w, p) }))
          const refs = pods.map((p) => ({
            containerId: p.containerId,
            ifname: p.ifname,
            namespace: "default",
            name: p.containerId
          }))
          for (const [i, ref] of refs.entries()) await w.run(cniEnv("ADD", ref), confs[i])
          for (const [i, ref] of [...refs.entries()].reverse()) {
            const del = await w.run(cniEnv("DEL", ref), confs[i])
            assert.strictEqual(del.exitCode, 0, del.stdout)
          }
          assert.deepStrictEqual(w.snapshot(), initial)
        }
      ),
      { numRuns: 100 }
    )
  })

  it("DEL never calls the annotation source, never fails for missing state, and is idempotent", async () => {
    await fc.assert(
      fc.asyncProperty(
        containerIdArb,
        fc.boolean(),
        fc.integer({ min: 1, max: 3 }),
        async (cid, added, times) => {
          const w = new World()
          w.cluster.setPod("default", cid, { [KEY]: "tenant-a" })
          const ref = { containerId: cid, namespace: "default", name: cid }
          if (added) await w.run(cniEnv("ADD", ref), originalConf())
          const apiCalls = () =>
            [...w.faults.calls.entries()]
              .filter(([op]) => op.startsWith("api."))
              .reduce((n, [, c]) => n + c, 0)
          const before = apiCalls()
          for (let i = 0; i < times; i++) {
            const del = await w.run(cniEnv("DEL", ref), originalConf())
            assert.strictEqual(del.exitCode, 0, del.stdout)
            assert.strictEqual(del.stdout, undefined)
          }
          assert.strictEqual(apiCalls(), before)
          assert.deepStrictEqual(w.snapshot(), new World().snapshot())
        }
      ),
      { numRuns: 60 }
    )
  })

  const faultOps = [
    "api.connect",
    "api.pods",
    "api.namespaces",
    "delegate.ADD",
    "delegate.ADD.output",
    "netfilter.list",
    "netfilter.apply",
    "store.write"
  ] as const

  it("a fault at any step of ADD under failurePolicy closed leaves entries, records and leases as before", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...faultOps),
        fc.integer({ min: 1, max: 3 }),
        fc.boolean(),
        fc.boolean(),
        async (op, nth, dualStack, earlierPods) => {
          const w = new World({ dualStack })
          // Some state already on the node: other pods, and a stale foreign entry on the next IP.
          if (earlierPods) {
            w.cluster.setPod("default", "p1", { [KEY]: "tenant-b" })
            await w.run(
              cniEnv("ADD", { containerId: "p1", namespace: "default", name: "p1" }),
              originalConf()
            )
            w.kernel.entries.nftables.push({
              ip: "10.200.0.3",
              family: 4,
              mark: 0x20,
              mask: 0x30,
              owner: "tenant-routing/crashed/eth0"
            })
          }
          w.cluster.setPod("default", "p2", { [KEY]: "tenant-a" })
          w.cluster.setNamespace("default", {})
          const before = w.snapshot()
          w.faults.calls.clear()
          w.faults.faults = [{ op, nth, kind: "fail" }]
          const out = await w.run(
            cniEnv("ADD", { containerId: "p2", namespace: "default", name: "p2" }),
            originalConf()
          )
          const hit = w.faults.count(op) >= nth
          if (hit) {
            assert.strictEqual(out.exitCode, 1, `expected failure at ${op}#${nth}`)
            assert.deepStrictEqual(w.snapshot(), before)
          } else {
            assert.strictEqual(out.exitCode, 0, out.stdout)
          }
        }
      ),
      { numRuns: 120 }
    )
  })

  it("under failurePolicy open an unavailable API or a failing install starts the pod untagged; unknown tenants still fail", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("api.connect", "api.pods", "api.namespaces", "netfilter.apply", "unknown-tenant"),
        async (fault) => {
          const w = new World()
          w.cluster.setPod("default", "p", { [KEY]: fault === "unknown-tenant" ? "tenant-zz" : "tenant-a" })
          w.cluster.setNamespace("default", {})
          if (fault !== "unknown-tenant") w.faults.faults = [{ op: fault, nth: 1, kind: "fail" }]
          const out = await w.run(
            cniEnv("ADD", { containerId: "p", namespace: "default", name: "p" }),
            originalConf({ failurePolicy: "open" })
          )
          if (fault === "unknown-tenant") {
            assert.strictEqual(out.exitCode, 1)
            assert.strictEqual((parse(out) as { code: number }).code, 100)
            assert.deepStrictEqual(w.snapshot(), new World().snapshot())
          } else {
            assert.strictEqual(out.exitCode, 0, out.stdout)
            assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
            assert.strictEqual(w.records.snapshot()[0]?.[1].tenant, null)
          }
        }
      ),
      { numRuns: 30 }
    )
  })

  it("hostile annotation values give code 100 and change nothing", async () => {
    await fc.assert(
      fc.asyncProperty(hostileValueArb, fc.boolean(), async (value, onNamespace) => {
        const w = new World()
        if (onNamespace) w.cluster.setNamespace("default", { [KEY]: value })
        else w.cluster.setPod("default", "p", { [KEY]: value })
        const out = await w.run(
          cniEnv("ADD", { containerId: "p", namespace: "default", name: "p" }),
          originalConf()
        )
        assert.strictEqual(out.exitCode, 1)
        const doc = parse(out) as { code: number; msg: string }
        assert.strictEqual(doc.code, 100)
        assert.isBelow(doc.msg.length, 600)
        assert.deepStrictEqual(w.snapshot(), new World().snapshot())
      }),
      { numRuns: 80 }
    )
  })
})
