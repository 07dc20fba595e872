/**
 * `tenant-routing node-setup` (docs/DESIGN.md §6) as a command of the CLI: flags, the live
 * layers, and the outcome as text or JSON. Exit codes: 0 done (also when foreign entries were
 * reported), 1 applying failed, 2 usage — a bad flag, or a tenants file that is missing or invalid
 * (each problem named by its field, all at once). Nothing reaches routing before the file is valid.
 */
import { Effect, FileSystem, type Layer, Result } from "effect"
import { Command } from "effect/cli"
import type { ChildProcessSpawner } from "effect/process"
import {
  DEFAULT_TENANTS_FILE,
  decodeNodeSetupConfigJson,
  formatIssues
} from "../src/domain/node-setup/NodeSetupConfig.ts"
import type { Routing } from "../src/domain/node-setup/Routing.ts"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import { describeFileError } from "../src/programs/fileError.ts"
import { DEFAULT_RT_TABLES, formatReport, nodeSetup } from "../src/programs/nodeSetup.ts"
import { failed, jsonFlag, printResult, stringFlag, switchFlag, usageError } from "./cliSupport.ts"

/** Replaceable parts, for tests: where routing happens, where rt_tables is. */
export interface NodeSetupCliEnv {
  readonly routing?: Layer.Layer<Routing, never, ChildProcessSpawner.ChildProcessSpawner>
  readonly rtTablesPath?: string
}

const NAME = "node-setup"

export const nodeSetupCommand = (env: NodeSetupCliEnv) =>
  Command.make(
    NAME,
    {
      config: stringFlag("config", "FILE", "tenants file", DEFAULT_TENANTS_FILE),
      dryRun: switchFlag("dry-run", "print the plan, change nothing"),
      remove: switchFlag("remove", "remove the rules and routes node-setup installs, and nothing else"),
      writeRtTables: switchFlag(
        "write-rt-tables",
        `also name the tenant tables in ${DEFAULT_RT_TABLES} (with --remove: unname them)`
      ),
      json: jsonFlag
    },
    (flags) =>
      Effect.gen(function* () {
        const fs = yield* FileSystem.FileSystem
        const text = yield* fs
          .readFileString(flags.config)
          .pipe(
            Effect.mapError((e) =>
              usageError(
                NAME,
                describeFileError(e, "tenants file", flags.config, "pass --config FILE or create it")
              )
            )
          )
        const config = decodeNodeSetupConfigJson(text)
        if (Result.isFailure(config)) {
          const lines = formatIssues(config.failure)
            .split("\n")
            .map((l) => `  ${l}`)
          return yield* usageError(NAME, `invalid tenants file ${flags.config}:\n${lines.join("\n")}`)
        }
        const report = yield* nodeSetup(config.success, {
          mode: flags.remove ? "remove" : "apply",
          dryRun: flags.dryRun,
          writeRtTables: flags.writeRtTables,
          ...(env.rtTablesPath === undefined ? {} : { rtTablesPath: env.rtTablesPath })
        }).pipe(Effect.mapError((e) => failed(NAME, e.message)))
        yield* printResult(flags.json, report, formatReport)
      }).pipe(Effect.provide(env.routing ?? RoutingIproute2.layer()))
  ).pipe(
    Command.withDescription(
      "Make this node's policy routing match the tenants file: per tenant a fwmark rule and a table with its default routes (docs/DESIGN.md §6). Exit 0 done, 1 applying failed, 2 usage or invalid tenants file."
    ),
    Command.withShortDescription("make the node's policy routing match the tenants file")
  )
