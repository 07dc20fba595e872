/**
 * The Netfilter service (src/domain/datapath/Netfilter.ts) on the host's own tools: `iptables-save` /
 * `iptables-restore` (and the ip6 twins) for the `iptables` backend, `nft` for `nftables`. Each
 * backend is one small driver (read its state, render a change into kernel transactions, say what
 * the state becomes); the backend files render and parse (NetfilterIptables.ts,
 * NetfilterNftables.ts). This file runs processes (argument arrays, never a shell, with `LC_ALL=C`
 * so error texts are stable), keeps the last view, retries, and maps failures to NetfilterFailed
 * (code 101) carrying the tool's trimmed stderr. Everything here is shared by both drivers.
 *
 * Process budget, since every pod start pays it:
 * - read(iptables): one `iptables-save -t mangle` and one `ip6tables-save -t mangle`, concurrently;
 *   read(nftables): one `nft -j list table` for both families.
 * - A transaction (batch) per kernel transaction: iptables one `*-restore --noflush` per family that
 *   changes (families concurrently); nftables ONE `nft -f -` for both families (the table is `inet`,
 *   so one transaction is atomic across families and a DEL pays one RCU grace period, not two; still
 *   "at most one per family"). Nothing runs when there is nothing to change.
 *
 * The view kept between calls: a batch must be rendered from the kernel's current state (does the
 * chain exist, is the jump first, which rule or element is really there), and reading it is O(n) in
 * the entries on the node. So each backend keeps its last state, and after a successful apply the
 * state it led to (computed purely, `evolve`; a transaction creating nft structure drops the view,
 * since the kernel chooses the new rule's handle). The view is valid while the backend's generation
 * file (`<generationDir>/netfilter-<backend>-netns<inode>.generation`, one per network namespace,
 * since each has its own netfilter state) holds the token it was taken under: every
 * apply, by any process running this code (the agent, a standalone call), first replaces the token
 * with a fresh random one, so a view survives exactly as long as nobody else changed the backend
 * through this code. Callers hold NodeLock around every read-then-apply (Netfilter.ts), so tokens
 * are written under the lock. The token is written atomically (rename), and before the kernel
 * changes, so a reader cannot pair an old token with a new state. An absent file is a token too
 * (nobody has changed the backend since the file went with the last boot's /run).
 * What a view cannot reveal is an outsider (not running this code) changing our objects. A batch
 * rendered from a stale view fails rather than doing harm (`-N` of an existing chain, `-D` or
 * `delete element` of a missing entry, an element added to a missing set) and is then retried once
 * on a fresh read; the outsider that deletes our jump or hands an nft element to another owner is
 * not noticed until the next fresh read.
 *
 * Absent tools: a backend whose binary is missing lists nothing and is not `usable` (DEL and GC then
 * succeed on a node that never had it). A missing nft table lists nothing.
 */
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { dirname, join } from "node:path"
import * as NodeChildProcessSpawner from "@effect/platform-node/NodeChildProcessSpawner"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { ChildProcessSpawner } from "effect/process"
import * as Result from "effect/Result"
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

export const DEFAULT_GENERATION_DIR = "/run/tenant-routing"

export interface NetfilterLiveOptions {
  /** Prepended to every command, e.g. `["ip", "netns", "exec", "trw-t1"]` (tests run in a netns). */
  readonly prefix?: ReadonlyArray<string>
  /** Another name or path for a tool (tests: a missing binary). */
  readonly tools?: Partial<Record<Tool, string>>
  /** Bound on each command; the child is killed after it. Default 30 s. */
  readonly timeout?: Duration.Input
  /**
   * Where the generation files live (see above). Default /run/tenant-routing; every process changing
   * the same kernel must use the same directory. `null`: keep no view (every list and apply reads).
   */
  readonly generationDir?: string | null
}

/**
 * The generation file of `backend` in `dir`. It is named after the network namespace the tools run
 * in (the inode of its `/proc/<pid>/ns/net`): a change in another namespace (a test's, a benchmark's
 * second node) must not invalidate this one's view. With a `prefix` the tools run elsewhere and the
 * caller names a directory of that namespace's own; a namespace that cannot be read gives no view.
 */
export const generationPath = (dir: string, backend: Backend, prefixed: boolean): string | undefined => {
  if (prefixed) return join(dir, `netfilter-${backend}.generation`)
  try {
    return join(dir, `netfilter-${backend}-netns${fs.statSync("/proc/self/ns/net").ino}.generation`)
  } catch {
    return undefined
  }
}

class ToolFailed extends Data.TaggedError("ToolFailed")<{ readonly msg: string }> {}

const MAX_STDERR = 2000
const bounded = (s: string): string => {
  const t = s.trim()
  return t.length > MAX_STDERR ? `${t.slice(0, MAX_STDERR)}…` : t
}

const failed = (backend: Backend, removal: boolean) => (e: ToolFailed) =>
  new NetfilterFailed({ msg: `${backend}: ${e.msg}`, removal })

/** One kernel transaction: what to run, and the part of the change it carries (to revert it). */
interface Batch {
  readonly tool: Tool
  readonly args: ReadonlyArray<string>
  readonly stdin: string
  readonly changes: Changes
}

/** What the service needs from one backend; the view, retry and atomicity are shared. */
interface Driver<S> {
  /** The state of both families; `missing` when the tool is absent (then the state is empty). */
  readonly read: Effect.Effect<{ readonly state: S; readonly missing: boolean }, ToolFailed>
  readonly entries: (state: S) => ReadonlyArray<MarkEntry>
  /** The transactions taking `state` through `changes` (none when nothing needs doing). */
  readonly render: (state: S, changes: Changes) => Result.Result<ReadonlyArray<Batch>, string>
  /** The state once those transactions succeeded, or undefined when only a listing can tell. */
  readonly evolve: (state: S, changes: Changes) => S | undefined
  /** What of a state may still be trusted in a later call (outsiders may have moved things). */
  readonly keep: (state: S) => S
}

type IptState = Readonly<Record<Family, Ipt.IptablesState>>
const emptyIpt = (family: Family): Ipt.IptablesState => ({
  family,
  chainExists: false,
  jumpFirst: false,
  jumps: 0,
  rules: []
})
const familyPart = (changes: Changes, family: Family): Changes => ({
  remove: changes.remove.filter((e) => e.family === family),
  add: changes.add.filter((e) => e.family === family)
})

/** A backend's generation token file: read, and replaced with a fresh token. */
const generationFile = (path: string | undefined) => ({
  /** The token, "" when the file is absent, undefined when it cannot be read (keep no view). */
  read: Effect.sync((): string | undefined => {
    if (path === undefined) return undefined
    try {
      return fs.readFileSync(path, "utf8")
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "ENOENT" ? "" : undefined
    }
  }),
  /** Writes a fresh token (atomically); undefined when it could not be written. */
  bump: Effect.gen(function* () {
    if (path === undefined) return undefined
    const token = `${process.pid}.${randomBytes(12).toString("hex")}`
    const written = yield* Effect.try(() => {
      fs.mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
      const tmp = `${path}.${token}.tmp`
      fs.writeFileSync(tmp, token, { mode: 0o600 })
      fs.renameSync(tmp, path)
    }).pipe(Effect.result)
    if (Result.isSuccess(written)) return token
    // Others may then keep a view this change makes stale; it fails safely and is retried (above).
    yield* Effect.logWarning("netfilter generation file not written; views elsewhere may be stale", {
      file: path,
      error: String(written.failure.cause)
    })
    return undefined
  })
})

/** The service, given a process spawner. */
export const make = (options: NetfilterLiveOptions = {}) =>
  Effect.gen(function* () {
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    const prefix = options.prefix ?? []
    const timeout = options.timeout ?? "30 seconds"
    const generationDir = options.generationDir === undefined ? DEFAULT_GENERATION_DIR : options.generationDir

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
        Effect.mapError((e) => new ToolFailed({ msg: e.msg }))
      )

    const check = (tool: Tool, r: Ran | "missing"): Effect.Effect<Ran, ToolFailed> =>
      r === "missing"
        ? Effect.fail(new ToolFailed({ msg: `${tool} not found` }))
        : r.exitCode === 0
          ? Effect.succeed(r)
          : Effect.fail(new ToolFailed({ msg: `${tool} exited with ${r.exitCode}: ${bounded(r.stderr)}` }))

    // --- the drivers ---------------------------------------------------------------------------------
    const readIptFamily = (family: Family) =>
      Effect.gen(function* () {
        const [tool, args] = Ipt.saveCommand(family)
        const r = yield* run(tool as Tool, args)
        if (r === "missing") return { state: emptyIpt(family), missing: true }
        return { state: Ipt.parseSave(family, (yield* check(tool as Tool, r)).stdout), missing: false }
      })

    const iptables: Driver<IptState> = {
      read: Effect.map(
        Effect.all([readIptFamily(4), readIptFamily(6)], { concurrency: "unbounded" }),
        ([v4, v6]) => ({ state: { 4: v4.state, 6: v6.state }, missing: v4.missing || v6.missing })
      ),
      entries: (s) => [...Ipt.entriesOf(s[4]), ...Ipt.entriesOf(s[6])],
      render: (s, changes) =>
        Result.succeed(
          byFamily(changes).flatMap(([family, part]) => {
            const stdin = Ipt.renderBatch(s[family], part)
            const [tool, args] = Ipt.restoreCommand(family)
            return stdin === undefined ? [] : [{ tool: tool as Tool, args, stdin, changes: part }]
          })
        ),
      evolve: (s, changes) => ({
        4: Ipt.evolve(s[4], familyPart(changes, 4)),
        6: Ipt.evolve(s[6], familyPart(changes, 6))
      }),
      // Other agents on the node (kube-proxy, Calico) insert rules at the top of PREROUTING without
      // our token: a kept view never vouches for the jump being first, so every add rendered from it
      // moves the jump back to the top in the same batch (two lines; a missing jump fails the `-D`).
      keep: (s) => ({ 4: { ...s[4], jumpFirst: false }, 6: { ...s[6], jumpFirst: false } })
    }

    const nftables: Driver<Nft.NftState> = {
      read: Effect.gen(function* () {
        const [, args] = Nft.listCommand
        const r = yield* run("nft", args)
        if (r === "missing") return { state: Nft.EMPTY, missing: true }
        if (Nft.isTableMissing(r.exitCode, r.stderr)) return { state: Nft.EMPTY, missing: false }
        const ok = yield* check("nft", r)
        const state = yield* Nft.decodeListing(ok.stdout).pipe(
          Effect.mapError((e) => new ToolFailed({ msg: `undecodable nft listing: ${bounded(e.message)}` }))
        )
        return { state, missing: false }
      }),
      entries: Nft.entriesOf,
      render: (s, changes) =>
        Result.map(Nft.renderTransaction(s, changes), (stdin) =>
          stdin === undefined ? [] : [{ tool: "nft" as const, args: Nft.applyCommand[1], stdin, changes }]
        ),
      evolve: Nft.evolve,
      // Our own table: an outsider's change to it makes a batch fail, and then it is read again.
      keep: (s) => s
    }

    // --- what both share: the view, transactions, revert and retry -----------------------------------
    const backendOf = <S>(backend: Backend, driver: Driver<S>) => {
      const generation = generationFile(
        generationDir === null ? undefined : generationPath(generationDir, backend, prefix.length > 0)
      )
      let view: { readonly token: string; readonly state: S } | undefined
      let transactions = 0

      /** The kept view if nobody changed the backend since it was taken. */
      const validView = Effect.map(generation.read, (token) =>
        view !== undefined && token !== undefined && view.token === token ? view.state : undefined
      )

      /** The state, from the view or read (and then kept); the token is read before the kernel. */
      const state = Effect.gen(function* () {
        const token = yield* generation.read
        if (view !== undefined && token !== undefined && view.token === token) {
          return { state: view.state, missing: false }
        }
        const r = yield* driver.read
        view = token === undefined || r.missing ? undefined : { token, state: driver.keep(r.state) }
        return r
      })

      const runBatch = (b: Batch) =>
        Effect.gen(function* () {
          transactions++
          yield* Effect.logDebug("netfilter transaction", { backend, n: transactions, lines: b.stdin })
          yield* check(b.tool, yield* run(b.tool, b.args, b.stdin))
        })

      /**
       * The change's transactions rendered from `s`, all or nothing: when one family's transaction
       * fails, the others' committed ones are reverted (rendered from a fresh read).
       */
      const transact = (s: S, changes: Changes): Effect.Effect<void, ToolFailed> =>
        Effect.gen(function* () {
          const rendered = driver.render(s, changes)
          if (Result.isFailure(rendered)) return yield* new ToolFailed({ msg: rendered.failure })
          const batches = rendered.success
          const results = yield* Effect.forEach(batches, (b) => Effect.result(runBatch(b)), {
            concurrency: "unbounded"
          })
          const failure = results.find(Result.isFailure)
          if (failure === undefined) return
          const done = batches.filter((_, i) =>
            Result.isSuccess(results[i] as Result.Result<void, ToolFailed>)
          )
          if (done.length > 0) {
            const undo: Changes = {
              remove: done.flatMap((b) => invert(b.changes).remove),
              add: done.flatMap((b) => invert(b.changes).add)
            }
            yield* Effect.flatMap(driver.read, (r) => transact(r.state, undo)).pipe(Effect.ignore)
          }
          return yield* failure.failure
        })

      const apply = (changes: Changes) =>
        Effect.gen(function* () {
          const kept = yield* validView
          // Everyone's view goes before the kernel changes (ours comes back below on success).
          view = undefined
          const token = yield* generation.bump
          const onFresh = Effect.flatMap(driver.read, ({ state: s }) => Effect.as(transact(s, changes), s))
          const base =
            kept === undefined
              ? yield* onFresh
              : yield* transact(kept, changes).pipe(
                  Effect.as(kept),
                  Effect.catch((e) =>
                    Effect.logDebug(
                      `${backend} transaction on a kept view failed; retrying on a fresh read`,
                      e.msg
                    ).pipe(Effect.andThen(onFresh))
                  )
                )
          const next = driver.evolve(base, changes)
          if (token !== undefined && next !== undefined) view = { token, state: driver.keep(next) }
        }).pipe(Effect.mapError(failed(backend, changes.add.length === 0)))

      return {
        usable: state.pipe(
          Effect.map((r) => !r.missing),
          Effect.orElseSucceed(() => false)
        ),
        list: state.pipe(
          Effect.map((r) => driver.entries(r.state)),
          Effect.mapError(failed(backend, false))
        ),
        apply
      }
    }

    const backends = { iptables: backendOf("iptables", iptables), nftables: backendOf("nftables", nftables) }

    return Netfilter.of({
      usable: (backend) => backends[backend].usable,
      list: (backend) => backends[backend].list,
      apply: (backend, changes) => {
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
        return backends[backend].apply(changes)
      }
    })
  })

/** `Netfilter` on this host's tools; `prefix` runs them elsewhere (e.g. `ip netns exec NS`). */
export const layer = (options: NetfilterLiveOptions = {}): Layer.Layer<Netfilter> =>
  Layer.effect(Netfilter, make(options)).pipe(
    Layer.provide(NodeChildProcessSpawner.layer),
    Layer.provide(Layer.mergeAll(NodeFileSystem.layer, NodePath.layer))
  )
