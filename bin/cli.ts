/**
 * The operator's command line, loaded by bin/tenant-routing.ts only when `CNI_COMMAND` is not
 * set: `node-setup`, `install`, `uninstall`, `inspect`, `doctor`, `agent`, `version`, built with Effect's CLI module so every
 * subcommand answers `--help` with each of its flags described, and usage errors look alike.
 *
 * One error style: `tenant-routing <subcommand>: <what is wrong; what to do>` on stderr
 * (cliSupport.ts). Exit codes: 0 done, 1 failed, 2 usage. Help goes to stdout; a usage error prints
 * only the error and where to find the help, not the whole help text.
 */
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { format } from "node:util"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import { CliConfig, CliError, CliOutput, Command, GlobalFlag } from "effect/cli"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { type AgentCliEnv, agentCommand } from "./agentCli.ts"
import {
  CliExit,
  CliIo,
  errorText,
  type Io,
  jsonFlag,
  PROGRAM,
  printResult,
  processIo,
  usageError
} from "./cliSupport.ts"
import { type DoctorCliEnv, doctorCommand } from "./doctorCli.ts"
import { type InspectCliEnv, inspectCommand } from "./inspectCli.ts"
import { type InstallCliEnv, installCommand } from "./installCli.ts"
import { type NodeSetupCliEnv, nodeSetupCommand } from "./nodeSetupCli.ts"
import { type UninstallCliEnv, uninstallCommand } from "./uninstallCli.ts"

/** Set by scripts/build.ts (esbuild `define`); unset when run from source. */
declare const __TRW_VERSION__: string | undefined
declare const __TRW_COMMIT__: string | undefined

export interface VersionInfo {
  readonly version: string
  readonly commit: string
}

/** The program's version and the git commit it was built from ("unknown" outside a checkout). */
export const versionInfo = (): VersionInfo => {
  const version =
    typeof __TRW_VERSION__ === "string"
      ? __TRW_VERSION__
      : (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string })
          .version
  if (typeof __TRW_COMMIT__ === "string") return { version, commit: __TRW_COMMIT__ }
  try {
    const commit = execFileSync("git", ["rev-parse", "HEAD"], {
      cwd: new URL(".", import.meta.url),
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"]
    }).trim()
    return { version, commit: commit === "" ? "unknown" : commit }
  } catch {
    return { version, commit: "unknown" }
  }
}

const versionText = (v: VersionInfo) => `${PROGRAM} ${v.version} (commit ${v.commit})`

const versionCommand = (info: VersionInfo) =>
  Command.make("version", { json: jsonFlag }, (flags) => printResult(flags.json, info, versionText)).pipe(
    Command.withDescription("Print the program's version and the git commit it was built from."),
    Command.withShortDescription("print the version and build commit")
  )

/** Replaceable parts of every subcommand, for tests, and where text goes. */
export interface CliEnv
  extends NodeSetupCliEnv,
    DoctorCliEnv,
    InspectCliEnv,
    InstallCliEnv,
    UninstallCliEnv,
    AgentCliEnv {
  readonly stdout?: (text: string) => void
  readonly stderr?: (text: string) => void
}

const root = (env: CliEnv, info: VersionInfo) =>
  Command.make(PROGRAM, {}, () =>
    // Run by hand without a subcommand, like the reference plugins: say what this is, and fail.
    Effect.fail(
      usageError(
        "",
        `CNI_COMMAND is not set, so this is not a CNI call; give a subcommand (${PROGRAM} --help lists them)`
      )
    )
  ).pipe(
    Command.withDescription(
      `A CNI meta-plugin: with CNI_COMMAND set (ADD, DEL, CHECK, GC, STATUS, VERSION) it is the plugin the runtime calls, reading the network config on stdin. Without it, one of the subcommands below. ${versionText(info)}.`
    ),
    Command.withSubcommands([
      nodeSetupCommand(env),
      installCommand(env),
      uninstallCommand(env),
      inspectCommand(env),
      doctorCommand(env),
      agentCommand(env),
      versionCommand(info)
    ])
  )

/**
 * Help on stdout; a usage error as one line per problem in the error style, then where the help is;
 * `--version` as the `version` subcommand prints it.
 */
const presenter = (io: Io, info: VersionInfo): CliOutput.Presenter => {
  const formatter = CliOutput.defaultFormatter({ colors: false })
  return {
    present: (event) =>
      Effect.sync(() => {
        switch (event._tag) {
          case "Help":
            return io.out(`${formatter.formatHelpDoc(event.helpDoc)}\n`)
          case "Version":
            return io.out(`${versionText(info)}\n`)
          case "InvalidInvocation": {
            const command = event.commandPath.slice(1).join(" ")
            for (const e of event.errors) io.err(errorText(command, e.message))
            return io.err(`run '${[PROGRAM, ...event.commandPath.slice(1), "--help"].join(" ")}' for usage\n`)
          }
        }
      })
  }
}

/** Runs the command line `argv` (without the program name); resolves to the exit code. */
export const runCli = async (argv: ReadonlyArray<string>, env: CliEnv = {}): Promise<number> => {
  const io: Io = {
    out: env.stdout ?? processIo.out,
    err: env.stderr ?? processIo.err
  }
  const info = versionInfo()
  const console: Console.Console = Object.assign(Object.create(globalThis.console) as Console.Console, {
    log: (...args: ReadonlyArray<unknown>) => io.out(`${format(...args)}\n`),
    error: (...args: ReadonlyArray<unknown>) => io.err(`${format(...args)}\n`)
  })
  const program = Command.runWith(root(env, info), { version: info.version })(argv).pipe(
    Effect.provide(
      Layer.mergeAll(
        NodeServices.layer,
        // Help and version only: no completions, wizard or log-level flags on an operator tool.
        CliConfig.layer({ builtIns: [GlobalFlag.Help, GlobalFlag.Version] }),
        CliOutput.layerPresenter(presenter(io, info))
      )
    ),
    Effect.provideService(CliIo, io),
    Effect.provideService(Console.Console, console)
  )
  const exit = await Effect.runPromiseExit(program)
  if (Exit.isSuccess(exit)) return 0
  const error = Cause.squash(exit.cause)
  if (error instanceof CliExit) {
    if (error.message !== undefined) io.err(errorText(error.command, error.message))
    return error.code
  }
  // The presenter has already said what was wrong with the command line.
  if (CliError.isCliError(error)) return 2
  io.err(errorText("", `unexpected failure, please report it:\n${Cause.pretty(exit.cause)}`))
  return 1
}
