/**
 * Laws over arbitrary interleavings of ADD/DEL/CHECK/GC on many containers and two networks, with
 * backend switches and IP reuse from a small pool (issue 2, laws 3 and 6).
 */
import { describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fc from "fast-check"
import { assert } from "vitest"
import { ownerTag } from "../src/domain/datapath/Owner.ts"
import { cniEnv, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const MARKS: Record<string, number> = { "tenant-a": 0x10, "tenant-b": 0x20 }

const opArb = fc.record({
  verb: fc.constantFrom("ADD", "ADD", "ADD", "DEL", "DEL", "CHECK", "GC"),
  network: fc.constantFrom("net-a", "net-b"),
  containerId: fc.constantFrom("c1", "c2", "c3", "c4", "c5", "c6"),
  ifname: fc.constantFrom("eth0", "eth0", "net1"),
  tenant: fc.constantFrom("tenant-a", "tenant-b", "0x10", "32", undefined),
  backend: fc.constantFrom("iptables", "nftables", "auto"),
  keep: fc.subarray(["c1", "c2", "c3", "c4", "c5", "c6"])
})
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never

interface Live {
  readonly ips: ReadonlyArray<string>
  readonly mark: number | null
  readonly result: unknown
}

const conf = (op: Op, extra: Record<string, unknown> = {}) => ({
  cniVersion: "1.1.0",
  name: op.network,
  type: "tenant-routing-wrapper",
  backend: op.backend,
  delegate: { type: "ptp", ipam: { type: "host-local", subnet: "10.200.0.0/24" } },
  runtimeConfig: { "io.kubernetes.cri.pod-annotations": op.tenant === undefined ? {} : { [KEY]: op.tenant } },
  ...extra
})

const markOf = (t: string | undefined) => (t === undefined ? null : (MARKS[t] ?? Number(t)))

/** Runs one op and updates the model of what must be live. */
const step = async (w: World, live: Map<string, Live>, op: Op) => {
  const key = `${op.network}/${op.containerId}/${op.ifname}`
  const ref = { containerId: op.containerId, ifname: op.ifname }
  w.leases.supportedVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
  switch (op.verb) {
    case "ADD": {
      const out = await w.run(cniEnv("ADD", ref), conf(op))
      if (out.exitCode === 0) {
        const result = parse(out) as { ips: Array<{ address: string }> }
        live.set(key, {
          ips: result.ips.map((i) => i.address.split("/")[0]!),
          mark: markOf(op.tenant),
          result
        })
      } else {
        if (live.has(key)) {
          // host-local refuses a second ADD of a live attachment: its error, nothing undone.
          assert.include(out.stdout ?? "", "duplicate allocation is not allowed", out.stdout)
          assert.isTrue(w.leases.byAttachment.has(key), `a refused repeated ADD released ${key}`)
        } else {
          assert.include(
            out.stdout ?? "",
            "no IP addresses available",
            "only pool exhaustion may fail a first ADD"
          )
          assert.isFalse(w.leases.byAttachment.has(key), `failed ADD left a lease for ${key}`)
        }
      }
      return
    }
    case "DEL": {
      const out = await w.run(cniEnv("DEL", ref), conf(op))
      assert.strictEqual(out.exitCode, 0, out.stdout)
      live.delete(key)
      return
    }
    case "CHECK": {
      const l = live.get(key)
      if (l === undefined) return
      const out = await w.run(cniEnv("CHECK", ref), conf(op, { prevResult: l.result }))
      assert.strictEqual(out.exitCode, 0, `CHECK after ADD must pass: ${out.stdout}`)
      return
    }
    case "GC": {
      const valid = [...live.keys()]
        .filter((k) => k.startsWith(`${op.network}/`) && op.keep.includes(k.split("/")[1]!))
        .map((k) => ({ containerID: k.split("/")[1]!, ifname: k.split("/")[2]! }))
      const other = op.network === "net-a" ? "net-b" : "net-a"
      const otherBefore = w.kernel.snapshot()
      const out = await w.run(
        { ...cniEnv("GC", ref), CNI_CONTAINERID: "", CNI_IFNAME: "" },
        conf(op, { "cni.dev/valid-attachments": valid })
      )
      assert.strictEqual(out.exitCode, 0, out.stdout)
      const ofOther = (s: ReturnType<typeof w.kernel.snapshot>) =>
        [...s.iptables, ...s.nftables].filter((e) => e.owner.startsWith(`${other}/`))
      assert.deepStrictEqual(ofOther(w.kernel.snapshot()), ofOther(otherBefore), "GC touched another network")
      for (const k of [...live.keys()]) {
        if (
          k.startsWith(`${op.network}/`) &&
          !valid.some((v) => k === `${op.network}/${v.containerID}/${v.ifname}`)
        )
          live.delete(k)
      }
      return
    }
  }
}

const checkInvariants = (w: World, live: Map<string, Live>) => {
  const all = [...w.kernel.entries.iptables, ...w.kernel.entries.nftables]
  const perIp = new Map<string, number>()
  for (const e of all) perIp.set(e.ip, (perIp.get(e.ip) ?? 0) + 1)
  for (const [ip, n] of perIp) assert.strictEqual(n, 1, `${ip} carries ${n} entries`)
  const expected = new Set<string>()
  for (const [key, l] of live) {
    const [network, containerId, ifname] = key.split("/") as [string, string, string]
    const tag = ownerTag({ network, containerId, ifname })
    for (const ip of l.ips) {
      const on = all.filter((e) => e.ip === ip)
      if (l.mark === null) assert.deepStrictEqual(on, [], `untagged ${key} has entries`)
      else {
        assert.strictEqual(on.length, 1, `${key} ${ip} must have exactly one entry`)
        assert.strictEqual(on[0]!.owner, tag)
        assert.strictEqual(on[0]!.mark, l.mark)
        expected.add(`${ip}|${tag}`)
      }
    }
  }
  for (const e of all) assert.isTrue(expected.has(`${e.ip}|${e.owner}`), `stale entry ${e.ip} of ${e.owner}`)
  assert.strictEqual(w.records.byPath.size, live.size, "one record per live attachment")
}

describe("interleaving laws", () => {
  it("any interleaving of ADD/DEL/CHECK/GC leaves exactly one entry per tenant-routed IP, none stale, GC never touches another network", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 40 }), fc.boolean(), async (ops, dualStack) => {
        const w = new World({ poolSize: 4, dualStack })
        const live = new Map<string, Live>()
        for (const op of ops) await step(w, live, op)
        checkInvariants(w, live)
      }),
      { numRuns: 200 }
    )
  })

  it("GC keeps exactly the valid attachments' entries and records", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.constantFrom("c1", "c2", "c3", "c4", "c5", "c6"), { minLength: 1 }),
        fc.subarray(["c1", "c2", "c3", "c4", "c5", "c6"]),
        async (pods, keep) => {
          const w = new World()
          const live = new Map<string, Live>()
          for (const containerId of pods) {
            await step(w, live, {
              verb: "ADD",
              network: "net-a",
              containerId,
              ifname: "eth0",
              tenant: "tenant-a",
              backend: "nftables",
              keep: []
            })
          }
          await step(w, live, {
            verb: "GC",
            network: "net-a",
            containerId: "c1",
            ifname: "eth0",
            tenant: undefined,
            backend: "auto",
            keep
          })
          const owners = new Set(w.kernel.entries.nftables.map((e) => e.owner))
          assert.deepStrictEqual(
            owners,
            new Set(pods.filter((p) => keep.includes(p)).map((p) => `net-a/${p}/eth0`))
          )
          checkInvariants(w, live)
        }
      ),
      { numRuns: 100 }
    )
  })

  it("concurrent ADDs and DELs on distinct pods serialise on the node lock and keep the invariants", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(
          opArb.filter((o) => o.verb === "ADD" || o.verb === "DEL"),
          {
            maxLength: 8,
            selector: (o) => `${o.network}/${o.containerId}/${o.ifname}`
          }
        ),
        async (ops) => {
          const w = new World({ poolSize: 16 })
          const live = new Map<string, Live>()
          // First make every pod exist, then run the batch concurrently.
          for (const op of ops) await step(w, live, { ...op, verb: "ADD" })
          await Effect.runPromise(
            Effect.all(
              ops.map((op) => Effect.promise(() => step(w, live, op))),
              { concurrency: "unbounded" }
            )
          )
          checkInvariants(w, live)
          for (const t of w.kernel.transactions) assert.include([4, 6], t.family)
        }
      ),
      { numRuns: 100 }
    )
  })
})
