/**
 * `doctor`'s decisions (src/domain/doctor/) on facts given as data: each check's verdicts, and
 * laws under fast-check — facts that match node-setup's plan give no warning, every tenant whose rule
 * is missing is named, a mark clash is reported exactly when markMask overlaps a present user's bits.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import type { AttachmentRecord } from "../src/domain/datapath/AttachmentRecord.ts"
import type { MarkEntry } from "../src/domain/datapath/Entries.ts"
import { type CheckResult, exitCodeOf } from "../src/domain/doctor/CheckResult.ts"
import { parseHostRouting } from "../src/domain/doctor/CiliumChecks.ts"
import { diagnose } from "../src/domain/doctor/Diagnose.ts"
import { disagreements, loadConfig, pickConflist } from "../src/domain/doctor/DoctorConfig.ts"
import {
  type ApiFact,
  type DoctorFacts,
  type LoadedConfig,
  type RpFacts,
  unreadable
} from "../src/domain/doctor/Facts.ts"
import { markUsers, presenceOf } from "../src/domain/doctor/MarkUsers.ts"
import type { NetfilterInventory } from "../src/domain/doctor/NodeFacts.ts"
import { ipv4GatewaysToProbe, sysctlKey } from "../src/domain/doctor/ReversePathChecks.ts"
import { tablesToRead } from "../src/domain/doctor/RoutingChecks.ts"
import { and32, formatMark, or32 } from "../src/domain/net/Mark.ts"
import { ipFamily, type NodeSetupConfig } from "../src/domain/node-setup/NodeSetupConfig.ts"
import { desired, type IpRule, type Route } from "../src/domain/node-setup/RoutingPlan.ts"

// ---------------------------------------------------------------------------------------------------
// Building facts

interface TenantWire {
  readonly mark: string
  readonly table: number
  readonly gateways: ReadonlyArray<string>
  readonly priority: number
}

const EXAMPLE: Record<string, TenantWire> = {
  "tenant-a": { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 },
  "tenant-b": {
    mark: "0x20",
    table: 200,
    gateways: ["198.51.100.2", "198.51.100.3", "2001:db8::2"],
    priority: 1001
  }
}

const fromFile = (tenants: Record<string, TenantWire>, extra: Record<string, unknown> = {}): LoadedConfig => {
  const config = loadConfig({
    tenantsFile: { path: "/etc/tenant-routing/tenants.json", text: JSON.stringify({ tenants, ...extra }) },
    conflists: []
  })
  if (config.problems.length > 0) throw new Error(config.problems.join("\n"))
  return config
}

/** node-setup's view of a loaded tenants file, to compute what it installs. */
const asNodeSetup = (config: LoadedConfig): NodeSetupConfig => ({
  markMask: config.source.markMask,
  tenants: config.source.tenants.map((t) => ({
    name: t.name,
    mark: t.mark,
    table: t.routing!.table,
    tableName: t.name,
    gateways: t.routing!.gateways,
    priority: t.routing!.priority
  }))
})

const EMPTY_INVENTORY: NetfilterInventory = { chains: [], markSets: [], nftTables: [] }

const cleanRp = (
  config: LoadedConfig,
  rules: ReadonlyArray<IpRule>,
  routes: ReadonlyArray<Route>
): RpFacts => {
  const gateways = ipv4GatewaysToProbe(config.source, rules, routes)
  return {
    gateways: gateways.map((gateway) => ({ gateway, iface: "eth1" })),
    sysctls: {
      all: { rpFilter: 0, srcValidMark: 0 },
      eth1: { rpFilter: 0, srcValidMark: 0 }
    },
    mainDefaultInterfaces: ["eth0"]
  }
}

/** Facts of a node where node-setup ran for `config` and nothing else is installed. */
const healthy = (config: LoadedConfig): DoctorFacts => {
  const state = desired(asNodeSetup(config))
  return {
    config,
    backends: { iptables: true, nftables: true },
    rules: state.rules,
    routes: state.routes,
    entries: { iptables: [], nftables: [] },
    records: [],
    rp: cleanRp(config, state.rules, state.routes),
    inventory: EMPTY_INVENTORY,
    files: { portmap: false, ciliumCni: false },
    cilium: undefined,
    api: { kind: "no-kubeconfig" }
  }
}

const notOk = (results: ReadonlyArray<CheckResult>) => results.filter((r) => r.status !== "ok")
const only = (results: ReadonlyArray<CheckResult>, check: CheckResult["check"]) =>
  results.filter((r) => r.check === check)
const statusOf = (results: ReadonlyArray<CheckResult>, check: CheckResult["check"], subject: string) =>
  results.find((r) => r.check === check && r.subject === subject)?.status

const record = (
  containerId: string,
  ip: string,
  tenant: { name: string; mark: number } | null
): AttachmentRecord => ({
  owner: `net/${containerId}/eth0`,
  tag: `net/${containerId}/eth0`,
  network: "net",
  containerId,
  ifname: "eth0",
  tenant: tenant?.name ?? null,
  mark: tenant?.mark ?? null,
  mask: 0x30,
  ips: [ip],
  backend: "nftables"
})
const entryOf = (r: AttachmentRecord): MarkEntry => ({
  ip: r.ips[0]!,
  family: 4,
  mark: r.mark!,
  mask: r.mask,
  owner: r.tag
})

// ---------------------------------------------------------------------------------------------------
// Arbitrary tenants files

const BITS = [0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100, 0x10000, 0x1000000]

const tenantsFileArb: fc.Arbitrary<Record<string, TenantWire>> = fc
  .uniqueArray(fc.constantFrom(...BITS), { minLength: 1, maxLength: 4 })
  .chain((marks) =>
    fc
      .tuple(
        ...marks.map(() =>
          fc.record({
            v4: fc.uniqueArray(fc.integer({ min: 2, max: 250 }), { maxLength: 2 }),
            v6: fc.uniqueArray(fc.integer({ min: 2, max: 250 }), { maxLength: 1 })
          })
        )
      )
      .map((gws) =>
        Object.fromEntries(
          marks.map((mark, i) => [
            `t${i}`,
            {
              mark: formatMark(mark),
              table: 100 + i,
              priority: 1000 + i,
              gateways: [
                ...gws[i]!.v4.map((n) => `10.${i}.0.${n}`),
                ...gws[i]!.v6.map((n) => `2001:db8:${i}::${n.toString(16)}`)
              ]
            }
          ])
        )
      )
  )

// ---------------------------------------------------------------------------------------------------

describe("doctor diagnosis: laws", () => {
  it("no warning when facts match the plan", () => {
    fc.assert(
      fc.property(tenantsFileArb, fc.integer({ min: 0, max: 3 }), (tenants, pods) => {
        const config = fromFile(tenants)
        const base = healthy(config)
        // Tagged pods, each with its record and its entry.
        const records = Array.from({ length: pods }, (_, i) => {
          const t = config.source.tenants[i % config.source.tenants.length]!
          return { ...record(`c${i}`, `10.200.0.${i + 2}`, t), mask: config.source.markMask }
        })
        const facts: DoctorFacts = {
          ...base,
          records,
          entries: { iptables: [], nftables: records.map(entryOf) }
        }
        const results = diagnose(facts)
        assert.deepStrictEqual(notOk(results), [])
        assert.strictEqual(exitCodeOf(results), 0)
      }),
      { numRuns: 100 }
    )
  })

  it("every tenant whose rule is missing is reported, and no other", () => {
    fc.assert(
      fc.property(
        tenantsFileArb.chain((tenants) =>
          fc.tuple(fc.constant(tenants), fc.subarray(Object.keys(tenants)), fc.constantFrom<4 | 6>(4, 6))
        ),
        ([tenants, removed, family]) => {
          const config = fromFile(tenants)
          const base = healthy(config)
          const marks = new Set(removed.map((n) => config.source.tenants.find((t) => t.name === n)!.mark))
          const rules = (base.rules as ReadonlyArray<IpRule>).filter(
            (r) => !(r.family === family && r.fwmark !== undefined && marks.has(r.fwmark))
          )
          const results = diagnose({ ...base, rules })
          const reported = only(results, "tenant-rule")
            .filter((r) => r.status !== "ok")
            .map((r) => r.subject)
            .sort()
          assert.deepStrictEqual(reported, removed.map((n) => `${n}/ipv${family}`).sort())
          for (const r of only(results, "tenant-rule").filter((x) => x.status !== "ok")) {
            const t = config.source.tenants.find((x) => `${x.name}/ipv${family}` === r.subject)!
            const hasGateways = t.routing!.gateways.some((g) => ipFamily(g) === family)
            // Fail where it has gateways (its traffic would leak), warn where it should be dropped.
            assert.strictEqual(r.status, hasGateways ? "fail" : "warn")
            assert.include(r.reason, `fwmark ${formatMark(t.mark)}/${formatMark(config.source.markMask)}`)
          }
        }
      ),
      { numRuns: 100 }
    )
  })

  it("a mark clash is reported exactly when markMask overlaps a present user's bits", () => {
    const userArb = fc.record({
      kube: fc.boolean(),
      kubeBit: fc.constantFrom(0x4000, 0x10, 0x1),
      portmap: fc.boolean(),
      cilium: fc.boolean(),
      calico: fc.boolean()
    })
    fc.assert(
      fc.property(tenantsFileArb, userArb, (tenants, u) => {
        const config = fromFile(tenants)
        const inventory: NetfilterInventory = {
          chains: [
            ...(u.kube ? [{ tool: "iptables" as const, table: "nat", chain: "KUBE-MARK-MASQ" }] : []),
            ...(u.calico ? [{ tool: "iptables" as const, table: "filter", chain: "cali-INPUT" }] : [])
          ],
          markSets: u.kube ? [{ chain: "KUBE-MARK-MASQ", mark: u.kubeBit, mask: u.kubeBit }] : [],
          nftTables: []
        }
        const facts: DoctorFacts = {
          ...healthy(config),
          inventory,
          files: { portmap: u.portmap, ciliumCni: u.cilium },
          cilium: u.cilium ? { exitCode: 0, text: "Host Routing:   Legacy\n" } : undefined
        }
        const results = only(diagnose(facts), "mark-clash")
        const users = markUsers(inventory, presenceOf(inventory, facts.files, undefined))
        const mask = config.source.markMask
        const expected = users.filter((x) => and32(x.bits, mask) !== 0).map((x) => x.user)
        assert.deepStrictEqual(
          results.filter((r) => r.status === "warn").map((r) => r.subject),
          expected
        )
        assert.isTrue(results.every((r) => r.status !== "fail"))
      }),
      { numRuns: 200 }
    )
  })
})

describe("doctor diagnosis: routing", () => {
  const config = fromFile(EXAMPLE)

  it("a healthy node gets ok for every check, including every tenant and family", () => {
    const results = diagnose(healthy(config))
    assert.deepStrictEqual(notOk(results), [])
    assert.deepStrictEqual(
      only(results, "tenant-rule").map((r) => r.subject),
      ["tenant-a/ipv4", "tenant-a/ipv6", "tenant-b/ipv4", "tenant-b/ipv6"]
    )
    assert.deepStrictEqual(
      only(results, "suppress-rule").map((r) => r.subject),
      ["ipv4", "ipv6"]
    )
  })

  it("a rule with another mask is a failure that shows the rule found", () => {
    const base = healthy(config)
    const rules = (base.rules as ReadonlyArray<IpRule>).map((r) =>
      r.family === 4 && r.fwmark === 0x10 ? { ...r, mask: 0xff } : r
    )
    const r = diagnose({ ...base, rules }).find((x) => x.subject === "tenant-a/ipv4")!
    assert.strictEqual(r.status, "fail")
    assert.include(r.reason, 'found "fwmark 0x10/0xff lookup 100" instead')
  })

  it("the suppress rule missing, or after a tenant rule, is a failure", () => {
    const base = healthy(config)
    const rules = base.rules as ReadonlyArray<IpRule>
    const without = rules.filter((r) => !(r.family === 6 && r.suppressPrefixlength === 0))
    assert.strictEqual(statusOf(diagnose({ ...base, rules: without }), "suppress-rule", "ipv6"), "fail")
    assert.strictEqual(statusOf(diagnose({ ...base, rules: without }), "suppress-rule", "ipv4"), "ok")
    // Kernel order: the suppress rule listed after tenant-a's.
    const suppress4 = rules.find((r) => r.family === 4 && r.suppressPrefixlength === 0)!
    const late = [...rules.filter((r) => r !== suppress4), { ...suppress4, priority: 1005 }]
    const r = diagnose({ ...base, rules: late }).find(
      (x) => x.check === "suppress-rule" && x.subject === "ipv4"
    )!
    assert.strictEqual(r.status, "fail")
    assert.include(r.reason, "comes after tenant-a's rule")
  })

  it("a missing or foreign gateway route fails; a missing unreachable route or next hop warns", () => {
    const base = healthy(config)
    const routes = base.routes as ReadonlyArray<Route>
    const gw = (r: Route) => r.kind === "unicast" && r.dst === "default"
    const noRoute = routes.filter((r) => !(gw(r) && r.table === 100 && r.family === 4))
    assert.strictEqual(
      statusOf(diagnose({ ...base, routes: noRoute }), "tenant-route", "tenant-a/ipv4"),
      "fail"
    )
    const foreign = routes.map((r) => (gw(r) && r.table === 100 ? { ...r, gateways: ["192.0.2.99"] } : r))
    const f = diagnose({ ...base, routes: foreign }).find(
      (x) => x.subject === "tenant-a/ipv4" && x.check === "tenant-route"
    )!
    assert.strictEqual(f.status, "fail")
    assert.include(f.reason, "goes via 192.0.2.99, not the tenant's 192.0.2.2")
    const partial = routes.map((r) =>
      gw(r) && r.table === 200 && r.family === 4 ? { ...r, gateways: ["198.51.100.2"] } : r
    )
    assert.strictEqual(
      statusOf(diagnose({ ...base, routes: partial }), "tenant-route", "tenant-b/ipv4"),
      "warn"
    )
    const noUnreachable = routes.filter((r) => !(r.kind === "unreachable" && r.table === 100))
    const results = diagnose({ ...base, routes: noUnreachable })
    assert.strictEqual(statusOf(results, "tenant-route", "tenant-a/ipv4"), "warn")
    assert.strictEqual(statusOf(results, "tenant-route", "tenant-a/ipv6"), "warn")
    assert.strictEqual(exitCodeOf(results), 0)
  })

  it("unreadable rules are one failure, not a crash", () => {
    const results = diagnose({ ...healthy(config), rules: unreadable("ip: permission denied") })
    assert.deepStrictEqual(
      notOk(results).map((r) => [r.check, r.status]),
      [["tenant-rule", "fail"]]
    )
  })

  it("from a conflist: some rule with the mark and mask, a gateway route in its table, no leaking family", () => {
    const conflist = {
      path: "/etc/cni/net.d/10-tenant.conflist",
      text: JSON.stringify({
        cniVersion: "1.0.0",
        name: "tenant-routing",
        plugins: [{ type: "tenant-routing-wrapper", delegate: { type: "ptp" } }]
      })
    }
    const fromConflist = loadConfig({ tenantsFile: undefined, conflists: [conflist] })
    assert.strictEqual(fromConflist.source.kind, "conflist")
    const state = desired(asNodeSetup(config))
    const facts: DoctorFacts = {
      ...healthy(config),
      config: fromConflist,
      rules: state.rules,
      routes: state.routes
    }
    assert.deepStrictEqual(notOk(diagnose(facts)), [])
    assert.deepStrictEqual(
      tablesToRead(fromConflist.source, state.rules).map((t) => `${t.family}/${t.table}`),
      ["4/100", "6/100", "4/200", "6/200"]
    )
    // tenant-a loses its IPv4 rule, while table 100 still routes IPv4 via its gateway: it leaks.
    const rules = state.rules.filter((r) => !(r.family === 4 && r.fwmark === 0x10))
    const results = diagnose({ ...facts, rules })
    const r = results.find((x) => x.check === "tenant-rule" && x.subject === "tenant-a")!
    assert.strictEqual(r.status, "fail")
    assert.include(r.reason, "no IPv4 rule")
    // Both rules gone: no rule at all.
    const none = state.rules.filter((x) => x.fwmark !== 0x20)
    assert.strictEqual(statusOf(diagnose({ ...facts, rules: none }), "tenant-rule", "tenant-b"), "fail")
  })
})

describe("doctor diagnosis: reverse-path filtering", () => {
  const config = fromFile(EXAMPLE)
  const withRp = (all: number, own: number, mainDefault: ReadonlyArray<string>, srcValidMark = 0) => {
    const base = healthy(config)
    return diagnose({
      ...base,
      rp: {
        gateways: [
          { gateway: "192.0.2.2", iface: "eth1" },
          { gateway: "198.51.100.2", iface: "eth1" },
          { gateway: "198.51.100.3", iface: "eth1" }
        ],
        sysctls: {
          all: { rpFilter: all, srcValidMark },
          eth1: { rpFilter: own, srcValidMark: 0 }
        },
        mainDefaultInterfaces: mainDefault
      }
    }).find((r) => r.check === "rp-filter")!
  }

  it.each([
    // all, iface, main's default interfaces → status
    [0, 0, ["eth0"], "ok"],
    [2, 0, ["eth0"], "ok"],
    [0, 2, ["eth0"], "ok"],
    [0, 2, [], "warn"],
    [1, 0, ["eth0"], "warn"],
    [0, 1, ["eth0"], "warn"],
    // The effective mode is the max: loose (2) on either side overrides strict (1) on the other.
    [1, 2, ["eth0"], "ok"],
    [2, 1, ["eth0"], "ok"],
    [1, 1, ["eth1"], "ok"],
    [1, 0, ["eth0", "eth1"], "ok"]
  ] as const)("all=%s, eth1=%s, main default via %j → %s", (all, own, main, status) => {
    assert.strictEqual(withRp(all, own, main).status, status)
  })

  it("the hint sets loose mode on exactly the sysctls that are strict", () => {
    assert.include(withRp(1, 0, ["eth0"]).hint, "sysctl -w net.ipv4.conf.all.rp_filter=2 (")
    assert.include(withRp(0, 1, ["eth0"]).hint, "sysctl -w net.ipv4.conf.eth1.rp_filter=2 (")
    assert.include(
      withRp(1, 1, ["eth0"]).hint,
      "sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth1.rp_filter=2 ("
    )
    assert.include(withRp(1, 0, ["eth0"]).reason, "max(all=1, eth1=0) = 1")
  })

  it("src_valid_mark is named as no help, since replies are unmarked", () => {
    assert.include(withRp(1, 0, ["eth0"], 1).reason, "src_valid_mark=1 does not help")
  })

  it("sysctl keys with a dotted interface name use slashes", () => {
    assert.strictEqual(sysctlKey("eth0.100", "rp_filter"), "net/ipv4/conf/eth0.100/rp_filter")
    assert.strictEqual(sysctlKey("eth0", "rp_filter"), "net.ipv4.conf.eth0.rp_filter")
  })

  it("only IPv4 gateways are probed", () => {
    assert.deepStrictEqual(ipv4GatewaysToProbe(config.source, [], []), [
      "192.0.2.2",
      "198.51.100.2",
      "198.51.100.3"
    ])
  })
})

describe("doctor diagnosis: stale entries and records", () => {
  const config = fromFile(EXAMPLE)
  const a = { name: "tenant-a", mark: 0x10 }

  it("an entry without a record warns, a tagged record without its entry fails, an unknown mark fails", () => {
    const base = healthy(config)
    const r1 = record("c1", "10.200.0.2", a)
    const r2 = record("c2", "10.200.0.3", a)
    const untagged = record("c3", "10.200.0.4", null)
    const orphan: MarkEntry = { ip: "10.200.0.9", family: 4, mark: 0x10, mask: 0x30, owner: "net/gone/eth0" }
    const alien: MarkEntry = { ip: "10.200.0.10", family: 4, mark: 0x40, mask: 0x70, owner: "net/old/eth0" }
    const results = diagnose({
      ...base,
      records: [r1, r2, untagged],
      entries: { iptables: [orphan], nftables: [entryOf(r1), alien] }
    })
    assert.strictEqual(statusOf(results, "stale-entries", ""), "warn")
    assert.include(results.find((r) => r.check === "stale-entries")!.reason, "2 entries without a record")
    const stale = results.find((r) => r.check === "stale-records")!
    assert.strictEqual(stale.status, "fail")
    assert.include(stale.reason, "net/c2/eth0 10.200.0.3 tenant-a 0x10")
    assert.notInclude(stale.reason, "c3")
    const unknown = results.find((r) => r.check === "unknown-marks")!
    assert.strictEqual(unknown.status, "fail")
    assert.include(unknown.reason, "0x40")
  })

  it("an entry with the recorded mark but another owner does not count", () => {
    const r1 = record("c1", "10.200.0.2", a)
    const results = diagnose({
      ...healthy(config),
      records: [r1],
      entries: { iptables: [], nftables: [{ ...entryOf(r1), owner: "net/other/eth0" }] }
    })
    assert.strictEqual(statusOf(results, "stale-records", ""), "fail")
  })

  it("unreadable records or entries warn", () => {
    const results = diagnose({
      ...healthy(config),
      records: unreadable("EACCES"),
      entries: { iptables: unreadable("iptables-save: exit 4"), nftables: [] }
    })
    assert.strictEqual(statusOf(results, "stale-records", ""), "warn")
    assert.strictEqual(statusOf(results, "stale-entries", "iptables"), "warn")
    assert.strictEqual(exitCodeOf(results), 0)
  })
})

describe("doctor diagnosis: other mark users and Cilium", () => {
  const config = fromFile(EXAMPLE)
  const chain = (name: string, table = "filter") => ({ tool: "iptables" as const, table, chain: name })

  it("kube-proxy's masquerade bit is read from KUBE-MARK-MASQ", () => {
    const inventory: NetfilterInventory = {
      chains: [chain("KUBE-MARK-MASQ", "nat")],
      markSets: [{ chain: "KUBE-MARK-MASQ", mark: 0x20, mask: 0x20 }],
      nftTables: []
    }
    const r = diagnose({ ...healthy(config), inventory }).find((x) => x.check === "mark-clash")!
    assert.strictEqual(r.status, "warn")
    assert.strictEqual(r.subject, "kubernetes")
    assert.include(r.reason, "overlaps 0xc020 in 0x20 (tenant-b 0x20)")
  })

  it("the default KUBE-MARK-MASQ bit does not clash with the default marks", () => {
    const inventory: NetfilterInventory = {
      chains: [chain("KUBE-MARK-MASQ", "nat")],
      markSets: [{ chain: "KUBE-MARK-MASQ", mark: 0x4000, mask: 0x4000 }],
      nftTables: [{ family: "ip", name: "kube-proxy" }]
    }
    assert.strictEqual(
      statusOf(diagnose({ ...healthy(config), inventory }), "mark-clash", "kubernetes"),
      "ok"
    )
  })

  it("Calico's default mask clashes with marks in the upper half only", () => {
    const inventory: NetfilterInventory = { chains: [chain("cali-INPUT")], markSets: [], nftTables: [] }
    assert.strictEqual(statusOf(diagnose({ ...healthy(config), inventory }), "mark-clash", "calico"), "ok")
    const high = fromFile({ "tenant-a": { ...EXAMPLE["tenant-a"]!, mark: "0x10000" } })
    assert.strictEqual(statusOf(diagnose({ ...healthy(high), inventory }), "mark-clash", "calico"), "warn")
  })

  it("Cilium: magic, key and identity bits; the default marks land in the identity bits", () => {
    const inventory: NetfilterInventory = {
      chains: [chain("CILIUM_PRE_mangle", "mangle")],
      markSets: [],
      nftTables: []
    }
    const results = diagnose({
      ...healthy(config),
      inventory,
      cilium: { exitCode: 0, text: "Host Routing:  Legacy\n" }
    })
    assert.strictEqual(statusOf(results, "mark-clash", "cilium/magic"), "ok")
    assert.strictEqual(statusOf(results, "mark-clash", "cilium/key"), "ok")
    assert.strictEqual(statusOf(results, "mark-clash", "cilium/identity"), "warn")
    const magic = fromFile({ "tenant-a": { ...EXAMPLE["tenant-a"]!, mark: "0x100" } })
    assert.strictEqual(
      statusOf(diagnose({ ...healthy(magic), inventory }), "mark-clash", "cilium/magic"),
      "warn"
    )
  })

  it("portmap is found by its binary, its chains or the conflist", () => {
    const facts = { ...healthy(config), files: { portmap: true, ciliumCni: false } }
    assert.strictEqual(statusOf(diagnose(facts), "mark-clash", "portmap"), "ok")
    const presence = presenceOf(
      { chains: [chain("CNI-HOSTPORT-SETMARK", "nat")], markSets: [], nftTables: [] },
      { portmap: false, ciliumCni: false },
      undefined
    )
    assert.isDefined(presence.portmap)
    assert.isUndefined(presence.cilium)
  })

  it("host routing BPF fails, Legacy passes, unknown warns, no Cilium says nothing", () => {
    const facts = { ...healthy(config), files: { portmap: false, ciliumCni: true } }
    const hr = (cilium: DoctorFacts["cilium"]) =>
      diagnose({ ...facts, cilium }).find((r) => r.check === "cilium-host-routing")
    assert.strictEqual(
      hr({ exitCode: 0, text: "KVStore: Ok\nHost Routing:           BPF\n" })?.status,
      "fail"
    )
    assert.strictEqual(
      hr({ exitCode: 0, text: "Routing:  Network: Tunnel [vxlan]   Host: Legacy\n" })?.status,
      "ok"
    )
    assert.strictEqual(hr({ exitCode: 1, text: "Error: cannot connect to agent" })?.status, "warn")
    assert.strictEqual(hr(undefined)?.status, "warn")
    assert.include(hr(undefined)!.hint, "bpf.hostLegacyRouting=true")
    assert.isUndefined(diagnose(healthy(config)).find((r) => r.check === "cilium-host-routing"))
  })

  it("parseHostRouting reads both formats Cilium has printed", () => {
    assert.strictEqual(parseHostRouting("Host Routing:\tBPF\n"), "BPF")
    assert.strictEqual(parseHostRouting("Routing:     Network: Native   Host: Legacy\n"), "Legacy")
    assert.strictEqual(parseHostRouting("Masquerading: BPF\n"), undefined)
  })
})

describe("doctor diagnosis: configuration, backend, namespace reads", () => {
  const conflist = (name: string, plugins: ReadonlyArray<Record<string, unknown>>) => ({
    path: `/etc/cni/net.d/${name}`,
    text: JSON.stringify({ cniVersion: "1.0.0", name: "tenant-routing", plugins })
  })
  const ours = (extra: Record<string, unknown> = {}) => ({
    type: "tenant-routing-wrapper",
    kubeconfig: "/etc/kubernetes/kubelet.conf",
    delegate: { type: "ptp" },
    ...extra
  })

  it("the first conflist by name that holds the plugin counts; unparsable files are skipped", () => {
    const picked = pickConflist([
      conflist("20-b.conflist", [ours({ backend: "iptables" })]),
      { path: "/etc/cni/net.d/05-broken.conflist", text: "{" },
      conflist("10-other.conflist", [{ type: "bridge" }]),
      conflist("15-a.conflist", [ours({ backend: "nftables" }), { type: "cilium-cni" }])
    ])
    assert.isDefined(picked)
    assert.isTrue(picked !== undefined && "plugin" in picked)
    if (picked !== undefined && "plugin" in picked) {
      assert.strictEqual(picked.plugin.conflist, "/etc/cni/net.d/15-a.conflist")
      assert.strictEqual(picked.plugin.backend, "nftables")
      assert.deepStrictEqual(picked.plugin.otherPlugins, ["cilium-cni", "ptp"])
    }
  })

  it("an entry the plugin rejects is a config failure", () => {
    const loaded = loadConfig({
      tenantsFile: undefined,
      conflists: [conflist("10.conflist", [ours({ markMask: "0x4000" })])]
    })
    assert.strictEqual(loaded.source.kind, "defaults")
    const results = diagnose({ ...healthy(fromFile(EXAMPLE)), config: loaded })
    assert.strictEqual(statusOf(results, "config", ""), "fail")
  })

  it("an invalid or unreadable tenants file is a config failure naming the field", () => {
    const bad = loadConfig({
      tenantsFile: {
        path: "/t.json",
        text: '{"tenants":{"a":{"mark":"0x10","table":254,"gateways":[],"priority":5}}}'
      },
      conflists: []
    })
    assert.include(bad.problems[0]!, "tenants.a.table")
    const error = "tenants file /t.json does not exist; pass --config FILE or create it"
    const gone = loadConfig({ tenantsFile: { path: "/t.json", error }, conflists: [] })
    assert.strictEqual(gone.source.kind, "defaults")
    assert.deepStrictEqual(gone.problems, [error])
  })

  it("the tenants file and the conflist disagreeing is a warning", () => {
    const file = fromFile(EXAMPLE)
    const picked = pickConflist([
      conflist("10.conflist", [
        ours({ tenants: { "tenant-a": { mark: "0x10" }, "tenant-c": { mark: "0x20" } } })
      ])
    ])
    if (picked === undefined || !("plugin" in picked)) throw new Error("no plugin")
    assert.deepStrictEqual(disagreements(file.source, picked.plugin), [
      "tenant-b is not a tenant of the conflist",
      "tenant-c has no routing in the tenants file"
    ])
    const results = diagnose({ ...healthy(file), config: { ...file, plugin: picked.plugin } })
    assert.strictEqual(statusOf(results, "config", "conflist"), "warn")
  })

  it("backend: the configured one must work; auto picks nftables, then iptables", () => {
    const base = healthy(fromFile(EXAMPLE))
    const backend = (backends: DoctorFacts["backends"]) =>
      diagnose({ ...base, backends }).find((r) => r.check === "backend")!
    assert.strictEqual(backend({ iptables: true, nftables: false }).subject, "iptables")
    assert.strictEqual(backend({ iptables: false, nftables: false }).status, "fail")
    const picked = pickConflist([conflist("10.conflist", [ours({ backend: "nftables" })])])
    if (picked === undefined || !("plugin" in picked)) throw new Error("no plugin")
    const r = diagnose({
      ...base,
      backends: { iptables: true, nftables: false },
      config: { ...base.config, plugin: picked.plugin }
    }).find((x) => x.check === "backend")!
    assert.strictEqual(r.status, "fail")
  })

  it("namespace reads: forbidden warns under best-effort and fails under strict; a missing kubeconfig fails", () => {
    const base = healthy(fromFile(EXAMPLE))
    const withPlugin = (extra: Record<string, unknown>) => {
      const picked = pickConflist([conflist("10.conflist", [ours(extra)])])
      if (picked === undefined || !("plugin" in picked)) throw new Error("no plugin")
      return { ...base.config, plugin: picked.plugin }
    }
    const ns = (api: ApiFact, extra: Record<string, unknown> = {}) =>
      diagnose({ ...base, config: withPlugin(extra), api }).find((r) => r.check === "namespace-read")!
    const forbidden: ApiFact = { kind: "read", namespace: "default", outcome: "forbidden", msg: "403" }
    assert.strictEqual(ns(forbidden).status, "warn")
    assert.include(ns(forbidden).reason, "namespace pinning is off under best-effort")
    assert.strictEqual(ns(forbidden, { pinning: "strict" }).status, "fail")
    assert.strictEqual(ns({ kind: "read", namespace: "default", outcome: "not-found", msg: "" }).status, "ok")
    assert.strictEqual(
      ns({ kind: "read", namespace: "default", outcome: "unavailable", msg: "503" }).status,
      "warn"
    )
    const missing: ApiFact = { kind: "connect-failed", error: "TryAgainLater", msg: "kubeconfig x not found" }
    assert.strictEqual(ns(missing).status, "fail")
    assert.strictEqual(ns(missing, { failurePolicy: "open" }).status, "warn")
    assert.strictEqual(
      ns({ kind: "connect-failed", error: "InvalidConfig", msg: "no context" }, { failurePolicy: "open" })
        .status,
      "fail"
    )
  })

  it("the markMask judged for clashes is the union of both files' masks", () => {
    const file = fromFile(EXAMPLE)
    const picked = pickConflist([conflist("10.conflist", [ours({ markMask: "0xf0" })])])
    if (picked === undefined || !("plugin" in picked)) throw new Error("no plugin")
    const inventory: NetfilterInventory = {
      chains: [{ tool: "iptables", table: "nat", chain: "KUBE-MARK-MASQ" }],
      markSets: [{ chain: "KUBE-MARK-MASQ", mark: 0x80, mask: 0x80 }],
      nftTables: []
    }
    const r = diagnose({ ...healthy(file), config: { ...file, plugin: picked.plugin }, inventory }).find(
      (x) => x.check === "mark-clash"
    )!
    assert.strictEqual(r.status, "warn")
    assert.include(r.reason, `markMask ${formatMark(or32(0x30, 0xf0))}`)
  })
})

describe("cni-chaining: our conflist is the one used, and cilium-cni accepts its place in it", () => {
  const conflistWith = (name: string, plugins: ReadonlyArray<Record<string, unknown>>) => ({
    path: `/etc/cni/net.d/${name}`,
    text: JSON.stringify({ cniVersion: "1.0.0", name: "tenant-routing", plugins })
  })
  const ours = { type: "tenant-routing-wrapper", delegate: { type: "ptp" } }
  /** Facts of a node whose conflist `file` holds `plugins`, in a dir listing `files`. */
  const factsOf = (
    file: string,
    plugins: ReadonlyArray<Record<string, unknown>>,
    files: ReadonlyArray<string>
  ): DoctorFacts => {
    const c = conflistWith(file, plugins)
    const picked = pickConflist([c])
    if (picked === undefined || !("plugin" in picked)) throw new Error("no plugin")
    const base = fromFile(EXAMPLE)
    return {
      ...healthy(base),
      config: { ...base, plugin: picked.plugin },
      cniConf: { files, conflist: JSON.parse(c.text) }
    }
  }
  const chaining = (facts: DoctorFacts) => only(diagnose(facts), "cni-chaining")

  it("the shipped shape (00- first, cilium-cni with generic-veth) is ok on both counts", () => {
    const r = chaining(
      factsOf(
        "00-tenant-routing.conflist",
        [ours, { type: "cilium-cni", "chaining-mode": "generic-veth" }],
        ["00-tenant-routing.conflist", "99-loopback.conf", "tenant-routing"]
      )
    )
    assert.deepStrictEqual(
      r.map((x) => [x.subject, x.status]),
      [
        ["00-tenant-routing.conflist", "ok"],
        ["cilium-cni", "ok"]
      ]
    )
  })

  it("a bare cilium-cni fails with Cilium's own error named", () => {
    const r = chaining(
      factsOf("00-tenant-routing.conflist", [ours, { type: "cilium-cni" }], ["00-tenant-routing.conflist"])
    )
    const cilium = r.find((x) => x.subject === "cilium-cni")!
    assert.strictEqual(cilium.status, "fail")
    assert.include(cilium.reason, "not in chaining mode")
    assert.include(cilium.hint, "cni.chainingMode=generic-veth")
  })

  it("Cilium's 05-cilium.conflist before a 10- of ours fails, naming the file; a later one does not", () => {
    const before = chaining(
      factsOf("10-tenant-routing.conflist", [ours], ["05-cilium.conflist", "10-tenant-routing.conflist"])
    )
    assert.deepStrictEqual(
      before.map((x) => x.status),
      ["fail"]
    )
    assert.include(before[0]!.reason, "05-cilium.conflist sorts before 10-tenant-routing.conflist")
    assert.include(before[0]!.hint, "cni.customConf=true")
    const after = chaining(
      factsOf("00-tenant-routing.conflist", [ours], ["05-cilium.conflist", "00-tenant-routing.conflist"])
    )
    assert.deepStrictEqual(
      after.map((x) => x.status),
      ["ok"]
    )
  })

  it("no conflist with the plugin, or the check not gathered: nothing; an unreadable dir warns", () => {
    assert.deepStrictEqual(chaining(healthy(fromFile(EXAMPLE))), [])
    const facts = factsOf("00-tenant-routing.conflist", [ours], [])
    const { cniConf: _, ...withoutCniConf } = facts
    assert.deepStrictEqual(chaining(withoutCniConf), [])
    assert.strictEqual(chaining({ ...facts, cniConf: unreadable("EACCES") })[0]?.status, "warn")
  })
})
