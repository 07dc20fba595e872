/**
 * Applying planned changes to both backends and the state records, under the node lock, with
 * all-or-nothing semantics for ADD: every applied step registers its inverse, and a failure replays
 * the inverses newest first, so the kernel and the records end exactly as they were.
 */
import { Effect } from "effect"
import type { Backend, PluginConfig } from "../domain/cni/Config.ts"
import type { NetfilterFailed, StateFailed, TryAgainLater } from "../domain/cni/Errors.ts"
import { makeRecord } from "../domain/datapath/AttachmentRecord.ts"
import { AttachmentStore } from "../domain/datapath/AttachmentStore.ts"
import type { BackendEntries } from "../domain/datapath/Check.ts"
import { planCollect } from "../domain/datapath/Collect.ts"
import {
  BACKENDS,
  type Changes,
  desiredEntries,
  invert,
  isEmpty,
  planAttach,
  planDetach,
  planRemoveOwners
} from "../domain/datapath/Entries.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import { NodeLock } from "../domain/datapath/NodeLock.ts"
import { type Attachment, ownerTag, tagsOf } from "../domain/datapath/Owner.ts"
import type { Tenant } from "../domain/tenancy/Tenant.ts"
import { activeBackend } from "./Call.ts"

/** Every managed entry of both backends. */
export const listAll = Effect.fn("listAll")(function* () {
  const nf = yield* Netfilter
  // A backend whose tool exists but cannot work here (nft without nf_tables in the kernel) holds no
  // entries of ours: it must not make DEL or GC fail on such a node.
  const listOne = (b: Backend) =>
    nf
      .list(b)
      .pipe(
        Effect.catch((e) => Effect.flatMap(nf.usable(b), (ok) => (ok ? Effect.fail(e) : Effect.succeed([]))))
      )
  return yield* Effect.forEach(BACKENDS, (b) => Effect.map(listOne(b), (list) => [b, list] as const), {
    concurrency: "unbounded"
  })
})

/**
 * Applies per-backend changes in order (each `apply` is all or nothing) and returns the undo of
 * everything applied; on failure, what was already applied is undone first.
 */
const applyAll = (plans: ReadonlyArray<readonly [Backend, Changes]>) =>
  Effect.gen(function* () {
    const nf = yield* Netfilter
    const done: Array<readonly [Backend, Changes]> = []
    const undo = Effect.suspend(() =>
      Effect.forEach([...done].reverse(), ([b, c]) => nf.apply(b, invert(c)), { discard: true })
    )
    for (const [backend, changes] of plans) {
      if (isEmpty(changes)) continue
      yield* nf.apply(backend, changes).pipe(Effect.onError(() => Effect.ignore(undo)))
      done.push([backend, changes])
    }
    return { undo }
  })

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
  untaggedOnInstallFailure: boolean
): Effect.Effect<
  { readonly tenant: Tenant | null; readonly backend: Backend },
  NetfilterFailed | StateFailed | TryAgainLater,
  Netfilter | NodeLock | AttachmentStore
> =>
  Effect.gen(function* () {
    const lock = yield* NodeLock
    const store = yield* AttachmentStore
    const tag = ownerTag(a)
    return yield* lock.withLock(
      Effect.gen(function* () {
        const current = yield* listAll()
        // After the listing: under `auto`, the live backend answers from it without another process.
        const active = yield* activeBackend(config)
        let effective = tenant
        const applied = yield* applyAll(attachPlans(current, tag, ips, tenant, config.markMask, active)).pipe(
          Effect.catchTag("NetfilterFailed", (e) => {
            if (!untaggedOnInstallFailure || tenant === null || e.removal) return Effect.fail(e)
            effective = null
            return Effect.logWarning(
              "installing the tenant mark failed; failurePolicy open: the pod starts untagged",
              {
                error: e.msg
              }
            ).pipe(Effect.andThen(applyAll(attachPlans(current, tag, ips, null, config.markMask, active))))
          })
        )
        const record = makeRecord(a, effective, config.markMask, ips, active)
        // The record is the last step: if it cannot be written, the entries are taken back.
        yield* store
          .write(config.stateDir, record)
          .pipe(Effect.onError(() => applied.undo.pipe(Effect.ignore)))
        return { tenant: effective, backend: active }
      })
    )
  })

/** DEL's datapath step: this attachment's entries in both backends, then its record. */
export const detach = (config: PluginConfig, a: Attachment) =>
  Effect.gen(function* () {
    const lock = yield* NodeLock
    const store = yield* AttachmentStore
    // Entries an older version tagged in the legacy hashed form go too.
    const tags = tagsOf(a)
    return yield* lock.withLock(
      Effect.gen(function* () {
        const plans = (yield* listAll()).map(([b, list]) => [b, planDetach(list, tags)] as const)
        yield* applyAll(plans)
        yield* store.remove(config.stateDir, a)
        return plans.reduce((n, [, plan]) => n + plan.remove.length, 0)
      })
    )
  })

/**
 * GC's datapath step: entries and records of this network whose attachment is not valid (the
 * decision is planCollect's, Collect.ts). Unreadable records are reported, not fatal.
 */
export const collect = (
  config: PluginConfig,
  valid: ReadonlyArray<{ readonly containerId: string; readonly ifname: string }>
) =>
  Effect.gen(function* () {
    const lock = yield* NodeLock
    const store = yield* AttachmentStore
    return yield* lock.withLock(
      Effect.gen(function* () {
        const listing = yield* store.list(config.stateDir, config.name)
        const current = yield* listAll()
        const plan = planCollect({
          network: config.name,
          valid,
          records: listing.records,
          unreadable: listing.skipped.map((u) => u.attachment),
          entries: current.flatMap(([, list]) => list)
        })
        yield* applyAll(current.map(([b, list]) => [b, planRemoveOwners(list, plan.staleTags)] as const))
        yield* Effect.forEach(plan.staleRecords, (a) => store.remove(config.stateDir, a), { discard: true })
        return {
          entries: plan.staleTags.size,
          records: plan.staleRecords.length,
          skipped: listing.skipped,
          unattributed: plan.unattributed
        }
      })
    )
  })
