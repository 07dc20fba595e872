/**
 * `tenant-routing node-setup` (docs/DESIGN.md §6): make the node's policy routing match the
 * tenants file (`apply`) or undo exactly what it installs (`remove`), or only show what either would
 * take (`dryRun`).
 *
 * Reads top to bottom: read the rules and our tables, plan (pure, `RoutingPlan`), refuse a plan that
 * cannot complete, apply the steps one by one in their safe order, report. There is no rollback on
 * failure: every prefix of the steps is safe (a fwmark rule only exists once its table's unreachable
 * route does), and a second run converges from wherever the first stopped, so the error says how far
 * it got. Table names go to rt_tables only when asked (`writeRtTables`), written atomically.
 */
import { Effect, FileSystem, Path, Random } from "effect"
import type { NodeSetupConfig } from "../domain/node-setup/NodeSetupConfig.ts"
import { Routing, RoutingError } from "../domain/node-setup/Routing.ts"
import {
  type Blocked,
  describe,
  describeChange,
  desired,
  FAMILIES,
  type Plan,
  plan,
  planRemove,
  type RoutingState,
  RT_TABLES_STOCK,
  type RtTablesEdit,
  rtTablesWith,
  rtTablesWithout,
  steps,
  tableNamesOf,
  tablesOf
} from "../domain/node-setup/RoutingPlan.ts"
import { describeFileError } from "./fileError.ts"

export type NodeSetupMode = "apply" | "remove"

export const DEFAULT_RT_TABLES = "/etc/iproute2/rt_tables"

export interface NodeSetupOptions {
  readonly mode: NodeSetupMode
  /** Plan and report only; change nothing. */
  readonly dryRun?: boolean
  /** Name the tenant tables in rt_tables (with `remove`: take our names out again). */
  readonly writeRtTables?: boolean
  /** Default `/etc/iproute2/rt_tables`; tests point it elsewhere. */
  readonly rtTablesPath?: string
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

/** What `ip` shows now for everything the plan looks at. */
const readCurrent = Effect.fnUntraced(function* (routing: Routing["Service"], want: RoutingState) {
  const rules = yield* Effect.forEach(FAMILIES, (f) => routing.rules(f))
  const routes = yield* Effect.forEach(tablesOf(want), (t) => routing.routes(t.family, t.table))
  return { rules: rules.flat(), routes: routes.flat() }
})

/** Edit rt_tables, or only compute the edit when `write` is false. */
const editRtTables = Effect.fnUntraced(
  function* (path: string, edit: (text: string) => RtTablesEdit, write: boolean, createIfMissing: boolean) {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    const exists = yield* fs.exists(path)
    if (!exists && !createIfMissing) return { text: "", added: [], removed: [], conflicts: [] }
    const before = exists ? yield* fs.readFileString(path) : RT_TABLES_STOCK
    const result = edit(before)
    if (write && (result.text !== before || !exists)) {
      // Temporary file and rename in the same directory, so ip never reads half a file.
      yield* fs.makeDirectory(paths.dirname(path), { recursive: true })
      const tmp = `${path}.trw-${(yield* Random.nextInt).toString(36)}.tmp`
      yield* fs.writeFileString(tmp, result.text, { mode: 0o644 })
      yield* fs.rename(tmp, path)
    }
    return result
  },
  (effect, path, _edit, write) =>
    Effect.catchTag(effect, "PlatformError", (e) =>
      Effect.fail(new RoutingError({ message: describeFileError(e, "rt_tables file", path, "", write) }))
    )
)

export const nodeSetup = Effect.fn("nodeSetup")(function* (
  config: NodeSetupConfig,
  options: NodeSetupOptions
): Effect.fn.Return<NodeSetupReport, RoutingError, Routing | FileSystem.FileSystem | Path.Path> {
  const routing = yield* Routing
  const want = desired(config)
  const current = yield* readCurrent(routing, want)
  const thePlan: Plan = options.mode === "remove" ? planRemove(want, current) : plan(want, current)
  const changes = steps(thePlan)

  // A blocked add means the config cannot be reached; refuse before touching anything rather than
  // leave the node half-configured on purpose. A dry run lists it under "not done" instead.
  if (options.mode === "apply" && options.dryRun !== true && thePlan.blocked.length > 0) {
    return yield* new RoutingError({
      message: `cannot apply, nothing changed:\n${thePlan.blocked.map((b) => "  " + blockedLine(b)).join("\n")}`
    })
  }

  const rtTablesPath = options.rtTablesPath ?? DEFAULT_RT_TABLES
  const names = tableNamesOf(config)
  const apply = options.dryRun !== true
  const rtBefore =
    options.writeRtTables === true && options.mode !== "remove"
      ? yield* editRtTables(rtTablesPath, (t) => rtTablesWith(t, names), apply, true)
      : undefined

  if (apply) {
    yield* Effect.forEach(
      changes,
      (change, i) =>
        routing.apply(change).pipe(
          Effect.mapError(
            (e) =>
              new RoutingError({
                message: `${e.message}\n(${i} of ${changes.length} changes made before this one; nothing was rolled back, run again to converge)`
              })
          )
        ),
      { discard: true }
    )
  }

  // Names go last on remove, so a failed removal leaves the tables still readable by name.
  const rtAfter =
    options.writeRtTables === true && options.mode === "remove"
      ? yield* editRtTables(rtTablesPath, (t) => rtTablesWithout(t, names), apply, false)
      : undefined
  const rt = rtBefore ?? rtAfter
  const rtLines =
    rt === undefined
      ? []
      : [
          ...rt.added.map((l) => `${rtTablesPath}: + ${l}`),
          ...rt.removed.map((l) => `${rtTablesPath}: - ${l}`)
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
