/**
 * Network-namespace helpers for the simulated node (topology.ts), the integration tests and the demo.
 *
 * Plain Node (no vitest, no Effect) so a Node 24 script and a test can both import it. Every command is
 * an argument array given to `execFile`/`spawn`: no value ever reaches a shell. Everything this module
 * creates — namespaces, long-running processes, temporary paths — is remembered in one registry, and a
 * process 'exit' hook removes what is still there, so a crashed or interrupted run does not leave
 * namespaces behind (the hook is synchronous, as 'exit' hooks must be). Callers still remove what they
 * made themselves, in `finally`/`afterAll`; the hook is the safety net.
 *
 * Rule of the house: every netfilter, routing or address change happens in a namespace created here;
 * nothing in this module touches the root namespace (there is no helper that runs a command outside one,
 * except `ip netns add/del` and reading tools' versions).
 */
import { execFile, execFileSync, type SpawnOptions, spawn, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { constants, tmpdir } from "node:os"
import { join } from "node:path"

export interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  readonly input?: string | Buffer
  readonly env?: NodeJS.ProcessEnv
  /** Kill the command after this many milliseconds (default 30 s); `code` is then 124. */
  readonly timeoutMs?: number
  readonly cwd?: string
}

/** Runs a command (argument array, no shell) and resolves with its exit code and output; never rejects. */
export const run = (file: string, args: ReadonlyArray<string>, options: RunOptions = {}): Promise<Ran> =>
  new Promise((resolve) => {
    const child = execFile(
      file,
      [...args],
      {
        encoding: "utf8",
        maxBuffer: 64 * 1024 * 1024,
        timeout: options.timeoutMs ?? 30_000,
        killSignal: "SIGKILL",
        ...(options.env === undefined ? {} : { env: options.env }),
        ...(options.cwd === undefined ? {} : { cwd: options.cwd })
      },
      (error, stdout, stderr) => {
        let code = 0
        if (error !== null) {
          const e = error as NodeJS.ErrnoException & { code?: unknown; killed?: boolean; signal?: unknown }
          if (e.killed === true)
            code = 124 // our timeout
          else if (typeof e.code === "number") code = e.code
          else if (typeof e.signal === "string")
            code = 128 + (constants.signals[e.signal as NodeJS.Signals] ?? 0) // like a shell reports it
          else code = 127 // spawn failure (ENOENT, EACCES): no exit status
          if (code === 127 && stderr === "") stderr = String(error.message)
        }
        resolve({ code, stdout, stderr })
      }
    )
    // A command that exits without reading stdin makes the write fail with EPIPE: not our error.
    child.stdin?.on("error", () => {})
    if (options.input !== undefined) child.stdin?.end(options.input)
    else child.stdin?.end()
  })

export class CommandFailed extends Error {
  readonly argv: ReadonlyArray<string>
  readonly ran: Ran
  constructor(argv: ReadonlyArray<string>, ran: Ran) {
    super(`${argv.join(" ")} exited ${ran.code}: ${ran.stderr.trim() || ran.stdout.trim()}`)
    this.name = "CommandFailed"
    this.argv = argv
    this.ran = ran
  }
}

/** Like `run`, but rejects with CommandFailed on a non-zero exit; resolves with stdout. */
export const must = async (
  file: string,
  args: ReadonlyArray<string>,
  options: RunOptions = {}
): Promise<string> => {
  const ran = await run(file, args, options)
  if (ran.code !== 0) throw new CommandFailed([file, ...args], ran)
  return ran.stdout
}

/** True when `file ARGS...` runs and exits 0 (default `--version`): the tool is installed and works. */
export const hasTool = (file: string, args: ReadonlyArray<string> = ["--version"]): boolean => {
  const r = spawnSync(file, [...args], { stdio: "ignore", timeout: 10_000 })
  return r.error === undefined && r.status === 0
}

export const isRoot = (): boolean => process.getuid?.() === 0

/** `trw-<8 hex>`: a prefix for one run's namespaces, unique enough to run suites side by side. */
export const randomPrefix = (tag = "trw"): string => `${tag}-${randomBytes(4).toString("hex")}`

// ---------------------------------------------------------------------------------------------------
// Registry and exit hook

const namespaces = new Set<string>()
const children = new Set<number>()
const paths = new Set<string>()
let hooked = false

/** Synchronous removal of everything still registered: children first (a namespace lives on while a
 * process is in it), then namespaces, then paths. Safe to call more than once. */
export const cleanupAllSync = (): void => {
  for (const pid of children) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // already gone
    }
  }
  children.clear()
  for (const ns of namespaces) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" })
  namespaces.clear()
  for (const path of paths) rmSync(path, { recursive: true, force: true })
  paths.clear()
}

const hook = () => {
  if (hooked) return
  hooked = true
  process.on("exit", cleanupAllSync)
}

/** For scripts (not test workers): clean up and exit on SIGINT/SIGTERM/SIGHUP. */
export const cleanupOnSignals = (): void => {
  hook()
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => {
      cleanupAllSync()
      process.exit(signal === "SIGINT" ? 130 : 143)
    })
  }
}

/** A temporary directory removed by `removePath` or, failing that, at exit. */
export const tempDir = (tag = "trw-"): string => {
  hook()
  const dir = mkdtempSync(join(tmpdir(), tag))
  paths.add(dir)
  return dir
}

export const removePath = (path: string): void => {
  rmSync(path, { recursive: true, force: true })
  paths.delete(path)
}

// ---------------------------------------------------------------------------------------------------
// Namespaces

export const netnsPath = (ns: string): string => `/var/run/netns/${ns}`

/** Creates a namespace (and brings its lo up); it is registered for removal at exit. */
export const createNetns = async (ns: string): Promise<void> => {
  if (!/^trw-[A-Za-z0-9_.-]+$/.test(ns) || ns.length > 64)
    throw new Error(`refusing to create netns ${JSON.stringify(ns)}: names start with "trw-"`)
  hook()
  await must("ip", ["netns", "add", ns])
  namespaces.add(ns)
  await must("ip", ["-n", ns, "link", "set", "lo", "up"])
}

/** Deletes a namespace this module created; an absent one is fine. Kills nothing: stop children first. */
export const deleteNetns = async (ns: string): Promise<void> => {
  if (!ns.startsWith("trw-")) throw new Error(`refusing to delete netns ${JSON.stringify(ns)}: not ours`)
  const r = await run("ip", ["netns", "del", ns])
  if (r.code !== 0 && !/No such file|not found|Invalid/.test(r.stderr))
    throw new CommandFailed(["ip", "netns", "del", ns], r)
  namespaces.delete(ns)
}

/** The namespaces (named `trw-...`) that currently exist, for leak checks. */
export const listNetns = async (): Promise<ReadonlyArray<string>> => {
  const out = await must("ip", ["-j", "netns", "list"])
  const list = out.trim() === "" ? [] : (JSON.parse(out) as Array<{ name: string }>)
  return list.map((n) => n.name)
}

/** `ip netns exec NS FILE ARGS...`; never rejects. */
export const execIn = (
  ns: string,
  file: string,
  args: ReadonlyArray<string>,
  options: RunOptions = {}
): Promise<Ran> => run("ip", ["netns", "exec", ns, file, ...args], options)

/** `ip netns exec NS FILE ARGS...`, rejecting on failure; resolves with stdout. */
export const mustIn = (
  ns: string,
  file: string,
  args: ReadonlyArray<string>,
  options: RunOptions = {}
): Promise<string> => must("ip", ["netns", "exec", ns, file, ...args], options)

/** `ip -n NS ARGS...`, rejecting on failure. */
export const ip = (ns: string, ...args: ReadonlyArray<string>): Promise<string> =>
  must("ip", ["-n", ns, ...args])

/** `ip -n NS -j ARGS...` decoded; an absent routing table reads as empty. */
export const ipJson = async (
  ns: string,
  ...args: ReadonlyArray<string>
): Promise<Array<Record<string, unknown>>> => {
  const r = await run("ip", ["-n", ns, "-j", ...args])
  if (r.code !== 0) {
    if (r.stderr.includes("does not exist")) return []
    throw new CommandFailed(["ip", "-n", ns, "-j", ...args], r)
  }
  return r.stdout.trim() === "" ? [] : (JSON.parse(r.stdout) as Array<Record<string, unknown>>)
}

export interface VethEnd {
  readonly ns: string
  readonly name: string
}

/** A veth pair with one end in each namespace, both up. */
export const addVeth = async (a: VethEnd, b: VethEnd): Promise<void> => {
  await ip(a.ns, "link", "add", a.name, "type", "veth", "peer", "name", b.name, "netns", b.ns)
  await ip(a.ns, "link", "set", a.name, "up")
  await ip(b.ns, "link", "set", b.name, "up")
}

/** Adds `cidr` to `dev`; IPv6 addresses skip duplicate address detection (no waiting, no tentative). */
export const addAddress = async (ns: string, dev: string, cidr: string): Promise<void> => {
  const v6 = cidr.includes(":")
  await ip(ns, ...(v6 ? ["-6"] : ["-4"]), "addr", "add", cidr, "dev", dev, ...(v6 ? ["nodad"] : []))
}

/** `ip -n NS [-6] route add ARGS...`; the family is taken from the first address-looking argument. */
export const addRoute = async (ns: string, ...args: ReadonlyArray<string>): Promise<void> => {
  const v6 = args.some((a) => a.includes(":"))
  await ip(ns, v6 ? "-6" : "-4", "route", "add", ...args)
}

/** `sysctl -w KEY=VALUE` inside the namespace. */
export const sysctl = async (ns: string, key: string, value: string | number): Promise<void> => {
  await mustIn(ns, "sysctl", ["-q", "-w", `${key}=${value}`])
}

/** IPv4 and IPv6 forwarding on. */
export const enableForwarding = async (ns: string): Promise<void> => {
  await sysctl(ns, "net.ipv4.ip_forward", 1)
  await sysctl(ns, "net.ipv6.conf.all.forwarding", 1)
}

// ---------------------------------------------------------------------------------------------------
// Long-running processes

export interface Spawned {
  readonly pid: number
  /** Everything written to stdout/stderr so far. */
  readonly output: () => { stdout: string; stderr: string }
  /** Resolves with the first stdout line matching `test` (rejects on exit or after `timeoutMs`). */
  readonly waitForLine: (test: (line: string) => boolean, timeoutMs?: number) => Promise<string>
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Sends `signal` (default SIGTERM), then SIGKILL after `graceMs`; resolves when it has exited. */
  readonly kill: (signal?: NodeJS.Signals, graceMs?: number) => Promise<void>
}

/** Starts `FILE ARGS...` inside the namespace (`ip netns exec` replaces itself with the command, so the
 * pid is the command's); registered so the exit hook kills it. */
export const spawnIn = (
  ns: string,
  file: string,
  args: ReadonlyArray<string>,
  options: Pick<SpawnOptions, "env" | "cwd"> = {}
): Spawned => {
  hook()
  const child = spawn("ip", ["netns", "exec", ns, file, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    ...options
  })
  if (child.pid === undefined) throw new Error(`could not start ${file} in ${ns}`)
  const pid = child.pid
  children.add(pid)
  let stdout = ""
  let stderr = ""
  const waiters = new Set<() => void>()
  child.stdout?.setEncoding("utf8")
  child.stderr?.setEncoding("utf8")
  child.stdout?.on("data", (chunk: string) => {
    stdout += chunk
    for (const w of waiters) w()
  })
  child.stderr?.on("data", (chunk: string) => {
    stderr += chunk
  })
  let done: { code: number | null; signal: NodeJS.Signals | null } | undefined
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => {
      children.delete(pid)
      done = { code, signal }
      for (const w of waiters) w()
      resolve(done)
    })
  })
  const waitForLine = (test: (line: string) => boolean, timeoutMs = 15_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const line = stdout.split("\n").find((l, i, all) => i < all.length - 1 && test(l))
        if (line !== undefined) {
          finish()
          resolve(line)
        } else if (done !== undefined) {
          finish()
          reject(
            new Error(`${file} in ${ns} exited (${done.code ?? done.signal}) before ready: ${stderr.trim()}`)
          )
        }
      }
      const timer = setTimeout(() => {
        finish()
        reject(new Error(`${file} in ${ns} not ready after ${timeoutMs} ms: ${stderr.trim()}`))
      }, timeoutMs)
      const finish = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })
  const kill = async (signal: NodeJS.Signals = "SIGTERM", graceMs = 3_000) => {
    if (done !== undefined) return
    try {
      process.kill(pid, signal)
    } catch {
      return
    }
    const timer = setTimeout(() => {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // gone meanwhile
      }
    }, graceMs)
    await exited
    clearTimeout(timer)
  }
  return { pid, output: () => ({ stdout, stderr }), waitForLine, exited, kill }
}

/** For a synchronous check in a guard: does `ip netns` work here at all. */
export const canUseNetns = (): boolean => {
  if (!isRoot()) return false
  try {
    execFileSync("ip", ["netns", "list"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}
