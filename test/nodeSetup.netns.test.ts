/**
 * node-setup against the real kernel, through the live iproute2 interpreter, inside a throwaway
 * network namespace (`trw-ns-<random>`), so nothing in the root namespace changes. Needs root and
 * iproute2; skipped otherwise. The namespace is deleted in afterAll whatever happened.
 *
 * The gateways sit on a veth pair inside the namespace (lo cannot carry IPv6 next hops, and the kernel
 * may lack the dummy driver). Checks read `ip -j` directly, not through the interpreter under test.
 */

import { execFileSync, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Layer, Result } from "effect"
import { type CliEnv, runCli } from "../bin/cli.ts"
import { decodeNodeSetupConfig, type NodeSetupConfig } from "../src/domain/node-setup/NodeSetupConfig.ts"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import { type NodeSetupOptions, nodeSetup } from "../src/programs/nodeSetup.ts"
import { missingOf, skipLive } from "./support/liveGate.ts"

const runNodeSetup = (argv: ReadonlyArray<string>, env: CliEnv) => runCli(["node-setup", ...argv], env)

const canRun = !skipLive(
  "node-setup in a throwaway network namespace",
  missingOf({ root: true, commands: ["ip"] })
)
const ns = `trw-ns-${randomBytes(4).toString("hex")}`

/** `ip -n NS ...`, throwing on failure (for setup steps). */
const ipNs = (...args: ReadonlyArray<string>): string =>
  execFileSync("ip", ["-n", ns, ...args], { encoding: "utf8" })

/** `ip -n NS -j ...` parsed; a table that was never created reads as empty. */
const show = (...args: ReadonlyArray<string>): Array<Record<string, unknown>> => {
  // Rules with -N: tables by number, whatever the host's rt_tables names them.
  const numeric = args.includes("rule") ? ["-N"] : []
  const r = spawnSync("ip", ["-n", ns, "-j", ...numeric, ...args], { encoding: "utf8" })
  if (r.status !== 0) {
    if (r.stderr.includes("FIB table does not exist")) return []
    throw new Error(`ip ${args.join(" ")}: ${r.stderr}`)
  }
  // Our protocol by number, whether or not the host's rt_protos.d names it.
  return (JSON.parse(r.stdout) as Array<Record<string, unknown>>).map((e) =>
    e.protocol === "tenant-routing" ? { ...e, protocol: "158" } : e
  )
}

/** Everything the tests look at: rules of both families and the routes of the given tables. */
const kernelState = (tables: ReadonlyArray<number>) => ({
  rules4: show("-4", "rule", "show"),
  rules6: show("-6", "rule", "show"),
  routes: Object.fromEntries(
    tables.flatMap((t) => [
      [`4/${t}`, show("-4", "route", "show", "table", String(t))],
      [`6/${t}`, show("-6", "route", "show", "table", String(t))]
    ])
  )
})

const has = (list: ReadonlyArray<Record<string, unknown>>, want: Record<string, unknown>) =>
  list.some((item) => Object.entries(want).every(([k, v]) => JSON.stringify(item[k]) === JSON.stringify(v)))

const decodeOk = (wire: unknown): NodeSetupConfig => {
  const r = decodeNodeSetupConfig(wire)
  if (Result.isFailure(r)) throw new Error(JSON.stringify(r.failure))
  return r.success
}

const live = Layer.provideMerge(RoutingIproute2.layer({ netns: ns }), NodeServices.layer)
const runLive = (config: NodeSetupConfig | undefined, options: NodeSetupOptions) =>
  Effect.runPromise(nodeSetup(config, options).pipe(Effect.provide(live)))

const example = {
  tenants: {
    "tenant-a": { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 },
    "tenant-b": {
      mark: "0x20",
      table: 200,
      gateways: ["198.51.100.2", "198.51.100.3", "2001:db8::2"],
      priority: 1001
    }
  }
}

describe.skipIf(!canRun)(`node-setup in a throwaway network namespace (${ns})`, () => {
  beforeAll(() => {
    execFileSync("ip", ["netns", "add", ns])
    ipNs("link", "set", "lo", "up")
    ipNs("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ipNs("link", "set", "v0", "up")
    ipNs("link", "set", "v1", "up")
    ipNs("addr", "add", "192.0.2.1/24", "dev", "v0")
    ipNs("addr", "add", "198.51.100.1/24", "dev", "v0")
    ipNs("-6", "addr", "add", "2001:db8::1/64", "dev", "v0", "nodad")
  })

  afterAll(() => {
    spawnSync("ip", ["netns", "del", ns])
  })

  it("apply installs what §6 says, apply again makes 0 changes, remove restores and spares foreign entries", async () => {
    // Foreign entries at our priorities and in our tables, added by hand.
    ipNs("-4", "rule", "add", "priority", "1000", "from", "10.1.0.0/16", "lookup", "300")
    ipNs("-6", "rule", "add", "priority", "999", "lookup", "300")
    ipNs("-4", "route", "add", "10.0.0.0/8", "via", "192.0.2.9", "table", "100")
    ipNs("-4", "route", "add", "blackhole", "203.0.113.0/24", "table", "200")
    const initial = kernelState([100, 200])
    const config = decodeOk(example)

    const first = await runLive(config, { mode: "apply" })
    assert.strictEqual(first.changes, 13)
    const after = kernelState([100, 200])
    for (const rules of [after.rules4, after.rules6]) {
      assert.isTrue(has(rules, { priority: 999, table: "254", suppress_prefixlen: 0, protocol: "158" }))
      assert.isTrue(
        has(rules, { priority: 1000, fwmark: "0x10", fwmask: "0x30", table: "100", protocol: "158" })
      )
      assert.isTrue(
        has(rules, { priority: 1001, fwmark: "0x20", fwmask: "0x30", table: "200", protocol: "158" })
      )
    }
    const unreachable = { type: "unreachable", dst: "default", metric: 4294967295, protocol: "158" }
    assert.isTrue(has(after.routes["4/100"]!, { dst: "default", gateway: "192.0.2.2", protocol: "158" }))
    assert.isTrue(has(after.routes["4/100"]!, unreachable))
    assert.isTrue(has(after.routes["6/100"]!, unreachable))
    assert.isTrue(
      has(after.routes["4/200"]!, {
        dst: "default",
        nexthops: [
          { gateway: "198.51.100.2", dev: "v0", weight: 1, flags: [] },
          { gateway: "198.51.100.3", dev: "v0", weight: 1, flags: [] }
        ]
      })
    )
    assert.isTrue(has(after.routes["4/200"]!, unreachable))
    assert.isTrue(has(after.routes["6/200"]!, { dst: "default", gateway: "2001:db8::2", metric: 1024 }))
    assert.isTrue(has(after.routes["6/200"]!, unreachable))
    assert.include(first.foreign, "ip -4 rule priority 1000 lookup 300 from 10.1.0.0/16")
    assert.include(first.foreign, "ip -4 route 10.0.0.0/8 via 192.0.2.9 table 100")

    const second = await runLive(config, { mode: "apply" })
    assert.strictEqual(second.changes, 0)
    assert.deepStrictEqual(kernelState([100, 200]), after)
    assert.strictEqual((await runLive(config, { mode: "remove", dryRun: true })).changes, 13)
    assert.deepStrictEqual(kernelState([100, 200]), after)

    const removed = await runLive(config, { mode: "remove" })
    assert.strictEqual(removed.changes, 13)
    assert.deepStrictEqual(removed.blocked, [])
    assert.deepStrictEqual(kernelState([100, 200]), initial)
    assert.strictEqual((await runLive(config, { mode: "remove" })).changes, 0)

    ipNs("-4", "rule", "del", "priority", "1000", "from", "10.1.0.0/16", "lookup", "300")
    ipNs("-6", "rule", "del", "priority", "999", "lookup", "300")
    ipNs("-4", "route", "flush", "table", "100")
    ipNs("-4", "route", "flush", "table", "200")
  })

  it("a changed gateway replaces our default route in place; another metric is left alone", async () => {
    const config = decodeOk(example)
    await runLive(config, { mode: "apply" })
    const moved = decodeOk({
      tenants: {
        ...example.tenants,
        "tenant-a": { ...example.tenants["tenant-a"], gateways: ["198.51.100.7"] }
      }
    })
    ipNs("-4", "route", "add", "default", "via", "192.0.2.8", "table", "100", "metric", "7")
    const report = await runLive(moved, { mode: "apply" })
    assert.deepStrictEqual(report.lines, ["ip -4 route replace default via 198.51.100.7 table 100 proto 158"])
    const routes = show("-4", "route", "show", "table", "100")
    assert.isTrue(has(routes, { dst: "default", gateway: "198.51.100.7", protocol: "158" }))
    assert.isTrue(has(routes, { dst: "default", gateway: "192.0.2.8", metric: 7 }))
    assert.isFalse(has(routes, { dst: "default", gateway: "192.0.2.2" }))
    await runLive(moved, { mode: "remove" })
    assert.deepStrictEqual(show("-4", "route", "show", "table", "100"), [
      { dst: "default", gateway: "192.0.2.8", dev: "v0", metric: 7, flags: [] }
    ])
    ipNs("-4", "route", "flush", "table", "100")
  })

  it("a tenant dropped from the file goes on the next apply; --remove after the file changed removes all ours; a foreign rule at the same priority survives", async () => {
    // Foreign: tenant-b's exact selector at its priority, but another protocol (static).
    ipNs(
      "-4",
      "rule",
      "add",
      "priority",
      "1001",
      "fwmark",
      "0x20/0x30",
      "lookup",
      "200",
      "protocol",
      "static"
    )
    const initial = kernelState([100, 200])
    await runLive(decodeOk(example), { mode: "apply" })
    const onlyA = decodeOk({ markMask: "0x30", tenants: { "tenant-a": example.tenants["tenant-a"] } })
    const dropped = await runLive(onlyA, { mode: "apply" })
    assert.strictEqual(dropped.changes, 6)
    const after = kernelState([100, 200])
    for (const rules of [after.rules4, after.rules6])
      assert.isFalse(has(rules, { priority: 1001, fwmark: "0x20", protocol: "158" }))
    assert.isTrue(
      has(after.rules4, { priority: 1001, fwmark: "0x20", fwmask: "0x30", table: "200", protocol: "4" })
    )
    assert.deepStrictEqual(after.routes["4/200"], [])
    assert.deepStrictEqual(after.routes["6/200"], [])
    assert.isTrue(has(after.routes["4/100"]!, { dst: "default", gateway: "192.0.2.2", protocol: "158" }))
    assert.include(dropped.foreign, "ip -4 rule priority 1001 fwmark 0x20/0x30 lookup 200 protocol 4")

    // The file changes again (tenant-a renumbered, tenant-b back) without an apply; remove still
    // finds everything by its tag: tenant-a's entries from the apply before.
    const changed = decodeOk({
      tenants: {
        "tenant-a": { ...example.tenants["tenant-a"], table: 300, priority: 2000 },
        "tenant-b": example.tenants["tenant-b"]
      }
    })
    const removed = await runLive(changed, { mode: "remove" })
    assert.strictEqual(removed.changes, 7)
    assert.deepStrictEqual(removed.blocked, [])
    assert.deepStrictEqual(kernelState([100, 200]), initial)
    ipNs(
      "-4",
      "rule",
      "del",
      "priority",
      "1001",
      "fwmark",
      "0x20/0x30",
      "lookup",
      "200",
      "protocol",
      "static"
    )
  })

  it("the previous version's untagged rules and routes are adopted by one apply, then removed by tag", async () => {
    const initial = kernelState([100, 200])
    // What the previous version ran for tenant-a alone: no protocol anywhere.
    ipNs("-4", "route", "add", "unreachable", "default", "table", "100", "metric", "4294967295")
    ipNs("-6", "route", "add", "unreachable", "default", "table", "100", "metric", "4294967295")
    ipNs("-4", "route", "add", "default", "via", "192.0.2.2", "table", "100")
    for (const f of ["-4", "-6"]) {
      ipNs(f, "rule", "add", "priority", "999", "lookup", "main", "suppress_prefixlength", "0")
      ipNs(f, "rule", "add", "priority", "1000", "fwmark", "0x10/0x10", "lookup", "100")
    }
    const onlyA = decodeOk({ tenants: { "tenant-a": example.tenants["tenant-a"] } })
    const adopted = await runLive(onlyA, { mode: "apply" })
    // 3 routes replaced in place, 4 rules added tagged, then their 4 untagged copies deleted.
    assert.strictEqual(adopted.changes, 11)
    const after = kernelState([100])
    for (const rules of [after.rules4, after.rules6]) {
      assert.strictEqual(rules.filter((r) => r.priority === 1000 || r.priority === 999).length, 2)
      assert.isTrue(has(rules, { priority: 1000, fwmark: "0x10", fwmask: "0x10", protocol: "158" }))
    }
    assert.isTrue(after.routes["4/100"]!.every((r) => r.protocol === "158"))
    assert.strictEqual(after.routes["4/100"]!.length, 2)
    assert.strictEqual((await runLive(onlyA, { mode: "apply" })).changes, 0)
    await runLive(undefined, { mode: "remove" })
    assert.deepStrictEqual(kernelState([100, 200]), initial)
  })

  it("remove deletes ours by its protocol even when a foreign rule with the same fields and an iif is listed first", async () => {
    const config = decodeOk(example)
    // Same priority, mark and table as ours plus an iif, untagged: a delete without our protocol would hit it.
    ipNs("-4", "rule", "add", "priority", "1000", "iif", "lo", "fwmark", "0x10/0x30", "lookup", "100")
    const initial = kernelState([100, 200])
    await runLive(config, { mode: "apply" })
    const removed = await runLive(config, { mode: "remove" })
    assert.deepStrictEqual(removed.blocked, [])
    assert.strictEqual(removed.changes, 13)
    assert.deepStrictEqual(kernelState([100, 200]), initial)
    ipNs("-4", "rule", "del", "priority", "1000", "iif", "lo", "fwmark", "0x10/0x30", "lookup", "100")
  })

  it("edge values through the CLI: priorities 2 (suppress rule at 1) and 32766, table 4294967295, IPv6 multipath, rt_tables", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trw-netns-"))
    try {
      const file = join(dir, "tenants.json")
      const rtTables = join(dir, "rt_tables")
      writeFileSync(
        file,
        JSON.stringify({
          markMask: "0x1fff",
          tenants: {
            low: { mark: "0x1", table: 1, gateways: ["2001:db8::3", "2001:DB8::4"], priority: 2 },
            high: {
              mark: "0x1000",
              table: 4294967295,
              tableName: "edge-high",
              gateways: ["192.0.2.2"],
              priority: 32766
            }
          }
        })
      )
      const initial = kernelState([1, 4294967295])
      const out: Array<string> = []
      const env = {
        routing: RoutingIproute2.layer({ netns: ns }),
        rtTablesPath: rtTables,
        stdout: (t: string) => void out.push(t),
        stderr: (t: string) => void out.push("stderr: " + t)
      }
      assert.strictEqual(await runNodeSetup(["--config", file, "--write-rt-tables"], env), 0, out.join(""))
      const rules4 = show("-4", "rule", "show")
      assert.isTrue(has(rules4, { priority: 1, table: "254", suppress_prefixlen: 0 }))
      assert.isTrue(has(rules4, { priority: 2, fwmark: "0x1", fwmask: "0x1fff", table: "1" }))
      assert.isTrue(has(rules4, { priority: 32766, fwmark: "0x1000", fwmask: "0x1fff", table: "4294967295" }))
      assert.isTrue(
        has(show("-6", "route", "show", "table", "1"), {
          dst: "default",
          metric: 1024,
          nexthops: [
            { gateway: "2001:db8::3", dev: "v0", weight: 1, flags: [] },
            { gateway: "2001:db8::4", dev: "v0", weight: 1, flags: [] }
          ]
        })
      )
      assert.include(readFileSync(rtTables, "utf8"), "4294967295\tedge-high\n")
      // Beside the rt_tables given, never in /etc.
      assert.include(
        readFileSync(join(dir, "rt_protos.d", "tenant-routing.conf"), "utf8"),
        "158\ttenant-routing\n"
      )
      assert.strictEqual(await runNodeSetup(["--config", file, "--write-rt-tables"], env), 0)
      assert.match(out.at(-1)!, /^apply: 0 changes\n/)
      // The kernel's own `lookup local` rule at 0 is not at any of our priorities, so it is never
      // reported (its `lookup main` at 32766 is, being at tenant high's priority).
      assert.notMatch(out.at(-1)!, /priority 0 /)
      assert.notInclude(out.at(-1)!, "lookup local")
      assert.strictEqual(await runNodeSetup(["--config", file, "--remove", "--write-rt-tables"], env), 0)
      assert.match(out.at(-1)!, /^remove: 15 changes\n/)
      assert.deepStrictEqual(kernelState([1, 4294967295]), initial)
      assert.notInclude(readFileSync(rtTables, "utf8"), "edge-high")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("a kernel refusal exits 1 with ip's message", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trw-netns-"))
    try {
      const file = join(dir, "tenants.json")
      // 203.0.113.2 is on no link in the namespace: the kernel refuses the route.
      writeFileSync(
        file,
        JSON.stringify({
          tenants: { a: { mark: 16, table: 100, gateways: ["203.0.113.2"], priority: 1000 } }
        })
      )
      const err: Array<string> = []
      const env = {
        routing: RoutingIproute2.layer({ netns: ns }),
        stdout: () => undefined,
        stderr: (t: string) => void err.push(t)
      }
      assert.strictEqual(await runNodeSetup(["--config", file], env), 1)
      assert.match(
        err.join(""),
        /ip -n trw-ns-\w+ -4 route add default via 203\.0\.113\.2 table 100 proto 158: .*(invalid gateway|unreachable|no route)/i
      )
      // What it did install (unreachable routes only, no rule) comes out again with remove.
      assert.strictEqual(await runNodeSetup(["--config", file, "--remove"], env), 0)
      assert.deepStrictEqual(show("-4", "route", "show", "table", "100"), [])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
