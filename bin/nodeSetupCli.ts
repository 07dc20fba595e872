/**
 * Command line of `tenant-routing-wrapper node-setup` (PRODUCT.md §6), self-contained so the main
 * executable only dispatches to `runNodeSetup(argv)` and exits with what it returns.
 *
 *   node-setup [--config FILE] [--dry-run] [--remove] [--write-rt-tables]
 *
 * Exit codes: 0 done (also when foreign entries were reported), 1 applying failed, 2 usage error or
 * invalid tenants file (each problem named by its field). The report goes to stdout (node-setup is not
 * a CNI verb, so stdout is free), problems to stderr. Nothing here throws: every failure, defects
 * included, ends as a message and an exit code.
 */
import { parseArgs as parseNodeArgs } from "node:util"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Effect, FileSystem, Layer, Result } from "effect"
import type { ChildProcessSpawner } from "effect/process"
import { decodeNodeSetupConfigJson, formatIssues } from "../src/domain/NodeSetupConfig.ts"
import type { Routing } from "../src/domain/Routing.ts"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import { formatReport, type NodeSetupMode, nodeSetup } from "../src/programs/nodeSetup.ts"

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

interface Args {
  readonly config: string
  readonly mode: NodeSetupMode
  readonly dryRun: boolean
  readonly writeRtTables: boolean
}

const parseArgs = (argv: ReadonlyArray<string>): Args | string => {
  // Accept the subcommand itself in front, whichever way the dispatcher slices argv.
  const args = argv[0] === "node-setup" ? argv.slice(1) : argv
  try {
    const { values } = parseNodeArgs({
      args: [...args],
      options: {
        config: { type: "string" },
        "dry-run": { type: "boolean" },
        remove: { type: "boolean" },
        "write-rt-tables": { type: "boolean" }
      },
      strict: true,
      allowPositionals: false
    })
    if (values.config === "") return "--config needs a file"
    return {
      config: values.config ?? DEFAULT_CONFIG,
      mode: values.remove === true ? "remove" : "apply",
      dryRun: values["dry-run"] === true,
      writeRtTables: values["write-rt-tables"] === true
    }
  } catch (e) {
    return (e as Error).message
  }
}

/** Run node-setup with `argv` (the arguments after `node-setup`); resolves to the exit code. */
export const runNodeSetup = (argv: ReadonlyArray<string>, env: NodeSetupCliEnv = {}): Promise<number> => {
  const out = env.stdout ?? ((text: string) => void process.stdout.write(text))
  const err = env.stderr ?? ((text: string) => void process.stderr.write(text))
  const args = parseArgs(argv)
  if (typeof args === "string") {
    if (argv.includes("--help") || argv.includes("-h")) {
      out(USAGE + "\n")
      return Promise.resolve(0)
    }
    err(`node-setup: ${args}\n${USAGE}\n`)
    return Promise.resolve(2)
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
