/**
 * The agent's protocol (src/interpreters/live/AgentServer.ts), spoken by a client written from the
 * protocol text (test/support/agentClient.ts): first against the server in this process with a
 * recording handler (short deadlines, concurrency, shutdown), then against `node bin/agent.ts` as the
 * shim meets it (greeting, VERSION as runCni answers it, socket modes, stale and live sockets, SIGTERM).
 */
import { existsSync, mkdirSync, statSync } from "node:fs"
import * as net from "node:net"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Scope } from "effect"
import * as fc from "fast-check"
import {
  type AgentHandler,
  AgentServer,
  type AgentServerOptions,
  type AgentStartFailed,
  decodeRequest,
  encodeReply,
  MAX_FRAME_BYTES
} from "../src/interpreters/live/AgentServer.ts"
import { runCni } from "../src/programs/dispatch.ts"
import { removePath, tempDir } from "./sim/netns.ts"
import { call, exchange, frame, requestFrame, startAgent } from "./support/agentClient.ts"
import { silent, World } from "./support/memoryWorld.ts"

const dirs: Array<string> = []
const freshDir = () => {
  const d = tempDir("trw-agent-")
  dirs.push(d)
  return d
}
afterAll(() => {
  for (const d of dirs) removePath(d)
})

/** Echoes what the handler was given, so tests see exactly what the server decoded. */
const echo: AgentHandler = (env, stdin) =>
  Effect.succeed({ exit: 0, stdout: JSON.stringify({ env, stdin: Buffer.from(stdin).toString("base64") }) })

const startServer = async (handler: AgentHandler, options: Partial<AgentServerOptions> = {}) => {
  const path = join(freshDir(), "run", "agent.sock")
  const scope = Effect.runSync(Scope.make())
  await Effect.runPromise(
    AgentServer.serve({ path, ...options }, handler).pipe(Scope.provide(scope), Effect.provide(silent()))
  )
  return { path, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

const VERSION_STDIN = JSON.stringify({ cniVersion: "1.0.0" })

describe("agent protocol, server in process", () => {
  it("decodeRequest: any request a client encodes decodes to its CNI_* variables and the exact stdin bytes", () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ maxLength: 12 }), fc.string({ maxLength: 40 }), { maxKeys: 8 }),
        fc.uint8Array({ maxLength: 600 }),
        (env, stdin) => {
          const body = requestFrame(env, Buffer.from(stdin)).subarray(4)
          const decoded = decodeRequest(body)
          assert.ok("request" in decoded)
          const expected = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("CNI_")))
          assert.deepStrictEqual({ ...decoded.request.env }, expected)
          assert.deepStrictEqual(Buffer.from(decoded.request.stdin), Buffer.from(stdin))
        }
      ),
      { numRuns: 200 }
    )
  })

  it("encodeReply: the stdout of a reply is the base64 of its exact bytes; no stdout is empty", () => {
    fc.assert(
      fc.property(
        fc.option(fc.string({ maxLength: 200 }), { nil: undefined }),
        fc.integer({ min: 0, max: 255 }),
        (stdout, exit) => {
          const bytes = encodeReply({ exit, stdout })
          assert.strictEqual(bytes.readUInt32BE(0), bytes.length - 4)
          const doc = JSON.parse(bytes.subarray(4).toString("utf8")) as {
            v: number
            exit: number
            stdout: string
          }
          assert.deepStrictEqual(doc, {
            v: 1,
            exit,
            stdout: Buffer.from(stdout ?? "", "utf8").toString("base64")
          })
        }
      )
    )
  })

  it("greets with 'A', keeps only CNI_* names and passes stdin bytes through unchanged (non-UTF-8 included)", async () => {
    const server = await startServer(echo)
    try {
      const stdin = Buffer.from([0xff, 0x00, 0xfe, 0x41])
      const r = await exchange(
        server.path,
        requestFrame({ CNI_COMMAND: "ADD", PATH: "/x", HOME: "/root" }, stdin)
      )
      assert.strictEqual(r.greeting, 0x41)
      assert.deepStrictEqual(r.reply?.exit, 0)
      assert.deepStrictEqual(JSON.parse(r.reply!.stdout), {
        env: { CNI_COMMAND: "ADD" },
        stdin: stdin.toString("base64")
      })
    } finally {
      await server.close()
    }
  })

  const undecodable: ReadonlyArray<[string, Buffer, string]> = [
    ["not JSON", frame("{not json"), "1.1.0"],
    ["not an object", frame("[1,2]"), "1.1.0"],
    [
      "protocol version 2",
      frame(JSON.stringify({ v: 2, env: {}, stdin: Buffer.from(VERSION_STDIN).toString("base64") })),
      "1.0.0"
    ],
    [
      "an env value that is not a string",
      frame(JSON.stringify({ v: 1, env: { CNI_COMMAND: 1 }, stdin: "" })),
      "1.1.0"
    ],
    ["stdin that is not base64", frame(JSON.stringify({ v: 1, env: {}, stdin: "***" })), "1.1.0"],
    ["an empty frame", frame(""), "1.1.0"]
  ]
  for (const [what, bytes, cniVersion] of undecodable) {
    it(`a whole frame with ${what} is answered with CNI code 6, exit 1, and the agent keeps serving`, async () => {
      const server = await startServer(echo)
      try {
        const r = await exchange(server.path, bytes)
        assert.strictEqual(r.greeting, 0x41)
        assert.strictEqual(r.reply?.exit, 1)
        const doc = JSON.parse(r.reply!.stdout) as { cniVersion: string; code: number; msg: string }
        assert.strictEqual(doc.code, 6)
        assert.strictEqual(doc.cniVersion, cniVersion)
        assert.match(doc.msg, /agent could not decode/)
        assert.strictEqual((await call(server.path, { CNI_COMMAND: "VERSION" }, "{}")).exit, 0)
      } finally {
        await server.close()
      }
    })
  }

  const unread: ReadonlyArray<[string, Buffer]> = [
    ["announces more than 8 MiB", Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7b])],
    [
      "announces exactly 8 MiB + 1",
      (() => {
        const b = Buffer.alloc(4)
        b.writeUInt32BE(MAX_FRAME_BYTES + 1, 0)
        return b
      })()
    ],
    ["ends inside the length", Buffer.from([0x00, 0x00])],
    ["ends mid-frame (disconnects)", Buffer.concat([Buffer.from([0, 0, 0, 100]), Buffer.from('{"v":1,')])]
  ]
  for (const [what, bytes] of unread) {
    it(`a client that ${what} is closed without an answer, and the agent keeps serving`, async () => {
      const server = await startServer(echo)
      try {
        const r = await exchange(server.path, bytes)
        assert.strictEqual(r.greeting, 0x41)
        assert.strictEqual(r.raw.length, 1, "nothing but the greeting")
        assert.strictEqual((await call(server.path, { CNI_COMMAND: "VERSION" }, "{}")).exit, 0)
      } finally {
        await server.close()
      }
    })
  }

  it("a silent client is closed after the read deadline without an answer", async () => {
    const server = await startServer(echo, { readTimeout: "100 millis" })
    try {
      const r = await exchange(server.path, undefined)
      assert.strictEqual(r.greeting, 0x41)
      assert.strictEqual(r.raw.length, 1)
    } finally {
      await server.close()
    }
  })

  it("a silent client blocks nobody: calls are answered while it stays connected", async () => {
    const server = await startServer(echo, { readTimeout: "10 minutes" })
    let silentClosed = false
    const silentDone = exchange(server.path, undefined).then((r) => {
      silentClosed = true
      return r
    })
    try {
      for (let i = 0; i < 3; i++)
        assert.strictEqual((await call(server.path, { CNI_COMMAND: "VERSION" }, "{}")).exit, 0)
      assert.isFalse(silentClosed)
    } finally {
      await server.close()
    }
    // Shutdown closes connections that never sent a request.
    assert.strictEqual((await silentDone).raw.length, 1)
  })

  it("calls are served concurrently: two calls that each wait for the other both complete", async () => {
    const arrived = Effect.runSync(Deferred.make<void>())
    let count = 0
    const handler: AgentHandler = (env, stdin) =>
      Effect.gen(function* () {
        count++
        if (count === 2) yield* Deferred.succeed(arrived, undefined)
        yield* Deferred.await(arrived)
        return yield* echo(env, stdin)
      })
    const server = await startServer(handler)
    try {
      const [a, b] = await Promise.all([
        call(server.path, { CNI_COMMAND: "ADD" }, "a"),
        call(server.path, { CNI_COMMAND: "DEL" }, "b")
      ])
      assert.deepStrictEqual([a.exit, b.exit], [0, 0])
    } finally {
      await server.close()
    }
  })

  it("shutdown removes the socket at once and lets a call in progress finish and answer", async () => {
    const started = Effect.runSync(Deferred.make<void>())
    const release = Effect.runSync(Deferred.make<void>())
    const handler: AgentHandler = (env, stdin) =>
      Effect.gen(function* () {
        yield* Deferred.succeed(started, undefined)
        yield* Deferred.await(release)
        return yield* echo(env, stdin)
      })
    const server = await startServer(handler)
    const inFlight = call(server.path, { CNI_COMMAND: "ADD" }, "x")
    await Effect.runPromise(Deferred.await(started))
    const closing = server.close()
    // The socket goes before the call ends: new calls fall back to the standalone program at once.
    while (existsSync(server.path)) await new Promise((r) => setTimeout(r, 10))
    await Effect.runPromise(Deferred.succeed(release, undefined))
    await closing
    assert.strictEqual((await inFlight).exit, 0)
  })

  it("a directory that other users may write is refused (they could swap the socket)", async () => {
    const dir = join(freshDir(), "open")
    mkdirSync(dir, { mode: 0o777 })
    const { chmodSync } = await import("node:fs")
    chmodSync(dir, 0o777)
    const exit = await Effect.runPromiseExit(
      Effect.scoped(AgentServer.serve({ path: join(dir, "agent.sock") }, echo)).pipe(Effect.provide(silent()))
    )
    assert.isTrue(Exit.isFailure(exit))
    if (Exit.isFailure(exit))
      assert.match((Cause.squash(exit.cause) as AgentStartFailed).msg, /writable by other users/)
  })

  it("a path that is not a socket is never removed", async () => {
    const dir = freshDir()
    const path = join(dir, "agent.sock")
    const { writeFileSync } = await import("node:fs")
    writeFileSync(path, "precious")
    const exit = await Effect.runPromiseExit(
      Effect.scoped(AgentServer.serve({ path }, echo)).pipe(Effect.provide(silent()))
    )
    assert.isTrue(Exit.isFailure(exit))
    assert.isTrue(statSync(path).isFile())
  })
})

describe("agent process (node bin/agent.ts)", () => {
  const agents: Array<ReturnType<typeof startAgent>> = []
  const start = (args: ReadonlyArray<string>) => {
    const a = startAgent(args)
    agents.push(a)
    return a
  }
  afterAll(() => {
    for (const a of agents) if (a.child.exitCode === null) a.child.kill("SIGKILL")
  })

  it("unknown flags (the later ones included) exit 2 without starting", async () => {
    for (const flag of ["--kubeconfig", "--node-name", "--tenants", "--metrics-address", "--bogus"]) {
      const a = start([flag, "x"])
      assert.strictEqual((await a.exited).code, 2, flag)
    }
    const relative = start(["--socket", "agent.sock"])
    assert.strictEqual((await relative.exited).code, 2)
  }, 120_000)

  it("serves VERSION and a malformed ADD exactly as runCni answers them; socket 0600 in a 0700 directory", async () => {
    const path = join(freshDir(), "run", "tenant-routing", "agent.sock")
    const a = start(["--socket", path])
    await a.ready
    assert.strictEqual(statSync(path).mode & 0o777, 0o600)
    assert.isTrue(statSync(path).isSocket())
    assert.strictEqual(statSync(join(path, "..")).mode & 0o777, 0o700)
    const world = new World()
    const cases: ReadonlyArray<[Record<string, string>, string]> = [
      [{ CNI_COMMAND: "VERSION" }, VERSION_STDIN],
      [{ CNI_COMMAND: "VERSION" }, "not json"],
      [{ CNI_COMMAND: "ADD", CNI_CONTAINERID: "-bad" }, VERSION_STDIN]
    ]
    for (const [env, stdin] of cases) {
      const expected = await Effect.runPromise(
        runCni(env, new TextEncoder().encode(stdin), silent).pipe(Effect.provide(world.layer()))
      )
      const reply = await call(path, env, stdin)
      assert.strictEqual(reply.exit, expected.exitCode)
      assert.strictEqual(reply.stdout, expected.stdout ?? "")
    }
    a.child.kill("SIGTERM")
    assert.strictEqual((await a.exited).code, 0)
  }, 120_000)

  it("a second agent on a live socket refuses to start (exit 1) and the first keeps serving", async () => {
    const path = join(freshDir(), "agent.sock")
    const first = start(["--socket", path])
    await first.ready
    const second = start(["--socket", path])
    assert.strictEqual((await second.exited).code, 1)
    assert.match(second.stderr(), /already serving/)
    assert.strictEqual((await call(path, { CNI_COMMAND: "VERSION" }, VERSION_STDIN)).exit, 0)
    first.child.kill("SIGTERM")
    assert.strictEqual((await first.exited).code, 0)
  }, 120_000)

  it("the socket of a killed agent (SIGKILL leaves the file) is replaced by the next agent", async () => {
    const path = join(freshDir(), "agent.sock")
    const dead = start(["--socket", path])
    await dead.ready
    dead.child.kill("SIGKILL")
    await dead.exited
    assert.isTrue(existsSync(path), "the file outlives the process")
    await new Promise<void>((resolve) => {
      const probe = net.connect({ path })
      probe.on("error", (e: NodeJS.ErrnoException) => {
        assert.strictEqual(e.code, "ECONNREFUSED")
        resolve()
      })
      probe.on("connect", () => assert.fail("a dead agent's socket accepted a connection"))
    })
    const next = start(["--socket", path])
    await next.ready
    assert.match(next.stderr(), /replaced a stale agent socket/)
    assert.strictEqual((await call(path, { CNI_COMMAND: "VERSION" }, VERSION_STDIN)).exit, 0)
    next.child.kill("SIGTERM")
    assert.strictEqual((await next.exited).code, 0)
  }, 120_000)

  it("SIGTERM: the agent removes its socket and exits 0", async () => {
    const path = join(freshDir(), "agent.sock")
    const a = start(["--socket", path])
    await a.ready
    a.child.kill("SIGTERM")
    const exited = await a.exited
    assert.deepStrictEqual(exited, { code: 0, signal: null })
    assert.isFalse(existsSync(path))
    assert.match(a.stderr(), /"agent stopped"/)
  }, 120_000)
})
