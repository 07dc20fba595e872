/**
 * A client of the agent's protocol (src/interpreters/live/AgentServer.ts) for tests, written from the
 * protocol text rather than from the server's code, and the agent process started from source
 * (`tenant-routing agent`), and its HTTP endpoints read.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"
import { fileURLToPath } from "node:url"

/** The full program; `agent` is its subcommand. */
export const PROGRAM_MAIN = fileURLToPath(new URL("../../bin/tenant-routing.ts", import.meta.url))

export interface Reply {
  readonly v: unknown
  readonly exit: number
  /** The decoded stdout bytes as text. */
  readonly stdout: string
}

export interface Exchange {
  /** The first byte received (the greeting), if any. */
  readonly greeting: number | undefined
  /** The reply frame, if a whole one arrived before the agent closed. */
  readonly reply: Reply | undefined
  /** Every byte received. */
  readonly raw: Buffer
}

export const frame = (body: Buffer | string): Buffer => {
  const bytes = typeof body === "string" ? Buffer.from(body, "utf8") : body
  const head = Buffer.alloc(4)
  head.writeUInt32BE(bytes.length, 0)
  return Buffer.concat([head, bytes])
}

export const requestFrame = (env: Record<string, unknown>, stdin: Buffer | string): Buffer =>
  frame(
    JSON.stringify({
      v: 1,
      env,
      stdin: (typeof stdin === "string" ? Buffer.from(stdin, "utf8") : stdin).toString("base64")
    })
  )

const parse = (raw: Buffer): Exchange => {
  const greeting = raw.length > 0 ? raw[0] : undefined
  if (raw.length < 5) return { greeting, reply: undefined, raw }
  const n = raw.readUInt32BE(1)
  if (raw.length < 5 + n) return { greeting, reply: undefined, raw }
  const doc = JSON.parse(raw.subarray(5, 5 + n).toString("utf8")) as {
    v: unknown
    exit: number
    stdout: string
  }
  return {
    greeting,
    reply: { v: doc.v, exit: doc.exit, stdout: Buffer.from(doc.stdout, "base64").toString("utf8") },
    raw
  }
}

/**
 * Connects, waits for the greeting, sends `bytes` (half-closing after them unless `halfClose` is
 * false; `undefined` sends nothing), and resolves with everything received once the agent closes.
 */
export const exchange = (
  path: string,
  bytes: Buffer | undefined,
  options: { readonly halfClose?: boolean; readonly onGreeting?: (socket: net.Socket) => void } = {}
): Promise<Exchange> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ path, allowHalfOpen: true })
    const chunks: Array<Buffer> = []
    let greeted = false
    socket.on("data", (d: Buffer) => {
      chunks.push(d)
      if (!greeted) {
        greeted = true
        options.onGreeting?.(socket)
        if (bytes !== undefined) {
          if (options.halfClose === false) socket.write(bytes)
          else socket.end(bytes)
        }
      }
    })
    socket.on("error", (e: NodeJS.ErrnoException) => {
      // A reset after the agent closed on us is an answer too (the bytes so far are what we got).
      if (e.code === "ECONNRESET" || e.code === "EPIPE") return
      reject(e)
    })
    // The agent closed its side: so are we (allowHalfOpen would otherwise keep ours open forever).
    socket.on("end", () => socket.end())
    socket.on("close", () => resolve(parse(Buffer.concat(chunks))))
  })

export const call = async (
  path: string,
  env: Record<string, unknown>,
  stdin: Buffer | string
): Promise<Reply> => {
  const r = await exchange(path, requestFrame(env, stdin))
  if (r.greeting !== 0x41 || r.reply === undefined)
    throw new Error(`no reply from the agent (received ${r.raw.length} bytes)`)
  return r.reply
}

export interface AgentProcess {
  readonly child: ChildProcess
  readonly stderr: () => string
  /** Resolves once the agent logged `agent ready`; rejects if it exits first. */
  readonly ready: Promise<void>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** `[prefix...] node bin/tenant-routing.ts agent ARGS`, without CNI_COMMAND; `prefix` e.g. `ip netns exec NS`. */
export const startAgent = (
  args: ReadonlyArray<string>,
  options: { readonly prefix?: ReadonlyArray<string>; readonly env?: NodeJS.ProcessEnv } = {}
): AgentProcess => {
  const argv = [...(options.prefix ?? []), process.execPath, PROGRAM_MAIN, "agent", ...args]
  const { CNI_COMMAND: _, ...env } = options.env ?? process.env
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], env })
  let stderr = ""
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal }))
  )
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr?.setEncoding("utf8")
    child.stderr?.on("data", (d: string) => {
      stderr += d
      if (stderr.includes('"agent ready"')) resolve()
    })
    void exited.then(({ code, signal }) => reject(new Error(`agent exited (${code ?? signal}): ${stderr}`)))
  })
  ready.catch(() => {}) // observed by whoever awaits it
  child.stdout?.resume()
  return { child, stderr: () => stderr, ready, exited }
}

/** The port `--metrics-address HOST:0` bound, from the agent's `agent metrics listening` line. */
export const metricsPort = (stderr: string): number => {
  const m = /"agent metrics listening",\{"host":"[^"]*","port":(\d+)\}/.exec(stderr)
  if (m === null) throw new Error(`no metrics address in the agent's log: ${stderr}`)
  return Number(m[1])
}

/** One GET on loopback: status and body. */
export const httpGet = async (port: number, path: string): Promise<{ status: number; body: string }> => {
  const r = await fetch(`http://127.0.0.1:${port}${path}`)
  return { status: r.status, body: await r.text() }
}

/** The value of one Prometheus sample line `name{labels} value`; undefined when absent. */
export const sample = (text: string, series: string): number | undefined => {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1))
  }
  return undefined
}
