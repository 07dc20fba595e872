/**
 * Measures (prints, asserts nothing) the datapath latency of ADD and DEL in a warm process, as the
 * agent runs them (one shared Netfilter with its kept view, one committer), on an empty node and on
 * a node already holding N entries, for both backends. Everything happens in a throwaway network
 * namespace (deleted at the end) with its own state directory and generation files. Needs root.
 *
 *   node scripts/measureFlat.ts [N=5000] [calls=30]
 */
import { execFileSync, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Layer } from "effect"
import type { Backend, PluginConfig } from "../src/domain/cni/Config.ts"
import type { MarkEntry } from "../src/domain/datapath/Entries.ts"
import { Netfilter } from "../src/domain/datapath/Netfilter.ts"
import * as AttachmentStoreFiles from "../src/interpreters/live/AttachmentStoreFiles.ts"
import * as NetfilterLive from "../src/interpreters/live/NetfilterLive.ts"
import * as NodeLockSocket from "../src/interpreters/live/NodeLockSocket.ts"
import { committerLayer } from "../src/programs/committer.ts"
import { attach, detach } from "../src/programs/datapath.ts"

const N = Number(process.argv[2] ?? 5000)
const CALLS = Number(process.argv[3] ?? 30)
const ns = `trw-flat-${randomBytes(4).toString("hex")}`
const dir = mkdtempSync(join(tmpdir(), "trw-flat-"))

const config = (backend: Backend): PluginConfig => ({
  cniVersion: "1.1.0",
  name: "flat",
  delegate: undefined,
  kubeconfig: undefined,
  annotationKey: "tenant.routing/fwmark",
  tenants: [],
  markMask: 0x30,
  backend,
  failurePolicy: "closed",
  pinning: "best-effort",
  apiTimeoutMs: 1000,
  delegateTimeoutMs: 1000,
  stateDir: join(dir, "state"),
  logFile: undefined,
  logLevel: "info",
  logMaxBytes: 1,
  prevResult: undefined,
  validAttachments: undefined,
  podAnnotations: undefined,
  runtimeConfig: undefined
})

const ipOf = (i: number) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0

const measure = (backend: Backend, label: string) =>
  Effect.gen(function* () {
    const cfg = config(backend)
    const add: Array<number> = []
    const del: Array<number> = []
    for (let i = 0; i < CALLS; i++) {
      const a = { network: "flat", containerId: `m${i}`, ifname: "eth0" }
      const ip = ipOf(200_000 + i)
      let t = performance.now()
      yield* attach(cfg, a, [ip], { name: "t", mark: 0x10 }, false)
      add.push(performance.now() - t)
      t = performance.now()
      yield* detach(cfg, a)
      del.push(performance.now() - t)
    }
    console.log(
      `${backend.padEnd(9)} ${label.padEnd(14)} ADD median ${median(add).toFixed(1)} ms   DEL median ${median(del).toFixed(1)} ms`
    )
    return { add: median(add), del: median(del) }
  })

const fill = (backend: Backend) =>
  Effect.gen(function* () {
    const nf = yield* Netfilter
    const entries: Array<MarkEntry> = Array.from({ length: N }, (_, i) => ({
      ip: ipOf(i),
      family: 4,
      mark: 0x10,
      mask: 0x30,
      owner: `flat/fill${i}/eth0`
    }))
    yield* nf.apply(backend, { remove: [], add: entries })
  })

const main = Effect.gen(function* () {
  for (const backend of ["nftables", "iptables"] as const) {
    const empty = yield* measure(backend, "empty")
    yield* fill(backend)
    const full = yield* measure(backend, `${N} entries`)
    console.log(
      `${backend.padEnd(9)} ratio          ADD ×${(full.add / empty.add).toFixed(2)}   DEL ×${(full.del / empty.del).toFixed(2)}   (+${(full.add - empty.add).toFixed(1)} / +${(full.del - empty.del).toFixed(1)} ms)`
    )
  }
})

execFileSync("ip", ["netns", "add", ns])
try {
  const live = Layer.mergeAll(
    NetfilterLive.layer({ prefix: ["ip", "netns", "exec", ns], generationDir: join(dir, "gen") }),
    NodeLockSocket.layer({ name: `${ns}.lock` }),
    AttachmentStoreFiles.layer
  )
  await Effect.runPromise(
    main.pipe(Effect.provide(Layer.provideMerge(committerLayer, live))) as Effect.Effect<void>
  )
} finally {
  spawnSync("ip", ["netns", "del", ns])
  rmSync(dir, { recursive: true, force: true })
}
