/**
 * Flag parsing shared by the operator subcommands: node:util's strict parser, the subcommand's own
 * name accepted in front (whichever way the dispatcher slices argv), `--help`/`-h` answered with the
 * usage (exit 0), and any unknown or malformed flag answered with the message and the usage on
 * stderr (exit 2). A flag given as an empty string is refused like a missing value.
 */
import { type ParseArgsOptionsConfig, parseArgs } from "node:util"

export interface Io {
  readonly out: (text: string) => void
  readonly err: (text: string) => void
}

export const processIo = (env: {
  readonly stdout?: (t: string) => void
  readonly stderr?: (t: string) => void
}): Io => ({
  out: env.stdout ?? ((text) => void process.stdout.write(text)),
  err: env.stderr ?? ((text) => void process.stderr.write(text))
})

type Values<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ options: O; strict: true }>
>["values"]

/** The parsed flags, or the exit code the command ends with (usage or error already printed). */
export const parseFlags = <const O extends ParseArgsOptionsConfig>(
  command: string,
  usage: string,
  argv: ReadonlyArray<string>,
  options: O,
  io: Io
): { readonly values: Values<O> } | { readonly exit: number } => {
  const args = argv[0] === command ? argv.slice(1) : [...argv]
  if (args.includes("--help") || args.includes("-h")) {
    io.out(`${usage}\n`)
    return { exit: 0 }
  }
  try {
    const { values } = parseArgs({ args, options, strict: true, allowPositionals: false })
    const empty = Object.entries(values).find(([, v]) => v === "")
    if (empty !== undefined) throw new Error(`--${empty[0]} needs a value`)
    return { values: values as Values<O> }
  } catch (e) {
    io.err(`${command}: ${(e as Error).message}\n${usage}\n`)
    return { exit: 2 }
  }
}
