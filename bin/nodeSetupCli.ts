/**
 * Command line of `tenant-routing-wrapper node-setup` (docs/DESIGN.md §6), self-contained so the main
 * executable only dispatches to `runNodeSetup(argv)` and exits with what it returns.
 *
 *   node-setup [--config FILE] [--dry-run] [--remove] [--write-rt-tables]
 *
 * Exit codes: 0 done (also when foreign entries were reported), 1 applying failed, 2 usage error or
 * invalid tenants file (each problem named by its field). The report goes to stdout (node-setup is not
 * a CNI verb, so stdout is free), problems to stderr. Nothing here throws: every failure, defects
 * included, ends as a message and an exit code.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Effect, FileSystem, Layer, Result } from "effect"
import type { ChildProcessSpawner } from "effect/process"
import { decodeNodeSetupConfigJson, formatIssues } from "../src/domain/node-setup/NodeSetupConfig.ts"
import type { Routing } from "../src/domain/node-setup/Routing.ts"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import { formatReport, type NodeSetupMode, nodeSetup } from "../src/programs/nodeSetup.ts"
import { parseFlags, processIo } from "./flags.ts"

export const DEFAULT_CONFIG = "/etc/tenant-routing/tenants.json"

export const USAGE = `usage: tenant-routing-wrapper node-setup [--config FILE] [--dry-run] [--remove] [--write-rt-tables]
  --config FILE        tenants file (default ${DEFAULT_CONFIG})
  --dry-run            print the plan, change nothing
  --remove             remove the rules and routes node-setup installs, and nothing else
  --write-rt-tables    also name the tenant tables in /etc/iproute2/rt_tables (with --remove: unname them)`

/** Replaceable parts, for tests: where routing happens, where rt_tables is, where text goes. */
export interface NodeSetupCliEnv {
  readonly routing?: Layer.Layer<Routing, never, ChildProcessSpawner.ChildProcessSpawner>
  readonly rtTablesPath?: string
  readonly stdout?: (text: string) => void
  readonly stderr?: (text: string) => void
}

/** Run node-setup with `argv` (the arguments after `node-setup`); resolves to the exit code. */
export const runNodeSetup = (argv: ReadonlyArray<string>, env: NodeSetupCliEnv = {}): Promise<number> => {
  const { out, err } = processIo(env)
  const flags = parseFlags(
    "node-setup",
    USAGE,
    argv,
    {
      config: { type: "string" },
      "dry-run": { type: "boolean" },
      remove: { type: "boolean" },
      "write-rt-tables": { type: "boolean" }
    },
    { out, err }
  )
  if ("exit" in flags) return Promise.resolve(flags.exit)
  const args = {
    config: flags.values.config ?? DEFAULT_CONFIG,
    mode: (flags.values.remove === true ? "remove" : "apply") as NodeSetupMode,
    dryRun: flags.values["dry-run"] === true,
    writeRtTables: flags.values["write-rt-tables"] === true
  }

  const program = Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* Effect.result(fs.readFileString(args.config))
    if (Result.isFailure(text)) {
      err(`node-setup: cannot read tenants file ${args.config}: ${text.failure.message}\n`)
      return 2
    }
    const config = decodeNodeSetupConfigJson(text.success)
    if (Result.isFailure(config)) {
      const lines = formatIssues(config.failure)
        .split("\n")
        .map((l) => `  ${l}`)
      err(`node-setup: invalid tenants file ${args.config}:\n${lines.join("\n")}\n`)
      return 2
    }
    const report = yield* nodeSetup(config.success, {
      mode: args.mode,
      dryRun: args.dryRun,
      writeRtTables: args.writeRtTables,
      ...(env.rtTablesPath === undefined ? {} : { rtTablesPath: env.rtTablesPath })
    }).pipe(Effect.result)
    if (Result.isFailure(report)) {
      err(`node-setup: ${report.failure.message}\n`)
      return 1
    }
    out(formatReport(report.success) + "\n")
    return 0
  })

  const routing = env.routing ?? RoutingIproute2.layer()
  return Effect.runPromise(
    program.pipe(
      Effect.provide(Layer.provideMerge(routing, NodeServices.layer)),
      Effect.catchCause((cause) =>
        Effect.sync(() => {
          err(`node-setup: unexpected failure: ${Cause.pretty(cause)}\n`)
          return 1
        })
      )
    )
  )
}
