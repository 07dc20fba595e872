/**
 * A model of the kernel's marking entries for both backends, for property tests: entries are data,
 * each `apply` of a family is one counted transaction that either happens whole or not at all (as
 * iptables-restore and nft -f do), and a backend can be made unusable.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { Backend } from "../../domain/cni/Config.ts"
import { NetfilterFailed } from "../../domain/cni/Errors.ts"
import { byFamily, type MarkEntry, sameEntry } from "../../domain/datapath/Entries.ts"
import { invalidChange } from "../../domain/datapath/EntryValidity.ts"
import { Netfilter } from "../../domain/datapath/Netfilter.ts"
import { canonicalIp } from "../../domain/net/Ip.ts"
import type { FaultPlan } from "./Faults.ts"

export class Kernel {
  readonly entries: Record<Backend, Array<MarkEntry>> = { iptables: [], nftables: [] }
  readonly usable: Record<Backend, boolean> = { iptables: true, nftables: true }
  /** Transactions per backend and family, to check "at most one per family per call". */
  readonly transactions: Array<{ backend: Backend; family: 4 | 6 }> = []

  snapshot(): Record<Backend, ReadonlyArray<MarkEntry>> {
    const sort = (l: ReadonlyArray<MarkEntry>) =>
      [...l].sort((a, b) => `${a.ip}|${a.owner}|${a.mark}`.localeCompare(`${b.ip}|${b.owner}|${b.mark}`))
    return { iptables: sort(this.entries.iptables), nftables: sort(this.entries.nftables) }
  }
}

export const make = (kernel: Kernel, faults: FaultPlan): Netfilter["Service"] =>
  Netfilter.of({
    usable: (b) => Effect.sync(() => kernel.usable[b]),
    list: (b) =>
      faults
        .hit(
          "netfilter.list",
          () => new NetfilterFailed({ msg: `${b}: listing failed (injected)`, removal: true })
        )
        .pipe(
          Effect.andThen(Effect.sync(() => (kernel.usable[b] ? [...kernel.entries[b]] : []))),
          // A real listing takes time: other calls run between reading and acting on it, so a
          // read-then-change outside the node lock shows as lost or duplicate entries.
          Effect.tap(() => Effect.yieldNow)
        ),
    apply: (b, changes) =>
      faults
        .hit(
          "netfilter.apply",
          () =>
            new NetfilterFailed({
              msg: `${b}: transaction failed (injected)`,
              removal: changes.add.length === 0
            })
        )
        .pipe(
          Effect.andThen(
            Effect.suspend(() => {
              // The live backends' refusal, before anything changes (EntryValidity.ts).
              const why = invalidChange(changes)
              if (why !== undefined) {
                return Effect.fail(
                  new NetfilterFailed({
                    msg: `${b}: invalid entry (${why})`,
                    removal: changes.add.length === 0
                  })
                )
              }
              if (!kernel.usable[b]) {
                return Effect.fail(
                  new NetfilterFailed({ msg: `${b} is not usable`, removal: changes.add.length === 0 })
                )
              }
              // Like the live backends: remove if present, add if absent, IPs as the kernel prints them.
              const canonical = (e: MarkEntry): MarkEntry => ({ ...e, ip: canonicalIp(e.ip) })
              const remove = changes.remove.map(canonical)
              const kept = kernel.entries[b].filter((e) => !remove.some((r) => sameEntry(e, r)))
              const add = changes.add
                .map(canonical)
                .filter((a, i, all) => all.findIndex((x) => sameEntry(x, a)) === i)
              kernel.entries[b] = [...kept, ...add.filter((a) => !kept.some((e) => sameEntry(e, a)))]
              for (const [family] of byFamily(changes)) kernel.transactions.push({ backend: b, family })
              return Effect.void
            })
          )
        )
  })

export const layer = (kernel: Kernel, faults: FaultPlan): Layer.Layer<Netfilter> =>
  Layer.succeed(Netfilter, make(kernel, faults))
