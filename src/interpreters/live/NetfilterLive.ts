/**
 * The Netfilter service (src/domain/Netfilter.ts) on the host's own tools: `iptables-save` /
 * `iptables-restore` (and the ip6 twins) for the `iptables` backend, `nft` for `nftables`. The
 * backend files render and parse; this one runs processes (argument arrays, never a shell, with
 * `LC_ALL=C` so error texts are stable), checks entries, and maps failures to NetfilterFailed
 * (code 101) carrying the tool's trimmed stderr.
 *
 * Process budget, since every pod start pays it:
 * - list(iptables): one `iptables-save -t mangle` and one `ip6tables-save -t mangle`, concurrently;
 *   list(nftables): one `nft -j list table` for both families.
 * - apply(iptables): one `*-restore --noflush` per family that changes (families concurrently);
 *   apply(nftables): ONE `nft -f -` for both families (the table is `inet`, so one transaction is
 *   atomic across families and a DEL pays one RCU grace period, not two; still "at most one per
 *   family"). Nothing runs when there is nothing to change.
 * - A batch must be built from the kernel's current state (does the chain exist, is the jump first,
 *   which rule or element is really there). apply reuses the state read by the immediately preceding
 *   list (or usable) of the same backend, for at most `reuseListingFor` (1 s): callers hold NodeLock
 *   around every list-then-apply (Netfilter.ts), so nobody else changed it meanwhile. Each listing
 *   serves one apply only. Without a fresh listing apply reads first. A batch built from a stale
 *   view fails rather than doing harm (`-N` of an existing chain, `-D` or `delete element` of a
 *   missing entry), and is then retried once on a fresh read. What a stale view cannot reveal is an
 *   outsider (not holding NodeLock) deleting our jump or rule, or handing an nft element to another
 *   owner, in that window; the first is no worse than doing it a moment later.
 *
 * Absent tools: a backend whose binary is missing lists nothing and is not `usable` (DEL and GC then
 * succeed on a node that never had it). A missing nft table lists nothing.
 */
import * as NodeChildProcessSpawner from "@effect/platform-node/NodeChildProcessSpawner"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { Clock, Data, Duration, Effect, Layer, Result } from "effect"
import { ChildProcessSpawner } from "effect/process"
import type { Backend } from "../../domain/cni/Config.ts"
import { NetfilterFailed } from "../../domain/cni/Errors.ts"
import { byFamily, type Changes, invert, isEmpty, type MarkEntry } from "../../domain/datapath/Entries.ts"
import { invalidChange } from "../../domain/datapath/EntryValidity.ts"
import { Netfilter } from "../../domain/datapath/Netfilter.ts"
import type { Family } from "../../domain/net/Ip.ts"
import * as Ipt from "./NetfilterIptables.ts"
import * as Nft from "./NetfilterNftables.ts"
import { type Ran, runTool } from "./runTool.ts"

export type Tool = "iptables-save" | "ip6tables-save" | "iptables-restore" | "ip6tables-restore" | "nft"

export interface NetfilterLiveOptions {
  /** Prepended to every command, e.g. `["ip", "netns", "exec", "trw-t1"]` (tests run in a netns). */
  readonly prefix?: ReadonlyArray<string>
  /** Another name or path for a tool (tests: a missing binary). */
  readonly tools?: Partial<Record<Tool, string>>
  /** Bound on each command; the child is killed after it. Default 30 s. */
  readonly timeout?: Duration.Input
  /** How long a listing may serve the next apply (see above). Default 1 s; 0 disables reuse. */
  readonly reuseListingFor?: Duration.Input
}

class ToolFailed extends Data.TaggedError("ToolFailed")<{ readonly msg: string }> {}

const MAX_STDERR = 2000
const bounded = (s: string): string => {
  const t = s.trim()
  return t.length > MAX_STDERR ? `${t.slice(0, MAX_STDERR)}…` : t
}

const failed = (backend: Backend, removal: boolean) => (e: ToolFailed) =>
  new NetfilterFailed({ msg: `${backend}: ${e.msg}`, removal })

interface Snapshot<S> {
  readonly at: number
  readonly state: S
}

/** The service, given a process spawner. */
export const make = (options: NetfilterLiveOptions = {}) =>
  Effect.gen(function* () {
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    const prefix = options.prefix ?? []
    const timeout = options.timeout ?? "30 seconds"
    const reuseMillis = Duration.toMillis(options.reuseListingFor ?? "1 second")

    const run = (
      tool: Tool,
      args: ReadonlyArray<string>,
      stdin?: string
    ): Effect.Effect<Ran | "missing", ToolFailed> =>
      runTool(
        [...prefix, options.tools?.[tool] ?? tool, ...args],
        stdin === undefined ? { timeout } : { stdin, timeout }
      ).pipe(
        Effect.provideService(ChildProcessSpawner.ChildProcessSpawner, spawner),
        Effect.mapError((e) => new ToolFailed({ msg: e.message }))
      )

    const check = (tool: Tool, r: Ran | "missing"): Effect.Effect<Ran, ToolFailed> =>
      r === "missing"
        ? Effect.fail(new ToolFailed({ msg: `${tool} not found` }))
        : r.exitCode === 0
          ? Effect.succeed(r)
          : Effect.fail(new ToolFailed({ msg: `${tool} exited with ${r.exitCode}: ${bounded(r.stderr)}` }))

    // --- listings kept for the next apply (see the file comment) -----------------------------------
    const iptSnapshots = new Map<Family, Snapshot<Ipt.IptablesState>>()
    // One nft listing covers both families; each family may use it once (callers that apply one
    // family at a time still save a listing). A later family's batch may repeat `add table` or
    // `add chain` an earlier one created: both are no-ops on existing objects.
    const nftSnapshots = new Map<Family, Snapshot<Nft.NftState>>()
    // When nft last listed successfully: `usable` right after a listing (ADD under `auto` lists, then
    // asks which backend to use) needs no process of its own.
    let nftWorkedAt: number | undefined
    const fresh = <S>(s: Snapshot<S> | undefined, now: number): S | undefined =>
      s !== undefined && now - s.at <= reuseMillis ? s.state : undefined

    // --- iptables ------------------------------------------------------------------------------------
    const readIptables = (family: Family, remember: boolean) =>
      Effect.gen(function* () {
        const [tool, args] = Ipt.saveCommand(family)
        const r = yield* run(tool as Tool, args)
        const state =
          r === "missing"
            ? ({
                family,
                chainExists: false,
                jumpFirst: false,
                jumps: 0,
                rules: []
              } satisfies Ipt.IptablesState)
            : Ipt.parseSave(family, (yield* check(tool as Tool, r)).stdout)
        if (remember) iptSnapshots.set(family, { at: yield* Clock.currentTimeMillis, state })
        return { state, missing: r === "missing" }
      })

    const restore = (
      family: Family,
      state: Ipt.IptablesState,
      changes: Changes
    ): Effect.Effect<void, ToolFailed> => {
      const batch = Ipt.renderBatch(state, changes)
      if (batch === undefined) return Effect.void
      const [tool, args] = Ipt.restoreCommand(family)
      return Effect.asVoid(Effect.flatMap(run(tool as Tool, args, batch), (r) => check(tool as Tool, r)))
    }

    const applyIptables = (family: Family, changes: Changes) =>
      Effect.gen(function* () {
        const cached = fresh(iptSnapshots.get(family), yield* Clock.currentTimeMillis)
        iptSnapshots.delete(family)
        const onFreshState = Effect.flatMap(readIptables(family, false), ({ state }) =>
          restore(family, state, changes)
        )
        if (cached === undefined) return yield* onFreshState
        yield* restore(family, cached, changes).pipe(
          Effect.catch((e) =>
            Effect.logDebug("iptables batch on a reused listing failed; retrying on a fresh one", e.msg).pipe(
              Effect.andThen(onFreshState)
            )
          )
        )
      }).pipe(Effect.asVoid, Effect.mapError(failed("iptables", changes.add.length === 0)))

    // --- nftables ------------------------------------------------------------------------------------
    const readNftables = (remember: boolean) =>
      Effect.gen(function* () {
        const [, args] = Nft.listCommand
        const r = yield* run("nft", args)
        let state = Nft.EMPTY
        if (r !== "missing" && !Nft.isTableMissing(r.exitCode, r.stderr)) {
          const ok = yield* check("nft", r)
          state = yield* Nft.decodeListing(ok.stdout).pipe(
            Effect.mapError((e) => new ToolFailed({ msg: `undecodable nft listing: ${bounded(e.message)}` }))
          )
        }
        if (r !== "missing") nftWorkedAt = yield* Clock.currentTimeMillis
        if (remember) {
          const snapshot = { at: yield* Clock.currentTimeMillis, state }
          nftSnapshots.set(4, snapshot)
          nftSnapshots.set(6, snapshot)
        }
        return { state, missing: r === "missing" }
      })

    const transact = (state: Nft.NftState, changes: Changes): Effect.Effect<void, ToolFailed> => {
      const rendered = Nft.renderTransaction(state, changes)
      if (Result.isFailure(rendered)) return Effect.fail(new ToolFailed({ msg: rendered.failure }))
      if (rendered.success === undefined) return Effect.void
      const [, args] = Nft.applyCommand
      return Effect.asVoid(Effect.flatMap(run("nft", args, rendered.success), (r) => check("nft", r)))
    }

    const applyNftables = (changes: Changes) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const families = byFamily(changes).map(([f]) => f)
        const snapshots = families.map((f) => nftSnapshots.get(f))
        for (const f of families) nftSnapshots.delete(f)
        // Reusable only if every family it touches still has the same, unused listing.
        const cached = snapshots.every((x) => x === snapshots[0]) ? fresh(snapshots[0], now) : undefined
        const onFreshState = Effect.flatMap(readNftables(false), ({ state }) => transact(state, changes))
        if (cached === undefined) return yield* onFreshState
        yield* transact(cached, changes).pipe(
          Effect.catch((e) =>
            Effect.logDebug(
              "nft transaction on a reused listing failed; retrying on a fresh one",
              e.msg
            ).pipe(Effect.andThen(onFreshState))
          )
        )
      }).pipe(Effect.asVoid, Effect.mapError(failed("nftables", changes.add.length === 0)))

    // --- the service ---------------------------------------------------------------------------------
    const usable = (backend: Backend): Effect.Effect<boolean> =>
      (backend === "iptables"
        ? Effect.map(
            Effect.all([readIptables(4, true), readIptables(6, true)], { concurrency: "unbounded" }),
            (rs) => rs.every((r) => !r.missing)
          )
        : Effect.flatMap(Clock.currentTimeMillis, (now) =>
            nftWorkedAt !== undefined && now - nftWorkedAt <= reuseMillis
              ? Effect.succeed(true)
              : Effect.map(readNftables(true), (r) => !r.missing)
          )
      ).pipe(Effect.orElseSucceed(() => false))

    const list = (backend: Backend): Effect.Effect<ReadonlyArray<MarkEntry>, NetfilterFailed> =>
      backend === "iptables"
        ? Effect.all([readIptables(4, true), readIptables(6, true)], { concurrency: "unbounded" }).pipe(
            Effect.map((rs) => rs.flatMap((r) => Ipt.entriesOf(r.state))),
            Effect.mapError(failed(backend, false))
          )
        : readNftables(true).pipe(
            Effect.map((r) => Nft.entriesOf(r.state)),
            Effect.mapError(failed(backend, false))
          )

    const apply = (backend: Backend, changes: Changes): Effect.Effect<void, NetfilterFailed> => {
      if (isEmpty(changes)) return Effect.void
      const why = invalidChange(changes)
      if (why !== undefined) {
        return Effect.fail(
          new NetfilterFailed({
            msg: `${backend}: invalid entry (${why})`,
            removal: changes.add.length === 0
          })
        )
      }
      return backend === "iptables" ? applyIptablesAtomically(changes) : applyNftables(changes)
    }

    // iptables and ip6tables are separate transactions: when one family fails, the other family's
    // committed batch is reverted, so `apply` is all-or-nothing as the Netfilter contract says.
    const applyIptablesAtomically = (changes: Changes): Effect.Effect<void, NetfilterFailed> =>
      Effect.gen(function* () {
        const families = byFamily(changes)
        const results = yield* Effect.forEach(
          families,
          ([family, ch]) => Effect.result(applyIptables(family, ch)),
          {
            concurrency: "unbounded"
          }
        )
        const failure = results.find(Result.isFailure)
        if (failure === undefined) return
        yield* Effect.forEach(
          families.filter((_, i) => Result.isSuccess(results[i]!)),
          ([family, ch]) => applyIptables(family, invert(ch)).pipe(Effect.ignore),
          { discard: true }
        )
        return yield* failure.failure
      })

    return Netfilter.of({ usable, list, apply })
  })

/** `Netfilter` on this host's tools; `prefix` runs them elsewhere (e.g. `ip netns exec NS`). */
export const layer = (options: NetfilterLiveOptions = {}): Layer.Layer<Netfilter> =>
  Layer.effect(Netfilter, make(options)).pipe(
    Layer.provide(NodeChildProcessSpawner.layer),
    Layer.provide(Layer.mergeAll(NodeFileSystem.layer, NodePath.layer))
  )

export const NetfilterLive = { make, layer } as const
