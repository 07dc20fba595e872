/**
 * A delegate plugin modelled on ptp + host-local, checked against the real Debian ones by
 * test/conformance/delegateContract.ts: ADD leases the lowest free address of a small pool (so
 * property tests see IPs reused by the next pod); a repeated ADD for an attachment that holds a lease
 * fails (999) and keeps the lease, as host-local refuses a "duplicate allocation" and ptp does not
 * release on that failure; DEL releases it; CHECK needs the lease and a prevResult; GC releases leases
 * not in the valid list. Speaks the versions it is told to, and refuses configs in any other with
 * code 1 and ptp's message.
 * Deliberately different: the config's `ipam` is ignored (the pool is 10.200.0.2.. as /24, and
 * fd00:200::/64 when dual-stack), and host-local hands out addresses round-robin from its last
 * reservation where the model takes the lowest free one, which makes reuse frequent.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Delegate, type DelegateCall } from "../../domain/cni/Delegate.ts"
import { DelegateError, DelegateFailed } from "../../domain/cni/Errors.ts"
import type { FaultPlan } from "./Faults.ts"

export class Leases {
  /** attachment (`network/containerId/ifname`) → leased addresses. */
  readonly byAttachment = new Map<string, ReadonlyArray<string>>()
  supportedVersions: ReadonlyArray<string> = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
  readonly calls: Array<DelegateCall> = []
  /**
   * A repeated ADD while a lease is held: "refuse" as host-local does (the default), or "same-lease",
   * the idempotent delegate this model used to be (no real ptp/host-local behaves so).
   */
  repeatedAdd: "refuse" | "same-lease" = "refuse"
  /**
   * What ADD prints when the "delegate.ADD.output" fault hits, after leasing: valid JSON that is no
   * CNI result, or output the live interpreter refuses as a whole (not JSON, or over its size bound),
   * which it reports as DelegateFailed with `ran`.
   */
  badOutput: "not-a-result" | "unparsable" = "not-a-result"
  readonly poolSize: number
  readonly dualStack: boolean
  constructor(poolSize = 16, dualStack = false) {
    this.poolSize = poolSize
    this.dualStack = dualStack
  }

  snapshot(): ReadonlyArray<readonly [string, ReadonlyArray<string>]> {
    return [...this.byAttachment.entries()].sort(([a], [b]) => a.localeCompare(b))
  }

  allocate(): ReadonlyArray<string> | undefined {
    const used = new Set([...this.byAttachment.values()].flat())
    for (let i = 2; i < 2 + this.poolSize; i++) {
      const v4 = `10.200.0.${i}`
      if (!used.has(v4)) return this.dualStack ? [v4, `fd00:200::${i.toString(16)}`] : [v4]
    }
    return undefined
  }
}

const fail = (call: DelegateCall, code: number, msg: string, details?: string) =>
  new DelegateError({ plugin: call.type, code, msg, ...(details === undefined ? {} : { details }) })

const resultFor = (call: DelegateCall, ips: ReadonlyArray<string>) => ({
  cniVersion: call.conf.cniVersion,
  interfaces: [{ name: call.ifname, mac: "0a:58:0a:c8:00:02", sandbox: call.netns }],
  ips: ips.map((ip) =>
    ip.includes(":")
      ? { address: `${ip}/64`, interface: 0 }
      : { address: `${ip}/24`, gateway: "10.200.0.1", interface: 0 }
  ),
  routes: [{ dst: "0.0.0.0/0" }]
})

export const layer = (leases: Leases, faults: FaultPlan): Layer.Layer<Delegate> =>
  Layer.succeed(
    Delegate,
    Delegate.of({
      run: (call) =>
        faults
          .hit(`delegate.${call.command}`, () => fail(call, 999, `${call.command} failed (injected)`))
          .pipe(
            Effect.andThen(
              Effect.suspend((): Effect.Effect<unknown, DelegateError | DelegateFailed> => {
                leases.calls.push(call)
                const version = String(call.conf.cniVersion)
                if (call.command === "VERSION")
                  return Effect.succeed({
                    cniVersion: version,
                    supportedVersions: leases.supportedVersions
                  })
                if (!leases.supportedVersions.includes(version)) {
                  // ptp's own words (skel), details included.
                  return Effect.fail(
                    fail(
                      call,
                      1,
                      "incompatible CNI versions",
                      `config is ${JSON.stringify(version)}, plugin supports [${leases.supportedVersions.map((v) => JSON.stringify(v)).join(" ")}]`
                    )
                  )
                }
                const key = `${String(call.conf.name)}/${call.containerId}/${call.ifname}`
                switch (call.command) {
                  case "ADD": {
                    // host-local refuses a second lease for the same container id and ifname, and
                    // ptp does not release on that failure: the first lease stays.
                    const held = leases.byAttachment.get(key)
                    if (held !== undefined && leases.repeatedAdd === "same-lease")
                      return Effect.succeed<unknown>(resultFor(call, held))
                    if (held !== undefined)
                      return Effect.fail(
                        fail(
                          call,
                          999,
                          `failed to allocate for range 0: ${held[0]} has been allocated to ${call.containerId}, duplicate allocation is not allowed`
                        )
                      )
                    const ips = leases.allocate()
                    if (ips === undefined)
                      return Effect.fail(
                        fail(
                          call,
                          999,
                          "failed to allocate for range 0: no IP addresses available in range set"
                        )
                      )
                    leases.byAttachment.set(key, ips)
                    return faults
                      .hit("delegate.ADD.output", () => undefined)
                      .pipe(
                        Effect.as<unknown>(resultFor(call, ips)),
                        Effect.catch(() =>
                          leases.badOutput === "not-a-result"
                            ? Effect.succeed<unknown>("not a result")
                            : Effect.fail(
                                new DelegateFailed({
                                  msg: `delegate ${call.type} ADD succeeded but printed invalid JSON (injected)`,
                                  ran: true
                                })
                              )
                        )
                      )
                  }
                  case "DEL":
                    leases.byAttachment.delete(key)
                    return Effect.succeed(undefined)
                  case "CHECK":
                    // ptp asks host-local first, then wants the prevResult to compare with.
                    if (!leases.byAttachment.has(key))
                      return Effect.fail(
                        fail(
                          call,
                          999,
                          `host-local: Failed to find address added by container ${call.containerId}`
                        )
                      )
                    return call.conf.prevResult === undefined
                      ? Effect.fail(fail(call, 999, "ptp: Required prevResult missing"))
                      : Effect.succeed(undefined)
                  case "GC": {
                    const valid = (call.conf["cni.dev/valid-attachments"] ?? []) as ReadonlyArray<{
                      containerID: string
                      ifname: string
                    }>
                    const keep = new Set(
                      valid.map((v) => `${String(call.conf.name)}/${v.containerID}/${v.ifname}`)
                    )
                    for (const k of [...leases.byAttachment.keys()]) {
                      if (k.startsWith(`${String(call.conf.name)}/`) && !keep.has(k))
                        leases.byAttachment.delete(k)
                    }
                    return Effect.succeed(undefined)
                  }
                  default:
                    return Effect.succeed(undefined)
                }
              })
            )
          )
    })
  )
