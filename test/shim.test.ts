/**
 * The Go shim (shim/main.go) as built by shim/build.ts, against a fake agent (a node:net
 * server on a unix socket in a temporary directory) and a fake `tenant-routing` (a shell script next
 * to the shim that prints its arguments, CNI_COMMAND and stdin), so both the agent path and the
 * fallback are observable. Each agent case names its socket in stdin (agentSocket): the default,
 * /run/tenant-routing/agent.sock, is not the tests' to create.
 */
import { type ChildProcess, spawn } from "node:child_process"
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync
} from "node:fs"
import { createServer, type Socket } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { buildShim } from "../shim/build.ts"

const dir = mkdtempSync(join(tmpdir(), "trw-shim-"))
const bin = join(dir, "bin") // the shim and the fake tenant-routing
const lonely = join(dir, "lonely") // a copy of the shim with no tenant-routing beside it
const empty = join(dir, "empty")
for (const d of [bin, lonely, empty]) mkdirSync(d)
const shim = join(bin, "tenant-routing-wrapper")
const lonelyShim = join(lonely, "tenant-routing-wrapper")
const DEFAULT_SOCKET = "/run/tenant-routing/agent.sock"
const MAX_STDIN = 4 * 1024 * 1024 + 1
const ENDED = "the tenant-routing agent ended the call before answering; the runtime should retry"
const UNAVAILABLE = "neither the tenant-routing agent nor the tenant-routing executable is available"

writeFileSync(
  join(bin, "tenant-routing"),
  `#!/bin/sh\nprintf 'fake tenant-routing argc=%s argv=[%s] command=[%s]\\n' "$#" "$*" "\${CNI_COMMAND-unset}"\nexec cat\n`
)
chmodSync(join(bin, "tenant-routing"), 0o755)

/** What the fake tenant-routing prints for these arguments, command and stdin. */
const fakeOutput = (args: ReadonlyArray<string>, command: string, stdin: Buffer) =>
  Buffer.concat([
    Buffer.from(`fake tenant-routing argc=${args.length} argv=[${args.join(" ")}] command=[${command}]\n`),
    stdin
  ])

const children: Array<ChildProcess> = []

beforeAll(async () => {
  await buildShim({ arch: "amd64", out: shim })
  copyFileSync(shim, lonelyShim)
  chmodSync(lonelyShim, 0o755)
  console.log(`shim (amd64): ${statSync(shim).size} bytes`)
}, 180_000)

afterAll(() => {
  for (const c of children) c.kill("SIGKILL")
  rmSync(dir, { recursive: true, force: true })
})

interface Run {
  readonly status: number | null
  readonly stdout: Buffer
  readonly stderr: string
}

const runShim = (
  file: string,
  options: { args?: ReadonlyArray<string>; env: Record<string, string>; stdin: Buffer; cwd?: string }
) =>
  new Promise<Run>((resolve, reject) => {
    const child = spawn(file, options.args ?? [], {
      env: { PATH: "/usr/bin:/bin", ...options.env },
      cwd: options.cwd ?? dir,
      stdio: ["pipe", "pipe", "pipe"]
    })
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    child.stdout.on("data", (c: Buffer) => out.push(c))
    child.stderr.on("data", (c: Buffer) => err.push(c))
    child.stdin.on("error", () => {}) // the shim reads at most 4 MiB + 1 bytes: the rest meets EPIPE
    child.on("error", reject)
    child.on("close", (status) =>
      resolve({ status, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() })
    )
    child.stdin.end(options.stdin)
  })

const cniEnv = (command = "ADD") => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: "c0ffee",
  CNI_NETNS: "/var/run/netns/pod1",
  CNI_IFNAME: "eth0",
  CNI_ARGS: "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1",
  CNI_PATH: empty
})

/** A CNI config naming the socket, with bytes that are not UTF-8 inside a string, as raw bytes. */
const config = (socket: string, cniVersion = "1.1.0") =>
  Buffer.concat([
    Buffer.from(
      `{"cniVersion":"${cniVersion}","name":"n","type":"tenant-routing-wrapper","agentSocket":"${socket}","blob":"`
    ),
    Buffer.from([0xff, 0xfe, 0x80, 0xc3]),
    Buffer.from(`"}\n`)
  ])

const frame = (doc: unknown) => {
  const body = Buffer.from(JSON.stringify(doc))
  const head = Buffer.alloc(4)
  head.writeUInt32BE(body.length)
  return Buffer.concat([head, body])
}

interface Request {
  readonly frameLength: number
  readonly bodyLength: number
  readonly v: unknown
  readonly env: Record<string, string>
  readonly stdin: Buffer
}

/** What the fake agent does once it has the whole request: reply, send raw bytes, or hang up. */
type Answer = { exit: number; stdout: Buffer } | { raw: Buffer } | "hang-up"

const startAgent = async (path: string, answer: (r: Request) => Answer, greet = true) => {
  const requests: Array<Request> = []
  const sockets = new Set<Socket>()
  // allowHalfOpen: the shim half-closes after its request and the reply still has to go out.
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket)
    socket.on("error", () => {})
    if (!greet) return
    socket.write("A")
    const chunks: Array<Buffer> = []
    socket.on("data", (c: Buffer) => chunks.push(c))
    socket.on("end", () => {
      const all = Buffer.concat(chunks)
      const doc = JSON.parse(all.subarray(4).toString("utf8"))
      const request = {
        frameLength: all.readUInt32BE(0),
        bodyLength: all.length - 4,
        v: doc.v,
        env: doc.env,
        stdin: Buffer.from(doc.stdin, "base64")
      }
      requests.push(request)
      const a = answer(request)
      if (a === "hang-up") socket.destroy()
      else if ("raw" in a) socket.end(a.raw)
      else socket.end(frame({ v: 1, exit: a.exit, stdout: a.stdout.toString("base64") }))
    })
  })
  await new Promise<void>((resolve) => server.listen(path, resolve))
  return {
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  }
}

/** A node process that listens on `path`, then is killed (stale socket) or stopped (never accepts). */
const listenerProcess = async (path: string, then: "SIGKILL" | "SIGSTOP") => {
  const child = spawn(
    process.execPath,
    [
      "-e",
      `require("node:net").createServer().listen(process.argv[1], () => {
         process.stdout.write("ready\\n"); process.kill(process.pid, ${JSON.stringify(then)}) })`,
      path
    ],
    { stdio: ["ignore", "pipe", "inherit"] }
  )
  children.push(child)
  await new Promise<void>((resolve) => child.stdout!.once("data", () => resolve()))
  if (then === "SIGKILL") await new Promise<void>((resolve) => child.once("exit", () => resolve()))
  return child
}

let count = 0
const socketPath = () => join(dir, `agent-${++count}.sock`)

const cniError = (r: Run) => {
  assert.strictEqual(r.status, 1, r.stderr)
  const text = r.stdout.toString()
  assert.isTrue(text.endsWith("}\n"), text)
  assert.strictEqual(text.indexOf("\n"), text.length - 1, "one JSON document and nothing else")
  return JSON.parse(text) as { cniVersion: string; code: number; msg: string; details: string }
}

describe("shim: the agent answers", () => {
  it("forwards every CNI_* variable and the stdin bytes exactly; prints the reply's bytes, exits with its status", async () => {
    const path = socketPath()
    const replies = [
      { exit: 0, stdout: Buffer.from([0x7b, 0x7d, 0x0a, 0x00, 0xff, 0xfe]) },
      { exit: 1, stdout: Buffer.from('{"cniVersion":"1.1.0","code":7,"msg":"no tenant"}\n') }
    ]
    const agent = await startAgent(path, () => replies[agent.requests.length - 1]!)
    const stdin = config(path)
    const env = {
      ...cniEnv(),
      CNI_EXTRA: "a=b=c",
      CNI_EMPTY: "",
      CNIX: "not forwarded",
      OTHER: "not forwarded"
    }
    for (const reply of replies) {
      const r = await runShim(shim, { args: ["ignored-by-the-agent"], env, stdin })
      assert.strictEqual(r.status, reply.exit, r.stderr)
      assert.deepStrictEqual(r.stdout, reply.stdout)
    }
    await agent.close()
    assert.strictEqual(agent.requests.length, 2)
    const request = agent.requests[0]!
    assert.strictEqual(request.v, 1)
    assert.strictEqual(request.frameLength, request.bodyLength)
    assert.deepStrictEqual(request.stdin, stdin)
    const { CNIX: _, OTHER: __, ...forwarded } = env
    assert.deepStrictEqual(request.env, forwarded)
  })

  it("never connects to an agentSocket that is not an absolute path (a leading @ included): it runs the program", async () => {
    const agent = await startAgent(join(dir, "@rel.sock"), () => ({ exit: 0, stdout: Buffer.from("ok") }))
    const r = await runShim(shim, { env: cniEnv(), stdin: config("@rel.sock"), cwd: dir })
    await agent.close()
    assert.strictEqual(agent.requests.length, 0)
    assert.notStrictEqual(r.stdout.toString(), "ok", r.stderr)
  })

  it("a stdin of 4 MiB and more reaches the agent cut to 4 MiB + 1 bytes", async () => {
    const path = socketPath()
    const agent = await startAgent(path, () => ({ exit: 0, stdout: Buffer.alloc(0) }))
    // Trailing whitespace keeps the cut stdin valid JSON, so the shim still finds the test's socket.
    const stdin = Buffer.concat([
      Buffer.from(`{"agentSocket":"${path}"}`),
      Buffer.alloc(MAX_STDIN + 1000, " ")
    ])
    const r = await runShim(shim, { env: cniEnv(), stdin })
    await agent.close()
    assert.strictEqual(r.status, 0, r.stderr)
    assert.strictEqual(agent.requests[0]!.stdin.length, MAX_STDIN)
    assert.isTrue(agent.requests[0]!.stdin.equals(stdin.subarray(0, MAX_STDIN)))
  })
})

describe("shim: no agent serving → tenant-routing with the same argv, env and stdin", () => {
  const args = ["--flag", "two words"]
  const fellBack = (r: Run, stdin: Buffer, command = "ADD") => {
    assert.strictEqual(r.status, 0, r.stderr)
    const expected = fakeOutput(args, command, stdin)
    // A diff of megabytes takes the runner a minute to print: compare those by length and bytes.
    if (expected.length > 65536) {
      assert.strictEqual(r.stdout.length, expected.length)
      assert.isTrue(r.stdout.equals(expected), "stdout differs from the fake's output")
    } else assert.deepStrictEqual(r.stdout, expected)
  }

  it("the socket file is absent", async () => {
    const stdin = config(join(dir, "absent.sock"))
    fellBack(await runShim(shim, { args, env: cniEnv("DEL"), stdin }), stdin, "DEL")
  })

  it("the socket is stale (its agent was killed; connect is refused)", async () => {
    const path = socketPath()
    await listenerProcess(path, "SIGKILL")
    assert.isTrue(statSync(path).isSocket())
    const stdin = config(path)
    fellBack(await runShim(shim, { args, env: cniEnv(), stdin }), stdin)
  })

  it("the agent is stopped: the connection waits in the backlog and no greeting comes", async () => {
    const path = socketPath()
    const child = await listenerProcess(path, "SIGSTOP")
    const stdin = config(path)
    fellBack(await runShim(shim, { args, env: cniEnv(), stdin }), stdin)
    child.kill("SIGKILL")
  })

  it("the agent accepts but never greets", async () => {
    const path = socketPath()
    const agent = await startAgent(path, () => "hang-up", false)
    const stdin = config(path)
    fellBack(await runShim(shim, { args, env: cniEnv(), stdin }), stdin)
    await agent.close()
    assert.strictEqual(agent.requests.length, 0)
  })

  it.skipIf(existsSync(DEFAULT_SOCKET)).each(["42", "null"])(
    "agentSocket %s is not a string: the default socket, absent here",
    async (value) => {
      const stdin = Buffer.from(`{"cniVersion":"1.0.0","agentSocket":${value}}`)
      fellBack(await runShim(shim, { args, env: cniEnv(), stdin }), stdin)
    }
  )

  it.skipIf(existsSync(DEFAULT_SOCKET))(
    "an oversized stdin reaches tenant-routing cut to 4 MiB + 1",
    async () => {
      const stdin = Buffer.alloc(MAX_STDIN + 1000, "x")
      fellBack(await runShim(shim, { args, env: cniEnv(), stdin }), stdin.subarray(0, MAX_STDIN))
    }
  )

  it("tenant-routing is found through CNI_PATH when it is not beside the shim", async () => {
    const stdin = config(join(dir, "absent.sock"))
    const env = { ...cniEnv(), CNI_PATH: `${empty}::${bin}` }
    fellBack(await runShim(lonelyShim, { args, env, stdin }), stdin)
  })
})

describe("shim: not a CNI call", () => {
  it("without CNI_COMMAND, runs tenant-routing with the arguments and leaves stdin alone", async () => {
    const r = await runShim(shim, { args: ["doctor", "--json"], env: {}, stdin: Buffer.from("untouched") })
    assert.strictEqual(r.status, 0, r.stderr)
    assert.deepStrictEqual(r.stdout, fakeOutput(["doctor", "--json"], "unset", Buffer.from("untouched")))
  })
})

describe("shim: its own errors", () => {
  const brokenReplies: ReadonlyArray<[string, Answer]> = [
    ["hangs up after reading the request", "hang-up"],
    ["sends a truncated reply", { raw: frame({ v: 1, exit: 0, stdout: "" }).subarray(0, 10) }],
    ["sends a reply that is not JSON", { raw: Buffer.from([0, 0, 0, 3, 0x6e, 0x6f, 0x21]) }],
    ["sends an exit status out of range", { raw: frame({ v: 1, exit: 256, stdout: "" }) }],
    ["sends a reply of another version", { raw: frame({ v: 2, exit: 0, stdout: "" }) }],
    ["announces a reply over 16 MiB", { raw: Buffer.from([0x01, 0x00, 0x00, 0x01]) }]
  ]
  it.each(brokenReplies)(
    "the agent %s: code 11 with the stdin's cniVersion, no fallback",
    async (_, answer) => {
      const path = socketPath()
      const agent = await startAgent(path, () => answer)
      const r = await runShim(shim, { env: cniEnv(), stdin: config(path, "0.4.0") })
      await agent.close()
      assert.strictEqual(agent.requests.length, 1, "the request was sent")
      const e = cniError(r)
      assert.deepStrictEqual(
        { ...e, details: "" },
        { cniVersion: "0.4.0", code: 11, msg: ENDED, details: "" }
      )
      assert.isNotEmpty(e.details)
    }
  )

  it("tenant-routing is nowhere and no agent serves: code 11", async () => {
    const r = await runShim(lonelyShim, { env: cniEnv(), stdin: config(join(dir, "absent.sock"), "0.3.1") })
    const e = cniError(r)
    assert.strictEqual(e.cniVersion, "0.3.1")
    assert.strictEqual(e.code, 11)
    assert.strictEqual(e.msg, UNAVAILABLE)
    assert.include(e.details, "tenant-routing")
  })

  it("a cniVersion that is not a string is not echoed: 1.0.0", async () => {
    const stdin = Buffer.from(`{"cniVersion":null,"agentSocket":"${join(dir, "absent.sock")}"}`)
    const r = await runShim(lonelyShim, { env: cniEnv(), stdin })
    assert.strictEqual(cniError(r).cniVersion, "1.0.0")
  })

  it("tenant-routing is nowhere, not a CNI call: code 11 with cniVersion 1.0.0", async () => {
    const r = await runShim(lonelyShim, {
      args: ["doctor"],
      env: { CNI_PATH: empty },
      stdin: Buffer.alloc(0)
    })
    const e = cniError(r)
    assert.deepStrictEqual([e.cniVersion, e.code, e.msg], ["1.0.0", 11, UNAVAILABLE])
  })
})

describe("shim build", () => {
  const eMachine = (file: string) => {
    const head = readFileSync(file).subarray(0, 20)
    assert.deepStrictEqual([...head.subarray(0, 5)], [0x7f, 0x45, 0x4c, 0x46, 2], "64-bit ELF")
    return head.readUInt16LE(18)
  }

  it("amd64 is an x86-64 ELF; the arm64 cross-build an aarch64 ELF", async () => {
    assert.strictEqual(eMachine(shim), 62) // EM_X86_64
    const arm = join(dir, "tenant-routing-wrapper-arm64")
    await buildShim({ arch: "arm64", out: arm })
    assert.strictEqual(eMachine(arm), 183) // EM_AARCH64
  }, 180_000)
})
