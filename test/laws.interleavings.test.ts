/**
 * Laws over arbitrary interleavings of ADD/DEL/CHECK/GC on many containers and two networks, with
 * backend switches and IP reuse from a small pool (issue 2, laws 3 and 6).
 */
import { describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as fc from "fast-check"
import { assert } from "vitest"
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
    // docs/DESIGN.md §4: short plain names make the owner tag `<network>/<containerId>/<ifname>`.
    const tag = `${network}/${containerId}/${ifname}`
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

// --- concurrent ADDs whose IPs collide ------------------------------------------------------------

const POOL_IPS = ["10.9.0.1", "10.9.0.2", "fd00:9::1"] as const
const claimArb = fc.record({
  ips: fc.subarray([...POOL_IPS], { minLength: 1 }),
  tenant: fc.constantFrom("tenant-a", "tenant-b", undefined)
})

type Claim = typeof claimArb extends fc.Arbitrary<infer T> ? T : never

const permutations = <T>(xs: ReadonlyArray<T>): Array<Array<T>> =>
  xs.length <= 1
    ? [[...xs]]
    : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]))

/**
 * The entries a node ends with when the ADDs run one after another in `order`: per IP, the last
 * claimant's entry if it is tenant-routed, none if it is not (ADD removes other owners' entries on
 * its IPs, docs/DESIGN.md §4).
 */
const serialOutcome = (claims: ReadonlyArray<Claim>, order: ReadonlyArray<number>): Array<string> => {
  const byIp = new Map<string, string | undefined>()
  for (const i of order) {
    const c = claims[i]!
    for (const ip of c.ips)
      byIp.set(ip, c.tenant === undefined ? undefined : `${ip}|net-a/c${i}/eth0|${MARKS[c.tenant]}`)
  }
  return [...byIp.values()].filter((e): e is string => e !== undefined).sort()
}

describe("interleaving laws", () => {
  it("concurrent ADDs whose IPs collide (an IP reused while another owner's entry is on it) end as some serial order of them would: one entry per IP, never two", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(claimArb, { minLength: 2, maxLength: 4 }), async (claims) => {
        const w = new World()
        const chained = (c: Claim) => ({
          cniVersion: "1.0.0",
          name: "net-a",
          type: "tenant-routing-wrapper",
          backend: "nftables",
          prevResult: {
            cniVersion: "1.0.0",
            interfaces: [{ name: "eth0", sandbox: "/var/run/netns/x" }],
            ips: c.ips.map((ip) => ({ address: ip.includes(":") ? `${ip}/64` : `${ip}/24`, interface: 0 }))
          },
          runtimeConfig: {
            "io.kubernetes.cri.pod-annotations": c.tenant === undefined ? {} : { [KEY]: c.tenant }
          }
        })
        const outs = await Promise.all(
          claims.map((c, i) => w.run(cniEnv("ADD", { containerId: `c${i}` }), chained(c)))
        )
        for (const out of outs) assert.strictEqual(out.exitCode, 0, out.stdout)
        const actual = w.kernel.entries.nftables.map((e) => `${e.ip}|${e.owner}|${e.mark}`).sort()
        const perIp = new Map<string, number>()
        for (const e of w.kernel.entries.nftables) perIp.set(e.ip, (perIp.get(e.ip) ?? 0) + 1)
        for (const [ip, n] of perIp) assert.strictEqual(n, 1, `${ip} carries ${n} entries`)
        const serial = permutations(claims.map((_, i) => i)).map((o) => serialOutcome(claims, o))
        assert.isTrue(
          serial.some((expected) => JSON.stringify(expected) === JSON.stringify(actual)),
          `no serial order of the ADDs gives ${JSON.stringify(actual)}`
        )
      }),
      { numRuns: 200 }
    )
  })

  it("an ADD that cannot take the node lock in time ends with 11 (try again later) and undoes its delegate", async () => {
    const w = new World({ lockTimeout: "5 seconds" })
    const held = Effect.runFork(w.lock.withLock(Effect.never))
    try {
      const out = await w.runOnVirtualTime(
        cniEnv("ADD", { containerId: "c1" }),
        conf({
          verb: "ADD",
          network: "net-a",
          containerId: "c1",
          ifname: "eth0",
          tenant: "tenant-a",
          backend: "nftables",
          keep: []
        })
      )
      assert.strictEqual((parse(out) as { code: number }).code, 11, out.stdout)
      assert.deepStrictEqual(w.snapshot(), new World().snapshot())
    } finally {
      await Effect.runPromise(Fiber.interrupt(held))
    }
  })

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
