/**
 * Laws of ADD and DEL over the in-memory node (issue 2, laws 1, 2, 4, 5): tenants reach the high bit
 * (0x80000000) and masks 0xffff1fff, marks are written as strings and JSON numbers, tenants come from
 * the pod or its namespace, and each pod's entries are checked against its tenant, computed here.
 */
import { describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { assert } from "vitest"
import {
  containerIdArb,
  hostileValueArb,
  markMaskArb,
  spellingArb,
  type TenantSpec,
  tenantsArb,
  tenantsConfArb,
  unionOf
} from "./support/arbitraries.ts"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const NETWORK = "tenant-routing"

/**
 * A pod and where its tenant comes from: its own annotation (from the runtime or the API), its
 * namespace's default tenant, or both naming the same tenant in any spelling.
 */
const podArb = (tenants: ReadonlyArray<TenantSpec>) =>
  fc
    .record({
      containerId: containerIdArb,
      tenant: fc.option(fc.constantFrom(...tenants), { nil: undefined }),
      source: fc.constantFrom("pod" as const, "namespace" as const, "both" as const),
      runtime: fc.boolean(),
      ifname: fc.constantFrom("eth0", "net1")
    })
    .chain((p) =>
      fc
        .tuple(
          p.tenant === undefined ? fc.constant(undefined) : spellingArb(p.tenant),
          p.tenant === undefined ? fc.constant(undefined) : spellingArb(p.tenant)
        )
        .map(([podValue, nsValue]) => ({ ...p, podValue, nsValue }))
    )
type Pod = typeof podArb extends (t: never) => fc.Arbitrary<infer P> ? P : never

/** The namespace of the law's i-th pod (each pod its own, so namespace tenants do not clash). */
const nsOf = (i: number) => `ns-${i}`

/** Puts pod i's annotations where its source says; returns the config keys that carry them. */
const setupPod = (w: World, pod: Pod, i: number) => {
  const onPod = pod.source !== "namespace" && pod.podValue !== undefined
  const onNs = pod.source !== "pod" && pod.nsValue !== undefined
  const annotations: Record<string, string> = onPod ? { [KEY]: pod.podValue as string } : {}
  w.cluster.setNamespace(nsOf(i), onNs ? { [KEY]: pod.nsValue as string } : {})
  if (!pod.runtime) w.cluster.setPod(nsOf(i), pod.containerId, annotations)
  return pod.runtime ? { runtimeConfig: { "io.kubernetes.cri.pod-annotations": annotations } } : {}
}

const refOf = (pod: Pod, i: number) => ({
  containerId: pod.containerId,
  ifname: pod.ifname,
  namespace: nsOf(i),
  name: pod.containerId
})

/** Tenants, their config (marks as strings or numbers) and maybe an explicit mask up to 0xffff1fff. */
const tenancyArb = tenantsArb.chain((tenants) =>
  fc.record({
    tenants: fc.constant(tenants),
    wire: tenantsConfArb(tenants),
    mask: markMaskArb(tenants)
  })
)
type Tenancy = typeof tenancyArb extends fc.Arbitrary<infer T> ? T : never

const tenancyConf = (t: Tenancy, extra: Record<string, unknown> = {}) =>
  originalConf({ tenants: t.wire, ...(t.mask === undefined ? {} : { markMask: t.mask.wire }), ...extra })

/** The mask every entry must carry: the explicit one, else the unsigned union of the marks. */
const expectedMask = (t: Tenancy) => t.mask?.mask ?? unionOf(t.tenants)

/**
 * docs/DESIGN.md §4, with names short enough to stay plain: `<network>/<containerId>/<ifname>`.
 */
const tagOf = (pod: Pod) => `${NETWORK}/${pod.containerId}/${pod.ifname}`

/** Pod i carries exactly its tenant's entries (one per IP, its mark, the mask) or none. */
const assertPodEntries = (w: World, t: Tenancy, pod: Pod, ips: number) => {
  const mine = [...w.kernel.entries.iptables, ...w.kernel.entries.nftables].filter(
    (e) => e.owner === tagOf(pod)
  )
  if (pod.tenant === undefined) assert.deepStrictEqual(mine, [], "an untagged pod has no entry")
  else {
    assert.strictEqual(mine.length, ips, `one entry per IP of ${tagOf(pod)} (tenant from ${pod.source})`)
    for (const e of mine) {
      assert.strictEqual(e.mark, pod.tenant.mark)
      assert.strictEqual(e.mask, expectedMask(t))
    }
  }
}

/**
 * What else is on the node before a law starts: pods of this and another network added through the
 * plugin (entries, records, leases) in either backend, and entries of owners that left no record,
 * planted in both backends on IPs the delegate never hands out.
 */
const otherStateArb = (tenants: ReadonlyArray<TenantSpec>) =>
  fc.record({
    pods: fc.array(
      fc.record({
        network: fc.constantFrom(NETWORK, "other-net"),
        tenant: fc.constantFrom(...tenants),
        backend: fc.constantFrom("iptables" as const, "nftables" as const)
      }),
      { maxLength: 3 }
    ),
    planted: fc.array(
      fc.record({
        backend: fc.constantFrom("iptables" as const, "nftables" as const),
        v6: fc.boolean(),
        tenant: fc.constantFrom(...tenants)
      }),
      { maxLength: 4 }
    )
  })

const plantOtherState = async (
  w: World,
  tenancy: Tenancy,
  other: typeof otherStateArb extends (t: never) => fc.Arbitrary<infer O> ? O : never
) => {
  for (const [i, p] of other.pods.entries()) {
    const out = await w.run(
      cniEnv("ADD", { containerId: `other${i}` }),
      tenancyConf(tenancy, {
        name: p.network,
        backend: p.backend,
        runtimeConfig: { "io.kubernetes.cri.pod-annotations": { [KEY]: p.tenant.name } }
      })
    )
    assert.strictEqual(out.exitCode, 0, out.stdout)
  }
  for (const [i, p] of other.planted.entries()) {
    w.kernel.entries[p.backend].push({
      ip: p.v6 ? `fd99::${i + 1}` : `10.99.0.${i + 1}`,
      family: p.v6 ? 6 : 4,
      mark: p.tenant.mark,
      mask: expectedMask(tenancy),
      owner: `gone-net/crashed${i}/eth0`
    })
  }
}

describe("ADD and DEL laws", () => {
  it("ADD is idempotent: a repeated ADD leaves the same entries, records and leases, with the delegate's own answer and nothing undone", async () => {
    await fc.assert(
      fc.asyncProperty(
        tenancyArb.chain((t) =>
          fc.tuple(fc.constant(t), podArb(t.tenants), fc.constantFrom("iptables", "nftables", "auto"))
        ),
        // host-local refuses a second ADD for the same attachment; other IPAMs answer it again.
        fc.constantFrom("refuse" as const, "same-lease" as const),
        async ([tenancy, pod, backend], repeatedAdd) => {
          const w = new World()
          w.leases.repeatedAdd = repeatedAdd
          const conf = tenancyConf(tenancy, { backend, ...setupPod(w, pod, 0) })
          const ref = refOf(pod, 0)
          const first = await w.run(cniEnv("ADD", ref), conf)
          assert.strictEqual(first.exitCode, 0, first.stdout)
          assertPodEntries(w, tenancy, pod, 1)
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
        tenancyArb.chain((t) => fc.tuple(fc.constant(t), podArb(t.tenants))),
        async ([tenancy, pod]) => {
          const w = new World()
          const extra = setupPod(w, pod, 0)
          const prevResult = {
            cniVersion: "1.0.0",
            interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
            ips: [
              { address: "10.1.2.3/24", interface: 0 },
              { address: "FD00::0:3/64", interface: 0 }
            ]
          }
          const { delegate: _none, ...chained } = tenancyConf(tenancy, { prevResult, ...extra })
          const ref = refOf(pod, 0)
          const first = await w.run(cniEnv("ADD", ref), chained)
          const once = w.snapshot()
          const second = await w.run(cniEnv("ADD", ref), chained)
          assert.strictEqual(first.exitCode, 0, first.stdout)
          assertPodEntries(w, tenancy, pod, 2)
          assert.strictEqual(first.stdout, second.stdout)
          assert.deepStrictEqual(w.snapshot(), once)
          assert.deepStrictEqual(w.leases.calls, [])
        }
      ),
      { numRuns: 100 }
    )
  })

  it("ADD then DEL restores the initial state, from a node already holding other owners' entries and records, for any sequence of pods", async () => {
    await fc.assert(
      fc.asyncProperty(
        tenancyArb.chain((t) =>
          fc.tuple(
            fc.constant(t),
            fc.uniqueArray(podArb(t.tenants), {
              maxLength: 10,
              selector: (p) => `${p.containerId}/${p.ifname}`
            }),
            otherStateArb(t.tenants)
          )
        ),
        fc.boolean(),
        async ([tenancy, pods, other], dualStack) => {
          const w = new World({ dualStack, poolSize: 32 })
          await plantOtherState(w, tenancy, other)
          const initial = w.snapshot()
          const confs = pods.map((p, i) => tenancyConf(tenancy, setupPod(w, p, i)))
          for (const [i, p] of pods.entries()) {
            const out = await w.run(cniEnv("ADD", refOf(p, i)), confs[i])
            assert.strictEqual(out.exitCode, 0, out.stdout)
          }
          for (const p of pods) assertPodEntries(w, tenancy, p, dualStack ? 2 : 1)
          for (const [i, p] of [...pods.entries()].reverse()) {
            const del = await w.run(cniEnv("DEL", refOf(p, i)), confs[i])
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
          const stale = () =>
            [...w.kernel.entries.iptables, ...w.kernel.entries.nftables].filter(
              (e) => e.owner === "tenant-routing/crashed/eth0"
            )
          if (hit) {
            assert.strictEqual(out.exitCode, 1, `expected failure at ${op}#${nth}`)
            assert.deepStrictEqual(w.snapshot(), before)
            if (earlierPods)
              assert.strictEqual(stale().length, 1, "a failed ADD leaves the stale entry intact")
          } else {
            assert.strictEqual(out.exitCode, 0, out.stdout)
            if (earlierPods) {
              const ips = (parse(out) as { ips: Array<{ address: string }> }).ips.map((i) => i.address)
              assert.include(ips, "10.200.0.3/24", "the stale entry sits on the new pod's IP")
              assert.deepStrictEqual(stale(), [], "ADD removes another owner's stale entry on its IP")
            }
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
