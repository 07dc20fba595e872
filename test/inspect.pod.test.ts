/**
 * The pod a call names in CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID) travels into the
 * attachment record that ADD writes and out through `inspect`: records round-trip with and without
 * it, records written before it existed still decode, a bad uid is refused like the other CNI_ARGS,
 * and inspect shows `namespace/name` (or `-`) and `pod: {namespace, name, uid} | null` in JSON.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema } from "effect"
import { decodeEnv } from "../src/domain/cni/CniEnv.ts"
import { AttachmentRecord, makeRecord, podRefOf } from "../src/domain/datapath/AttachmentRecord.ts"
import { formatInspect, inspect } from "../src/programs/inspect.ts"
import { World } from "./support/memoryWorld.ts"

const a = { network: "net-a", containerId: "c1", ifname: "eth0" }
const UID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
const roundTrip = (r: AttachmentRecord) =>
  Schema.decodeUnknownSync(Schema.fromJsonString(AttachmentRecord))(
    Schema.encodeSync(Schema.fromJsonString(AttachmentRecord))(r)
  )

describe("attachment records carry the pod", () => {
  it("a record round-trips with the pod, with a pod without uid, and without a pod (no key at all)", () => {
    const pods = [
      { namespace: "team-a", name: "web-0", uid: UID },
      { namespace: "team-a", name: "web-0" },
      undefined
    ]
    for (const pod of pods) {
      const r = makeRecord(
        a,
        { name: "tenant-a", mark: 0x10 },
        0x30,
        ["10.0.0.5", "fd00::5"],
        "nftables",
        pod
      )
      assert.deepStrictEqual(roundTrip(r), r)
      assert.strictEqual("pod" in r, pod !== undefined)
    }
  })

  it("a record written before pods were recorded still decodes, without a pod", () => {
    const old =
      '{"owner":"net-a/c1/eth0","tag":"net-a/c1/eth0","network":"net-a","containerId":"c1","ifname":"eth0",' +
      '"tenant":"tenant-a","mark":16,"mask":48,"ips":["10.0.0.5"],"backend":"iptables"}'
    const r = Schema.decodeUnknownSync(Schema.fromJsonString(AttachmentRecord))(old)
    assert.strictEqual(r.tenant, "tenant-a")
    assert.isUndefined(r.pod)
  })

  it("CNI_ARGS: the uid is kept when valid (UUID or a static pod's hex digest), refused otherwise; the pod needs namespace and name", () => {
    const env = (args: string) =>
      decodeEnv({
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: "c1",
        CNI_IFNAME: "eth0",
        CNI_NETNS: "/var/run/netns/c1",
        CNI_PATH: "/opt/cni/bin",
        CNI_ARGS: args
      })
    const ok = (args: string) => {
      const r = env(args)
      if (Result.isFailure(r)) throw new Error(r.failure.msg)
      return r.success
    }
    const full = ok(`K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_UID=${UID}`)
    assert.deepStrictEqual(podRefOf(full), { namespace: "team-a", name: "web-0", uid: UID })
    const digest = "5d0e1a1e8c9e6a2c3bd6a4b1f0d2a6f1"
    assert.strictEqual(ok(`K8S_POD_UID=${digest}`).podUid, digest)
    assert.deepStrictEqual(podRefOf(ok("K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0")), {
      namespace: "team-a",
      name: "web-0"
    })
    assert.isUndefined(podRefOf(ok(`K8S_POD_NAMESPACE=team-a;K8S_POD_UID=${UID}`)))
    assert.isUndefined(podRefOf(ok("IgnoreUnknown=1")))
    for (const bad of ["", "a/b", "-x", "x y", "é", "a".repeat(129)]) {
      const r = env(`K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_UID=${bad}`)
      assert.isTrue(Result.isFailure(r), `uid ${JSON.stringify(bad)} accepted`)
      if (Result.isFailure(r)) assert.include(r.failure.msg, "K8S_POD_UID")
    }
  })
})

describe("inspect shows the pod (memory world)", () => {
  const conf = {
    cniVersion: "1.1.0",
    name: "net-a",
    type: "tenant-routing-wrapper",
    backend: "nftables",
    stateDir: "/state",
    delegate: { type: "ptp" },
    runtimeConfig: { "io.kubernetes.cri.pod-annotations": { "tenant.routing/fwmark": "0x10" } }
  }
  const add = (w: World, containerId: string, args: string) =>
    w.run(
      {
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: containerId,
        CNI_IFNAME: "eth0",
        CNI_NETNS: `/var/run/netns/${containerId}`,
        CNI_PATH: "/opt/cni/bin",
        CNI_ARGS: args
      },
      conf
    )

  it("ADD records the pod named in CNI_ARGS; inspect prints POD namespace/name or -, and JSON pod or null", async () => {
    const w = new World()
    const named = await add(
      w,
      "named",
      `IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_UID=${UID}`
    )
    assert.strictEqual(named.exitCode, 0, named.stdout)
    const bare = await add(w, "bare", "IgnoreUnknown=1")
    assert.strictEqual(bare.exitCode, 0, bare.stdout)

    const rows = await Effect.runPromise(inspect("/state", undefined).pipe(Effect.provide(w.layer())))
    const byContainer = new Map(rows.map((r) => [r.containerId, r]))
    assert.deepStrictEqual(byContainer.get("named")!.pod, { namespace: "team-a", name: "web-0", uid: UID })
    assert.isNull(byContainer.get("bare")!.pod)
    // The JSON the CLI prints is these rows as they are.
    const json = JSON.parse(JSON.stringify(rows)) as Array<{ containerId: string; pod: unknown }>
    assert.deepStrictEqual(json.find((r) => r.containerId === "named")!.pod, {
      namespace: "team-a",
      name: "web-0",
      uid: UID
    })
    assert.isNull(json.find((r) => r.containerId === "bare")!.pod)

    const lines = formatInspect(rows).split("\n")
    assert.match(lines[0]!, /^BACKEND\s+NETWORK\s+CONTAINER\s+IFNAME\s+POD\s+IP\s+TENANT\s+MARK$/)
    const cells = (id: string) => lines.find((l) => l.includes(` ${id} `))!.split(/\s+/)
    assert.strictEqual(cells("named")[4], "team-a/web-0")
    assert.strictEqual(cells("bare")[4], "-")
  })
})
