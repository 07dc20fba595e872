/**
 * The warm per-node agent's socket server: it receives CNI calls from the shim (shim/main.go) over a
 * unix stream socket and answers each with what the standalone executable would have printed.
 *
 * Wire protocol, version 1 (the shim implements the other side):
 * - A filesystem socket, by default `/run/tenant-routing/agent.sock`; never an abstract one, which
 *   any root process in the host network namespace could reach. A directory we create is 0700; the
 *   socket is 0600 (created under umask 0177, then chmod-ed), so only root can call.
 * - On accept the agent writes ONE greeting byte, 0x41 ('A'). A unix connect succeeds into the listen
 *   backlog even when the agent is hung; only the greeting proves it is serving. The shim gives up
 *   after 300 ms without it and runs the standalone executable instead.
 * - The shim sends one frame: a 4-byte big-endian length N (at most 8 MiB), then N bytes of JSON
 *   `{"v":1,"env":{CNI_* variables},"stdin":"<base64>"}`, and half-closes its side.
 * - The agent answers one frame with the same length prefix, `{"v":1,"exit":0..255,"stdout":
 *   "<base64 of the exact stdout bytes>"}` (empty when the verb prints nothing), and closes.
 *
 * What it decides:
 * - A frame read whole is always answered. When its content is not a valid request (not JSON, `v` not
 *   1, an env value that is not a string, stdin that is not base64) the answer is a CNI error, code 6
 *   (UndecodableInput), exit 1: the request was delivered, so the failure is permanent and deserves a
 *   reason in the runtime's events, not a "try again" that would repeat it forever. Only CNI_* env
 *   names are kept: they are all a call may depend on.
 * - A frame that cannot be read whole (announced length over 8 MiB, the stream ending early, nothing
 *   complete within the read deadline of 10 s) is not answered: the connection is closed. Without a
 *   delimited request there is nobody known to be waiting for an answer, and a client mid-write may
 *   not read one; the shim turns a close without an answer into code 11 (try again later).
 * - Connections are served concurrently; each has its own deadline, so a silent client holds nothing
 *   but its socket. The datapath is serialised by the node lock inside the programs, shared with
 *   standalone calls (NodeLockSocket binds one abstract name per netns).
 * - A call whose client went away meanwhile is still completed (the verbs are idempotent, and a half
 *   applied ADD is worse than a finished one the runtime deletes); only its answer is lost.
 * - A socket path left by a dead agent (connect refused) is replaced; a path on which an agent still
 *   accepts connections is not taken over: start-up fails with AgentStartFailed. Nor is anything that
 *   is not a socket removed. Two agents starting at the very same instant could both see a stale path;
 *   one agent per node (a DaemonSet) makes that window moot.
 * - Shutdown (scope close): stop accepting and remove the socket file (only if it is still the one we
 *   bound) at once, so new calls fall back to the standalone executable immediately; close the
 *   connections still reading a request; let calls in progress finish for up to `drainTimeout` (4 s),
 *   then interrupt them (an interrupted ADD rolls back; its shim prints code 11).
 */
import * as fs from "node:fs"
import * as net from "node:net"
import { dirname } from "node:path"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Result from "effect/Result"
import { toCniError } from "../../domain/cni/CniError.ts"
import { NEWEST_VERSION } from "../../domain/cni/CniVersion.ts"
import { UndecodableInput } from "../../domain/cni/Errors.ts"
import { replyVersionOf } from "../../domain/cni/Invocation.ts"

export const DEFAULT_AGENT_SOCKET = "/run/tenant-routing/agent.sock"
export const GREETING = 0x41
export const MAX_FRAME_BYTES = 8 * 1024 * 1024
export const PROTOCOL_VERSION = 1

/** One CNI call as the shim sends it: its CNI_* variables and the exact stdin bytes. */
export interface AgentRequest {
  readonly env: Readonly<Record<string, string>>
  readonly stdin: Uint8Array
}

/** What the shim prints and exits with. */
export interface AgentReply {
  readonly exit: number
  readonly stdout: string | undefined
}

/** Serves one call; it cannot fail: every failure is already a CNI answer. */
export type AgentHandler = (
  env: Readonly<Record<string, string>>,
  stdin: Uint8Array
) => Effect.Effect<AgentReply>

export class AgentStartFailed extends Data.TaggedError("AgentStartFailed")<{ readonly msg: string }> {}

export interface AgentServerOptions {
  readonly path: string
  /** From accept to a complete request frame. Default 10 s. */
  readonly readTimeout?: Duration.Input
  /** How long calls in progress may finish after shutdown begins. Default 4 s. */
  readonly drainTimeout?: Duration.Input
}

// ---------------------------------------------------------------------------------------------------
// Frames (pure)

export const encodeFrame = (doc: unknown): Buffer => {
  const body = Buffer.from(JSON.stringify(doc), "utf8")
  const head = Buffer.alloc(4)
  head.writeUInt32BE(body.length, 0)
  return Buffer.concat([head, body])
}

export const encodeReply = (reply: AgentReply): Buffer =>
  encodeFrame({
    v: PROTOCOL_VERSION,
    exit: reply.exit,
    stdout: Buffer.from(reply.stdout ?? "", "utf8").toString("base64")
  })

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** Why a frame is not a request, with its stdin when that much was readable (to answer in its version). */
export interface UndecodableRequest {
  readonly error: string
  readonly stdin?: Uint8Array
}

/** A request frame's body as a request, or why it is not one. */
export const decodeRequest = (body: Uint8Array): Result.Result<AgentRequest, UndecodableRequest> => {
  let doc: unknown
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body))
  } catch {
    return Result.fail({ error: "the request frame is not UTF-8 JSON" })
  }
  if (!isRecord(doc)) return Result.fail({ error: "the request frame is not a JSON object" })
  const stdin =
    typeof doc.stdin === "string" && BASE64.test(doc.stdin) ? Buffer.from(doc.stdin, "base64") : undefined
  const withStdin = stdin === undefined ? {} : { stdin }
  if (doc.v !== PROTOCOL_VERSION)
    return Result.fail({
      error: `protocol version ${JSON.stringify(doc.v)} is not ${PROTOCOL_VERSION}`,
      ...withStdin
    })
  if (stdin === undefined) return Result.fail({ error: "stdin is not a base64 string" })
  if (!isRecord(doc.env)) return Result.fail({ error: "env is not an object", ...withStdin })
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(doc.env)) {
    if (typeof value !== "string")
      return Result.fail({ error: `env ${JSON.stringify(name.slice(0, 64))} is not a string`, ...withStdin })
    if (name.startsWith("CNI_")) env[name] = value
  }
  return Result.succeed({ env, stdin })
}

/** The CNI error answering an undecodable request, in the cniVersion of its stdin when it has one. */
export const invalidRequestReply = (error: string, stdin: Uint8Array | undefined): AgentReply => {
  const cniVersion = stdin === undefined ? NEWEST_VERSION : replyVersionOf(stdin)
  const doc = toCniError(
    new UndecodableInput({ msg: `the agent could not decode the call: ${error}` }),
    cniVersion
  )
  return { exit: 1, stdout: JSON.stringify(doc) }
}

// ---------------------------------------------------------------------------------------------------
// Sockets

class FrameUnread extends Data.TaggedError("FrameUnread")<{ readonly why: string }> {}

/** Reads one length-prefixed frame, refusing a length over `max` before reading its body. */
const readFrame = (socket: net.Socket, max: number): Effect.Effect<Buffer, FrameUnread> =>
  Effect.callback<Buffer, FrameUnread>((resume) => {
    const chunks: Array<Buffer> = []
    let size = 0
    let expected: number | undefined
    const done = (result: Effect.Effect<Buffer, FrameUnread>) => {
      cleanup()
      resume(result)
    }
    const onData = (chunk: Buffer) => {
      chunks.push(chunk)
      size += chunk.length
      if (expected === undefined && size >= 4) {
        const all = Buffer.concat(chunks)
        chunks.splice(0, chunks.length, all)
        expected = all.readUInt32BE(0)
        if (expected > max) return done(Effect.fail(new FrameUnread({ why: `announced ${expected} bytes` })))
      }
      // Bytes after the frame are ignored: the shim half-closes right after it.
      if (expected !== undefined && size >= 4 + expected)
        done(Effect.succeed(Buffer.concat(chunks).subarray(4, 4 + expected)))
    }
    const onEnd = () => done(Effect.fail(new FrameUnread({ why: `stream ended after ${size} bytes` })))
    const onError = (e: Error) => done(Effect.fail(new FrameUnread({ why: e.message })))
    const cleanup = () => {
      socket.off("data", onData)
      socket.off("end", onEnd)
      socket.off("close", onEnd)
      socket.off("error", onError)
    }
    socket.on("data", onData)
    socket.on("end", onEnd)
    socket.on("close", onEnd)
    socket.on("error", onError)
    return Effect.sync(cleanup)
  })

/** Writes the answer and ends our side; a client that left makes it a no-op. */
const writeAndEnd = (socket: net.Socket, bytes: Buffer): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (socket.destroyed) return resume(Effect.void)
    socket.once("error", () => resume(Effect.void))
    socket.end(bytes, () => resume(Effect.void))
  })

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code

/** Is an agent accepting connections on `path`? Refused (or gone) means no. */
const accepting = (path: string): Effect.Effect<boolean> =>
  Effect.callback<boolean>((resume) => {
    const probe = net.connect({ path })
    probe.once("connect", () => {
      probe.destroy()
      resume(Effect.succeed(true))
    })
    probe.once("error", () => resume(Effect.succeed(false)))
    return Effect.sync(() => void probe.destroy())
  })

/** Creates the directory (0700) if missing; clears a dead agent's socket; refuses a live one. */
const preparePath = (path: string): Effect.Effect<void, AgentStartFailed> =>
  Effect.gen(function* () {
    const fail = (msg: string) => Effect.fail(new AgentStartFailed({ msg }))
    const dir = dirname(path)
    const dirStat = yield* Effect.sync(() => {
      try {
        fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
        return fs.statSync(dir)
      } catch (e) {
        return e instanceof Error ? e.message : String(e)
      }
    })
    if (typeof dirStat === "string") return yield* fail(`cannot create ${dir}: ${dirStat}`)
    if (!dirStat.isDirectory()) return yield* fail(`${dir} is not a directory`)
    // Anyone who may write the directory could swap the socket for their own.
    if ((dirStat.mode & 0o022) !== 0)
      return yield* fail(`${dir} is writable by other users (mode ${(dirStat.mode & 0o7777).toString(8)})`)
    const existing = yield* Effect.sync(() => {
      try {
        return fs.lstatSync(path)
      } catch (e) {
        return errnoOf(e) === "ENOENT" ? undefined : e instanceof Error ? e.message : String(e)
      }
    })
    if (existing === undefined) return
    if (typeof existing === "string") return yield* fail(`cannot inspect ${path}: ${existing}`)
    if (!existing.isSocket()) return yield* fail(`${path} exists and is not a socket; not removing it`)
    if (yield* accepting(path)) return yield* fail(`another agent is already serving ${path}`)
    const removed = yield* Effect.sync(() => {
      try {
        fs.unlinkSync(path)
        return undefined
      } catch (e) {
        return errnoOf(e) === "ENOENT" ? undefined : e instanceof Error ? e.message : String(e)
      }
    })
    if (removed !== undefined) return yield* fail(`cannot remove the stale socket ${path}: ${removed}`)
    yield* Effect.logInfo("replaced a stale agent socket", { socket: path })
  })

/** Listens on `path` with mode 0600 from the first instant (umask), then states it with chmod. */
const listen = (path: string, onConnection: (socket: net.Socket) => void) =>
  Effect.callback<{ server: net.Server; ino: number }, AgentStartFailed>((resume) => {
    const server = net.createServer({ allowHalfOpen: true }, onConnection)
    server.once("error", (e) => {
      server.close()
      resume(Effect.fail(new AgentStartFailed({ msg: `cannot listen on ${path}: ${e.message}` })))
    })
    // The bind happens inside this synchronous call, so the umask covers exactly the socket's creation.
    const umask = process.umask(0o177)
    try {
      server.listen({ path, backlog: 511 }, () => {
        try {
          fs.chmodSync(path, 0o600)
          resume(Effect.succeed({ server, ino: fs.statSync(path).ino }))
        } catch (e) {
          server.close()
          resume(Effect.fail(new AgentStartFailed({ msg: `cannot chmod ${path}: ${(e as Error).message}` })))
        }
      })
    } finally {
      process.umask(umask)
    }
  })

/** Removes the socket file if it is still the one we bound (a successor may have replaced it). */
const removeOwnSocket = (path: string, ino: number) =>
  Effect.sync(() => {
    try {
      if (fs.lstatSync(path).ino === ino) fs.unlinkSync(path)
    } catch {
      // Already gone.
    }
  })

/**
 * Serves `handler` on the socket until the scope closes (see the file comment for shutdown). Succeeds
 * once the socket accepts connections.
 */
export const serve = Effect.fn("AgentServer.serve")(function* (
  options: AgentServerOptions,
  handler: AgentHandler
) {
  const { path } = options
  const readTimeout = options.readTimeout ?? "10 seconds"
  const drainTimeout = options.drainTimeout ?? "4 seconds"
  yield* preparePath(path)

  // Registered before the listener, so it closes after it: whatever the drain left is interrupted.
  const calls = yield* FiberSet.make<void, never>()
  const fork = yield* FiberSet.runtime(calls)<never>()
  // Connections still reading their request: closed at shutdown, as no call has begun on them.
  const reading = new Set<net.Socket>()

  const serveConnection = (socket: net.Socket): Effect.Effect<void> =>
    Effect.gen(function* () {
      socket.on("error", () => {}) // reported through the reads and writes below
      socket.write(Buffer.of(GREETING))
      reading.add(socket)
      const frame = yield* readFrame(socket, MAX_FRAME_BYTES).pipe(
        Effect.timeoutOrElse({
          duration: readTimeout,
          orElse: () =>
            Effect.fail(
              new FrameUnread({
                why: `no complete request within ${Duration.format(Duration.fromInputUnsafe(readTimeout))}`
              })
            )
        }),
        Effect.ensuring(Effect.sync(() => reading.delete(socket))),
        Effect.result
      )
      if (Result.isFailure(frame)) {
        yield* Effect.logWarning("agent connection closed without a request", { why: frame.failure.why })
        return
      }
      const decoded = decodeRequest(frame.success)
      if (Result.isFailure(decoded))
        yield* Effect.logWarning("agent request undecodable", { why: decoded.failure.error })
      const reply = Result.isFailure(decoded)
        ? invalidRequestReply(decoded.failure.error, decoded.failure.stdin)
        : yield* handler(decoded.success.env, decoded.success.stdin)
      yield* writeAndEnd(socket, encodeReply(reply))
    }).pipe(
      Effect.catchCause((cause) => Effect.logError("agent connection failed", { cause: String(cause) })),
      Effect.ensuring(Effect.sync(() => void socket.destroy()))
    )

  yield* Effect.acquireRelease(
    listen(path, (socket) => void fork(serveConnection(socket))),
    ({ server, ino }) =>
      Effect.gen(function* () {
        server.close()
        yield* removeOwnSocket(path, ino)
        for (const socket of reading) socket.destroy()
        const drained = yield* FiberSet.awaitEmpty(calls).pipe(Effect.timeoutOption(drainTimeout))
        if (drained._tag === "None")
          yield* Effect.logWarning("agent stopping: interrupting calls still in progress", {
            calls: yield* FiberSet.size(calls)
          })
      })
  )
})
