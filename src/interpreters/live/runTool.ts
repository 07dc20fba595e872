/**
 * Running one of the node's tools (iptables-save, nft, ip, ...) and collecting what it printed: the
 * one way every live interpreter spawns a short-lived command. Never through a shell: `argv` is
 * passed as is. A missing binary is the value "missing" rather than an error, since for several
 * callers it means "this backend is not on this node"; a non-zero exit is returned, not raised.
 * At the deadline the child (its whole process group) is killed when the scope closes.
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { ChildProcess, type ChildProcessSpawner } from "effect/process"
import * as Stream from "effect/Stream"

export interface Ran {
  readonly exitCode: number
  readonly stdout: string
  readonly stderr: string
}

/** The tool could not be run, or did not finish in time. */
export class ToolError extends Data.TaggedError("ToolError")<{ readonly msg: string }> {}

export const runTool = (
  argv: ReadonlyArray<string>,
  options: { readonly stdin?: string; readonly timeout: Duration.Input }
): Effect.Effect<Ran | "missing", ToolError, ChildProcessSpawner.ChildProcessSpawner> => {
  const [cmd, ...args] = argv as [string, ...Array<string>]
  return Effect.scoped(
    Effect.gen(function* () {
      const handle = yield* ChildProcess.make(cmd, args, {
        // Tools' messages are parsed by nobody, but quoted in errors: keep them in one language.
        env: { LC_ALL: "C" },
        extendEnv: true,
        stdin: options.stdin === undefined ? "ignore" : Stream.make(new TextEncoder().encode(options.stdin))
      })
      const [stdout, stderr, code] = yield* Effect.all(
        [
          handle.stdout.pipe(Stream.decodeText(), Stream.mkString),
          handle.stderr.pipe(Stream.decodeText(), Stream.mkString),
          handle.exitCode
        ],
        { concurrency: "unbounded" }
      )
      return { exitCode: Number(code), stdout, stderr } satisfies Ran
    })
  ).pipe(
    Effect.catchTag("PlatformError", (e) =>
      e.reason._tag === "NotFound"
        ? Effect.succeed("missing" as const)
        : Effect.fail(new ToolError({ msg: `${argv.join(" ")}: ${e.message}` }))
    ),
    Effect.timeoutOrElse({
      duration: options.timeout,
      orElse: () =>
        Effect.fail(
          new ToolError({
            msg: `${argv.join(" ")} did not finish within ${Duration.format(Duration.fromInputUnsafe(options.timeout))}`
          })
        )
    })
  )
}
