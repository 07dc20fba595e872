/**
 * The Delegate contract against the memory model and against Debian's real ptp + host-local run by
 * DelegateExec. Live, nothing touches the root netns: the pod is a throwaway `trw-dlg-pod-<random>`
 * and the plugins themselves run inside a throwaway "node" netns `trw-dlg-node-<random>` (ptp puts
 * its host-side veth, route and forwarding sysctl in the netns it runs in). DelegateExec cannot be
 * prefixed, so CNI_PATH points at a temporary directory of wrappers, `exec ip netns exec <node>
 * /usr/lib/cni/<plugin> "$@"`: `ip netns exec` keeps stdin, the environment (CNI_*) and the exit
 * status. host-local keeps its leases in a temporary dataDir. Both are removed in afterAll.
 * Needs root, iproute2 and /usr/lib/cni/{ptp,host-local}; skipped otherwise.
 */
import { spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe } from "@effect/vitest"
import * as DelegateExec from "../src/interpreters/live/DelegateExec.ts"
import * as DelegateMemory from "../src/interpreters/memory/DelegateMemory.ts"
import { Leases } from "../src/interpreters/memory/DelegateMemory.ts"
import { FaultPlan } from "../src/interpreters/memory/Faults.ts"
import { delegateContract } from "./conformance/delegateContract.ts"
import { missingOf, skipLive } from "./support/liveGate.ts"

const CNI_BIN = "/usr/lib/cni"
// The model leases 10.200.0.2 first; a pool of one matches a /30 (.1 gateway, .2 the one lease).
const SUBNET = "10.200.0.0/30"

delegateContract("memory", () => DelegateMemory.layer(new Leases(1), new FaultPlan()), {
  type: "ptp",
  path: () => ["/nonexistent"],
  netns: () => "/var/run/netns/trw-dlg-memory",
  subnet: SUBNET,
  ipam: () => ({ type: "host-local", subnet: SUBNET })
})

const canRun = !skipLive(
  "live ptp + host-local",
  missingOf({ root: true, commands: ["ip"], files: ["ptp", "host-local"].map((p) => join(CNI_BIN, p)) })
)

describe.skipIf(!canRun)("live ptp + host-local", () => {
  const id = randomBytes(4).toString("hex")
  const node = `trw-dlg-node-${id}`
  const pod = `trw-dlg-pod-${id}`
  const dir = mkdtempSync(join(tmpdir(), "trw-dlg-"))
  const bin = join(dir, "bin")
  const dataDir = join(dir, "leases")

  beforeAll(() => {
    for (const ns of [node, pod]) {
      const r = spawnSync("ip", ["netns", "add", ns], { encoding: "utf8" })
      if (r.status !== 0) throw new Error(`ip netns add ${ns}: ${r.stderr}`)
    }
    spawnSync("ip", ["-n", node, "link", "set", "lo", "up"])
    mkdirSync(bin)
    for (const p of ["ptp", "host-local"]) {
      writeFileSync(join(bin, p), `#!/bin/sh\nexec ip netns exec ${node} ${join(CNI_BIN, p)} "$@"\n`)
      chmodSync(join(bin, p), 0o755)
    }
  })
  afterAll(() => {
    spawnSync("ip", ["netns", "del", pod])
    spawnSync("ip", ["netns", "del", node])
    rmSync(dir, { recursive: true, force: true })
  })

  delegateContract("live", () => DelegateExec.layer, {
    type: "ptp",
    path: () => [bin],
    netns: () => `/var/run/netns/${pod}`,
    subnet: SUBNET,
    ipam: () => ({ type: "host-local", subnet: SUBNET, dataDir })
  })
})
