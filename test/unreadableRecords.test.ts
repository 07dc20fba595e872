/**
 * One bad state record must not stop GC or `inspect` for everything else (docs/DESIGN.md §4): on the
 * files store in a temporary directory (the record is a real empty or torn file), GC collects the
 * rest and reports the file, and inspect still lists every entry and prints why the record is bad.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import * as AttachmentStoreFiles from "../src/interpreters/live/AttachmentStoreFiles.ts"
import * as AnnotationsMemory from "../src/interpreters/memory/AnnotationsMemory.ts"
import { Cluster } from "../src/interpreters/memory/AnnotationsMemory.ts"
import * as DelegateMemory from "../src/interpreters/memory/DelegateMemory.ts"
import { Leases } from "../src/interpreters/memory/DelegateMemory.ts"
import { FaultPlan } from "../src/interpreters/memory/Faults.ts"
import * as NetfilterMemory from "../src/interpreters/memory/NetfilterMemory.ts"
import { Kernel } from "../src/interpreters/memory/NetfilterMemory.ts"
import * as NodeLockMemory from "../src/interpreters/memory/NodeLockMemory.ts"
import { runCni } from "../src/programs/dispatch.ts"
import { inspect } from "../src/programs/inspect.ts"

const root = mkdtempSync(path.join(tmpdir(), "trw-unreadable-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let n = 0

const KEY = "tenant.routing/fwmark"

const node = () => {
  const stateDir = path.join(root, `s${n++}`)
  const kernel = new Kernel()
  const leases = new Leases()
  leases.supportedVersions = ["1.0.0", "1.1.0"]
  const layer = Layer.mergeAll(
    NetfilterMemory.layer(kernel, new FaultPlan()),
    AttachmentStoreFiles.layer,
    DelegateMemory.layer(leases, new FaultPlan()),
    AnnotationsMemory.layer(new Cluster(), new FaultPlan()),
    NodeLockMemory.layer
  )
  const logs: Array<unknown> = []
  const capture = Logger.make((o) => void logs.push({ level: o.logLevel, message: o.message }))
  const conf = (extra: Record<string, unknown> = {}) => ({
    cniVersion: "1.1.0",
    name: "net-a",
    type: "tenant-routing-wrapper",
    backend: "nftables",
    stateDir,
    delegate: { type: "ptp" },
    runtimeConfig: { "io.kubernetes.cri.pod-annotations": { [KEY]: "0x10" } },
    ...extra
  })
  const call = (command: string, containerId: string, extra: Record<string, unknown> = {}) =>
    runCni(
      {
        CNI_COMMAND: command,
        CNI_CONTAINERID: containerId,
        CNI_IFNAME: containerId === "" ? "" : "eth0",
        CNI_NETNS: "/var/run/netns/x",
        CNI_PATH: "/opt/cni/bin",
        CNI_ARGS: "IgnoreUnknown=1"
      },
      new TextEncoder().encode(JSON.stringify(conf(extra))),
      () => Logger.layer([capture])
    ).pipe(Effect.provide(layer))
  return { stateDir, kernel, layer, logs, call }
}

describe("an unreadable state record", () => {
  for (const text of ["", "{", '{"owner": 1}']) {
    it.effect(`GC collects the rest and reports it (record ${JSON.stringify(text)})`, () =>
      Effect.gen(function* () {
        const w = node()
        for (const id of ["bad", "stale", "kept"]) assert.strictEqual((yield* w.call("ADD", id)).exitCode, 0)
        const file = path.join(w.stateDir, "net-a", "bad", "eth0.json")
        writeFileSync(file, text)
        const out = yield* w.call("GC", "", {
          "cni.dev/valid-attachments": [
            { containerID: "kept", ifname: "eth0" },
            { containerID: "bad", ifname: "eth0" }
          ]
        })
        assert.strictEqual(out.exitCode, 0, out.stdout)
        assert.deepStrictEqual(w.kernel.entries.nftables.map((e) => e.owner).sort(), [
          "net-a/bad/eth0",
          "net-a/kept/eth0"
        ])
        assert.isTrue(
          JSON.stringify(w.logs).includes(file),
          `the bad record is named in the call's log: ${JSON.stringify(w.logs)}`
        )
      })
    )
  }

  it.effect("inspect lists every entry, the bad record's by its path, and prints why it is bad", () =>
    Effect.gen(function* () {
      const w = node()
      for (const id of ["bad", "good"]) assert.strictEqual((yield* w.call("ADD", id)).exitCode, 0)
      const file = path.join(w.stateDir, "net-a", "bad", "eth0.json")
      writeFileSync(file, "")
      const logs: Array<string> = []
      const capture = Logger.make((o) => void logs.push(JSON.stringify([o.message, o.logLevel])))
      const rows = yield* inspect(w.stateDir, undefined).pipe(
        Effect.provide(Layer.mergeAll(w.layer, Logger.layer([capture])))
      )
      assert.deepStrictEqual(
        rows.map((r) => [r.network, r.containerId, r.ifname, r.tenant]).sort(),
        [
          ["net-a", "bad", "eth0", null],
          ["net-a", "good", "eth0", "tenant-a"]
        ].sort()
      )
      const warning = logs.find((l) => l.includes(file))
      assert.isDefined(warning, logs.join("\n"))
      assert.include(warning, "undecodable")
    })
  )
})
