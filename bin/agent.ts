/**
 * `agent`: the warm per-node agent (docs/DESIGN.md §1). It serves the shim's CNI calls on a unix
 * socket (src/interpreters/live/AgentServer.ts describes the protocol) with the live interpreters,
 * built once (src/programs/agent.ts), so a pod start no longer pays for starting this program.
 *
 * It logs `agent ready` (a JSON line on stderr) once the socket accepts calls. SIGTERM or SIGINT stop
 * it: the socket is removed at once, calls in progress get up to 4 s to finish, and it exits 0; a
 * guard exits 1 if that has not happened within 5 s. A start that fails (another agent serving the
 * socket, a directory others may write) exits 1 with the reason on stderr; a bad flag exits 2.
 *
 * Run from source as `node bin/agent.ts --socket PATH`; the CLI will wrap `runAgent`.
 */
import { format, parseArgs } from "node:util"

const USAGE = "usage: tenant-routing agent [--socket PATH]"
const STOP_GUARD_MS = 5_000

/** Live layers, loaded on demand like the CNI mode does. */
const liveLayers = async () => {
  const [{ Layer }, d, n, l, a, k] = await Promise.all([
    import("effect"),
    import("../src/interpreters/live/DelegateExec.ts"),
    import("../src/interpreters/live/NetfilterLive.ts"),
    import("../src/interpreters/live/NodeLockSocket.ts"),
    import("../src/interpreters/live/AttachmentStoreFiles.ts"),
    import("../src/interpreters/live/AnnotationsKubernetes.ts")
  ])
  return {
    shared: Layer.mergeAll(
      d.DelegateExec.layer,
      l.NodeLockSocket.layer(),
      a.AttachmentStoreFiles.layer,
      k.AnnotationsKubernetes.layer,
      n.NetfilterLive.layer()
    )
  }
}

export const runAgent = async (argv: ReadonlyArray<string>): Promise<number> => {
  const { DEFAULT_AGENT_SOCKET } = await import("../src/interpreters/live/AgentServer.ts")
  let values: { socket?: string; help?: boolean }
  try {
    values = parseArgs({
      args: [...argv],
      options: { socket: { type: "string" }, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false
    }).values
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`)
    return 2
  }
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  const socket = values.socket ?? DEFAULT_AGENT_SOCKET
  if (!socket.startsWith("/") || socket.includes("\0")) {
    process.stderr.write(`--socket must be an absolute path, got ${JSON.stringify(socket)}\n${USAGE}\n`)
    return 2
  }

  // stdout carries nothing of ours; a stray library print must not pretend otherwise.
  const toStderr = (...args: Array<unknown>) => {
    process.stderr.write(`${format(...args)}\n`)
  }
  console.log = toStderr
  console.info = toStderr
  console.debug = toStderr

  const [{ Effect }, { makeCallHandler }, { AgentServer }, { loggingFor, stderrLogging }, layers] =
    await Promise.all([
      import("effect"),
      import("../src/programs/agent.ts"),
      import("../src/interpreters/live/AgentServer.ts"),
      import("../src/interpreters/live/Logging.ts"),
      liveLayers()
    ])

  /** Resolves with the first SIGTERM/SIGINT; later ones are ignored while stopping. */
  const stopSignal = Effect.callback<NodeJS.Signals>((resume) => {
    let stopping = false
    const on = (signal: NodeJS.Signals) => {
      if (stopping) return
      stopping = true
      setTimeout(() => {
        process.stderr.write(
          `tenant-routing agent: not stopped ${STOP_GUARD_MS} ms after ${signal}; exiting\n`
        )
        process.exit(1)
      }, STOP_GUARD_MS).unref()
      resume(Effect.succeed(signal))
    }
    process.on("SIGTERM", on)
    process.on("SIGINT", on)
  })

  const program = Effect.scoped(
    Effect.gen(function* () {
      const handle = yield* makeCallHandler(layers, loggingFor)
      yield* AgentServer.serve({ path: socket }, (env, stdin) =>
        Effect.map(handle(env, stdin), (out) => ({ exit: out.exitCode, stdout: out.stdout }))
      )
      yield* Effect.logInfo("agent ready", { socket, pid: process.pid })
      const signal = yield* stopSignal
      yield* Effect.logInfo("agent stopping", { signal })
    })
  )
  const exit = await Effect.runPromiseExit(program.pipe(Effect.provide(stderrLogging)))
  if (exit._tag === "Failure") {
    const { Cause } = await import("effect")
    const error = Cause.squash(exit.cause)
    const msg =
      typeof error === "object" && error !== null && "msg" in error
        ? String(error.msg)
        : Cause.pretty(exit.cause)
    process.stderr.write(`tenant-routing agent: not started: ${msg}\n`)
    return 1
  }
  await Effect.runPromise(Effect.logInfo("agent stopped", { socket }).pipe(Effect.provide(stderrLogging)))
  return 0
}

if (import.meta.main) {
  runAgent(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(
        `tenant-routing agent: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`
      )
      process.exit(1)
    }
  )
}
