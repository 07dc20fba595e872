/**
 * The tenants file of node-setup: every invalid file is refused with the offending field named, valid
 * files decode to canonical values, and the CLI exits 2 without touching routing. Also checks that
 * `scripts/tenant-routing-setup.sh` writes a file this decoder accepts.
 */

import { execFileSync } from "node:child_process"
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import { type CliEnv, runCli } from "../bin/cli.ts"
import { formatIssues, type Issue } from "../src/domain/decode/Issue.ts"
import { canonicalIp } from "../src/domain/net/Ip.ts"
import { decodeNodeSetupConfig, decodeNodeSetupConfigJson } from "../src/domain/node-setup/NodeSetupConfig.ts"
import * as RoutingMemory from "../src/interpreters/memory/RoutingMemory.ts"

const runNodeSetup = (argv: ReadonlyArray<string>, env: CliEnv) => runCli(["node-setup", ...argv], env)

const tenant = (overrides: Record<string, unknown> = {}) => ({
  mark: "0x10",
  table: 100,
  gateways: ["192.0.2.2"],
  priority: 1000,
  ...overrides
})
const withTenant = (overrides: Record<string, unknown>) => ({ tenants: { a: tenant(overrides) } })

const issuesOf = (input: unknown): ReadonlyArray<Issue> => {
  const r = decodeNodeSetupConfig(input)
  return Result.isFailure(r) ? r.failure : []
}

const invalid: ReadonlyArray<readonly [string, unknown, string]> = [
  ["mark 0", withTenant({ mark: 0 }), "tenants.a.mark"],
  ["mark not a literal", withTenant({ mark: "ten" }), "tenants.a.mark"],
  ["mark over 32 bits", withTenant({ mark: "0x100000000" }), "tenants.a.mark"],
  ["mark a float", withTenant({ mark: 1.5 }), "tenants.a.mark"],
  ["mark on kube-proxy's bits", withTenant({ mark: "0x4000" }), "tenants.a.mark"],
  ["mark on portmap's bit", withTenant({ mark: 0x2000 }), "tenants.a.mark"],
  ["mark outside markMask", { markMask: "0x30", tenants: { a: tenant({ mark: "0x40" }) } }, "tenants.a.mark"],
  ["markMask on reserved bits", { markMask: "0xf030", tenants: { a: tenant() } }, "markMask"],
  ["markMask of the wrong type", { markMask: true, tenants: { a: tenant() } }, "markMask"],
  ["two tenants with one mark", { tenants: { a: tenant(), b: tenant({ table: 200 }) } }, "tenants.b.mark"],
  [
    "two tenants with one table",
    { tenants: { a: tenant(), b: tenant({ mark: "0x20" }) } },
    "tenants.b.table"
  ],
  ["table 0", withTenant({ table: 0 }), "tenants.a.table"],
  ["table 253 (default)", withTenant({ table: 253 }), "tenants.a.table"],
  ["table 254 (main)", withTenant({ table: 254 }), "tenants.a.table"],
  ["table 255 (local)", withTenant({ table: 255 }), "tenants.a.table"],
  ["table over 32 bits", withTenant({ table: 4294967296 }), "tenants.a.table"],
  ["table as a string", withTenant({ table: "100" }), "tenants.a.table"],
  ["priority 0", withTenant({ priority: 0 }), "tenants.a.priority"],
  ["priority 32767", withTenant({ priority: 32767 }), "tenants.a.priority"],
  [
    "priority 1 (the suppress rule would sit at 0, beside lookup local)",
    withTenant({ priority: 1 }),
    "tenants.a.priority"
  ],
  [
    "two tenants with one priority",
    { tenants: { a: tenant(), b: tenant({ mark: "0x20", table: 200 }) } },
    "tenants.b.priority"
  ],
  ["priority a float", withTenant({ priority: 10.5 }), "tenants.a.priority"],
  ["priority missing", { tenants: { a: { mark: "0x10", table: 100, gateways: [] } } }, "tenants.a.priority"],
  ["gateway not an address", withTenant({ gateways: ["192.0.2.2", "gw1"] }), "tenants.a.gateways[1]"],
  ["gateway with an octet over 255", withTenant({ gateways: ["256.1.1.1"] }), "tenants.a.gateways[0]"],
  ["gateway with leading zeros", withTenant({ gateways: ["192.0.2.02"] }), "tenants.a.gateways[0]"],
  ["gateway with three octets", withTenant({ gateways: ["192.0.2"] }), "tenants.a.gateways[0]"],
  ["IPv6 gateway with two ::", withTenant({ gateways: ["2001::db8::1"] }), "tenants.a.gateways[0]"],
  ["IPv6 gateway with a zone", withTenant({ gateways: ["2001:db8::1%eth0"] }), "tenants.a.gateways[0]"],
  ["link-local IPv6 gateway", withTenant({ gateways: ["fe80::1"] }), "tenants.a.gateways[0]"],
  ["loopback gateway", withTenant({ gateways: ["127.0.0.1"] }), "tenants.a.gateways[0]"],
  ["multicast gateway", withTenant({ gateways: ["ff02::1"] }), "tenants.a.gateways[0]"],
  ["unspecified gateway", withTenant({ gateways: ["::"] }), "tenants.a.gateways[0]"],
  ["gateways not a list", withTenant({ gateways: "192.0.2.2" }), "tenants.a.gateways"],
  ["tenant name not a DNS label", { tenants: { Tenant_A: tenant() } }, "tenants.Tenant_A"],
  ["misspelt key", withTenant({ gatway: ["192.0.2.2"] }), "tenants.a.gatway"],
  ["tableName reserved", withTenant({ tableName: "main" }), "tenants.a.tableName"],
  ["tableName numeric", withTenant({ tableName: "100" }), "tenants.a.tableName"],
  ["tableName with a space", withTenant({ tableName: "my table" }), "tenants.a.tableName"],
  [
    "two tenants with one tableName",
    { tenants: { a: tenant({ tableName: "x" }), b: tenant({ mark: 32, table: 2, tableName: "x" }) } },
    "tenants.b.tableName"
  ],
  ["no tenants", { tenants: {} }, "tenants"],
  ["tenants missing", {}, "tenants"],
  ["tenants a list", { tenants: [] }, "tenants"],
  ["unknown top-level key", { tenants: { a: tenant() }, markmask: "0x30" }, "markmask"]
]

describe("tenants file: invalid files name the field", () => {
  it.each(invalid)("%s → %s", (_name, input, path) => {
    const issues = issuesOf(input)
    assert.isAbove(issues.length, 0, "expected the file to be refused")
    assert.include(
      issues.map((i) => i.path),
      path,
      `issues: ${formatIssues(issues)}`
    )
  })

  it("every problem of a file is reported at once", () => {
    const issues = issuesOf({ tenants: { a: tenant({ mark: 0, table: 254, priority: 0, gateways: ["x"] }) } })
    assert.deepStrictEqual(issues.map((i) => i.path).sort(), [
      "tenants.a.gateways[0]",
      "tenants.a.mark",
      "tenants.a.priority",
      "tenants.a.table"
    ])
  })

  it("a bad tenant name is reported beside the same tenant's bad field and a clash between others", () => {
    const issues = issuesOf({
      tenants: {
        Bad_Name: tenant({ table: 254, mark: "0x40" }),
        b: tenant({ mark: "0x10", table: 200, priority: 1000 }),
        c: tenant({ mark: "0x20", table: 300, priority: 1000 })
      }
    })
    assert.deepStrictEqual(issues.map((i) => i.path).sort(), [
      "tenants.Bad_Name",
      "tenants.Bad_Name.table",
      "tenants.c.priority"
    ])
    assert.include(formatIssues(issues), "tenants.c.priority: priority 1000 is also tenant b's")
  })

  it("a broken top level still lets every tenant be checked", () => {
    const issues = issuesOf({ markMask: true, tenants: { a: tenant({ priority: 1 }) } })
    assert.deepStrictEqual(issues.map((i) => i.path).sort(), ["markMask", "tenants.a.priority"])
  })

  it("priority 1 is refused with the reason, not a bare range", () => {
    const [issue] = issuesOf(withTenant({ priority: 1 }))
    assert.strictEqual(issue?.path, "tenants.a.priority")
    assert.match(
      issue?.message ?? "",
      /suppress rule at priority 0, beside the kernel's `lookup local` rule; use 2 or more/
    )
  })

  it("text that is not JSON is refused as such", () => {
    const r = decodeNodeSetupConfigJson("{ tenants: ")
    assert.isTrue(Result.isFailure(r) && r.failure[0]!.message.startsWith("not valid JSON"))
  })
})

describe("tenants file: valid files", () => {
  it("decodes marks from literals or numbers, defaults markMask and tableName, canonicalizes gateways", () => {
    const r = decodeNodeSetupConfigJson(
      JSON.stringify({
        tenants: {
          "tenant-b": tenant({
            mark: 32,
            table: 200,
            gateways: ["2001:DB8:0:0::2", "198.51.100.2", "2001:db8::2"],
            priority: 1001
          }),
          "tenant-a": tenant({ mark: "0X0010", tableName: "tenant_a.v1" })
        }
      })
    )
    assert.isTrue(Result.isSuccess(r))
    if (Result.isFailure(r)) return
    assert.strictEqual(r.success.markMask, 0x30)
    assert.deepStrictEqual(
      r.success.tenants.map((t) => [t.name, t.mark, t.tableName, t.gateways]),
      [
        ["tenant-a", 0x10, "tenant_a.v1", ["192.0.2.2"]],
        ["tenant-b", 0x20, "tenant-b", ["2001:db8::2", "198.51.100.2"]]
      ]
    )
  })

  it("accepts the edge values: priority 2 and 32766, tables 1 and 4294967295, mark 0xffff1fff", () => {
    const issues = issuesOf({
      tenants: {
        a: tenant({ priority: 2, table: 1, mark: "0xffff0000" }),
        b: tenant({ priority: 32766, table: 4294967295, mark: "0x1fff", gateways: [] })
      }
    })
    assert.deepStrictEqual(issues, [])
  })

  it("canonical IPv6 text matches what ip prints", () => {
    assert.deepStrictEqual(
      ["2001:0DB8::0001", "2001:db8:0:0:1:0:0:1", "2001:0:0:1::1", "1:0:0:2:0:0:0:3", "::ffff:192.0.2.1"].map(
        canonicalIp
      ),
      ["2001:db8::1", "2001:db8::1:0:0:1", "2001:0:0:1::1", "1:0:0:2::3", "::ffff:c000:201"]
    )
  })
})

describe("node-setup CLI: exit 2 for an unusable file", () => {
  const runCli = async (argv: ReadonlyArray<string>) => {
    const out: Array<string> = []
    const err: Array<string> = []
    const code = await runNodeSetup(argv, {
      // A kernel that fails any change: exit 2 must come before any routing is attempted.
      routing: RoutingMemory.layer({ failAt: 1 }),
      stdout: (t) => void out.push(t),
      stderr: (t) => void err.push(t)
    })
    return { code, out: out.join(""), err: err.join("") }
  }

  it("names the field on stderr and prints nothing on stdout", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trw-node-setup-"))
    try {
      const file = join(dir, "tenants.json")
      writeFileSync(file, JSON.stringify(withTenant({ table: 254 })))
      const r = await runCli(["--config", file])
      assert.strictEqual(r.code, 2)
      assert.strictEqual(r.out, "")
      assert.include(r.err, "tenants.a.table: table 254 is reserved")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("priority 1 and a shared priority exit 2 naming the fields, before any routing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trw-node-setup-"))
    try {
      const file = join(dir, "tenants.json")
      writeFileSync(
        file,
        JSON.stringify({
          tenants: { a: tenant({ priority: 1 }), b: tenant({ mark: "0x20", table: 200, priority: 1 }) }
        })
      )
      const r = await runCli(["--config", file, "--json"])
      assert.strictEqual(r.code, 2)
      assert.strictEqual(r.out, "")
      assert.include(r.err, `tenant-routing node-setup: invalid tenants file ${file}:\n`)
      assert.include(r.err, "  tenants.a.priority: priority 1 would put")
      assert.include(r.err, "  tenants.b.priority: priority 1 would put")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("a missing or unreadable tenants file is said in words, with what to do", async () => {
    const missing = await runCli(["--config", "/nonexistent/tenants.json"])
    assert.strictEqual(missing.code, 2)
    assert.strictEqual(
      missing.err,
      "tenant-routing node-setup: tenants file /nonexistent/tenants.json does not exist; pass --config FILE or create it\n"
    )
    const dir = mkdtempSync(join(tmpdir(), "trw-node-setup-"))
    try {
      const asDir = await runCli(["--config", dir])
      assert.strictEqual(asDir.code, 2)
      assert.strictEqual(
        asDir.err,
        `tenant-routing node-setup: tenants file ${dir} is a directory, not a file\n`
      )
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("a missing file, a missing --config value and an unknown flag exit 2", async () => {
    assert.strictEqual((await runCli(["--config", "/nonexistent/tenants.json"])).code, 2)
    assert.strictEqual((await runCli(["--config"])).code, 2)
    const unknown = await runCli(["--apply"])
    assert.strictEqual(unknown.code, 2)
    assert.include(unknown.err, "tenant-routing node-setup --help")
  })
})

describe("scripts/tenant-routing-setup.sh", () => {
  it("writes the original two tenants as a valid tenants file and passes the arguments on", () => {
    const dir = mkdtempSync(join(tmpdir(), "trw-setup-sh-"))
    try {
      // A stand-in binary that records its arguments and the tenants file it was given.
      const stub = join(dir, "trw")
      writeFileSync(stub, `#!/bin/sh\necho "$@" > "${dir}/args"\ncp "$3" "${dir}/tenants.json"\n`)
      chmodSync(stub, 0o755)
      execFileSync("bash", ["scripts/tenant-routing-setup.sh", "--dry-run"], {
        env: { ...process.env, TRW_BIN: stub, TENANT_B_GW: "198.51.100.2,2001:db8::2" }
      })
      assert.match(readFileSync(join(dir, "args"), "utf8"), /^node-setup --config \S+ --dry-run\n$/)
      const r = decodeNodeSetupConfigJson(readFileSync(join(dir, "tenants.json"), "utf8"))
      assert.isTrue(Result.isSuccess(r), Result.isFailure(r) ? formatIssues(r.failure) : "")
      if (Result.isFailure(r)) return
      assert.deepStrictEqual(
        r.success.tenants.map((t) => [t.name, t.mark, t.table, t.priority, t.gateways]),
        [
          ["tenant-a", 0x10, 100, 1000, ["192.0.2.2"]],
          ["tenant-b", 0x20, 200, 1001, ["198.51.100.2", "2001:db8::2"]]
        ]
      )
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
