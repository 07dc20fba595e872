/**
 * What every operator subcommand shares: where its text goes (`CliIo`, replaced by tests), its one
 * error style, `tenant-routing <subcommand>: <what is wrong; what to do>` on stderr, and its
 * exit codes — 0 done, 1 failed, 2 usage (a flag, or an input file the operator must fix).
 */
import * as Context from "effect/Context"
import { Flag } from "effect/cli"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"

export const PROGRAM = "tenant-routing"

export interface Io {
  readonly out: (text: string) => void
  readonly err: (text: string) => void
}

export const processIo: Io = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text)
}

export const CliIo = Context.Reference<Io>("tenant-routing/cli/Io", { defaultValue: () => processIo })

/** The subcommand ends with `code`; `message`, when given, is printed in the one error style. */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly command: string
  readonly code: 1 | 2
  readonly message: string | undefined
}> {}

export const usageError = (command: string, message: string) => new CliExit({ command, code: 2, message })
export const failed = (command: string, message: string) => new CliExit({ command, code: 1, message })

/** The one error line (and its indented continuation lines). */
export const errorText = (command: string, message: string): string =>
  `${command === "" ? PROGRAM : `${PROGRAM} ${command}`}: ${message}\n`

/** Prints to stdout, with a final newline. */
export const printOut = (text: string) =>
  Effect.flatMap(CliIo, (io) => Effect.sync(() => io.out(`${text}\n`)))

/** `--json`, the same flag on every subcommand that prints a result. */
export const jsonFlag = Flag.Boolean("json").pipe(
  Flag.withDefault(false),
  Flag.withDescription("print the result as one JSON document instead of text")
)

/** A boolean flag that is off unless given. */
export const switchFlag = (name: string, description: string) =>
  Flag.Boolean(name).pipe(Flag.withDefault(false), Flag.withDescription(description))

/** A string flag with a default, the default named in the help. */
export const stringFlag = (name: string, metavar: string, description: string, fallback: string) =>
  Flag.String(name).pipe(
    Flag.withMetavar(metavar),
    Flag.withDefault(fallback),
    Flag.withDescription(`${description} (default ${fallback})`)
  )

/** A string flag that may be left out (its value is then `Option.none`). */
export const optionalString = (name: string, metavar: string, description: string) =>
  Flag.String(name).pipe(Flag.withMetavar(metavar), Flag.optional, Flag.withDescription(description))

/** Prints `value` as JSON or `text(value)` as text. */
export const printResult = <A>(json: boolean, value: A, text: (a: A) => string) =>
  printOut(json ? JSON.stringify(value, null, 2) : text(value))
