/**
 * The live Netfilter backends against the real kernel, each suite inside its own throwaway network
 * namespace (`ip netns add trw-nf-<random>`, deleted in afterAll whatever happens; the root netns is
 * never touched). Runs the shared contract, then golden tests of the rule text the kernel lists
 * (docs/DESIGN.md §4), the stale-listing retry, failure reporting, and a real packet getting its mark.
 * Needs root, iproute2, iptables and nft; skipped otherwise.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, type Layer, Result } from "effect"
import type { Backend } from "../src/domain/cni/Config.ts"
import type { MarkEntry } from "../src/domain/datapath/Entries.ts"
import { Netfilter } from "../src/domain/datapath/Netfilter.ts"
import * as Ipt from "../src/interpreters/live/NetfilterIptables.ts"
import { generationPath, layer, type NetfilterLiveOptions } from "../src/interpreters/live/NetfilterLive.ts"
import * as Nft from "../src/interpreters/live/NetfilterNftables.ts"
import { assertEntries, entry, netfilterContract, reset } from "./conformance/netfilterContract.ts"
import { missingOf, skipLive } from "./support/liveGate.ts"

const canRun = !skipLive(
  "live netfilter backends",
  missingOf({ root: true, commands: ["ip", "iptables-save", "nft"] })
)

const run = (args: ReadonlyArray<string>, input?: string): string =>
  execFileSync(args[0] as string, args.slice(1), { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] })

/** A fresh netns for one describe block: created before its tests, deleted after, even on failure. */
const useNetns = (label: string) => {
  const ns = `trw-nf-${label}-${randomBytes(4).toString("hex")}`
  // The netns's own generation files: views kept here are invalidated by nobody else's tests.
  const generationDir = join(tmpdir(), ns)
  beforeAll(() => {
    run(["ip", "netns", "add", ns])
  })
  afterAll(() => {
    spawnSync("ip", ["netns", "del", ns])
    rmSync(generationDir, { recursive: true, force: true })
  })
  return {
    ns,
    exec: (...args: ReadonlyArray<string>) => run(["ip", "netns", "exec", ns, ...args]),
    feed: (input: string, ...args: ReadonlyArray<string>) => run(["ip", "netns", "exec", ns, ...args], input),
    layer: (options: NetfilterLiveOptions = {}): Layer.Layer<Netfilter> =>
      layer({ generationDir, ...options, prefix: ["ip", "netns", "exec", ns] })
  }
}

const A = "net/abc/eth0"
const B = "net/def/eth0"

const withNf = <A, E>(
  l: Layer.Layer<Netfilter>,
  f: (nf: Netfilter["Service"]) => Effect.Effect<A, E, Netfilter>
): Effect.Effect<A, E> =>
  Effect.gen(function* () {
    return yield* f(yield* Netfilter)
  }).pipe(Effect.provide(l))

const preroutingRules = (save: string) => save.split("\n").filter((l) => l.startsWith("-A PREROUTING "))

// Golden text of what the backends feed the tools (pure; runs without root).
describe("rendered batches", () => {
  const k8s = (id: string) => `k8s/${id}/eth0`
  const noChain: Ipt.IptablesState = { family: 4, chainExists: false, jumpFirst: false, jumps: 0, rules: [] }

  it("iptables: the first add creates the chain with -N (never a flushing declaration) and the first jump", () => {
    assert.strictEqual(
      Ipt.renderBatch(noChain, { remove: [], add: [entry("10.0.0.5", 4, 0x10, k8s("abc"))] }),
      [
        "*mangle",
        "-N TRW-MARK",
        "-I PREROUTING 1 -j TRW-MARK",
        '-A TRW-MARK -s 10.0.0.5/32 -m conntrack --ctdir ORIGINAL -m comment --comment "k8s/abc/eth0" -j MARK --set-xmark 0x10/0x30',
        "COMMIT",
        ""
      ].join("\n")
    )
  })

  it("iptables: IP reuse is one batch of deletes then appends; absent removals and present adds are dropped", () => {
    const old = entry("10.0.0.5", 4, 0x10, k8s("old"))
    const state: Ipt.IptablesState = {
      family: 4,
      chainExists: true,
      jumpFirst: true,
      jumps: 1,
      rules: [old, old]
    }
    const fresh = entry("10.0.0.5", 4, 0x20, k8s("new"))
    assert.strictEqual(
      Ipt.renderBatch(state, { remove: [old, entry("10.0.0.9", 4, 0x10, k8s("gone"))], add: [fresh] }),
      [
        "*mangle",
        `-D TRW-MARK ${Ipt.ruleSpec(old)}`,
        `-D TRW-MARK ${Ipt.ruleSpec(old)}`,
        '-A TRW-MARK -s 10.0.0.5/32 -m conntrack --ctdir ORIGINAL -m comment --comment "k8s/new/eth0" -j MARK --set-xmark 0x20/0x30',
        "COMMIT",
        ""
      ].join("\n")
    )
    assert.isUndefined(
      Ipt.renderBatch(state, { remove: [entry("10.0.0.9", 4, 0x10, k8s("gone"))], add: [old] })
    )
  })

  it("iptables: a jump that is not first is moved in the same batch", () => {
    const batch = Ipt.renderBatch(
      { family: 6, chainExists: true, jumpFirst: false, jumps: 1, rules: [] },
      { remove: [], add: [entry("fd00::5", 6, 0x10, k8s("abc"))] }
    )
    assert.include(
      batch,
      "-D PREROUTING -j TRW-MARK\n-I PREROUTING 1 -j TRW-MARK\n-A TRW-MARK -s fd00::5/128 "
    )
  })

  it("iptables: parses both comment spellings and ignores rules of any other shape", () => {
    const save = [
      "*mangle",
      ":PREROUTING ACCEPT [0:0]",
      ":TRW-MARK - [0:0]",
      "-A PREROUTING -j TRW-MARK",
      '-A TRW-MARK -s 10.0.0.5/32 -m conntrack --ctdir ORIGINAL -m comment --comment "k8s/a/eth0" -j MARK --set-xmark 0x10/0x30',
      "-A TRW-MARK -s 10.0.0.6/32 -m conntrack --ctdir ORIGINAL -m comment --comment bare -j MARK --set-xmark 0x10/0x30",
      "-A TRW-MARK -s 10.0.0.7/32 -j ACCEPT",
      "-A TRW-MARK -s 10.0.0.8/24 -m conntrack --ctdir ORIGINAL -m comment --comment x -j MARK --set-xmark 0x10/0x30",
      "-A TRW-MARK -s 10.0.0.9/32 -m conntrack --ctdir ORIGINAL -m comment --comment x -j MARK --set-xmark 0x40/0x30",
      "COMMIT"
    ].join("\n")
    const state = Ipt.parseSave(4, save)
    assert.isTrue(state.chainExists && state.jumpFirst)
    assertEntries(state.rules, [entry("10.0.0.5", 4, 0x10, "k8s/a/eth0"), entry("10.0.0.6", 4, 0x10, "bare")])
  })

  it("nftables: the first add creates table, chain, set and rule, and comments the element", () => {
    const rendered = Nft.renderTransaction(Nft.EMPTY, {
      remove: [],
      add: [entry("10.0.0.5", 4, 0x10, k8s("abc")), entry("FD00::5", 6, 0x10, k8s("abc"))]
    })
    assert.deepStrictEqual(
      rendered,
      Result.succeed(
        [
          "add table inet tenant_routing",
          "add chain inet tenant_routing prerouting { type filter hook prerouting priority mangle; policy accept; }",
          "add set inet tenant_routing m10_v4 { type ipv4_addr; }",
          "add set inet tenant_routing m10_v6 { type ipv6_addr; }",
          "add rule inet tenant_routing prerouting ct direction original ip saddr @m10_v4 meta mark set meta mark & 0xffffffcf | 0x10",
          "add rule inet tenant_routing prerouting ct direction original ip6 saddr @m10_v6 meta mark set meta mark & 0xffffffcf | 0x10",
          'add element inet tenant_routing m10_v4 { 10.0.0.5 comment "k8s/abc/eth0" }',
          'add element inet tenant_routing m10_v6 { fd00::5 comment "k8s/abc/eth0" }',
          ""
        ].join("\n")
      )
    )
  })

  it("nftables: IP reuse deletes then adds the element; removals of others' elements are dropped", () => {
    const state: Nft.NftState = {
      tableExists: true,
      chainExists: true,
      sets: [{ name: "m10_v4", family: 4, mark: 0x10, elements: new Map([["10.0.0.5", k8s("old")]]) }],
      rules: [{ handle: 4, set: "m10_v4", family: 4, and: 0xffffffdf, or: 0x10 }]
    }
    assert.deepStrictEqual(
      Nft.renderTransaction(state, {
        remove: [entry("10.0.0.5", 4, 0x10, k8s("old"))],
        add: [entry("10.0.0.5", 4, 0x10, k8s("new"))]
      }),
      Result.succeed(
        'delete element inet tenant_routing m10_v4 { 10.0.0.5 }\nadd element inet tenant_routing m10_v4 { 10.0.0.5 comment "k8s/new/eth0" }\n'
      )
    )
    assert.deepStrictEqual(
      Nft.renderTransaction(state, { remove: [entry("10.0.0.5", 4, 0x10, k8s("someone-else"))], add: [] }),
      Result.succeed(undefined)
    )
  })
})

describe.skipIf(!canRun)("live iptables backend", () => {
  const net = useNetns("ipt")
  netfilterContract("live iptables", () => net.layer(), { backends: ["iptables"], propertyRuns: 6 })

  const save = (family: 4 | 6) => net.exec(family === 4 ? "iptables-save" : "ip6tables-save", "-t", "mangle")

  it.effect("the kernel lists the chain, the jump first in PREROUTING and the §4 rule text", () =>
    withNf(net.layer(), (nf) =>
      Effect.gen(function* () {
        yield* reset("iptables")
        yield* nf.apply("iptables", {
          remove: [],
          add: [entry("10.0.0.5", 4, 0x10, A), entry("2001:DB8::0:5", 6, 0x20, B)]
        })
        const v4 = save(4)
        assert.include(v4, ":TRW-MARK - [0:0]")
        assert.strictEqual(preroutingRules(v4)[0], "-A PREROUTING -j TRW-MARK")
        assert.include(
          v4,
          '-A TRW-MARK -s 10.0.0.5/32 -m conntrack --ctdir ORIGINAL -m comment --comment "net/abc/eth0" -j MARK --set-xmark 0x10/0x30\n'
        )
        const v6 = save(6)
        assert.strictEqual(preroutingRules(v6)[0], "-A PREROUTING -j TRW-MARK")
        assert.include(
          v6,
          '-A TRW-MARK -s 2001:db8::5/128 -m conntrack --ctdir ORIGINAL -m comment --comment "net/def/eth0" -j MARK --set-xmark 0x20/0x30\n'
        )
      })
    )
  )

  it.effect("an add puts the jump back first in PREROUTING; a removal leaves PREROUTING alone", () =>
    withNf(net.layer(), (nf) =>
      Effect.gen(function* () {
        yield* reset("iptables")
        const e = entry("10.0.0.7", 4, 0x10, A)
        yield* nf.apply("iptables", { remove: [], add: [e] })
        net.exec("iptables", "-t", "mangle", "-I", "PREROUTING", "1", "-m", "comment", "--comment", "foreign")
        yield* nf.list("iptables")
        yield* nf.apply("iptables", { remove: [e], add: [] })
        assert.deepStrictEqual(preroutingRules(save(4)), [
          "-A PREROUTING -m comment --comment foreign",
          "-A PREROUTING -j TRW-MARK"
        ])
        yield* nf.apply("iptables", { remove: [], add: [e] })
        assert.deepStrictEqual(preroutingRules(save(4)), [
          "-A PREROUTING -j TRW-MARK",
          "-A PREROUTING -m comment --comment foreign"
        ])
        net.exec("iptables", "-t", "mangle", "-D", "PREROUTING", "-m", "comment", "--comment", "foreign")
      })
    )
  )

  it.effect("foreign rules in TRW-MARK are kept, never listed, and the chain is never flushed", () =>
    withNf(net.layer(), (nf) =>
      Effect.gen(function* () {
        yield* reset("iptables")
        net.exec("iptables", "-t", "mangle", "-A", "TRW-MARK", "-s", "192.0.2.1/32", "-j", "ACCEPT")
        // Our shape but a comment no owner tag can have: not ours either.
        net.exec(
          "iptables",
          "-t",
          "mangle",
          "-A",
          "TRW-MARK",
          "-s",
          "192.0.2.2/32",
          "-m",
          "conntrack",
          "--ctdir",
          "ORIGINAL",
          "-m",
          "comment",
          "--comment",
          "not ours",
          "-j",
          "MARK",
          "--set-xmark",
          "0x10/0x30"
        )
        const e = entry("10.0.0.8", 4, 0x10, A)
        yield* nf.apply("iptables", { remove: [], add: [e] })
        assertEntries(yield* nf.list("iptables"), [e])
        yield* nf.apply("iptables", { remove: [e], add: [] })
        const v4 = save(4)
        assert.include(v4, "-A TRW-MARK -s 192.0.2.1/32 -j ACCEPT")
        assert.include(v4, '--comment "not ours"')
        net.exec("iptables", "-t", "mangle", "-F", "TRW-MARK")
      })
    )
  )

  it.effect(
    "a kept view that went stale (an outsider changed the kernel) fails safely and is retried on a fresh read",
    () =>
      withNf(net.layer(), (nf) =>
        Effect.gen(function* () {
          yield* reset("iptables")
          // Stale "chain exists": an outsider removed jump and chain after our listing.
          yield* nf.list("iptables")
          net.exec("iptables", "-t", "mangle", "-D", "PREROUTING", "-j", "TRW-MARK")
          net.exec("iptables", "-t", "mangle", "-X", "TRW-MARK")
          const e = entry("10.0.0.9", 4, 0x10, A)
          yield* nf.apply("iptables", { remove: [], add: [e] })
          assertEntries(yield* nf.list("iptables"), [e])
          assert.strictEqual(preroutingRules(save(4))[0], "-A PREROUTING -j TRW-MARK")
          // Stale "chain missing": recreated with a rule meanwhile. Declaring it would flush that rule.
          net.exec("iptables", "-t", "mangle", "-D", "PREROUTING", "-j", "TRW-MARK")
          net.exec("iptables", "-t", "mangle", "-F", "TRW-MARK")
          net.exec("iptables", "-t", "mangle", "-X", "TRW-MARK")
          yield* nf.list("iptables")
          net.exec("iptables", "-t", "mangle", "-N", "TRW-MARK")
          net.exec("iptables", "-t", "mangle", "-A", "TRW-MARK", "-s", "192.0.2.9/32", "-j", "ACCEPT")
          yield* nf.apply("iptables", { remove: [], add: [e] })
          assert.include(save(4), "-A TRW-MARK -s 192.0.2.9/32 -j ACCEPT")
          assertEntries(yield* nf.list("iptables"), [e])
          // Stale "rule present": removed by an outsider; the removal still succeeds.
          net.exec("iptables", "-t", "mangle", "-F", "TRW-MARK")
          yield* nf.apply("iptables", { remove: [e], add: [] })
          assertEntries(yield* nf.list("iptables"), [])
        })
      )
  )
})

describe.skipIf(!canRun)("live nftables backend", () => {
  const net = useNetns("nft")
  netfilterContract("live nftables", () => net.layer(), { backends: ["nftables"], propertyRuns: 6 })

  const table = () => net.exec("nft", "list", "table", "inet", "tenant_routing")

  it.effect("the kernel lists table, chain, sets, commented elements and the §4 rules", () =>
    withNf(net.layer(), (nf) =>
      Effect.gen(function* () {
        yield* reset("nftables")
        yield* nf.apply("nftables", {
          remove: [],
          add: [entry("10.0.0.5", 4, 0x10, A), entry("2001:DB8::0:5", 6, 0x20, B)]
        })
        const text = table()
        assert.include(text, "type filter hook prerouting priority mangle; policy accept;")
        assert.match(
          text,
          /set m10_v4 \{\n\s+type ipv4_addr\n\s+elements = \{ 10\.0\.0\.5 comment "net\/abc\/eth0" \}/
        )
        assert.match(
          text,
          /set m20_v6 \{\n\s+type ipv6_addr\n\s+elements = \{ 2001:db8::5 comment "net\/def\/eth0" \}/
        )
        // nft folds the mark into the AND constant when listing: `& 0xffffffcf | 0x10` reads back so.
        assert.include(
          text,
          "ct direction original ip saddr @m10_v4 meta mark set meta mark & 0xffffffdf | 0x00000010"
        )
        assert.include(
          text,
          "ct direction original ip6 saddr @m20_v6 meta mark set meta mark & 0xffffffef | 0x00000020"
        )
      })
    )
  )

  it.effect("a missing table lists nothing and the backend is usable", () =>
    withNf(net.layer(), (nf) =>
      Effect.gen(function* () {
        spawnSync("ip", ["netns", "exec", net.ns, "nft", "delete", "table", "inet", "tenant_routing"])
        assert.deepStrictEqual(yield* nf.list("nftables"), [])
        assert.isTrue(yield* nf.usable("nftables"))
        // A removal on a missing table has nothing to do and runs no transaction.
        yield* nf.apply("nftables", { remove: [entry("10.0.0.5", 4, 0x10, A)], add: [] })
      })
    )
  )

  it.effect("foreign rules and uncommented elements are kept and never listed", () =>
    withNf(net.layer(), (nf) =>
      Effect.gen(function* () {
        yield* reset("nftables")
        const e = entry("10.0.0.6", 4, 0x10, A)
        yield* nf.apply("nftables", { remove: [], add: [e] })
        net.feed(
          [
            "add rule inet tenant_routing prerouting ip saddr 192.0.2.1 counter",
            "add element inet tenant_routing m10_v4 { 192.0.2.2 }",
            'add element inet tenant_routing m10_v4 { 192.0.2.3 comment "not ours" }',
            ""
          ].join("\n"),
          "nft",
          "-f",
          "-"
        )
        assertEntries(yield* nf.list("nftables"), [e])
        yield* nf.apply("nftables", { remove: [e], add: [] })
        const text = table()
        assert.include(text, "ip saddr 192.0.2.1 counter")
        assert.include(text, "192.0.2.2")
        assert.include(text, '192.0.2.3 comment "not ours"')
        net.exec("nft", "delete", "table", "inet", "tenant_routing")
      })
    )
  )

  it.effect("a new mask for a mark rewrites that mark's one rule", () =>
    withNf(net.layer(), (nf) =>
      Effect.gen(function* () {
        yield* reset("nftables")
        yield* nf.apply("nftables", { remove: [], add: [entry("10.0.0.5", 4, 0x10, A, 0x30)] })
        yield* nf.apply("nftables", { remove: [], add: [entry("10.0.0.6", 4, 0x10, B, 0xf0)] })
        assertEntries(yield* nf.list("nftables"), [
          entry("10.0.0.5", 4, 0x10, A, 0xf0),
          entry("10.0.0.6", 4, 0x10, B, 0xf0)
        ])
        const rules = table()
          .split("\n")
          .filter((l) => l.includes("@m10_v4"))
        assert.deepStrictEqual(
          rules.map((l) => l.trim()),
          ["ct direction original ip saddr @m10_v4 meta mark set meta mark & 0xffffff1f | 0x00000010"]
        )
        const conflict = yield* nf
          .apply("nftables", {
            remove: [],
            add: [entry("10.0.0.7", 4, 0x10, A, 0x30), entry("10.0.0.8", 4, 0x10, B, 0xf0)]
          })
          .pipe(Effect.flip)
        assert.include(conflict.msg, "two masks")
      })
    )
  )

  it.effect("one IP under one mark has one owner: a second owner takes the element over", () =>
    withNf(net.layer(), (nf) =>
      Effect.gen(function* () {
        yield* reset("nftables")
        yield* nf.apply("nftables", { remove: [], add: [entry("10.0.0.5", 4, 0x10, A)] })
        yield* nf.apply("nftables", { remove: [], add: [entry("10.0.0.5", 4, 0x10, B)] })
        assertEntries(yield* nf.list("nftables"), [entry("10.0.0.5", 4, 0x10, B)])
      })
    )
  )

  it.effect(
    "a kept view that went stale (an outsider changed the kernel) fails safely and is retried on a fresh read",
    () =>
      withNf(net.layer(), (nf) =>
        Effect.gen(function* () {
          yield* reset("nftables")
          const e = entry("10.0.0.5", 4, 0x10, A)
          yield* nf.apply("nftables", { remove: [], add: [e] })
          // Stale "table exists": deleted by an outsider after our listing.
          yield* nf.list("nftables")
          net.exec("nft", "delete", "table", "inet", "tenant_routing")
          const e2 = entry("10.0.0.6", 4, 0x10, B)
          yield* nf.apply("nftables", { remove: [], add: [e, e2] })
          assertEntries(yield* nf.list("nftables"), [e, e2])
          // Stale "element present": deleted meanwhile; the removal still succeeds.
          net.exec("nft", "delete", "element", "inet", "tenant_routing", "m10_v4", "{ 10.0.0.5, 10.0.0.6 }")
          yield* nf.apply("nftables", { remove: [e, e2], add: [] })
          assertEntries(yield* nf.list("nftables"), [])
        })
      )
  )
})

describe.skipIf(!canRun)("live views kept between calls", () => {
  const net = useNetns("view")

  it("each network namespace has its own generation file: a change in one leaves the other's view valid", () => {
    // The path a process computes, asked of a process in this netns and of one in the test's own.
    const script = `import { generationPath } from ${JSON.stringify(join(import.meta.dirname, "../src/interpreters/live/NetfilterLive.ts"))}; process.stdout.write(String(generationPath("/g", "nftables", false)))`
    const pathIn = (prefix: ReadonlyArray<string>) =>
      run([...prefix, process.execPath, "--input-type=module", "-e", script])
    const here = pathIn([])
    const there = pathIn(["ip", "netns", "exec", net.ns])
    assert.match(here, /^\/g\/netfilter-nftables-netns\d+\.generation$/)
    assert.match(there, /^\/g\/netfilter-nftables-netns\d+\.generation$/)
    assert.notStrictEqual(here, there)
    // With a prefix the tools run elsewhere: the caller's directory is that namespace's own.
    assert.strictEqual(generationPath("/g", "iptables", true), "/g/netfilter-iptables.generation")
  })

  for (const backend of ["iptables", "nftables"] as const satisfies ReadonlyArray<Backend>) {
    it.effect(`${backend}: a view is kept across calls until another instance changes the backend`, () =>
      Effect.gen(function* () {
        // Two services on one generation directory: two processes of this code on one node.
        const serviceOf = (l: Layer.Layer<Netfilter>) =>
          Effect.gen(function* () {
            return yield* Netfilter
          }).pipe(Effect.provide(l))
        const agent = yield* serviceOf(net.layer())
        const other = yield* serviceOf(net.layer())
        yield* Effect.provide(reset(backend), net.layer())
        const e = entry("10.0.0.21", 4, 0x10, A)
        const f = entry("10.0.0.22", 4, 0x10, B)
        yield* agent.apply(backend, { remove: [], add: [e] })
        assertEntries(yield* agent.list(backend), [e])
        // An outsider (no token) changes the kernel: the kept view does not see it, which proves it is
        // kept rather than read again.
        if (backend === "iptables") {
          net.exec(
            "iptables",
            "-t",
            "mangle",
            "-A",
            "TRW-MARK",
            ...Ipt.ruleSpec(f)
              .split(" ")
              .map((w) => w.replaceAll('"', ""))
          )
        } else {
          net.exec(
            "nft",
            "add",
            "element",
            "inet",
            "tenant_routing",
            "m10_v4",
            `{ 10.0.0.22 comment "${B}" }`
          )
        }
        assertEntries(yield* agent.list(backend), [e])
        // Another instance's apply replaces the token: the next list reads the kernel.
        yield* other.apply(backend, { remove: [e], add: [] })
        assertEntries(yield* agent.list(backend), [f])
        yield* agent.apply(backend, { remove: [f], add: [] })
        assertEntries(yield* other.list(backend), [])
      })
    )
  }
})

describe.skipIf(!canRun)("live Netfilter failures", () => {
  const missingNs = ["ip", "netns", "exec", `trw-nf-absent-${randomBytes(4).toString("hex")}`]

  for (const backend of ["iptables", "nftables"] as const satisfies ReadonlyArray<Backend>) {
    it.effect(
      `${backend}: a failing tool is NetfilterFailed with its stderr; removal says whether anything was added`,
      () =>
        withNf(layer({ prefix: missingNs, generationDir: null }), (nf) =>
          Effect.gen(function* () {
            const listed = yield* Effect.flip(nf.list(backend))
            assert.strictEqual(listed.code, 101)
            assert.include(listed.msg, "Cannot open network namespace")
            const e = entry("10.0.0.5", 4, 0x10, A)
            assert.isTrue((yield* Effect.flip(nf.apply(backend, { remove: [e], add: [] }))).removal)
            assert.isFalse((yield* Effect.flip(nf.apply(backend, { remove: [e], add: [e] }))).removal)
            assert.isFalse(yield* nf.usable(backend))
          })
        )
    )

    it.effect(`${backend}: entries that are not valid are refused before any process runs`, () =>
      withNf(layer({ prefix: missingNs, generationDir: null }), (nf) =>
        Effect.gen(function* () {
          const bad: ReadonlyArray<MarkEntry> = [
            entry("10.0.0.5", 4, 0x10, 'x" -j ACCEPT'),
            entry("10.0.0.5", 6, 0x10, A),
            entry("10.0.0.5/24", 4, 0x10, A),
            entry("10.0.0.5", 4, 0x40, A, 0x30),
            entry("10.0.0.5", 4, 0, A)
          ]
          for (const e of bad) {
            const err = yield* Effect.flip(nf.apply(backend, { remove: [], add: [e] }))
            assert.include(err.msg, "invalid entry")
          }
        })
      )
    )

    it.effect(`${backend}: a missing tool makes the backend unusable and lists nothing`, () =>
      // No prefix: the missing binary fails to spawn, so nothing runs in the root netns.
      withNf(
        layer({
          generationDir: null,
          tools: {
            nft: "/nonexistent/nft",
            "iptables-save": "/nonexistent/iptables-save",
            "ip6tables-save": "/nonexistent/ip6tables-save"
          }
        }),
        (nf) =>
          Effect.gen(function* () {
            assert.isFalse(yield* nf.usable(backend))
            assert.deepStrictEqual(yield* nf.list(backend), [])
            yield* nf.apply(backend, { remove: [entry("10.0.0.5", 4, 0x10, A)], add: [] })
          })
      )
    )
  }
})

// A real packet: a "pod" netns sends UDP to the "host" netns through a veth pair; the host's
// input hook counts packets that arrive with the tenant's mark under the mask.
const canPacket =
  canRun && !skipLive("live packets get their tenant's mark", missingOf({ commands: ["python3"] }))

describe.skipIf(!canPacket)("live packets get their tenant's mark", () => {
  const host = useNetns("host")
  const pod = useNetns("pod")
  beforeAll(() => {
    run([
      "ip",
      "link",
      "add",
      "trwh0",
      "netns",
      host.ns,
      "type",
      "veth",
      "peer",
      "name",
      "trwp0",
      "netns",
      pod.ns
    ])
    host.exec("ip", "addr", "add", "10.99.0.1/24", "dev", "trwh0")
    host.exec("ip", "link", "set", "trwh0", "up")
    pod.exec("ip", "addr", "add", "10.99.0.2/24", "dev", "trwp0")
    pod.exec("ip", "addr", "add", "10.99.0.3/24", "dev", "trwp0")
    pod.exec("ip", "link", "set", "trwp0", "up")
    host.feed(
      [
        "table inet probe {",
        "  chain input { type filter hook input priority 0; policy accept;",
        '    ip saddr 10.99.0.2 meta mark & 0x30 == 0x10 counter comment "tagged"',
        '    ip saddr 10.99.0.3 meta mark & 0x30 == 0x00 counter comment "untagged"',
        "  }",
        "}",
        ""
      ].join("\n"),
      "nft",
      "-f",
      "-"
    )
  })

  const send = (from: string) =>
    pod.exec(
      "python3",
      "-c",
      `import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(("${from}",0))\nfor _ in range(3): s.sendto(b"x",("10.99.0.1",9))`
    )
  // Rule counters are cumulative (nft `reset counters` only resets named counters): compare deltas.
  const counted = (comment: string) => {
    const line = host
      .exec("nft", "list", "chain", "inet", "probe", "input")
      .split("\n")
      .find((l) => l.includes(`"${comment}"`))
    return Number(/packets (\d+)/.exec(line ?? "")?.[1] ?? Number.NaN)
  }

  for (const backend of ["iptables", "nftables"] as const) {
    it.effect(`${backend}: packets from a tagged pod IP carry the mark, others do not`, () =>
      withNf(host.layer(), (nf) =>
        Effect.gen(function* () {
          const [tagged, untagged] = [counted("tagged"), counted("untagged")]
          yield* nf.apply(backend, { remove: [], add: [entry("10.99.0.2", 4, 0x10, A)] })
          send("10.99.0.2")
          send("10.99.0.3")
          assert.strictEqual(counted("tagged") - tagged, 3)
          assert.strictEqual(counted("untagged") - untagged, 3)
          yield* nf.apply(backend, { remove: [entry("10.99.0.2", 4, 0x10, A)], add: [] })
        })
      )
    )
  }
})
