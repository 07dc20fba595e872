/**
 * `doctor` against the real kernel, inside a throwaway network namespace (`trw-doc-<random>`, deleted
 * in afterAll whatever happened): node-setup's program installs the rules and routes, then the real
 * CLI entry point (`runCli(["doctor", ...])`) runs with every live interpreter pointed into the namespace and its
 * paths (conflist, state directory, CNI binaries, cilium-dbg) in a temporary directory. The root
 * namespace's rules, routes and sysctls are never touched. Needs root, iproute2, iptables and nft.
 *
 * The namespace is a small node: `v0` reaches the tenant gateways, `v1` carries main's default
 * route, so strict reverse-path filtering really drops replies arriving on `v0` — the test asks the
 * kernel (`ip route get … iif v0`, which runs the input route lookup with its source validation) to
 * confirm what doctor warns about.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Layer, Result } from "effect"
import { type CliEnv, runCli } from "../bin/cli.ts"
import { Netfilter } from "../src/domain/datapath/Netfilter.ts"
import type { CheckResult } from "../src/domain/doctor/CheckResult.ts"
import { decodeNodeSetupConfig } from "../src/domain/node-setup/NodeSetupConfig.ts"
import * as NetfilterLive from "../src/interpreters/live/NetfilterLive.ts"
import * as NodeFactsLinux from "../src/interpreters/live/NodeFactsLinux.ts"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import { nodeSetup } from "../src/programs/nodeSetup.ts"
import { missingOf, skipLive } from "./support/liveGate.ts"

const canRun = !skipLive(
  "doctor in a throwaway network namespace",
  missingOf({ root: true, commands: ["ip", "iptables-save", "nft"] })
)

const ns = `trw-doc-${randomBytes(4).toString("hex")}`
const prefix = ["ip", "netns", "exec", ns]
const dir = mkdtempSync(join(tmpdir(), "trw-doc-"))
const paths = {
  tenants: join(dir, "tenants.json"),
  confDir: join(dir, "net.d"),
  binDir: join(dir, "bin"),
  stateDir: join(dir, "state"),
  ciliumDbg: join(dir, "bin", "cilium-dbg")
}

/** A command in the namespace, throwing on failure. */
const inNs = (...args: ReadonlyArray<string>): string =>
  execFileSync("ip", ["netns", "exec", ns, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
/** `ip route get` in the namespace: the route, or the kernel's refusal. */
const routeGet = (...args: ReadonlyArray<string>) => {
  const r = spawnSync("ip", ["-n", ns, "route", "get", ...args], { encoding: "utf8" })
  return r.status === 0 ? "accepted" : `refused: ${r.stderr.trim()}`
}
const rootSysctl = (key: string) => readFileSync(`/proc/sys/${key}`, "utf8").trim()

const TENANTS = {
  tenants: {
    "tenant-a": { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 },
    "tenant-b": { mark: "0x20", table: 200, gateways: ["198.51.100.2", "2001:db8::2"], priority: 1001 }
  }
}

const applyNodeSetup = () => {
  const config = decodeNodeSetupConfig(TENANTS)
  if (Result.isFailure(config)) throw new Error(JSON.stringify(config.failure))
  return Effect.runPromise(
    nodeSetup(config.success, { mode: "apply" }).pipe(
      Effect.provide(Layer.provideMerge(RoutingIproute2.layer({ netns: ns }), NodeServices.layer))
    )
  )
}

const env = (out: Array<string>): CliEnv => ({
  doctorOptions: {
    cniConfDir: paths.confDir,
    cniBinDir: paths.binDir,
    defaultTenantsFile: join(dir, "absent.json")
  },
  routing: RoutingIproute2.layer({ netns: ns }),
  netfilter: NetfilterLive.layer({ prefix }),
  nodeFacts: NodeFactsLinux.layer({ prefix, ciliumDbg: paths.ciliumDbg }),
  stdout: (text) => void out.push(text),
  stderr: (text) => void out.push(text)
})

interface Run {
  readonly code: number
  readonly checks: ReadonlyArray<CheckResult>
}

const doctorJson = async (): Promise<Run> => {
  const out: Array<string> = []
  const code = await runCli(["doctor", "--config", paths.tenants, "--json"], env(out))
  return { code, checks: (JSON.parse(out.join("")) as { checks: ReadonlyArray<CheckResult> }).checks }
}
const find = (run: Run, check: CheckResult["check"], subject: string) =>
  run.checks.find((c) => c.check === check && c.subject === subject)
const notOk = (run: Run) => run.checks.filter((c) => c.status !== "ok")

describe.skipIf(!canRun)(`doctor in a throwaway network namespace (${ns})`, () => {
  beforeAll(async () => {
    execFileSync("ip", ["netns", "add", ns])
    inNs("ip", "link", "set", "lo", "up")
    inNs("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    inNs("ip", "link", "set", "v0", "up")
    inNs("ip", "link", "set", "v1", "up")
    inNs("ip", "addr", "add", "192.0.2.1/24", "dev", "v0")
    inNs("ip", "addr", "add", "198.51.100.1/24", "dev", "v0")
    inNs("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "v0", "nodad")
    inNs("ip", "addr", "add", "203.0.113.1/24", "dev", "v1")
    inNs("ip", "route", "add", "default", "via", "203.0.113.254", "dev", "v1")
    mkdirSync(paths.confDir, { recursive: true })
    mkdirSync(paths.binDir, { recursive: true })
    mkdirSync(join(paths.stateDir, "tenant-routing"), { recursive: true })
    writeFileSync(paths.tenants, JSON.stringify(TENANTS))
    writeFileSync(
      join(paths.confDir, "10-tenant-routing.conflist"),
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "tenant-routing",
        plugins: [
          {
            type: "tenant-routing-wrapper",
            stateDir: paths.stateDir,
            delegate: { type: "ptp", ipam: { type: "host-local", subnet: "10.200.0.0/16" } }
          }
        ]
      })
    )
    await applyNodeSetup()
  })

  afterAll(() => {
    spawnSync("ip", ["netns", "del", ns])
    rmSync(dir, { recursive: true, force: true })
  })

  it("after node-setup every check is ok and doctor exits 0", async () => {
    const run = await doctorJson()
    assert.deepStrictEqual(notOk(run), [])
    assert.strictEqual(run.code, 0)
    assert.strictEqual(
      find(run, "tenant-route", "tenant-b/ipv6")?.reason,
      "default via 2001:db8::2 in table 200"
    )
    assert.strictEqual(find(run, "rp-filter", "v0")?.status, "ok")
    const out: Array<string> = []
    assert.strictEqual(await runCli(["doctor", "--config", paths.tenants], env(out)), 0)
    assert.include(out.join(""), "0 failures, 0 warnings")
  })

  it("a deleted rule fails, naming the tenant and family; node-setup repairs it", async () => {
    inNs("ip", "-4", "rule", "del", "priority", "1000", "fwmark", "0x10/0x30", "lookup", "100")
    const run = await doctorJson()
    assert.strictEqual(run.code, 1)
    assert.deepStrictEqual(
      notOk(run).map((c) => [c.check, c.subject, c.status]),
      [["tenant-rule", "tenant-a/ipv4", "fail"]]
    )
    assert.include(
      find(run, "tenant-rule", "tenant-a/ipv4")!.reason,
      'no ip rule "fwmark 0x10/0x30 lookup 100"'
    )
    await applyNodeSetup()
    assert.strictEqual((await doctorJson()).code, 0)
  })

  it("a deleted gateway route fails for its tenant", async () => {
    inNs("ip", "-6", "route", "del", "default", "via", "2001:db8::2", "table", "200")
    const run = await doctorJson()
    assert.strictEqual(run.code, 1)
    assert.deepStrictEqual(
      notOk(run).map((c) => [c.check, c.subject]),
      [["tenant-route", "tenant-b/ipv6"]]
    )
    await applyNodeSetup()
  })

  it("strict rp_filter in the namespace warns with the sysctl to set, and the kernel agrees", async () => {
    const rootBefore = rootSysctl("net/ipv4/conf/all/rp_filter")
    const reply = ["192.0.2.1", "from", "198.18.0.9", "iif", "v0"]
    try {
      inNs("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
      const run = await doctorJson()
      assert.strictEqual(run.code, 0)
      const rp = find(run, "rp-filter", "v0")!
      assert.strictEqual(rp.status, "warn")
      assert.include(rp.reason, "max(all=1, v0=0) = 1")
      assert.include(rp.reason, "main's default route (v1)")
      assert.include(rp.hint, "sysctl -w net.ipv4.conf.all.rp_filter=2")
      // What doctor says, from the kernel's own source validation: an unmarked reply on v0 is
      // refused; src_valid_mark=1 does not change that for an unmarked reply (only a marked one,
      // which this plugin's replies never are, would pass).
      assert.match(routeGet(...reply), /^refused/)
      inNs("sysctl", "-qw", "net.ipv4.conf.all.src_valid_mark=1")
      assert.match(routeGet(...reply), /^refused/)
      assert.strictEqual(routeGet(...reply, "mark", "0x10"), "accepted")
      inNs("sysctl", "-qw", "net.ipv4.conf.all.src_valid_mark=0")
      // The hint's fix: loose mode.
      inNs("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2")
      assert.strictEqual(routeGet(...reply), "accepted")
      assert.strictEqual(find(await doctorJson(), "rp-filter", "v0")?.status, "ok")
      // Strict on the interface itself, loose on all: the max is loose.
      inNs("sysctl", "-qw", "net.ipv4.conf.v0.rp_filter=1")
      assert.strictEqual(find(await doctorJson(), "rp-filter", "v0")?.status, "ok")
      inNs("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
      const own = find(await doctorJson(), "rp-filter", "v0")!
      assert.strictEqual(own.status, "warn")
      assert.include(own.hint, "sysctl -w net.ipv4.conf.v0.rp_filter=2")
    } finally {
      inNs("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
      inNs("sysctl", "-qw", "net.ipv4.conf.v0.rp_filter=0")
      inNs("sysctl", "-qw", "net.ipv4.conf.all.src_valid_mark=0")
    }
    assert.strictEqual(rootSysctl("net/ipv4/conf/all/rp_filter"), rootBefore)
  })

  it("a KUBE-MARK chain is detected; it clashes only when its bit is inside markMask", async () => {
    try {
      inNs("iptables", "-t", "nat", "-N", "KUBE-MARK-MASQ")
      inNs("iptables", "-t", "nat", "-A", "KUBE-MARK-MASQ", "-j", "MARK", "--or-mark", "0x4000")
      const run = await doctorJson()
      const kube = find(run, "mark-clash", "kubernetes")!
      assert.strictEqual(kube.status, "ok")
      assert.include(kube.reason, "chain KUBE-MARK-MASQ (iptables nat)")
      // A kube-proxy started with --iptables-masquerade-bit=4 uses 0x10: tenant-a's mark.
      inNs("iptables", "-t", "nat", "-F", "KUBE-MARK-MASQ")
      inNs("iptables", "-t", "nat", "-A", "KUBE-MARK-MASQ", "-j", "MARK", "--set-xmark", "0x10/0x10")
      const clash = await doctorJson()
      const warned = find(clash, "mark-clash", "kubernetes")!
      assert.strictEqual(warned.status, "warn")
      assert.include(warned.reason, "overlaps 0xc010 in 0x10 (tenant-a 0x10)")
      assert.strictEqual(clash.code, 0)
    } finally {
      spawnSync("ip", ["netns", "exec", ns, "iptables", "-t", "nat", "-F", "KUBE-MARK-MASQ"])
      spawnSync("ip", ["netns", "exec", ns, "iptables", "-t", "nat", "-X", "KUBE-MARK-MASQ"])
    }
  })

  it("Cilium: its chain is detected and cilium-dbg's host routing mode is judged", async () => {
    try {
      inNs("iptables", "-t", "mangle", "-N", "CILIUM_PRE_mangle")
      const unknown = await doctorJson()
      assert.strictEqual(find(unknown, "cilium-host-routing", "")?.status, "warn")
      assert.strictEqual(find(unknown, "mark-clash", "cilium/identity")?.status, "warn")
      assert.strictEqual(find(unknown, "mark-clash", "cilium/magic")?.status, "ok")
      writeFileSync(paths.ciliumDbg, "#!/bin/sh\necho 'Routing:   Network: Tunnel [vxlan]   Host: BPF'\n")
      chmodSync(paths.ciliumDbg, 0o755)
      const bpf = await doctorJson()
      assert.strictEqual(find(bpf, "cilium-host-routing", "")?.status, "fail")
      assert.strictEqual(bpf.code, 1)
      writeFileSync(paths.ciliumDbg, "#!/bin/sh\necho 'Host Routing:            Legacy'\n")
      assert.strictEqual(find(await doctorJson(), "cilium-host-routing", "")?.status, "ok")
    } finally {
      rmSync(paths.ciliumDbg, { force: true })
      spawnSync("ip", ["netns", "exec", ns, "iptables", "-t", "mangle", "-X", "CILIUM_PRE_mangle"])
    }
  })

  it("entries in the kernel and records on disk: stale ones on either side are found", async () => {
    const withNf = <A>(f: (nf: Netfilter["Service"]) => Effect.Effect<A, unknown>) =>
      Effect.runPromise(Effect.flatMap(Netfilter, f).pipe(Effect.provide(NetfilterLive.layer({ prefix }))))
    const entry = {
      ip: "10.200.0.9",
      family: 4 as const,
      mark: 0x10,
      mask: 0x30,
      owner: "tenant-routing/c9/eth0"
    }
    const recordOf = (containerId: string, ip: string) => ({
      owner: `tenant-routing/${containerId}/eth0`,
      tag: `tenant-routing/${containerId}/eth0`,
      network: "tenant-routing",
      containerId,
      ifname: "eth0",
      tenant: "tenant-a",
      mark: 0x10,
      mask: 0x30,
      ips: [ip],
      backend: "nftables"
    })
    const writeRecord = (containerId: string, ip: string) => {
      mkdirSync(join(paths.stateDir, "tenant-routing", containerId), { recursive: true })
      writeFileSync(
        join(paths.stateDir, "tenant-routing", containerId, "eth0.json"),
        JSON.stringify(recordOf(containerId, ip))
      )
    }
    try {
      await withNf((nf) => nf.apply("nftables", { remove: [], add: [entry] }))
      writeRecord("c8", "10.200.0.8")
      const run = await doctorJson()
      assert.strictEqual(find(run, "stale-entries", "")?.status, "warn")
      assert.include(
        find(run, "stale-entries", "")!.reason,
        "nftables 10.200.0.9 0x10 tenant-routing/c9/eth0"
      )
      assert.strictEqual(find(run, "stale-records", "")?.status, "fail")
      assert.include(find(run, "stale-records", "")!.reason, "tenant-routing/c8/eth0 10.200.0.8")
      assert.strictEqual(run.code, 1)
      // The entry's own record makes it current; the record without an entry stays a failure.
      writeRecord("c9", "10.200.0.9")
      rmSync(join(paths.stateDir, "tenant-routing", "c8"), { recursive: true })
      const fixed = await doctorJson()
      assert.deepStrictEqual(notOk(fixed), [])
      assert.include(find(fixed, "stale-records", "")!.reason, "1 tagged attachments")
    } finally {
      await withNf((nf) =>
        Effect.flatMap(nf.list("nftables"), (all) => nf.apply("nftables", { remove: all, add: [] }))
      )
      rmSync(join(paths.stateDir, "tenant-routing"), { recursive: true, force: true })
    }
  })
})
