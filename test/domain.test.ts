/**
 * Pure domain: parsing, owner tags, mark rules — and that src/domain stays pure.
 */
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { describe, it } from "@effect/vitest"
import { Result } from "effect"
import * as fc from "fast-check"
import { assert } from "vitest"
import { decodeEnv } from "../src/domain/cni/CniEnv.ts"
import { canonicalIp, parseCidr, parseIp } from "../src/domain/net/Ip.ts"
import { formatMark, parseMarkLiteral } from "../src/domain/net/Mark.ts"

describe("src/domain is pure", () => {
  it("imports no Node module, no Kubernetes client, no platform package and nothing outside src/domain", () => {
    const dir = join(import.meta.dirname, "../src/domain")
    const files = readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts"))
    assert.isAbove(files.length, 30)
    const offenders = files.flatMap((f) =>
      [...readFileSync(join(dir, f), "utf8").matchAll(/from\s+["']([^"']+)["']/g)]
        .map((m) => m[1]!)
        .filter((spec) =>
          spec.startsWith(".")
            ? relative(dir, resolve(dirname(join(dir, f)), spec)).startsWith("..")
            : !(spec === "effect" || spec.startsWith("effect/"))
        )
        .map((spec) => `${f}: ${spec}`)
    )
    assert.deepStrictEqual(offenders, [])
  })
})

describe("IP addresses", () => {
  it("canonical forms agree with the kernel's (RFC 5952)", () => {
    assert.strictEqual(canonicalIp("2001:DB8:0:0:0:0:0:1"), "2001:db8::1")
    assert.strictEqual(canonicalIp("fd00:0:0:1::"), "fd00:0:0:1::")
    assert.strictEqual(canonicalIp("1:0:0:1:0:0:0:1"), "1:0:0:1::1")
    assert.isUndefined(parseIp("10.0.0.256"))
    assert.isUndefined(parseIp("1::2::3"))
    assert.isUndefined(parseCidr("10.0.0.1/33"))
  })

  it("every IPv4 and IPv6 address parses, and its canonical form is a fixed point", () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (ip) => {
        const c = parseIp(ip)
        assert.isDefined(c)
        assert.strictEqual(canonicalIp(c!.text), c!.text)
      }),
      { numRuns: 500 }
    )
  })
})

describe("marks", () => {
  it("literals are hex (any case, leading zeros) or decimal, up to 0xffffffff", () => {
    assert.strictEqual(parseMarkLiteral("0x10"), 16)
    assert.strictEqual(parseMarkLiteral("0X0010"), 16)
    assert.strictEqual(parseMarkLiteral("16"), 16)
    assert.strictEqual(parseMarkLiteral("0xffffffff"), 0xffffffff)
    assert.isUndefined(parseMarkLiteral("tenant-a"))
    assert.isAbove(parseMarkLiteral("0x100000000")!, 0xffffffff)
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (m) => {
        assert.strictEqual(parseMarkLiteral(formatMark(m)), m)
        assert.strictEqual(parseMarkLiteral(String(m)), m)
      })
    )
  })
})

describe("CNI environment", () => {
  it("parses CNI_ARGS and the pod's namespace and name", () => {
    const r = decodeEnv({
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "abc",
      CNI_IFNAME: "eth0",
      CNI_NETNS: "/var/run/netns/x",
      CNI_PATH: "/opt/cni/bin:/usr/lib/cni",
      CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0.x"
    })
    assert.isTrue(Result.isSuccess(r))
    if (Result.isSuccess(r)) {
      assert.strictEqual(r.success.podNamespace, "team-a")
      assert.strictEqual(r.success.podName, "web-0.x")
      assert.deepStrictEqual(r.success.path, ["/opt/cni/bin", "/usr/lib/cni"])
    }
  })
})
