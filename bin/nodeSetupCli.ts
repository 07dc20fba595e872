/**
 * `tenant-routing node-setup` (docs/DESIGN.md §6) as a command of the CLI: flags, the live
 * layers, and the outcome as text or JSON. Exit codes: 0 done (also when foreign entries were
 * reported), 1 applying failed, 2 usage — a bad flag, or a tenants file that is missing or invalid
 * (each problem named by its field, all at once). Nothing reaches routing before the file is valid.
 */

import { Command } from "effect/cli"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import type * as Layer from "effect/Layer"
import type { ChildProcessSpawner } from "effect/process"
import * as Result from "effect/Result"
import { formatIssues } from "../src/domain/decode/Issue.ts"
import { DEFAULT_TENANTS_FILE, decodeNodeSetupConfigJson } from "../src/domain/node-setup/NodeSetupConfig.ts"
import type { Routing } from "../src/domain/node-setup/Routing.ts"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import { describeFileError } from "../src/programs/fileError.ts"
import { DEFAULT_RT_PROTOS, DEFAULT_RT_TABLES, formatReport, nodeSetup } from "../src/programs/nodeSetup.ts"
import { failed, jsonFlag, printResult, stringFlag, switchFlag, usageError } from "./cliSupport.ts"

/** Replaceable parts, for tests: where routing happens, where rt_tables is. */
export interface NodeSetupCliEnv {
  readonly routing?: Layer.Layer<Routing, never, ChildProcessSpawner.ChildProcessSpawner>
  readonly rtTablesPath?: string
  readonly rtProtosPath?: string
}

const NAME = "node-setup"

export const nodeSetupCommand = (env: NodeSetupCliEnv) =>
  Command.make(
    NAME,
    {
      config: stringFlag("config", "FILE", "tenants file", DEFAULT_TENANTS_FILE),
      dryRun: switchFlag("dry-run", "print the plan, change nothing"),
      remove: switchFlag(
        "remove",
        "remove every rule and route carrying node-setup's protocol tag, and nothing else (the file may be absent)"
      ),
      writeRtTables: switchFlag(
        "write-rt-tables",
        `also name the tenant tables in ${DEFAULT_RT_TABLES} and the protocol in ${DEFAULT_RT_PROTOS} (with --remove: unname them)`
      ),
      json: jsonFlag
    },
    (flags) =>
      Effect.gen(function* () {
        const fs = yield* FileSystem.FileSystem
        // --remove takes out everything tagged ours, so it works without the file; a file that is
        // there but invalid still stops it (it may be the wrong path).
        const text = yield* fs.readFileString(flags.config).pipe(
          Effect.map((t): string | undefined => t),
          Effect.catchIf(
            (e) => flags.remove && e.reason._tag === "NotFound",
            () => Effect.succeed(undefined)
          ),
          Effect.mapError((e) =>
            usageError(
              NAME,
              describeFileError(e, "tenants file", flags.config, "pass --config FILE or create it")
            )
          )
        )
        const config = text === undefined ? undefined : decodeNodeSetupConfigJson(text)
        if (config !== undefined && Result.isFailure(config)) {
          const lines = formatIssues(config.failure)
            .split("\n")
            .map((l) => `  ${l}`)
          return yield* usageError(NAME, `invalid tenants file ${flags.config}:\n${lines.join("\n")}`)
        }
        const report = yield* nodeSetup(config?.success, {
          mode: flags.remove ? "remove" : "apply",
          dryRun: flags.dryRun,
          writeRtTables: flags.writeRtTables,
          ...(env.rtTablesPath === undefined ? {} : { rtTablesPath: env.rtTablesPath }),
          ...(env.rtProtosPath === undefined ? {} : { rtProtosPath: env.rtProtosPath })
        }).pipe(Effect.mapError((e) => failed(NAME, e.msg)))
        yield* printResult(flags.json, report, formatReport)
      }).pipe(Effect.provide(env.routing ?? RoutingIproute2.layer()))
  ).pipe(
    Command.withDescription(
      "Make this node's policy routing match the tenants file: per tenant a fwmark rule and a table with its default routes (docs/DESIGN.md §6). Exit 0 done, 1 applying failed, 2 usage or invalid tenants file."
    ),
    Command.withShortDescription("make the node's policy routing match the tenants file")
  )
