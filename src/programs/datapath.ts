/**
 * The datapath steps of ADD, DEL and GC: planned changes to both backends and the state records,
 * committed under the node lock by the Committer (src/domain/datapath/Committer.ts), together with
 * whatever other calls of the same process arrived meanwhile. Each step is all or nothing: alone,
 * every applied step registers its inverse and a failure replays the inverses newest first; in a
 * group, the committer gives each call the outcome it would have had alone.
 *
 * What stays under the lock, in order, for every call: entries first, then the record (a record
 * names only entries that are in place; DEL's entries and record are gone before its delegate DEL
 * runs, since `detach` returns only once they are committed).
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { Backend, PluginConfig } from "../domain/cni/Config.ts"
import type { NetfilterFailed, StateFailed, TryAgainLater } from "../domain/cni/Errors.ts"
import { makeRecord, type PodRef } from "../domain/datapath/AttachmentRecord.ts"
import { AttachmentStore } from "../domain/datapath/AttachmentStore.ts"
import type { BackendEntries } from "../domain/datapath/Check.ts"
import { planCollect } from "../domain/datapath/Collect.ts"
import { Committer, type Step, type View } from "../domain/datapath/Committer.ts"
import { desiredEntries, planAttach, planDetach, planRemoveOwners } from "../domain/datapath/Entries.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import { NodeLock } from "../domain/datapath/NodeLock.ts"
import { type Attachment, ownerTag, tagsOf } from "../domain/datapath/Owner.ts"
import type { Tenant } from "../domain/tenancy/Tenant.ts"
import { applyWith, listWith, makeCommitter, readView } from "./committer.ts"

/** Every managed entry of both backends. */
export const listAll = Effect.fn("listAll")(function* () {
  return yield* listWith(yield* Netfilter)
})

/** The process's committer, or (standalone) one for this call: a queue of one, the same code. */
const commit = <A, E>(step: Step<A, E>) =>
  Effect.gen(function* () {
    const shared = yield* Effect.serviceOption(Committer)
    const committer = Option.isSome(shared) ? shared.value : makeCommitter(yield* Netfilter, yield* NodeLock)
    return yield* committer.submit(step)
  })

/** What `auto` stands for on this node (docs/DESIGN.md §2), from the view. */
const backendOf = (config: PluginConfig, view: View): Backend =>
  config.backend === "auto" ? (view.usable.nftables ? "nftables" : "iptables") : config.backend

const attachPlans = (
  current: BackendEntries,
  tag: string,
  ips: ReadonlyArray<string>,
  tenant: Tenant | null,
  mask: number,
  active: Backend
) => {
  const desired = desiredEntries(tag, ips, tenant, mask)
  // The inactive backend only loses entries, so it goes first: a failure there leaves nothing to undo.
  return [...current]
    .sort(([a]) => (a === active ? 1 : -1))
    .map(([b, list]) => [b, planAttach(list, tag, ips, desired, b === active)] as const)
}

/**
 * ADD's datapath step: the attachment gets exactly its desired entries (removing stale ones of other
 * owners on its IPs) and its record. `untaggedOnInstallFailure` is failurePolicy open: if installing
 * the marks fails, the pod proceeds untagged, but stale entries must still go.
 */
export const attach = (
  config: PluginConfig,
  a: Attachment,
  ips: ReadonlyArray<string>,
  tenant: Tenant | null,
  untaggedOnInstallFailure: boolean,
  pod?: PodRef
): Effect.Effect<
  { readonly tenant: Tenant | null; readonly backend: Backend },
  NetfilterFailed | StateFailed | TryAgainLater,
  Netfilter | NodeLock | AttachmentStore
> =>
  Effect.gen(function* () {
    const nf = yield* Netfilter
    const store = yield* AttachmentStore
    const tag = ownerTag(a)
    const write = (effective: Tenant | null, active: Backend) =>
      store.write(config.stateDir, makeRecord(a, effective, config.markMask, ips, active, pod))

    const alone = Effect.gen(function* () {
      const view = yield* readView(nf)
      const active = backendOf(config, view)
      const current = view.entries
      let effective = tenant
      const applied = yield* applyWith(
        nf,
        attachPlans(current, tag, ips, tenant, config.markMask, active)
      ).pipe(
        Effect.catchTag("NetfilterFailed", (e) => {
          if (!untaggedOnInstallFailure || tenant === null || e.removal) return Effect.fail(e)
          effective = null
          return Effect.logWarning(
            "installing the tenant mark failed; failurePolicy open: the pod starts untagged",
            {
              error: e.msg
            }
          ).pipe(Effect.andThen(applyWith(nf, attachPlans(current, tag, ips, null, config.markMask, active))))
        })
      )
      // The record is the last step: if it cannot be written, the entries are taken back.
      yield* write(effective, active).pipe(Effect.onError(() => applied.undo.pipe(Effect.ignore)))
      return { tenant: effective, backend: active }
    })

    return yield* commit({
      plan: (view) => {
        const active = backendOf(config, view)
        return {
          changes: attachPlans(view.entries, tag, ips, tenant, config.markMask, active),
          result: { tenant, backend: active },
          finish: write(tenant, active)
        }
      },
      alone,
      // An ADD abandoned while it was committed is undone as its DEL would.
      undo: () => detachStep(config, a, nf, store)
    })
  })

const detachStep = (
  config: PluginConfig,
  a: Attachment,
  nf: Netfilter["Service"],
  store: AttachmentStore["Service"]
): Step<number, NetfilterFailed | StateFailed> => {
  // Entries an older version tagged in the legacy hashed form go too.
  const tags = tagsOf(a)
  const plans = (entries: BackendEntries) => entries.map(([b, list]) => [b, planDetach(list, tags)] as const)
  const removed = (ps: ReturnType<typeof plans>) => ps.reduce((n, [, plan]) => n + plan.remove.length, 0)
  return {
    plan: (view) => {
      const changes = plans(view.entries)
      return { changes, result: removed(changes), finish: store.remove(config.stateDir, a) }
    },
    alone: Effect.gen(function* () {
      const changes = plans(yield* listWith(nf))
      yield* applyWith(nf, changes)
      yield* store.remove(config.stateDir, a)
      return removed(changes)
    })
  }
}

/** DEL's datapath step: this attachment's entries in both backends, then its record. */
export const detach = (config: PluginConfig, a: Attachment) =>
  Effect.gen(function* () {
    const nf = yield* Netfilter
    const store = yield* AttachmentStore
    return yield* commit(detachStep(config, a, nf, store))
  })

/**
 * GC's datapath step: entries and records of this network whose attachment is not valid (the
 * decision is planCollect's, Collect.ts). Unreadable records are reported, not fatal. It reads the
 * records, so it is never planned with others: it runs alone at its place in the order.
 */
export const collect = (
  config: PluginConfig,
  valid: ReadonlyArray<{ readonly containerId: string; readonly ifname: string }>
) =>
  Effect.gen(function* () {
    const nf = yield* Netfilter
    const store = yield* AttachmentStore
    return yield* commit({
      alone: Effect.gen(function* () {
        const listing = yield* store.list(config.stateDir, config.name)
        const current = yield* listWith(nf)
        const plan = planCollect({
          network: config.name,
          valid,
          records: listing.records,
          unreadable: listing.skipped.map((u) => u.attachment),
          entries: current.flatMap(([, list]) => list)
        })
        yield* applyWith(
          nf,
          current.map(([b, list]) => [b, planRemoveOwners(list, plan.staleTags)] as const)
        )
        yield* Effect.forEach(plan.staleRecords, (a) => store.remove(config.stateDir, a), { discard: true })
        return {
          entries: plan.staleTags.size,
          records: plan.staleRecords.length,
          skipped: listing.skipped,
          unattributed: plan.unattributed
        }
      })
    })
  })
