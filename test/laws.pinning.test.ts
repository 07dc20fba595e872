/**
 * Namespace pinning (issue 2, law 7): a pod in a pinned namespace is routed with a tenant of the
 * namespace's set or refused, whatever its own annotation says, and is never left untagged.
 */
import { describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { assert } from "vitest"
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

const scenarioArb = tenantsArb.chain((tenants) => {
  const value = fc.oneof(fc.constantFrom(...tenants).chain(spellingArb), hostileValueArb)
  return fc.record({
    tenants: fc.constant(tenants),
    nsTenant: fc.option(value, { nil: undefined }),
    nsAllowed: fc.option(
      fc.array(value, { minLength: 1, maxLength: 3 }).map((vs) => vs.join(",")),
      { nil: undefined }
    ),
    podValue: fc.option(value, { nil: undefined }),
    viaRuntime: fc.boolean(),
    pinning: fc.constantFrom("strict", "best-effort")
  })
})

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

describe("namespace pinning", () => {
  it("a pod in a pinned namespace is routed with a tenant of the namespace's set or refused, never untagged", async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (s) => {
        const w = new World()
        const ns: Record<string, string> = {}
        if (s.nsTenant !== undefined) ns[KEY] = s.nsTenant
        if (s.nsAllowed !== undefined) ns[ALLOWED] = s.nsAllowed
        w.cluster.setNamespace("team", ns)
        const podAnn = s.podValue === undefined ? {} : { [KEY]: s.podValue }
        if (!s.viaRuntime) w.cluster.setPod("team", "p", podAnn)
        const conf = originalConf({
          tenants: tenantsConf(s.tenants),
          pinning: s.pinning,
          ...(s.viaRuntime ? { runtimeConfig: { "io.kubernetes.cri.pod-annotations": podAnn } } : {})
        })
        const out = await w.run(cniEnv("ADD", { containerId: "p", namespace: "team", name: "p" }), conf)
        const entries = w.kernel.entries.nftables
        const pinned = s.nsTenant !== undefined || s.nsAllowed !== undefined
        if (!pinned) {
          const expected = s.podValue === undefined ? null : lookup(s.tenants, s.podValue)
          if (expected === undefined) assert.strictEqual((parse(out) as { code: number }).code, 100)
          else
            assert.deepStrictEqual(
              entries.map((e) => e.mark),
              expected === null ? [] : [expected.mark]
            )
          return
        }
        // Pinned: compute the namespace's set the way an administrator reads it.
        const declared = [
          ...(s.nsTenant === undefined ? [] : [s.nsTenant]),
          ...(s.nsAllowed?.split(",") ?? [])
        ]
        const set = declared.map((v) => lookup(s.tenants, v))
        if (out.exitCode === 0) {
          assert.strictEqual(entries.length, 1, "a pod in a pinned namespace is never untagged")
          assert.isFalse(set.includes(undefined), "a namespace naming an unknown tenant refuses all its pods")
          assert.isTrue(
            set.some((t) => t?.mark === entries[0]!.mark),
            "the tenant is one of the namespace's set"
          )
          if (s.podValue !== undefined)
            assert.strictEqual(lookup(s.tenants, s.podValue)?.mark, entries[0]!.mark)
          else assert.strictEqual(lookup(s.tenants, s.nsTenant ?? "")?.mark, entries[0]!.mark)
        } else {
          assert.strictEqual((parse(out) as { code: number }).code, 100)
          assert.deepStrictEqual(w.snapshot(), new World().snapshot())
        }
      }),
      { numRuns: 300 }
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
