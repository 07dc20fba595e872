/**
 * The live `Delegate`: runs another CNI plugin binary the way libcni does (CNI spec, "Execution
 * protocol"): found by name in CNI_PATH, the CNI_* variables on top of our own environment, the
 * config as JSON on stdin, the result or a CNI error as JSON on stdout.
 *
 * What it decides: exit 0 is success (stdout parsed, empty → undefined); a non-zero exit with a CNI
 * error document on stdout is the delegate's own `DelegateError` (its code and details kept); every
 * other outcome (not found, not executable, killed by a signal, garbage, too much output, the
 * deadline) is `DelegateFailed` (102) with a short excerpt of its stderr, marked `ran` when the
 * process was started (so a failed ADD knows to run the delegate's DEL).
 *
 * Limits: output is captured up to fixed sizes (stdout 4 MiB, the last 64 KiB of stderr) while the
 * rest is drained, so a chatty plugin can neither block on a full pipe nor exhaust our memory. The
 * deadline covers the whole run, including a descendant that keeps stdout open after the plugin
 * exited (libcni waits for stdout to close too). Whatever the plugin leaves running in its process
 * group when it exits is killed as well: a CNI plugin is a one-shot command, not a daemon starter.
 * After the SIGKILL the spawner waits (up to 1 s) for the group to be empty; killed descendants are
 * orphans, so on a host whose PID 1 does not reap them (some containers) that wait is paid in full.
 *
 * Why effect/process rather than node:child_process: its Node spawner already starts every child
 * detached, in a process group of its own, and on scope close (our deadline, or any interruption)
 * signals the whole group with `killSignal` — `process.kill(-pid, "SIGKILL")` here — and waits for the
 * leader to exit. That is exactly the required behaviour, without hand-written callback plumbing.
 */

import { accessSync, constants, statSync } from "node:fs"
import { join } from "node:path"
import * as NodeChildProcessSpawner from "@effect/platform-node/NodeChildProcessSpawner"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as PlatformError from "effect/PlatformError"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { Delegate, type DelegateCall } from "../../domain/cni/Delegate.ts"
import { DelegateError, DelegateFailed } from "../../domain/cni/Errors.ts"

/** More than any real result; a plugin printing this much is broken (its output is refused). */
export const MAX_STDOUT_BYTES = 4 * 1024 * 1024
/** The tail of stderr is where a failing program says why; older output is dropped. */
export const MAX_STDERR_BYTES = 64 * 1024
/** How much of stderr goes into an error message (the full capture goes to the debug log). */
const STDERR_EXCERPT_CHARS = 512

/** A CNI error document (CNI spec, "Error"): `code` is what tells it apart from a result. */
const CniErrorWire = Schema.Struct({
  code: Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(1)),
  msg: Schema.optionalKey(Schema.String),
  details: Schema.optionalKey(Schema.Unknown)
})
const decodeJson = Schema.decodeUnknownResult(Schema.fromJsonString(Schema.Unknown))
const decodeCniError = Schema.decodeUnknownResult(CniErrorWire)

/** Binary names only: a `/` would let a config point at any file on the node. */
const isPlainName = (s: string) =>
  s !== "" && s !== "." && s !== ".." && !s.includes("/") && !s.includes("\0")

type Lookup = { readonly path: string } | { readonly missing: string }

/** libcni's FindInPath, plus an executability check so a bad install gets a precise message. */
const findInPath = (type: string, dirs: ReadonlyArray<string>): Lookup => {
  let notExecutable: string | undefined
  for (const dir of dirs) {
    if (dir === "") continue
    const candidate = join(dir, type)
    try {
      if (!statSync(candidate).isFile()) continue
    } catch {
      continue
    }
    try {
      accessSync(candidate, constants.X_OK)
      return { path: candidate }
    } catch {
      notExecutable ??= candidate
    }
  }
  return notExecutable !== undefined
    ? { missing: `${notExecutable} is not executable` }
    : { missing: `not found in CNI_PATH ${JSON.stringify(dirs.join(":"))}` }
}

/** Keeps the first `limit` bytes; counts the rest, which is read and dropped. */
const collectHead = <E>(stream: Stream.Stream<Uint8Array, E>, limit: number) =>
  Effect.suspend(() => {
    const chunks: Array<Uint8Array> = []
    let kept = 0
    let total = 0
    return stream.pipe(
      Stream.runForEach((chunk) =>
        Effect.sync(() => {
          total += chunk.length
          if (kept < limit) {
            const part = chunk.length <= limit - kept ? chunk : chunk.subarray(0, limit - kept)
            chunks.push(part)
            kept += part.length
          }
        })
      ),
      Effect.map(() => ({ bytes: Buffer.concat(chunks), total }))
    )
  })

/** Keeps the last `limit` bytes. */
const collectTail = <E>(stream: Stream.Stream<Uint8Array, E>, limit: number) =>
  Effect.suspend(() => {
    const chunks: Array<Uint8Array> = []
    let kept = 0
    return stream.pipe(
      Stream.runForEach((chunk) =>
        Effect.sync(() => {
          chunks.push(chunk)
          kept += chunk.length
          while (chunks.length > 1 && kept - chunks[0]!.length >= limit) kept -= chunks.shift()!.length
        })
      ),
      Effect.map(() => {
        const all = Buffer.concat(chunks)
        return all.length > limit ? all.subarray(all.length - limit) : all
      })
    )
  })

/** One line, bounded, for a message: the end of stderr, where the reason usually is. */
const excerpt = (stderr: string): string => {
  const flat = stderr.trim().replace(/\s*\n\s*/g, " | ")
  return flat.length <= STDERR_EXCERPT_CHARS ? flat : "..." + flat.slice(flat.length - STDERR_EXCERPT_CHARS)
}

const withStderr = (msg: string, stderr: string) => {
  const e = excerpt(stderr)
  return e === "" ? msg : `${msg}; stderr: ${e}`
}

/** The spawner reports death by a signal only as an error whose cause names it. */
const signalOf = (e: PlatformError.PlatformError): string => {
  const text = e.cause instanceof Error ? e.cause.message : e.message
  return /signal: '?(SIG\w+)/.exec(text)?.[1] ?? text
}

const describe = (call: DelegateCall) => `delegate ${call.type} ${call.command}`

/** What the process did, before interpretation. `signal` is set when it did not exit by itself. */
interface Outcome {
  readonly exitCode: number | undefined
  readonly signal: string | undefined
  readonly stdout: Buffer
  readonly stdoutTotal: number
  readonly stderr: string
}

const interpret = (
  call: DelegateCall,
  o: Outcome
): Effect.Effect<unknown, DelegateFailed | DelegateError> => {
  // Every outcome here comes from a process that ran: whatever it did may need undoing.
  const fail = (what: string) =>
    Effect.fail(new DelegateFailed({ msg: withStderr(`${describe(call)} ${what}`, o.stderr), ran: true }))
  if (o.exitCode === undefined) return fail(`crashed (killed by ${o.signal ?? "a signal"})`)
  if (o.stdoutTotal > MAX_STDOUT_BYTES) {
    return fail(`exited ${o.exitCode} after printing more than ${MAX_STDOUT_BYTES} bytes`)
  }
  const text = o.stdout.toString("utf8").trim()
  const parsed = text === "" ? undefined : decodeJson(text)
  if (o.exitCode === 0) {
    if (parsed === undefined) return Effect.succeed(undefined)
    if (parsed._tag === "Failure")
      return fail(`succeeded but printed invalid JSON: ${JSON.stringify(text.slice(0, 80))}`)
    return Effect.succeed(parsed.success)
  }
  // A non-zero exit means failure whatever stdout holds; only a well-formed CNI error keeps its code.
  if (parsed !== undefined && parsed._tag === "Success") {
    const err = decodeCniError(parsed.success)
    if (err._tag === "Success") {
      const { code, msg, details } = err.success
      return Effect.fail(
        new DelegateError({
          plugin: call.type,
          code,
          msg: msg ?? "",
          // The spec makes details a string; anything else is kept as its JSON text rather than lost.
          ...(details === undefined
            ? {}
            : { details: typeof details === "string" ? details : JSON.stringify(details) })
        })
      )
    }
  }
  return fail(`exited ${o.exitCode} without a CNI error on stdout`)
}

const make = Effect.gen(function* () {
  const spawner = yield* ChildProcessSpawner.ChildProcessSpawner

  const execute = (call: DelegateCall, binary: string) =>
    Effect.scoped(
      Effect.gen(function* () {
        const handle = yield* ChildProcess.make(binary, [], {
          // CNI spec: the CNI_* variables on top of the parent's environment; ours replace any
          // inherited CNI_* (this process is itself a plugin and has its own set).
          env: {
            CNI_COMMAND: call.command,
            CNI_CONTAINERID: call.containerId,
            CNI_NETNS: call.netns,
            CNI_IFNAME: call.ifname,
            CNI_ARGS: call.args,
            CNI_PATH: call.path.join(":")
          },
          extendEnv: true,
          // Its own process group, so the deadline kills the plugin and everything it started.
          detached: true,
          killSignal: "SIGKILL",
          // stdin is written below rather than given as a Stream: the spawner lets a failed input
          // stream (EPIPE from a plugin that exits without reading) override the real exit status.
          stdin: "pipe"
        }).pipe(Effect.provideService(ChildProcessSpawner.ChildProcessSpawner, spawner))

        const input = new TextEncoder().encode(JSON.stringify(call.conf))
        yield* Stream.make(input).pipe(Stream.run(handle.stdin), Effect.ignore, Effect.forkScoped)

        const [stdout, stderr, exit] = yield* Effect.all(
          [
            collectHead(handle.stdout, MAX_STDOUT_BYTES),
            collectTail(handle.stderr, MAX_STDERR_BYTES),
            // The Node spawner fails exitCode when the process died by a signal.
            handle.exitCode.pipe(
              Effect.map((code) => ({ exitCode: Number(code), signal: undefined })),
              Effect.catch((e) => Effect.succeed({ exitCode: undefined, signal: signalOf(e) }))
            )
          ],
          { concurrency: "unbounded" }
        )
        return {
          ...exit,
          stdout: stdout.bytes,
          stdoutTotal: stdout.total,
          stderr: stderr.toString("utf8")
        } satisfies Outcome
      })
    )

  const run = Effect.fn("Delegate.run")(
    function* (call: DelegateCall) {
      if (!isPlainName(call.type)) {
        return yield* new DelegateFailed({
          msg: `delegate type ${JSON.stringify(call.type)} must be a plugin name, not a path`
        })
      }
      const found = findInPath(call.type, call.path)
      if ("missing" in found) return yield* new DelegateFailed({ msg: `${describe(call)}: ${found.missing}` })

      const started = Date.now()
      const outcome = yield* execute(call, found.path).pipe(
        Effect.mapError(
          (e) => new DelegateFailed({ msg: `${describe(call)} could not be started: ${e.message}` })
        ),
        Effect.timeoutOrElse({
          duration: Duration.millis(call.timeoutMs),
          // By now the scope has closed: the process group got SIGKILL and the leader was reaped.
          orElse: () =>
            Effect.fail(
              new DelegateFailed({ msg: `${describe(call)} timed out after ${call.timeoutMs}ms`, ran: true })
            )
        })
      )
      yield* Effect.logDebug("delegate finished", {
        plugin: call.type,
        command: call.command,
        binary: found.path,
        exitCode: outcome.exitCode ?? null,
        signal: outcome.signal ?? null,
        durationMs: Date.now() - started,
        stderr: excerpt(outcome.stderr)
      })
      return yield* interpret(call, outcome)
    },
    Effect.annotateLogs({ component: "delegate" })
  )

  return Delegate.of({ run })
})

/** The live Delegate, with the Node process spawner it needs. */
export const layer = Layer.effect(Delegate, make).pipe(
  Layer.provide(NodeChildProcessSpawner.layer),
  Layer.provide(Layer.mergeAll(NodeFileSystem.layer, NodePath.layer))
)
