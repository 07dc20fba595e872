/**
 * The Committer (src/domain/datapath/Committer.ts) over Netfilter and NodeLock: a queue, drained by
 * one fiber at a time that takes the node lock, then everything queued, and commits it as one group.
 * Calls that arrive while a group is being committed (or while the lock is held by another process)
 * form the next group, so the group grows exactly when the node is busy and a lone call waits for
 * nobody. The agent shares one committer among its calls; a standalone call makes its own and
 * commits a queue of one through the same code.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import type { Backend } from "../domain/cni/Config.ts"
import { BACKENDS } from "../domain/cni/Config.ts"
import type { NetfilterFailed, TryAgainLater } from "../domain/cni/Errors.ts"
import { applyView, Committer, type Plan, type Step, type View } from "../domain/datapath/Committer.ts"
import { type Changes, diff, invert, isEmpty } from "../domain/datapath/Entries.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import { NodeLock } from "../domain/datapath/NodeLock.ts"

type NetfilterService = Netfilter["Service"]

/** Every managed entry of both backends. */
export const listWith = (nf: NetfilterService) => {
  // A backend whose tool exists but cannot work here (nft without nf_tables in the kernel) holds no
  // entries of ours: it must not make DEL or GC fail on such a node.
  const listOne = (b: Backend) =>
    nf
      .list(b)
      .pipe(
        Effect.catch((e) => Effect.flatMap(nf.usable(b), (ok) => (ok ? Effect.fail(e) : Effect.succeed([]))))
      )
  return Effect.forEach(BACKENDS, (b) => Effect.map(listOne(b), (list) => [b, list] as const), {
    concurrency: "unbounded"
  })
}

/** The listing and which backends work (after the listing: the live backends answer from it). */
export const readView = (nf: NetfilterService): Effect.Effect<View, NetfilterFailed> =>
  Effect.gen(function* () {
    const entries = yield* listWith(nf)
    const [iptables, nftables] = yield* Effect.all([nf.usable("iptables"), nf.usable("nftables")])
    return { entries, usable: { iptables, nftables } }
  })

/**
 * Applies per-backend changes in order (each `apply` is all or nothing) and returns the undo of
 * everything applied; on failure, what was already applied is undone first.
 */
export const applyWith = (nf: NetfilterService, plans: ReadonlyArray<readonly [Backend, Changes]>) =>
  Effect.gen(function* () {
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

/** The group's one change per backend: from the first view to the last, removals-only first. */
const merged = (first: View, last: View): ReadonlyArray<readonly [Backend, Changes]> =>
  first.entries
    .map(([b, list]) => [b, diff(list, last.entries.find(([lb]) => lb === b)?.[1] ?? [])] as const)
    .sort(([, a], [, b]) => Number(a.add.length > 0) - Number(b.add.length > 0))

// biome-ignore lint/suspicious/noExplicitAny: a queue holds steps of every call's own types
type AnyStep = Step<any, any>

interface Pending {
  readonly step: AnyStep
  readonly done: Deferred.Deferred<unknown, unknown>
  state: "queued" | "taken" | "withdrawn"
}

/** Runs the plans of `steps` in order from `view`; the last view and each plan. */
const replay = (view: View, steps: ReadonlyArray<AnyStep>) => {
  const plans: Array<Plan<unknown, unknown>> = []
  let v = view
  for (const s of steps) {
    const p = (s.plan as (v: View) => Plan<unknown, unknown>)(v)
    plans.push(p)
    v = applyView(v, p.changes)
  }
  return { plans, last: v }
}

export const makeCommitter = (nf: NetfilterService, lock: NodeLock["Service"]) => {
  const queue: Array<Pending> = []
  let draining = false
  /** How many groups and calls were committed (logged; tests read them). */
  const stats = { groups: 0, calls: 0 }

  const complete = (p: Pending, exit: Exit.Exit<unknown, unknown>) => {
    Deferred.doneUnsafe(p.done, exit)
  }

  /** Plannable steps committed together. */
  const commitGroup = (group: ReadonlyArray<Pending>) =>
    Effect.gen(function* () {
      const alone = Effect.forEach(
        group,
        (p) => Effect.map(Effect.exit(p.step.alone), (x) => complete(p, x)),
        {
          discard: true
        }
      )
      // One call is its own group: its own transaction and its own failure handling (failurePolicy
      // open's untagged retry), exactly as standalone.
      if (group.length === 1) return yield* alone
      const first = yield* Effect.exit(readView(nf))
      // Each call alone would have listed first and failed here too.
      if (Exit.isFailure(first)) {
        for (const p of group) complete(p, first)
        return
      }
      const { plans, last } = replay(
        first.value,
        group.map((p) => p.step)
      )
      const applied = yield* Effect.exit(applyWith(nf, merged(first.value, last)))
      if (Exit.isFailure(applied)) {
        yield* Effect.logDebug("merged datapath change failed; each call runs alone", {
          calls: group.length
        })
        return yield* alone
      }
      const finished: Array<Exit.Exit<void, unknown>> = []
      for (const p of plans) finished.push(yield* Effect.exit(p.finish))
      const ok = group.filter((_, i) => Exit.isSuccess(finished[i] as Exit.Exit<void, unknown>))
      let results = plans.map((p) => p.result)
      if (ok.length < group.length) {
        // A failed finish undoes its call: the entries become what the others' plans give alone.
        const again = replay(
          first.value,
          ok.map((p) => p.step)
        )
        yield* applyWith(nf, merged(last, again.last)).pipe(
          Effect.catch((e) => Effect.logError("undoing a failed call's entries failed", { error: e.msg }))
        )
        results = group.map((p) => {
          const k = ok.indexOf(p)
          return k < 0 ? undefined : (again.plans[k] as Plan<unknown, unknown>).result
        })
      }
      group.forEach((p, i) => {
        const f = finished[i] as Exit.Exit<void, unknown>
        complete(p, Exit.isFailure(f) ? f : Exit.succeed(results[i]))
      })
    })

  /** A taken batch in arrival order: runs of plannable steps as groups, the others alone. */
  const commitBatch = (batch: ReadonlyArray<Pending>) =>
    Effect.gen(function* () {
      stats.groups++
      stats.calls += batch.length
      let i = 0
      while (i < batch.length) {
        const p = batch[i] as Pending
        if (p.step.plan === undefined) {
          complete(p, yield* Effect.exit(p.step.alone))
          i++
          continue
        }
        let j = i
        while (j < batch.length && (batch[j] as Pending).step.plan !== undefined) j++
        yield* commitGroup(batch.slice(i, j))
        i = j
      }
    })

  const take = () => {
    const batch = queue.splice(0).filter((p) => p.state === "queued")
    for (const p of batch) p.state = "taken"
    return batch
  }

  const drain: Effect.Effect<void> = Effect.gen(function* () {
    for (;;) {
      if (queue.length === 0) {
        draining = false
        return
      }
      // The batch is taken once the lock is held: whoever queued while we waited joins it.
      yield* lock.withLock(Effect.suspend(() => commitBatch(take()))).pipe(
        Effect.catch((e: TryAgainLater | NetfilterFailed) =>
          Effect.sync(() => {
            for (const p of take()) complete(p, Exit.fail(e))
          })
        )
      )
    }
  }).pipe(Effect.uninterruptible)

  const submit = <A, E>(step: Step<A, E>): Effect.Effect<A, E | TryAgainLater | NetfilterFailed> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function* () {
        const p: Pending = { step, done: Deferred.makeUnsafe<unknown, unknown>(), state: "queued" }
        queue.push(p)
        if (!draining) {
          draining = true
          yield* Effect.forkDetach(drain)
        }
        const awaited = Deferred.await(p.done) as Effect.Effect<A, E | TryAgainLater | NetfilterFailed>
        return yield* restore(awaited).pipe(
          Effect.onInterrupt(() =>
            Effect.gen(function* () {
              if (p.state === "queued") {
                p.state = "withdrawn"
                return
              }
              // Being committed: let it finish, then take it back if it succeeded.
              const exit = yield* Effect.exit(awaited)
              if (Exit.isSuccess(exit) && step.undo !== undefined) {
                yield* Effect.ignore(submit(step.undo(exit.value)))
              }
            })
          )
        )
      })
    )

  return Object.assign(Committer.of({ submit }), {
    stats,
    /** How many calls wait to be taken (tests: start a group once all of it has arrived). */
    queued: () => queue.filter((p) => p.state === "queued").length
  })
}

/** One committer shared by every call given this layer (the agent; memory worlds). */
export const committerLayer: Layer.Layer<Committer, never, Netfilter | NodeLock> = Layer.effect(
  Committer,
  Effect.gen(function* () {
    return makeCommitter(yield* Netfilter, yield* NodeLock)
  })
)
