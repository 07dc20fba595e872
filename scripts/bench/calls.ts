/**
 * One plugin call, timed, with the peak resident memory of its process tree: the command runs under
 * `/usr/bin/time -f ... ` (Debian's `time`), whose %M is the largest maximum RSS among the process and
 * the children it waited for (wait4's rusage). Wall time is taken around spawnSync, so it includes
 * creating the process (and `ip netns exec`, when the call runs in a namespace); every series pays the
 * same, so differences between series are the plugins'.
 */
import { spawn, spawnSync } from "node:child_process"

export const TIME = "/usr/bin/time"
const MARK = "TRWBENCH-RSS"

export interface Call {
  readonly ms: number
  readonly status: number | null
  readonly stdout: string
  readonly stderr: string
  /** Peak RSS in KiB; NaN when not measured. */
  readonly rssKiB: number
}

export interface CallOptions {
  /** Prefix such as `ip netns exec NODE`. */
  readonly prefix?: ReadonlyArray<string>
  readonly env: Readonly<Record<string, string>>
  readonly stdin: string
  /** Run under /usr/bin/time for the peak RSS (default true). */
  readonly rss?: boolean
}

const argvOf = (plugin: string, o: CallOptions): Array<string> => [
  ...(o.prefix ?? []),
  ...(o.rss === false ? [] : [TIME, "-f", `${MARK} %M`]),
  plugin
]

const parseRss = (stderr: string): { rssKiB: number; stderr: string } => {
  const m = new RegExp(`${MARK} (\\d+)\\s*$`).exec(stderr)
  return m === null
    ? { rssKiB: Number.NaN, stderr }
    : { rssKiB: Number(m[1]), stderr: stderr.slice(0, m.index) }
}

/** Runs `plugin` synchronously (the most precise wall time: nothing else runs in this process meanwhile). */
export const callSync = (plugin: string, o: CallOptions): Call => {
  const argv = argvOf(plugin, o)
  const t0 = process.hrtime.bigint()
  const r = spawnSync(argv[0]!, argv.slice(1), {
    input: o.stdin,
    env: { ...o.env },
    encoding: "utf8",
    timeout: 120_000
  })
  const wall = Number(process.hrtime.bigint() - t0) / 1e6
  return { ms: wall, status: r.status, stdout: r.stdout ?? "", ...parseRss(r.stderr ?? "") }
}

/** The same, asynchronously, for calls made concurrently (bursts) or beside a server in this process. */
export const callAsync = (plugin: string, o: CallOptions): Promise<Call> =>
  new Promise((resolve) => {
    const argv = argvOf(plugin, o)
    const t0 = process.hrtime.bigint()
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...o.env }, stdio: ["pipe", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d
    })
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d
    })
    child.stdin.on("error", () => {}) // a plugin that exits without reading stdin
    child.stdin.end(o.stdin)
    child.on("close", (status) => {
      const wall = Number(process.hrtime.bigint() - t0) / 1e6
      resolve({ ms: wall, status, stdout, ...parseRss(stderr) })
    })
  })

export const mustSucceed = (what: string, c: Call): Call => {
  if (c.status !== 0)
    throw new Error(`${what} exited ${c.status}:\nstdout: ${c.stdout}\nstderr: ${c.stderr.slice(-2000)}`)
  return c
}
