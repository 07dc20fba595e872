/**
 * Namespace pinning (issue 2, law 7; issue 9): a pod in a pinned namespace is routed with a tenant of
 * the namespace's set or refused, whatever its own annotation says; under `pinning: strict` a
 * namespace that cannot be read refuses the ADD with 11 even when the pod read failed too and
 * failurePolicy is open. The expected outcome comes from an oracle written from docs/DESIGN.md §2, §3
 * and §5 in this file, never from the resolver.
 */
import { describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { assert } from "vitest"
import type { Fault } from "../src/interpreters/memory/Faults.ts"
import {
  hostileValueArb,
  spellingArb,
  type TenantSpec,
  tenantsArb,
  tenantsConf
} from "./support/arbitraries.ts"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const ALLOWED = "tenant.routing/allowed-tenants"

/** How one API read ends: answered, 404 (nothing to offer), or a failure per docs/DESIGN.md §3. */
type ReadOutcome = "ok" | "404" | "401" | "403" | "503" | "timeout"
const readOutcomeArb = fc.constantFrom<ReadOutcome>("ok", "ok", "404", "401", "403", "503", "timeout")

const scenarioArb = tenantsArb.chain((tenants) => {
  const value = fc.oneof(fc.constantFrom(...tenants).chain(spellingArb), hostileValueArb)
  return fc.record({
    tenants: fc.constant(tenants),
    // Each tenant's mark written as a string or a JSON number.
    numbers: fc.array(fc.boolean(), { minLength: tenants.length, maxLength: tenants.length }),
    nsTenant: fc.option(value, { nil: undefined }),
    nsAllowed: fc.option(
      fc.array(value, { minLength: 1, maxLength: 3 }).map((vs) => vs.join(",")),
      { nil: undefined }
    ),
    podValue: fc.option(value, { nil: undefined }),
    viaRuntime: fc.boolean(),
    pinning: fc.constantFrom("strict" as const, "best-effort" as const),
    failurePolicy: fc.constantFrom("closed" as const, "open" as const),
    podRead: readOutcomeArb,
    nsRead: readOutcomeArb,
    // Scheduler turns before each read ends: either read may finish (or fail) first.
    podYields: fc.integer({ min: 0, max: 4 }),
    nsYields: fc.integer({ min: 0, max: 4 })
  })
})
type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never

const lookup = (tenants: ReadonlyArray<TenantSpec>, v: string): TenantSpec | undefined => {
  const t = v.trim()
  if (t.length > 64) return undefined
  const n = /^0[xX][0-9a-fA-F]+$/.test(t)
    ? Number.parseInt(t, 16)
    : /^[0-9]+$/.test(t)
      ? Number(t)
      : undefined
  return tenants.find((x) => (n === undefined ? x.name === t : x.mark === n))
}

/** What ADD must end with: a tenant's mark, untagged, or a refusal with its code. */
type Expected = { readonly mark: number } | "untagged" | { readonly refused: 11 | 100 }

/**
 * The outcome docs/DESIGN.md §2, §3 and §5 prescribe, written from the rules, not from the code:
 * 1. a namespace unreadable under strict (401/403/5xx/timeout) refuses with 11, whatever else
 *    happened and whatever failurePolicy says;
 * 2. otherwise any other unavailable read (pod: 401/403/5xx/timeout; namespace under best-effort:
 *    401/5xx/timeout) is 11 under closed and untagged under open — except a pod that could not be
 *    read in a namespace that was read and is pinned: 11 whatever failurePolicy says, since starting
 *    it untagged would let it escape its namespace's tenant;
 * 3. otherwise the annotations decide (a 404, or a 403 on the namespace under best-effort, offers
 *    none): pinned namespace → its tenant, the pod's if in its set, else 100; unpinned → the pod's.
 */
const oracle = (s: Scenario): Expected => {
  const failed = (r: ReadOutcome) => r === "401" || r === "403" || r === "503" || r === "timeout"
  if (s.pinning === "strict" && failed(s.nsRead)) return { refused: 11 }
  const nsUnavailable = failed(s.nsRead) && !(s.pinning === "best-effort" && s.nsRead === "403")
  const podUnavailable = !s.viaRuntime && failed(s.podRead)
  const pinnedAndRead = s.nsRead === "ok" && (s.nsTenant !== undefined || s.nsAllowed !== undefined)
  if (nsUnavailable || podUnavailable)
    return s.failurePolicy === "open" && !pinnedAndRead ? "untagged" : { refused: 11 }

  const nsOffers = s.nsRead === "ok"
  const nsTenant = nsOffers ? s.nsTenant : undefined
  const nsAllowed = nsOffers ? s.nsAllowed : undefined
  const podValue = s.viaRuntime || s.podRead === "ok" ? s.podValue : undefined
  const byPod = podValue === undefined ? null : lookup(s.tenants, podValue)
  if (nsTenant === undefined && nsAllowed === undefined) {
    if (byPod === undefined) return { refused: 100 }
    return byPod === null ? "untagged" : { mark: byPod.mark }
  }
  const set = [...(nsTenant === undefined ? [] : [nsTenant]), ...(nsAllowed?.split(",") ?? [])].map((v) =>
    lookup(s.tenants, v)
  )
  if (set.includes(undefined)) return { refused: 100 }
  if (byPod === null) return nsTenant === undefined ? { refused: 100 } : { mark: set[0]!.mark }
  if (byPod === undefined || !set.some((t) => t?.mark === byPod.mark)) return { refused: 100 }
  return { mark: byPod.mark }
}

/** The read's fault: a failure with its status, a read that never answers, or only a late answer. */
const faultOf = (op: string, r: ReadOutcome, yields: number): Fault => {
  if (r === "timeout") return { op, nth: 1, kind: "hang" }
  if (r === "ok" || r === "404") return { op, nth: 1, kind: "delay", yields }
  return { op, nth: 1, kind: "fail", reason: r, yields }
}

describe("namespace pinning", () => {
  it("ADD ends exactly as the rules say for any annotations, read failures of pod or namespace in either order, pinning mode and failurePolicy; a strict namespace that cannot be read is always 11", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (s) => {
        const w = new World()
        const ns: Record<string, string> = {}
        if (s.nsTenant !== undefined) ns[KEY] = s.nsTenant
        if (s.nsAllowed !== undefined) ns[ALLOWED] = s.nsAllowed
        if (s.nsRead !== "404") w.cluster.setNamespace("team", ns)
        const podAnn = s.podValue === undefined ? {} : { [KEY]: s.podValue }
        if (!s.viaRuntime && s.podRead !== "404") w.cluster.setPod("team", "p", podAnn)
        w.faults.faults = [
          faultOf("api.pods", s.podRead, s.podYields),
          faultOf("api.namespaces", s.nsRead, s.nsYields)
        ]
        const conf = originalConf({
          tenants: tenantsConf(s.tenants, s.numbers),
          pinning: s.pinning,
          failurePolicy: s.failurePolicy,
          apiTimeout: "100ms",
          ...(s.viaRuntime ? { runtimeConfig: { "io.kubernetes.cri.pod-annotations": podAnn } } : {})
        })
        const initial = w.snapshot()
        const out = await w.runOnVirtualTime(
          cniEnv("ADD", { containerId: "p", namespace: "team", name: "p" }),
          conf
        )
        const expected = oracle(s)
        const marks = [...w.kernel.entries.iptables, ...w.kernel.entries.nftables].map((e) => e.mark)
        if (expected === "untagged") {
          assert.strictEqual(out.exitCode, 0, out.stdout)
          assert.deepStrictEqual(marks, [], "an untagged pod has no entry")
          assert.strictEqual(w.records.snapshot()[0]?.[1].tenant, null)
        } else if ("mark" in expected) {
          assert.strictEqual(out.exitCode, 0, out.stdout)
          assert.deepStrictEqual(marks, [expected.mark])
        } else {
          assert.strictEqual(out.exitCode, 1)
          assert.strictEqual((parse(out) as { code: number }).code, expected.refused, out.stdout)
          assert.deepStrictEqual(w.snapshot(), initial, "a refused ADD changes nothing")
        }
      }),
      { numRuns: 400 }
    )
  })

  it("a namespace that cannot be read (403) pins nothing under best-effort, and fails ADD with 11 under strict", async () => {
    for (const pinning of ["best-effort", "strict"] as const) {
      const w = new World()
      w.cluster.forbidden.add("namespaces")
      w.cluster.setPod("team", "p", { [KEY]: "tenant-b" })
      const out = await w.run(
        cniEnv("ADD", { containerId: "p", namespace: "team", name: "p" }),
        originalConf({ pinning })
      )
      if (pinning === "strict") {
        assert.strictEqual((parse(out) as { code: number }).code, 11)
        assert.deepStrictEqual(w.snapshot(), new World().snapshot())
      } else {
        assert.strictEqual(out.exitCode, 0, out.stdout)
        assert.deepStrictEqual(
          w.kernel.entries.nftables.map((e) => e.mark),
          [0x20]
        )
      }
    }
  })

  it("failurePolicy open never starts a pod untagged when its namespace is unreadable under strict pinning", async () => {
    const w = new World()
    w.faults.faults = [{ op: "api.namespaces", nth: 1, kind: "fail" }]
    const out = await w.run(
      cniEnv("ADD", { containerId: "p", namespace: "team", name: "p" }),
      originalConf({ pinning: "strict", failurePolicy: "open" })
    )
    assert.strictEqual((parse(out) as { code: number }).code, 11)
    assert.deepStrictEqual(w.snapshot(), new World().snapshot())
  })
})
