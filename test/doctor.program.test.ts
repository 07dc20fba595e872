/**
 * The `doctor` program on in-memory services (routing, netfilter, state records, node facts, the
 * cluster) with its files in a temporary directory: what it gathers reaches the diagnosis, a broken
 * fact source degrades to a warning instead of an error, Cilium's status is only asked for when
 * Cilium is present, and the CLI's usage handling. Also the live NodeFacts interpreter's pure parsers
 * on captured tool output.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Result } from "effect"
import { runCli } from "../bin/cli.ts"
import { makeRecord } from "../src/domain/datapath/AttachmentRecord.ts"
import { ownerTag } from "../src/domain/datapath/Owner.ts"
import type { CheckResult } from "../src/domain/doctor/CheckResult.ts"
import { decodeNodeSetupConfig } from "../src/domain/node-setup/NodeSetupConfig.ts"
import { desired } from "../src/domain/node-setup/RoutingPlan.ts"
import {
  parseIptablesSave,
  parseNftTables,
  parseRouteDevices
} from "../src/interpreters/live/NodeFactsLinux.ts"
import * as AnnotationsMemory from "../src/interpreters/memory/AnnotationsMemory.ts"
import { Cluster } from "../src/interpreters/memory/AnnotationsMemory.ts"
import * as AttachmentStoreMemory from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { Records } from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { FaultPlan } from "../src/interpreters/memory/Faults.ts"
import * as NetfilterMemory from "../src/interpreters/memory/NetfilterMemory.ts"
import { Kernel } from "../src/interpreters/memory/NetfilterMemory.ts"
import * as NodeFactsMemory from "../src/interpreters/memory/NodeFactsMemory.ts"
import { NodeModel } from "../src/interpreters/memory/NodeFactsMemory.ts"
import * as RoutingMemory from "../src/interpreters/memory/RoutingMemory.ts"
import { DEFAULT_DOCTOR_OPTIONS, type DoctorOptions, doctor, formatDoctor } from "../src/programs/doctor.ts"

const dir = mkdtempSync(join(tmpdir(), "trw-doc-prog-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const TENANTS = {
  tenants: {
    "tenant-a": { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 },
    "tenant-b": { mark: "0x20", table: 200, gateways: ["198.51.100.2"], priority: 1001 }
  }
}
const decoded = decodeNodeSetupConfig(TENANTS)
if (Result.isFailure(decoded)) throw new Error("bad fixture")
const STATE = desired(decoded.success)

/** A node where node-setup ran, with files for one test under `dir/<name>`. */
class Node {
  readonly kernel = new Kernel()
  readonly records = new Records()
  readonly cluster = new Cluster()
  readonly facts = new NodeModel()
  readonly faults = new FaultPlan()
  readonly root: string
  constructor(name: string, plugin: Record<string, unknown> | undefined) {
    this.root = join(dir, name)
    mkdirSync(join(this.root, "net.d"), { recursive: true })
    writeFileSync(join(this.root, "tenants.json"), JSON.stringify(TENANTS))
    if (plugin !== undefined) {
      writeFileSync(
        join(this.root, "net.d", "10-tr.conflist"),
        JSON.stringify({
          cniVersion: "1.0.0",
          name: "net",
          plugins: [{ type: "tenant-routing-wrapper", stateDir: "/state", ...plugin }]
        })
      )
    }
    this.facts.routes.set("192.0.2.2", "eth1").set("198.51.100.2", "eth1")
    this.facts.mainDefault = { 4: ["eth0"], 6: ["eth0"] }
    this.facts.setConf("all", "rp_filter", 0).setConf("eth1", "rp_filter", 2)
  }
  options(tenantsFile = true): DoctorOptions {
    return {
      ...DEFAULT_DOCTOR_OPTIONS,
      tenantsFile: tenantsFile ? join(this.root, "tenants.json") : undefined,
      defaultTenantsFile: join(this.root, "absent.json"),
      cniConfDir: join(this.root, "net.d"),
      cniBinDir: "/opt/cni/bin"
    }
  }
  layer() {
    return Layer.mergeAll(
      RoutingMemory.layer({ initial: STATE }),
      NetfilterMemory.layer(this.kernel, this.faults),
      AttachmentStoreMemory.layer(this.records, this.faults),
      NodeFactsMemory.layer(this.facts),
      AnnotationsMemory.layer(this.cluster, this.faults),
      NodeServices.layer
    )
  }
  run(options = this.options()) {
    return Effect.runPromise(doctor(options).pipe(Effect.provide(this.layer())))
  }
}

const find = (results: ReadonlyArray<CheckResult>, check: CheckResult["check"], subject?: string) =>
  results.find((r) => r.check === check && (subject === undefined || r.subject === subject))
const notOk = (results: ReadonlyArray<CheckResult>) => results.filter((r) => r.status !== "ok")

describe("doctor program on in-memory services", () => {
  it("a healthy node with a tagged pod: everything ok, and the table says so", async () => {
    const node = new Node("healthy", {})
    const a = { network: "net", containerId: "c1", ifname: "eth0" }
    node.records.byPath.set(
      "/state/net/c1/eth0.json",
      makeRecord(a, { name: "tenant-a", mark: 0x10 }, 0x30, ["10.200.0.2"], "nftables")
    )
    node.kernel.entries.nftables.push({
      ip: "10.200.0.2",
      family: 4,
      mark: 0x10,
      mask: 0x30,
      owner: ownerTag(a)
    })
    const report = await node.run()
    assert.deepStrictEqual(notOk(report.results), [])
    assert.strictEqual(
      find(report.results, "rp-filter", "eth1")?.reason,
      "loose (max(all=0, eth1=2) = 2); replies from 192.0.2.2, 198.51.100.2 pass"
    )
    assert.include(find(report.results, "stale-records")!.reason, "1 tagged attachments")
    assert.include(formatDoctor(report), "0 failures, 0 warnings")
  })

  it("tenants come from the conflist when there is no tenants file; its markMask must match the rules'", async () => {
    const node = new Node("conflist", { tenants: { blue: { mark: "0x10" } }, markMask: "0x30" })
    const report = await node.run(node.options(false))
    assert.strictEqual(report.source.kind, "conflist")
    assert.deepStrictEqual(
      report.source.tenants.map((t) => t.name),
      ["blue"]
    )
    assert.strictEqual(
      find(report.results, "tenant-rule", "blue")?.reason,
      "ipv4, ipv6: fwmark 0x10/0x30 lookup 100"
    )
    assert.strictEqual(
      find(report.results, "tenant-route", "blue")?.reason,
      "ipv4 default via 192.0.2.2 in table 100"
    )
    // Without markMask the plugin's mask is 0x10: the installed 0x10/0x30 rules do not match its marking.
    const narrow = new Node("conflist-narrow", { tenants: { blue: { mark: "0x10" } } })
    const r = find((await narrow.run(narrow.options(false))).results, "tenant-rule", "blue")!
    assert.strictEqual(r.status, "fail")
    assert.include(r.reason, 'found "fwmark 0x10/0x30 lookup 100"')
  })

  it("namespace reads with the conflist's kubeconfig: forbidden warns, or fails under strict", async () => {
    const node = new Node("api", { kubeconfig: "/etc/kubernetes/kubelet.conf" })
    node.cluster.forbidden.add("namespaces")
    assert.strictEqual(find((await node.run()).results, "namespace-read")?.status, "warn")
    const strict = new Node("api-strict", { kubeconfig: "/etc/kubernetes/kubelet.conf", pinning: "strict" })
    strict.cluster.forbidden.add("namespaces")
    assert.strictEqual(find((await strict.run()).results, "namespace-read")?.status, "fail")
    const missing = new Node("api-missing", { kubeconfig: "/etc/kubernetes/kubelet.conf" })
    missing.cluster.kubeconfig = "missing"
    assert.strictEqual(find((await missing.run()).results, "namespace-read")?.status, "fail")
    const fine = new Node("api-ok", { kubeconfig: "/etc/kubernetes/kubelet.conf" })
    assert.strictEqual(find((await fine.run()).results, "namespace-read")?.status, "ok")
    assert.strictEqual(fine.faults.count("api.namespaces"), 1)
  })

  it("an API that never answers is bounded by apiTimeout and reported, not waited for", async () => {
    const node = new Node("api-hang", { kubeconfig: "/etc/kubernetes/kubelet.conf", apiTimeout: "200ms" })
    node.faults.faults = [{ op: "api.namespaces", nth: 1, kind: "hang" }]
    const r = find((await node.run()).results, "namespace-read")!
    assert.strictEqual(r.status, "warn")
    assert.include(r.reason, "no answer within 200ms")
  })

  it("a fact that cannot be read is a warning, not an error of doctor", async () => {
    const node = new Node("broken", {})
    node.facts.failing.add("inventory").add("sysctl")
    node.faults.faults = [{ op: "netfilter.list", nth: 1, kind: "fail" }]
    const report = await node.run()
    assert.strictEqual(find(report.results, "mark-clash")?.status, "warn")
    assert.strictEqual(find(report.results, "rp-filter")?.status, "warn")
    assert.strictEqual(find(report.results, "stale-entries", "iptables")?.status, "warn")
    assert.isTrue(report.results.every((r) => r.status !== "fail"))
  })

  it("Cilium's status is asked for only when Cilium is present", async () => {
    const node = new Node("cilium", {})
    node.facts.failing.add("cilium")
    assert.isUndefined(find((await node.run()).results, "cilium-host-routing"))
    node.facts.files.add("/opt/cni/bin/cilium-cni")
    assert.strictEqual(find((await node.run()).results, "cilium-host-routing")?.status, "warn")
    node.facts.failing.delete("cilium")
    node.facts.cilium = { exitCode: 0, text: "Host Routing:   BPF\n" }
    assert.strictEqual(find((await node.run()).results, "cilium-host-routing")?.status, "fail")
  })
})

describe("doctor reads the CNI conf dir as libcni does", () => {
  const write = (node: Node, name: string, doc: unknown) =>
    writeFileSync(join(node.root, "net.d", name), typeof doc === "string" ? doc : JSON.stringify(doc))
  const single = (name: string) => ({
    cniVersion: "1.0.0",
    name,
    type: "tenant-routing-wrapper",
    stateDir: "/state"
  })

  it("a .conf holding a single plugin config is read as a list of one, with its own name", async () => {
    const node = new Node("conf-only", undefined)
    write(node, "10-tr.conf", single("from-conf"))
    const report = await node.run()
    assert.strictEqual(report.plugin?.conflist, join(node.root, "net.d", "10-tr.conf"))
    assert.strictEqual(report.plugin?.network, "from-conf")
  })

  it("files are taken in name order across .conf, .conflist and .json: the first with our plugin wins", async () => {
    const node = new Node("order", {})
    write(node, "05-tr.json", single("from-json"))
    write(node, "20-tr.conf", single("from-conf"))
    const report = await node.run()
    assert.strictEqual(report.plugin?.conflist, join(node.root, "net.d", "05-tr.json"))
    assert.strictEqual(report.plugin?.network, "from-json")
  })

  it("a single config without a type, and files with other extensions, are skipped", async () => {
    const node = new Node("skipped", {})
    const { type: _type, ...untyped } = single("untyped")
    write(node, "01-untyped.conf", untyped)
    write(node, "02-tr.conflist.bak", single("backup"))
    write(node, "03-tr.json.disabled", single("disabled"))
    const report = await node.run()
    assert.strictEqual(report.plugin?.conflist, join(node.root, "net.d", "10-tr.conflist"))
    assert.strictEqual(report.plugin?.network, "net")
  })
})

describe("doctor says file problems in words", () => {
  it("a --config file that does not exist fails the config check with what to do", async () => {
    const node = new Node("missing-config", {})
    const missing = join(node.root, "nope.json")
    const report = await node.run({ ...node.options(), tenantsFile: missing })
    const config = find(report.results, "config")
    assert.strictEqual(config?.status, "fail")
    assert.strictEqual(
      config?.reason,
      `tenants file ${missing} does not exist; pass --config FILE or create it`
    )
  })

  it("a --config that names a directory says so", async () => {
    const node = new Node("dir-config", {})
    const report = await node.run({ ...node.options(), tenantsFile: node.root })
    assert.strictEqual(
      find(report.results, "config")?.reason,
      `tenants file ${node.root} is a directory, not a file`
    )
  })
})

describe("doctor CLI usage", () => {
  it("unknown arguments exit 2 with the usage; --help exits 0", async () => {
    const out: Array<string> = []
    assert.strictEqual(
      await runCli(["doctor", "--bogus"], {
        stdout: (t) => void out.push(t),
        stderr: (t) => void out.push(t)
      }),
      2
    )
    assert.include(out.join(""), "tenant-routing doctor: Unrecognized flag: --bogus")
    assert.strictEqual(await runCli(["doctor", "--help"], { stdout: () => {}, stderr: () => {} }), 0)
    assert.strictEqual(await runCli(["doctor", "--config"], { stdout: () => {}, stderr: () => {} }), 2)
  })
})

describe("NodeFactsLinux parsers", () => {
  it("iptables-save: chains of every table and the bits MARK targets touch", () => {
    const save = [
      "# Generated by iptables-save v1.8.9 (nf_tables)",
      "*nat",
      ":PREROUTING ACCEPT [0:0]",
      ":KUBE-MARK-MASQ - [0:0]",
      "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
      "COMMIT",
      "*mangle",
      ":CILIUM_PRE_mangle - [0:0]",
      '-A CILIUM_PRE_mangle -m socket --transparent -m comment --comment "cilium: any->pod redirect proxied traffic to host proxy" -j MARK --set-xmark 0x200/0xffffffff',
      "-A CILIUM_PRE_mangle -j MARK --and-mark 0xfffff0ff",
      "COMMIT"
    ].join("\n")
    const parsed = parseIptablesSave("iptables", save)
    assert.deepStrictEqual(
      parsed.chains.map((c) => `${c.table}/${c.chain}`),
      ["nat/PREROUTING", "nat/KUBE-MARK-MASQ", "mangle/CILIUM_PRE_mangle"]
    )
    assert.deepStrictEqual(parsed.markSets, [
      { chain: "KUBE-MARK-MASQ", mark: 0x4000, mask: 0x4000 },
      { chain: "CILIUM_PRE_mangle", mark: 0x200, mask: 0xffffffff },
      { chain: "CILIUM_PRE_mangle", mark: 0, mask: 0xf00 }
    ])
  })

  it("nft -j list tables and ip -j route", () => {
    assert.deepStrictEqual(
      parseNftTables(
        '{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "kube-proxy", "handle": 3}}]}'
      ),
      [{ family: "ip", name: "kube-proxy" }]
    )
    assert.isUndefined(parseNftTables("not json"))
    assert.deepStrictEqual(
      parseRouteDevices(
        '[{"dst":"default","flags":[],"nexthops":[{"gateway":"198.51.100.2","dev":"v0","weight":1,"flags":[]},{"gateway":"198.51.100.3","dev":"v2","weight":1,"flags":[]}]},{"dst":"default","gateway":"203.0.113.254","dev":"v1","flags":["onlink"]}]'
      ),
      ["v0", "v2", "v1"]
    )
  })
})
