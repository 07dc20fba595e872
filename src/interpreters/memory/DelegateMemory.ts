/**
 * A delegate plugin modelled on ptp + host-local: ADD leases the lowest free address of a small pool
 * (so property tests see IPs reused by the next pod), a repeated ADD for the same attachment returns
 * its existing lease as host-local does, DEL releases it, GC releases leases not in the valid list.
 * Speaks the versions it is told to, and refuses configs in any other.
 */
import { Effect, Layer } from "effect"
import { Delegate, type DelegateCall } from "../../domain/Delegate.ts"
import { DelegateError } from "../../domain/Errors.ts"
import type { FaultPlan } from "./Faults.ts"

export class Leases {
  /** attachment (`network/containerId/ifname`) → leased addresses. */
  readonly byAttachment = new Map<string, ReadonlyArray<string>>()
  supportedVersions: ReadonlyArray<string> = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
  readonly calls: Array<DelegateCall> = []
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

const fail = (call: DelegateCall, code: number, msg: string) =>
  new DelegateError({ plugin: call.type, code, msg })

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

export const DelegateMemory = {
  layer: (leases: Leases, faults: FaultPlan): Layer.Layer<Delegate> =>
    Layer.succeed(
      Delegate,
      Delegate.of({
        run: (call) =>
          faults
            .hit(`delegate.${call.command}`, () => fail(call, 999, `${call.command} failed (injected)`))
            .pipe(
              Effect.andThen(
                Effect.suspend((): Effect.Effect<unknown, DelegateError> => {
                  leases.calls.push(call)
                  const version = String(call.conf.cniVersion)
                  if (call.command === "VERSION")
                    return Effect.succeed({
                      cniVersion: version,
                      supportedVersions: leases.supportedVersions
                    })
                  if (!leases.supportedVersions.includes(version)) {
                    return Effect.fail(fail(call, 1, `incompatible CNI versions; config is ${version}`))
                  }
                  const key = `${String(call.conf.name)}/${call.containerId}/${call.ifname}`
                  switch (call.command) {
                    case "ADD": {
                      const ips = leases.byAttachment.get(key) ?? leases.allocate()
                      if (ips === undefined)
                        return Effect.fail(fail(call, 999, "no IP addresses available in range set"))
                      leases.byAttachment.set(key, ips)
                      return faults
                        .hit("delegate.ADD.output", () => undefined)
                        .pipe(
                          Effect.as<unknown>(resultFor(call, ips)),
                          Effect.catch(() => Effect.succeed<unknown>("not a result"))
                        )
                    }
                    case "DEL":
                      leases.byAttachment.delete(key)
                      return Effect.succeed(undefined)
                    case "CHECK":
                      return leases.byAttachment.has(key)
                        ? Effect.succeed(undefined)
                        : Effect.fail(fail(call, 999, `no lease for ${call.containerId}/${call.ifname}`))
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
}
