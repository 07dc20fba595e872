/**
 * The agent's protocol (src/interpreters/live/AgentServer.ts), spoken by a client written from the
 * protocol text (test/support/agentClient.ts): first against the server in this process with a
 * recording handler (short deadlines, concurrency, shutdown), then against `tenant-routing agent` as the
 * shim meets it (greeting, VERSION as runCni answers it, socket modes, stale and live sockets, SIGTERM).
 *
 * And the agent as a product: its flags as the CLI parses them (help, usage errors exit 2 in the CLI's
 * style, NODE_NAME), and its HTTP endpoints: /healthz, /readyz turning 200 once ready, and /metrics
 * whose counters are exactly the calls made.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Metric, Result, Scope } from "effect"
import * as fc from "fast-check"
import type { AgentOptions } from "../bin/agent.ts"
import { parseHostPort } from "../bin/agentCli.ts"
import { runCli } from "../bin/cli.ts"
import * as AgentServer from "../src/interpreters/live/AgentServer.ts"
import {
  type AgentHandler,
  type AgentServerOptions,
  type AgentStartFailed,
  decodeRequest,
  encodeReply,
  MAX_FRAME_BYTES
} from "../src/interpreters/live/AgentServer.ts"
import * as MetricsHttp from "../src/interpreters/live/MetricsHttp.ts"
import { codeOf } from "../src/programs/agentMetrics.ts"
import { runCni } from "../src/programs/dispatch.ts"
import { removePath, tempDir } from "./sim/netns.ts"
import {
  call,
  exchange,
  frame,
  httpGet,
  metricsPort,
  PROGRAM_MAIN,
  requestFrame,
  sample,
  startAgent
} from "./support/agentClient.ts"
import { startKubeApiServer } from "./support/kubeApiServer.ts"
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
          if (Result.isFailure(decoded)) return assert.fail(decoded.failure.error)
          const expected = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("CNI_")))
          assert.deepStrictEqual({ ...decoded.success.env }, expected)
          assert.deepStrictEqual(Buffer.from(decoded.success.stdin), Buffer.from(stdin))
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

describe("agent process (tenant-routing agent)", () => {
  const agents: Array<ReturnType<typeof startAgent>> = []
  const start = (args: ReadonlyArray<string>) => {
    const a = startAgent(args)
    agents.push(a)
    return a
  }
  afterAll(() => {
    for (const a of agents) if (a.child.exitCode === null) a.child.kill("SIGKILL")
  })

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

  it("SIGTERM while the agent is still starting: it starts, then stops cleanly (exit 0, socket removed)", async () => {
    const path = join(freshDir(), "agent.sock")
    const a = start(["--socket", path, "--metrics-address", "127.0.0.1:0"])
    // The metrics endpoint is up before the socket: signal in between, as a fast rollout may.
    while (!a.stderr().includes('"agent metrics listening"') && a.child.exitCode === null)
      await new Promise((r) => setTimeout(r, 1))
    a.child.kill("SIGTERM")
    assert.deepStrictEqual(await a.exited, { code: 0, signal: null })
    assert.isFalse(existsSync(path))
    assert.match(a.stderr(), /"agent stopped"/)
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

const runProgram = (args: ReadonlyArray<string>, env: Record<string, string | undefined> = {}) => {
  const { CNI_COMMAND: _, NODE_NAME: _n, ...parent } = process.env
  const r = spawnSync(process.execPath, [PROGRAM_MAIN, ...args], {
    env: { ...parent, ...env },
    encoding: "utf8"
  })
  return { code: r.status, out: r.stdout, err: r.stderr }
}

const AGENT_FLAGS = ["--socket", "--kubeconfig", "--node-name", "--tenants", "--metrics-address"]

describe("tenant-routing agent: flags", () => {
  it("the program lists agent; agent --help describes each of its flags, exit 0", () => {
    assert.match(runProgram(["--help"]).out, /^ {2}agent\s{2,}\S/m)
    const r = runProgram(["agent", "--help"])
    assert.strictEqual(r.code, 0, r.err)
    assert.strictEqual(r.err, "")
    for (const flag of AGENT_FLAGS) assert.match(r.out, new RegExp(`^  ${flag} \\S+\\s{2,}\\S`, "m"), flag)
    assert.match(r.out, /default \/run\/tenant-routing\/agent\.sock/)
  }, 60_000)

  const usage: ReadonlyArray<readonly [string, ReadonlyArray<string>, RegExp]> = [
    ["an unknown flag", ["--bogus"], /Unrecognized flag: --bogus/],
    ["a flag without its value", ["--socket"], /socket/],
    ["a relative socket path", ["--socket", "agent.sock"], /--socket must be an absolute path/],
    [
      "--kubeconfig without a node name (no NODE_NAME)",
      ["--kubeconfig", "/etc/k.conf"],
      /--node-name NAME or set NODE_NAME/
    ],
    ["--metrics-address without a port", ["--metrics-address", "127.0.0.1"], /expected HOST:PORT/],
    ["--metrics-address with a port over 65535", ["--metrics-address", "127.0.0.1:65536"], /over 65535/]
  ]
  it.each(usage)(
    "%s: exit 2 in the CLI's style, nothing started",
    (_what, args, why) => {
      const r = runProgram(["agent", ...args])
      assert.strictEqual(r.code, 2, r.err)
      assert.strictEqual(r.out, "")
      assert.isTrue(r.err.startsWith("tenant-routing agent: "), r.err)
      assert.match(r.err, why)
    },
    60_000
  )

  it("a kubeconfig that does not exist or is not one: exit 2 naming it, before the socket exists", () => {
    const dir = freshDir()
    const socket = join(dir, "agent.sock")
    const missing = runProgram([
      "agent",
      "--socket",
      socket,
      "--kubeconfig",
      join(dir, "nope"),
      "--node-name",
      "n1"
    ])
    assert.strictEqual(missing.code, 2, missing.err)
    assert.match(missing.err, /^tenant-routing agent: --kubeconfig \S+nope: /)
    const garbage = join(dir, "garbage.conf")
    writeFileSync(garbage, "{{{ not yaml")
    const invalid = runProgram(["agent", "--socket", socket, "--kubeconfig", garbage], { NODE_NAME: "n1" })
    assert.strictEqual(invalid.code, 2, invalid.err)
    assert.match(invalid.err, /^tenant-routing agent: --kubeconfig \S+garbage\.conf: /)
    assert.isFalse(existsSync(socket))
  }, 60_000)

  const parsed = async (args: ReadonlyArray<string>, environment: Record<string, string> = {}) => {
    let got: AgentOptions | undefined
    const err: Array<string> = []
    const code = await runCli(["agent", ...args], {
      environment,
      runAgent: (options) =>
        Effect.sync(() => {
          got = options
        }),
      stderr: (t) => void err.push(t),
      stdout: () => {}
    })
    return { code, options: got, err: err.join("") }
  }

  it("flags reach the agent as given; the node name defaults to NODE_NAME, the flag wins", async () => {
    const a = await parsed([], {})
    assert.deepStrictEqual(a.options, {
      socket: "/run/tenant-routing/agent.sock",
      kubeconfig: undefined,
      nodeName: undefined,
      tenants: undefined,
      metricsAddress: undefined
    })
    const b = await parsed(
      [
        "--socket",
        "/s/a.sock",
        "--kubeconfig",
        "/k.conf",
        "--tenants",
        "t.json",
        "--metrics-address",
        "[::1]:9100"
      ],
      { NODE_NAME: "from-env" }
    )
    assert.strictEqual(b.code, 0, b.err)
    assert.deepStrictEqual(b.options, {
      socket: "/s/a.sock",
      kubeconfig: "/k.conf",
      nodeName: "from-env",
      tenants: "t.json",
      metricsAddress: { host: "::1", port: 9100 }
    })
    const c = await parsed(["--node-name", "from-flag"], { NODE_NAME: "from-env" })
    assert.strictEqual(c.options?.nodeName, "from-flag")
    const d = await parsed(["--kubeconfig", "/k.conf"], { NODE_NAME: "" })
    assert.strictEqual(d.code, 2)
    assert.isUndefined(d.options)
  })

  it("parseHostPort: every HOST:PORT with a port in 0..65535 parses to itself; other ports and shapes are refused", () => {
    const host = fc.oneof(
      fc.ipV4(),
      fc.constantFrom("localhost", "metrics.node-1.example", "0.0.0.0"),
      fc.ipV6().map((v6) => `[${v6}]`)
    )
    fc.assert(
      fc.property(host, fc.integer({ min: 0, max: 65535 }), (h, port) => {
        const r = parseHostPort(`${h}:${port}`)
        assert.deepStrictEqual(r, { host: h.replace(/^\[|\]$/g, ""), port })
      })
    )
    fc.assert(
      fc.property(host, fc.integer({ min: 65536, max: 99999 }), (h, port) => {
        assert.isString(parseHostPort(`${h}:${port}`))
      })
    )
    for (const bad of ["", ":9100", "host", "host:", "host:-1", "::1:9100", "a b:1", "[zz]:1", "host:123456"])
      assert.isString(parseHostPort(bad), bad)
  })
})

describe("agent HTTP endpoints", () => {
  it("in process: /healthz 200 always; /readyz 503 until ready, then 200; /metrics refreshes first; 404 and 405 otherwise", async () => {
    let isReady = false
    let refreshed = 0
    const gauge = Metric.gauge("test_refreshed")
    const scope = Effect.runSync(Scope.make())
    const registry = new Map()
    const bound = await Effect.runPromise(
      MetricsHttp.serve({
        host: "127.0.0.1",
        port: 0,
        ready: () => isReady,
        beforeScrape: Effect.suspend(() => Metric.update(gauge, ++refreshed))
      }).pipe(Scope.provide(scope), Effect.provideService(Metric.MetricRegistry, registry))
    )
    try {
      assert.deepStrictEqual(await httpGet(bound.port, "/healthz"), { status: 200, body: "ok\n" })
      assert.strictEqual((await httpGet(bound.port, "/readyz")).status, 503)
      isReady = true
      assert.strictEqual((await httpGet(bound.port, "/readyz")).status, 200)
      const first = await httpGet(bound.port, "/metrics")
      assert.strictEqual(first.status, 200)
      assert.strictEqual(sample(first.body, "test_refreshed"), 1)
      assert.strictEqual(sample(first.body, "tenant_routing_agent_ready"), 1)
      assert.strictEqual(sample((await httpGet(bound.port, "/metrics")).body, "test_refreshed"), 2)
      assert.strictEqual((await httpGet(bound.port, "/nope")).status, 404)
      const post = await fetch(`http://127.0.0.1:${bound.port}/metrics`, { method: "POST" })
      assert.strictEqual(post.status, 405)
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
    await fetch(`http://127.0.0.1:${bound.port}/healthz`).then(
      () => assert.fail("still listening after the scope closed"),
      () => {}
    )
  })

  it("codeOf: 0 for a success; the answer's code otherwise; 999 when the answer has none", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 255 }), (code, exit) => {
        assert.strictEqual(codeOf(exit, JSON.stringify({ cniVersion: "1.0.0", code, msg: "m" })), code)
        assert.strictEqual(codeOf(0, JSON.stringify({ code })), 0)
      })
    )
    for (const stdout of [undefined, "", "not json", "{}", '{"code":"7"}', '{"code":1.5}', "null"])
      assert.strictEqual(codeOf(1, stdout), 999, String(stdout))
  })

  it("the agent process: /healthz and /readyz 200 once ready; /metrics counts exactly the calls made, by verb, outcome and code, and shows the process's own memory", async () => {
    const path = join(freshDir(), "agent.sock")
    const a = startAgent(["--socket", path, "--metrics-address", "127.0.0.1:0"])
    try {
      await a.ready
      const port = metricsPort(a.stderr())
      assert.deepStrictEqual(await httpGet(port, "/healthz"), { status: 200, body: "ok\n" })
      assert.strictEqual((await httpGet(port, "/readyz")).status, 200)
      const world = new World()
      const calls: ReadonlyArray<[Record<string, string>, string]> = [
        [{ CNI_COMMAND: "VERSION" }, VERSION_STDIN],
        [{ CNI_COMMAND: "VERSION" }, VERSION_STDIN],
        [{ CNI_COMMAND: "VERSION" }, VERSION_STDIN],
        [{ CNI_COMMAND: "VERSION" }, "not json"],
        [{ CNI_COMMAND: "ADD", CNI_CONTAINERID: "-bad" }, VERSION_STDIN],
        [{ CNI_COMMAND: "ADD", CNI_CONTAINERID: "-bad" }, VERSION_STDIN],
        [{ CNI_COMMAND: "FROB" }, VERSION_STDIN]
      ]
      const expected = new Map<string, number>()
      for (const [env, stdin] of calls) {
        const reply = await call(path, env, stdin)
        // The expected series from what runCni answers, computed independently of the agent.
        const out = await Effect.runPromise(
          runCni(env, new TextEncoder().encode(stdin), silent).pipe(Effect.provide(world.layer()))
        )
        assert.strictEqual(reply.exit, out.exitCode)
        const verb = env.CNI_COMMAND === "FROB" ? "other" : env.CNI_COMMAND!
        const code = out.exitCode === 0 ? 0 : (JSON.parse(out.stdout ?? "{}") as { code: number }).code
        const series = `tenant_routing_agent_calls_total{verb="${verb}",outcome="${out.exitCode === 0 ? "ok" : "error"}",code="${code}"}`
        expected.set(series, (expected.get(series) ?? 0) + 1)
      }
      assert.isAtLeast(expected.size, 3, "the calls cover several series")
      const metrics = await httpGet(port, "/metrics")
      assert.strictEqual(metrics.status, 200)
      const counted = metrics.body
        .split("\n")
        .filter((l) => l.startsWith("tenant_routing_agent_calls_total{"))
      assert.deepStrictEqual(
        new Map(
          counted.map((l) => [l.slice(0, l.lastIndexOf(" ")), Number(l.slice(l.lastIndexOf(" ") + 1))])
        ),
        expected
      )
      assert.strictEqual(
        sample(metrics.body, 'tenant_routing_agent_call_duration_seconds_count{verb="VERSION"}'),
        4
      )
      assert.strictEqual(
        sample(metrics.body, 'tenant_routing_agent_call_duration_seconds_count{verb="ADD"}'),
        2
      )
      assert.strictEqual(sample(metrics.body, "tenant_routing_agent_ready"), 1)
      // The memory gauges are this process's: its resident size as the kernel counts it, and a heap
      // whose live part fits in its reservation, which fits in the resident size.
      const vmRss =
        Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${a.child.pid}/status`, "utf8"))?.[1]) * 1024
      const memory = (kind: string) =>
        sample(metrics.body, `tenant_routing_agent_memory_bytes{kind="${kind}"}`) ?? Number.NaN
      assert.isAbove(memory("rss"), vmRss * 0.8)
      assert.isBelow(memory("rss"), vmRss * 1.25)
      assert.isAbove(memory("heap_used"), 0)
      assert.isAtMost(memory("heap_used"), memory("heap_total"))
      assert.isBelow(memory("heap_total"), memory("rss"))
      assert.isAbove(memory("external"), 0)
      a.child.kill("SIGTERM")
      assert.deepStrictEqual(await a.exited, { code: 0, signal: null })
      await fetch(`http://127.0.0.1:${port}/healthz`).then(
        () => assert.fail("the endpoints outlived the agent"),
        () => {}
      )
    } finally {
      if (a.child.exitCode === null) a.child.kill("SIGKILL")
    }
  }, 120_000)
})

describe("agent --kubeconfig: the watch cache behind readiness and metrics", () => {
  const readyz = async (port: number) => (await httpGet(port, "/readyz")).status
  const waitReady = async (port: number) => {
    while ((await readyz(port)) !== 200) await new Promise((r) => setTimeout(r, 50))
  }

  it("an agent whose cache is still listing is not ready (503); once synced it is (200), and /metrics shows each cache synced with the objects it holds", async () => {
    const server = await startKubeApiServer({
      namespaces: [
        { name: "default" },
        { name: "team-a", annotations: { "tenant.routing/fwmark": "tenant-a" } }
      ],
      pods: [
        { namespace: "default", name: "here", nodeName: "n1" },
        { namespace: "default", name: "elsewhere", nodeName: "n2" }
      ]
    })
    const dir = freshDir()
    const kubeconfig = join(dir, "kubeconfig")
    server.writeKubeconfig(kubeconfig)
    // The first pod list is held: the cache cannot have synced while it is.
    server.setFault({ kind: "delay", ms: 10_000, resource: "pods", verb: "list", times: 1 })
    const a = startAgent([
      "--socket",
      join(dir, "agent.sock"),
      "--kubeconfig",
      kubeconfig,
      "--node-name",
      "n1",
      "--metrics-address",
      "127.0.0.1:0"
    ])
    try {
      await a.ready
      const port = metricsPort(a.stderr())
      assert.strictEqual(await readyz(port), 503)
      assert.strictEqual(
        sample((await httpGet(port, "/metrics")).body, 'tenant_routing_agent_cache_synced{resource="pods"}'),
        0
      )
      // An informer that reopens a watch (client-node ends a quiet one after 30 s) is unsynced for a
      // moment: judge the synced state the cache settles in, retrying the whole observation until it
      // holds or 30 s past the held list. Readiness does not flap with it (cacheSettled).
      const settled = async () => {
        const body = (await httpGet(port, "/metrics")).body
        assert.strictEqual(sample(body, 'tenant_routing_agent_cache_synced{resource="pods"}'), 1)
        assert.strictEqual(sample(body, 'tenant_routing_agent_cache_synced{resource="namespaces"}'), 1)
        assert.strictEqual(
          sample(body, 'tenant_routing_agent_cache_objects{resource="pods"}'),
          1,
          "only this node's pods"
        )
        assert.strictEqual(sample(body, 'tenant_routing_agent_cache_objects{resource="namespaces"}'), 2)
        assert.strictEqual(sample(body, "tenant_routing_agent_ready"), 1)
        assert.strictEqual(await readyz(port), 200)
      }
      const until = Date.now() + 35_000
      for (;;) {
        try {
          await settled()
          break
        } catch (e) {
          if (Date.now() > until) throw e
          await new Promise((r) => setTimeout(r, 200))
        }
      }
      a.child.kill("SIGTERM")
      assert.deepStrictEqual(await a.exited, { code: 0, signal: null })
    } finally {
      if (a.child.exitCode === null) a.child.kill("SIGKILL")
      await server.close()
    }
  }, 120_000)

  it("an API server that cannot be reached: the cache falls back to direct reads, so the agent is ready, with the caches shown unsynced", async () => {
    const server = await startKubeApiServer()
    const dir = freshDir()
    const kubeconfig = join(dir, "kubeconfig")
    // A closed port on loopback: every list is refused.
    server.writeKubeconfig(kubeconfig, { server: "https://127.0.0.1:1" })
    const a = startAgent(
      ["--socket", join(dir, "agent.sock"), "--kubeconfig", kubeconfig, "--metrics-address", "127.0.0.1:0"],
      {
        env: { ...process.env, NODE_NAME: "n1" }
      }
    )
    try {
      await a.ready
      const port = metricsPort(a.stderr())
      await waitReady(port)
      const body = (await httpGet(port, "/metrics")).body
      assert.strictEqual(sample(body, 'tenant_routing_agent_cache_synced{resource="pods"}'), 0)
      assert.strictEqual(sample(body, 'tenant_routing_agent_cache_synced{resource="namespaces"}'), 0)
      a.child.kill("SIGTERM")
      assert.deepStrictEqual(await a.exited, { code: 0, signal: null })
    } finally {
      if (a.child.exitCode === null) a.child.kill("SIGKILL")
      await server.close()
    }
  }, 120_000)
})
