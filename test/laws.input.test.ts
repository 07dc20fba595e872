/**
 * Hostile and malformed input (issue 2, law 8): every bad config, environment or stdin gets a typed
 * CNI error with the right code and changes nothing; and result conversion keeps what matters (law 9).
 */
import { describe, it } from "@effect/vitest"
import { Schema } from "effect"
import * as fc from "fast-check"
import { assert } from "vitest"
import { CniResult, convertResult, podIps } from "../src/domain/cni/CniResult.ts"
import { SUPPORTED_VERSIONS } from "../src/domain/cni/CniVersion.ts"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const pod = { containerId: "c1", namespace: "default", name: "p" }

/** A config mutation and the code it must produce. */
const badConfigArb: fc.Arbitrary<readonly [Record<string, unknown>, number]> = fc.oneof(
  fc.constantFrom<readonly [Record<string, unknown>, number]>(
    [{ tenants: { a: { mark: 0 } } }, 7],
    [{ tenants: { a: { mark: "0x100000000" } } }, 7],
    [{ tenants: { a: { mark: "0xffffffff" } } }, 7],
    [{ tenants: { a: { mark: 4294967295 } }, markMask: "0xffffffff" }, 7],
    [{ tenants: { a: { mark: -1 } } }, 7],
    [{ tenants: { a: { mark: 1.5 } } }, 7],
    [{ tenants: { a: { mark: "0x10" }, b: { mark: 16 } } }, 7],
    [{ tenants: { a: { mark: "0x4000" } } }, 7],
    [{ tenants: { a: { mark: "0x2000" } } }, 7],
    [{ tenants: { a: { mark: "0x10" } }, markMask: "0x8" }, 7],
    [{ markMask: "0xc030" }, 7],
    [{ tenants: { Tenant_A: { mark: "0x10" } } }, 7],
    [{ tenants: {} }, 7],
    [{ tenants: [] }, 7],
    [{ backend: "ebpf" }, 7],
    [{ failurePolicy: "maybe" }, 7],
    [{ pinning: true }, 7],
    [{ logLevel: "trace" }, 7],
    [{ kubeconfig: "relative/kubeconfig" }, 7],
    [{ stateDir: "var/lib" }, 7],
    [{ agentSocket: "run/agent.sock" }, 7],
    [{ agentSocket: `/${"s".repeat(107)}` }, 7],
    [{ agentSocket: 7 }, 7],
    [{ logFile: "" }, 7],
    [{ apiTimeout: "99ms" }, 7],
    [{ apiTimeout: "11m" }, 7],
    [{ delegateTimeout: 5 }, 7],
    [{ name: "../../etc" }, 7],
    [{ name: "" }, 7],
    [{ delegate: { type: "../../bin/sh" } }, 7],
    [{ delegate: { type: 42 } }, 7],
    [{ annotationKey: 7 }, 7],
    [{ prevResult: { cniVersion: "1.0.0", ips: [{ address: "10.0.0.1" }] } }, 7],
    [{ prevResult: "nope" }, 7],
    [{ cniVersion: "2.0.0" }, 1],
    [{ cniVersion: 1 }, 7]
  ),
  fc
    .string({ maxLength: 40 })
    .filter((s) => !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(s))
    .map((name) => [{ name }, 7] as const)
)

const badEnvArb: fc.Arbitrary<Record<string, string>> = fc.oneof(
  fc.constant({ CNI_COMMAND: "EXPLODE" }),
  fc.constant({ CNI_CONTAINERID: "" }),
  fc.constant({ CNI_CONTAINERID: "-leading-dash" }),
  fc.constant({ CNI_CONTAINERID: "abc;rm -rf /" }),
  fc.constant({ CNI_IFNAME: "" }),
  fc.constant({ CNI_IFNAME: "a-very-long-interface-name" }),
  fc.constant({ CNI_IFNAME: "eth/0" }),
  fc.constant({ CNI_IFNAME: ".." }),
  fc.constant({ CNI_NETNS: "" }),
  fc.constant({ CNI_NETNS: "$(touch /tmp/canary)" }),
  fc.constant({ CNI_NETNS: "var/run/netns/relative" }),
  fc.constant({ CNI_PATH: "" }),
  fc.constant({ CNI_ARGS: "K8S_POD_NAMESPACE" }),
  fc.constant({ CNI_ARGS: "K8S_POD_NAMESPACE=Bad_NS;K8S_POD_NAME=p" }),
  fc.constant({ CNI_ARGS: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=$(reboot)" }),
  fc
    .string({ minLength: 1, maxLength: 20 })
    .filter((s) => /[^a-zA-Z0-9_.-]/.test(s))
    .map((id) => ({ CNI_CONTAINERID: `a${id}` }))
)

describe("hostile input", () => {
  it("invalid configs are rejected with their code before anything is touched", async () => {
    await fc.assert(
      fc.asyncProperty(
        badConfigArb,
        fc.constantFrom("ADD", "DEL", "CHECK"),
        async ([mutation, code], verb) => {
          const w = new World()
          const out = await w.run(cniEnv(verb, pod), originalConf(mutation))
          assert.strictEqual(out.exitCode, 1)
          const doc = parse(out) as { code: number; msg: string; details?: unknown }
          assert.strictEqual(doc.code, code, doc.msg)
          if (code === 7) assert.isString(doc.details)
          assert.deepStrictEqual(w.snapshot(), new World().snapshot())
          assert.strictEqual(w.leases.calls.length, 0)
        }
      ),
      { numRuns: 200 }
    )
  })

  it("invalid environments get code 4 and change nothing", async () => {
    await fc.assert(
      fc.asyncProperty(badEnvArb, fc.constantFrom("ADD", "CHECK"), async (patch, verb) => {
        const w = new World()
        const out = await w.run({ ...cniEnv(verb, pod), ...patch }, originalConf())
        assert.strictEqual((parse(out) as { code: number }).code, 4)
        assert.deepStrictEqual(w.snapshot(), new World().snapshot())
      }),
      { numRuns: 100 }
    )
  })

  it("stdin that is not UTF-8, not JSON or over 4 MiB gets code 6", async () => {
    const w = new World()
    const cases: Array<Uint8Array> = [
      new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]),
      new TextEncoder().encode("{not json"),
      new TextEncoder().encode(""),
      new TextEncoder().encode(JSON.stringify(originalConf({ pad: "x".repeat(4 * 1024 * 1024) })))
    ]
    for (const bytes of cases) {
      const out = await w.run(cniEnv("ADD", pod), new TextDecoder().decode(bytes))
      const doc = parse(out) as { code: number }
      assert.strictEqual(doc.code, 6)
    }
    assert.deepStrictEqual(w.snapshot(), new World().snapshot())
  })

  it("errors are one CNI error document: cniVersion, code, msg and a string details", async () => {
    const w = new World()
    const out = await w.run(cniEnv("ADD", pod), originalConf({ tenants: { a: { mark: 0 } } }))
    const doc = parse(out) as Record<string, unknown>
    assert.deepStrictEqual(Object.keys(doc).sort(), ["cniVersion", "code", "details", "msg"])
    assert.deepStrictEqual(JSON.parse(doc.details as string), [
      { path: "tenants.a.mark", message: "must be a mark in 1..0xffffffff" }
    ])
  })
})

const resultArb = fc.record({
  interfaces: fc.array(
    fc.record({
      name: fc.constantFrom("eth0", "veth1"),
      mac: fc.constant("0a:58:00:00:00:01"),
      sandbox: fc.constant("/var/run/netns/x")
    }),
    { maxLength: 3 }
  ),
  ips: fc.array(
    fc.oneof(
      fc.ipV4().map((ip) => ({ address: `${ip}/24`, gateway: "10.0.0.1", interface: 0 })),
      fc.ipV6().map((ip) => ({ address: `${ip}/64`, interface: 0 }))
    ),
    { maxLength: 4 }
  ),
  routes: fc.array(fc.constantFrom({ dst: "0.0.0.0/0" }, { dst: "::/0", gw: "fd00::1" }), { maxLength: 2 }),
  dns: fc.constantFrom({}, { nameservers: ["10.96.0.10"] })
})

describe("result conversion", () => {
  it("conversion between supported CNI versions keeps IPs, interfaces, routes and DNS", () => {
    fc.assert(
      fc.property(
        resultArb,
        fc.constantFrom(...SUPPORTED_VERSIONS),
        fc.constantFrom(...SUPPORTED_VERSIONS),
        (r, from, to) => {
          const source = Schema.decodeUnknownSync(CniResult)(
            convertResult({ cniVersion: "1.0.0", ...r }, from)
          )
          const converted = convertResult(source, to)
          const back = Schema.decodeUnknownSync(CniResult)(JSON.parse(JSON.stringify(converted)))
          assert.strictEqual(back.cniVersion, to)
          assert.deepStrictEqual(podIps(back), podIps(source))
          assert.deepStrictEqual(back.interfaces, source.interfaces)
          assert.deepStrictEqual(back.routes, source.routes)
          assert.deepStrictEqual(back.dns, source.dns)
          const legacy = to.startsWith("0.")
          for (const ip of back.ips ?? []) assert.strictEqual(ip.version !== undefined, legacy)
          assert.deepStrictEqual(convertResult(convertResult(source, to), from), convertResult(source, from))
        }
      ),
      { numRuns: 300 }
    )
  })
})
