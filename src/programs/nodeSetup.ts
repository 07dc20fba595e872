/**
 * `tenant-routing node-setup` (docs/DESIGN.md §6): make the node's policy routing match the
 * tenants file (`apply`) or remove everything it owns (`remove`), or only show what either would
 * take (`dryRun`). What it owns is what carries its kernel protocol tag (`OUR_PROTOCOL`), so a
 * tenant dropped from the file goes on the next apply, and `remove` needs no file at all.
 *
 * Reads top to bottom: read the rules, our tables and every route carrying our protocol, plan (pure,
 * `RoutingPlan`), refuse a plan that cannot complete, apply the steps one by one in their safe order,
 * report. There is no rollback on failure: every prefix of the steps is safe (a fwmark rule only
 * exists once its table's unreachable route does), and a second run converges from wherever the first
 * stopped, so the error says how far it got. Table and protocol names go to rt_tables and rt_protos.d
 * only when asked (`writeRtTables`), written atomically.
 */

import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Path from "effect/Path"
import type { NodeSetupConfig } from "../domain/node-setup/NodeSetupConfig.ts"
import { Routing, RoutingError } from "../domain/node-setup/Routing.ts"
import {
  type Blocked,
  describe,
  describeChange,
  desired,
  type Entry,
  FAMILIES,
  OUR_PROTOCOL,
  type Plan,
  plan,
  planRemove,
  type RoutingState,
  RT_PROTOS_TEXT,
  RT_TABLES_STOCK,
  type RtTablesEdit,
  rtTablesWith,
  rtTablesWithout,
  steps,
  tableNamesOf,
  tablesOf
} from "../domain/node-setup/RoutingPlan.ts"
import { writeFileAtomic } from "./atomicFile.ts"
import { describeFileError } from "./fileError.ts"

export type NodeSetupMode = "apply" | "remove"

export const DEFAULT_RT_TABLES = "/etc/iproute2/rt_tables"
/** Ours entirely; iproute2 (6.1 here) reads every `*.conf` in rt_protos.d. */
export const DEFAULT_RT_PROTOS = "/etc/iproute2/rt_protos.d/tenant-routing.conf"

export interface NodeSetupOptions {
  readonly mode: NodeSetupMode
  /** Plan and report only; change nothing. */
  readonly dryRun?: boolean
  /** Name the tenant tables in rt_tables (with `remove`: take our names out again). */
  readonly writeRtTables?: boolean
  /** Default `/etc/iproute2/rt_tables`; tests point it elsewhere. */
  readonly rtTablesPath?: string
  /** Default `rt_protos.d/tenant-routing.conf` beside `rtTablesPath` (`DEFAULT_RT_PROTOS` for the default). */
  readonly rtProtosPath?: string
}

export interface NodeSetupReport {
  readonly mode: NodeSetupMode
  readonly dryRun: boolean
  /** Changes made, or planned for a dry run: routing changes plus rt_tables lines. */
  readonly changes: number
  /** The ip commands, in the order they ran (or would run), then the rt_tables edits. */
  readonly lines: ReadonlyArray<string>
  /** Rules at our priorities and routes in our tables that are not ours: left alone. */
  readonly foreign: ReadonlyArray<string>
  /** Changes not made, each with its reason. */
  readonly blocked: ReadonlyArray<string>
}

const blockedLine = (b: Blocked): string => `${describe(b.entry)}: ${b.reason}`

const routeKey = (e: Entry): string => JSON.stringify(e)

/** What `ip` shows now: all rules, the tables the plan looks at, and every route carrying our protocol. */
const readCurrent = Effect.fnUntraced(function* (routing: Routing["Service"], want: RoutingState) {
  const rules = (yield* Effect.forEach(FAMILIES, (f) => routing.rules(f))).flat()
  const ours = yield* Effect.forEach(FAMILIES, (f) => routing.routesWithProtocol(f, OUR_PROTOCOL))
  const tables = tablesOf({ rules, routes: [...want.routes, ...ours.flat()] })
  const inTables = yield* Effect.forEach(tables, (t) => routing.routes(t.family, t.table))
  // Our routes in the tables read appear twice; keep the first of each.
  const seen = new Set<string>()
  const routes = [...inTables.flat(), ...ours.flat()].filter((r) => {
    const key = routeKey({ _tag: "Route", route: r })
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
  return { rules, routes }
})

/** Edit rt_tables, or only compute the edit when `write` is false. */
const editRtTables = Effect.fnUntraced(
  function* (path: string, edit: (text: string) => RtTablesEdit, write: boolean, createIfMissing: boolean) {
    const fs = yield* FileSystem.FileSystem
    const _paths = yield* Path.Path
    const exists = yield* fs.exists(path)
    if (!exists && !createIfMissing) return { text: "", added: [], removed: [], conflicts: [] }
    const before = exists ? yield* fs.readFileString(path) : RT_TABLES_STOCK
    const result = edit(before)
    if (write && (result.text !== before || !exists)) {
      // ip must never read half a file.
      yield* writeFileAtomic(path, result.text, { mode: 0o644, dirMode: 0o755 })
    }
    return result
  },
  (effect, path, _edit, write) =>
    Effect.catchTag(effect, "PlatformError", (e) =>
      Effect.fail(new RoutingError({ msg: describeFileError(e, "rt_tables file", path, "", write) }))
    )
)

/**
 * Make our rt_protos.d file exist with `RT_PROTOS_TEXT` (`present`) or not exist, or only say whether
 * that takes a change when `write` is false. The file is ours alone, so it is written or deleted whole.
 */
const editRtProtos = Effect.fnUntraced(
  function* (path: string, present: boolean, write: boolean) {
    const fs = yield* FileSystem.FileSystem
    const _paths = yield* Path.Path
    const exists = yield* fs.exists(path)
    const text = exists ? yield* fs.readFileString(path) : undefined
    const line = RT_PROTOS_TEXT.split("\n").find((l) => l !== "" && !l.startsWith("#"))!
    if (present && text !== RT_PROTOS_TEXT) {
      if (write) {
        yield* writeFileAtomic(path, RT_PROTOS_TEXT, { mode: 0o644, dirMode: 0o755 })
      }
      return [`${path}: + ${line}`]
    }
    if (!present && exists) {
      if (write) yield* fs.remove(path)
      return [`${path}: - ${line}`]
    }
    return []
  },
  (effect, path, _present, write) =>
    Effect.catchTag(effect, "PlatformError", (e) =>
      Effect.fail(new RoutingError({ msg: describeFileError(e, "rt_protos file", path, "", write) }))
    )
)

export const nodeSetup = Effect.fn("nodeSetup")(function* (
  /** Undefined only with `remove`: everything tagged ours goes, and no table names are known. */
  config: NodeSetupConfig | undefined,
  options: NodeSetupOptions
): Effect.fn.Return<NodeSetupReport, RoutingError, Routing | FileSystem.FileSystem | Path.Path> {
  const routing = yield* Routing
  // Without a file there is nothing to apply; planning against nothing would remove all of ours.
  if (config === undefined && options.mode === "apply") {
    return yield* new RoutingError({ msg: "apply needs a tenants file" })
  }
  const want = desired(config)
  const current = yield* readCurrent(routing, want)
  const thePlan: Plan = options.mode === "remove" ? planRemove(want, current) : plan(want, current)
  const changes = steps(thePlan)

  // A blocked add means the config cannot be reached; refuse before touching anything rather than
  // leave the node half-configured on purpose. A dry run lists it under "not done" instead.
  if (options.mode === "apply" && options.dryRun !== true && thePlan.blocked.length > 0) {
    return yield* new RoutingError({
      msg: `cannot apply, nothing changed:\n${thePlan.blocked.map((b) => "  " + blockedLine(b)).join("\n")}`
    })
  }

  const rtTablesPath = options.rtTablesPath ?? DEFAULT_RT_TABLES
  // Beside rt_tables unless told otherwise, so pointing rt_tables elsewhere never writes /etc.
  const rtProtosPath =
    options.rtProtosPath ??
    (options.rtTablesPath === undefined
      ? DEFAULT_RT_PROTOS
      : (yield* Path.Path).join(
          (yield* Path.Path).dirname(rtTablesPath),
          "rt_protos.d",
          "tenant-routing.conf"
        ))
  const names = config === undefined ? [] : tableNamesOf(config)
  const apply = options.dryRun !== true
  const naming = options.writeRtTables === true
  const rtBefore =
    naming && options.mode !== "remove"
      ? yield* editRtTables(rtTablesPath, (t) => rtTablesWith(t, names), apply, true)
      : undefined
  const protosBefore =
    naming && options.mode !== "remove" ? yield* editRtProtos(rtProtosPath, true, apply) : []

  if (apply) {
    yield* Effect.forEach(
      changes,
      (change, i) =>
        routing.apply(change).pipe(
          Effect.mapError(
            (e) =>
              new RoutingError({
                msg: `${e.msg}\n(${i} of ${changes.length} changes made before this one; nothing was rolled back, run again to converge)`
              })
          )
        ),
      { discard: true }
    )
  }

  // Names go last on remove, so a failed removal leaves the tables still readable by name.
  const rtAfter =
    naming && options.mode === "remove" && names.length > 0
      ? yield* editRtTables(rtTablesPath, (t) => rtTablesWithout(t, names), apply, false)
      : undefined
  const protosAfter =
    naming && options.mode === "remove" ? yield* editRtProtos(rtProtosPath, false, apply) : []
  const rt = rtBefore ?? rtAfter
  const rtLines = [
    ...(rt === undefined
      ? []
      : [
          ...rt.added.map((l) => `${rtTablesPath}: + ${l}`),
          ...rt.removed.map((l) => `${rtTablesPath}: - ${l}`)
        ]),
    ...protosBefore,
    ...protosAfter
  ]

  return {
    mode: options.mode,
    dryRun: !apply,
    changes: changes.length + rtLines.length,
    lines: [...changes.map(describeChange), ...rtLines],
    foreign: thePlan.foreign.map(describe),
    blocked: [
      ...thePlan.blocked.map(blockedLine),
      ...(rt?.conflicts.map((c) => `${rtTablesPath}: ${c}`) ?? [])
    ]
  }
})

/** The text the CLI prints; its first line is e.g. `apply: 0 changes` or `remove (dry run): 9 changes planned`. */
export const formatReport = (report: NodeSetupReport): string => {
  const noun = report.changes === 1 ? "change" : "changes"
  const head = report.dryRun
    ? `${report.mode} (dry run): ${report.changes} ${noun} planned`
    : `${report.mode}: ${report.changes} ${noun}`
  const section = (title: string, lines: ReadonlyArray<string>) =>
    lines.length === 0 ? [] : [title, ...lines.map((l) => `  ${l}`)]
  return [
    head,
    ...report.lines.map((l) => `  ${l}`),
    ...section("foreign, left alone:", report.foreign),
    ...section("not done:", report.blocked)
  ].join("\n")
}
