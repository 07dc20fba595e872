/**
 * The Routing contract against the memory model and against iproute2 in a throwaway netns
 * (`trw-rt-<random>`: lo up, a veth pair with 192.0.2.1/24 and 2001:db8::1/64 so gateways are
 * reachable; deleted in afterAll). The root netns is never touched: every command runs as
 * `ip -n <netns>`. Needs root and iproute2; the live half is skipped otherwise.
 */
import { spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { afterAll, beforeAll, describe } from "@effect/vitest"
import { Layer } from "effect"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import * as RoutingMemory from "../src/interpreters/memory/RoutingMemory.ts"
import { routingContract } from "./conformance/routingContract.ts"
import { missingOf, skipLive } from "./support/liveGate.ts"

routingContract("memory", () => RoutingMemory.layer())

const canRun = !skipLive("live iproute2", missingOf({ root: true, commands: ["ip"] }))

describe.skipIf(!canRun)("live iproute2", () => {
  const ns = `trw-rt-${randomBytes(4).toString("hex")}`
  const ipNs = (...args: ReadonlyArray<string>) => {
    const r = spawnSync("ip", ["-n", ns, ...args], { encoding: "utf8" })
    if (r.status !== 0) throw new Error(`ip -n ${ns} ${args.join(" ")}: ${r.stderr}`)
  }
  beforeAll(() => {
    const r = spawnSync("ip", ["netns", "add", ns], { encoding: "utf8" })
    if (r.status !== 0) throw new Error(`ip netns add ${ns}: ${r.stderr}`)
    ipNs("link", "set", "lo", "up")
    ipNs("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ipNs("link", "set", "v0", "up")
    ipNs("link", "set", "v1", "up")
    ipNs("addr", "add", "192.0.2.1/24", "dev", "v0")
    ipNs("-6", "addr", "add", "2001:db8::1/64", "dev", "v0", "nodad")
  })
  afterAll(() => {
    spawnSync("ip", ["netns", "del", ns])
  })

  routingContract("live", () => Layer.provide(RoutingIproute2.layer({ netns: ns }), NodeServices.layer))
})
