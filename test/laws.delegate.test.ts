/**
 * A delegate that leased an address and then answered ADD with something unusable (valid JSON that
 * is no CNI result, or output refused whole: not JSON, over the size bound) gets its DEL: the failed
 * ADD leaves leases, entries and records exactly as before (docs/DESIGN.md §5).
 */
import { describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { assert } from "vitest"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"

describe("delegate laws", () => {
  it("an ADD whose delegate ran and answered garbage fails and leaves leases, entries and records as before", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("not-a-result", "unparsable") as fc.Arbitrary<"not-a-result" | "unparsable">,
        fc.boolean(),
        fc.nat(2),
        async (badOutput, dualStack, earlier) => {
          const w = new World({ dualStack })
          w.leases.badOutput = badOutput
          for (let i = 0; i < earlier; i++) {
            w.cluster.setPod("default", `p${i}`, { [KEY]: "tenant-b" })
            const out = await w.run(
              cniEnv("ADD", { containerId: `p${i}`, namespace: "default" }),
              originalConf()
            )
            assert.strictEqual(out.exitCode, 0, out.stdout)
          }
          w.cluster.setPod("default", "new", { [KEY]: "tenant-a" })
          const before = w.snapshot()
          w.faults.faults = [{ op: "delegate.ADD.output", nth: earlier + 1, kind: "fail" }]
          const out = await w.run(cniEnv("ADD", { containerId: "new", namespace: "default" }), originalConf())
          assert.strictEqual(out.exitCode, 1)
          assert.strictEqual((parse(out) as { code: number }).code, 102)
          assert.deepStrictEqual(w.snapshot(), before)
          assert.strictEqual(w.leases.calls.filter((c) => c.command === "DEL").length, 1, "one DEL")
        }
      ),
      { numRuns: 24 }
    )
  })
})
