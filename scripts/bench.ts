/**
 * `npm run bench`: what the plugin costs a pod start, measured on the built executable.
 *
 * - VERSION: wall time of `CNI_COMMAND=VERSION` (start-up plus the smallest call).
 * - ADD and DEL of one attachment, wrapper mode with the real `ptp` + `host-local` as the delegate and
 *   a tenant given through the runtime's pod annotations, once per netfilter backend, against the same
 *   ADD and DEL of bare `/usr/lib/cni/ptp`. The difference is what the wrapper adds.
 *
 * Everything runs in throwaway namespaces made by test/sim/netns.ts: a "node" namespace, where the
 * plugins run (through `ip netns exec`, for the bare plugin too, so both pay the same), and a "pod"
 * namespace handed over as CNI_NETNS. They, and the temporary state and IPAM directories, are removed
 * at the end, on failure and on SIGINT/SIGTERM. Needs root, iproute2, iptables and nft, and
 * dist/tenant-routing (`npm run build`).
 *
 * Wall times come from spawnSync around each call, so they include process creation; on a loaded
 * machine they are noisy, so p50 is the figure to compare. N=30 per series (`--runs N`).
 *
 * Usage: node scripts/bench.ts [--runs N] [--binary PATH]
 */
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { join, resolve } from "node:path"
import { parseArgs } from "node:util"
import {
  cleanupOnSignals,
  createNetns,
  deleteNetns,
  hasTool,
  isRoot,
  netnsPath,
  randomPrefix,
  removePath,
  tempDir
} from "../test/sim/netns.ts"

const root = resolve(import.meta.dirname, "..")
const SYSTEM_CNI = "/usr/lib/cni"

interface Stats {
  readonly mean: number
  readonly p50: number
  readonly p95: number
}

const stats = (xs: ReadonlyArray<number>): Stats => {
  const s = [...xs].sort((a, b) => a - b)
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!
  return { mean: xs.reduce((a, b) => a + b, 0) / xs.length, p50: at(0.5), p95: at(0.95) }
}

const fmt = (s: Stats) =>
  `mean ${s.mean.toFixed(1).padStart(6)}  p50 ${s.p50.toFixed(1).padStart(6)}  p95 ${s.p95.toFixed(1).padStart(6)}`

interface Call {
  readonly ms: number
  readonly status: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs one plugin call, timed; `prefix` is e.g. `ip netns exec NODE`. */
const call = (
  prefix: ReadonlyArray<string>,
  plugin: string,
  env: Record<string, string>,
  conf: unknown
): Call => {
  const argv = [...prefix, plugin]
  const t0 = process.hrtime.bigint()
  const r = spawnSync(argv[0]!, argv.slice(1), {
    input: JSON.stringify(conf),
    env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", ...env },
    encoding: "utf8",
    timeout: 60_000
  })
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  return { ms, status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const mustSucceed = (what: string, c: Call) => {
  if (c.status !== 0)
    throw new Error(`${what} exited ${c.status}:\nstdout: ${c.stdout}\nstderr: ${c.stderr.slice(-2000)}`)
}

interface Series {
  readonly add: Array<number>
  readonly del: Array<number>
  readonly both: Array<number>
}

const main = async (): Promise<number> => {
  const { values } = parseArgs({
    options: {
      runs: { type: "string", default: "30" },
      binary: { type: "string", default: join(root, "dist/tenant-routing") }
    }
  })
  const runs = Number(values.runs)
  const binary = resolve(values.binary)
  if (!Number.isInteger(runs) || runs < 1) {
    process.stderr.write("--runs must be a positive integer\n")
    return 2
  }
  if (!existsSync(binary)) {
    process.stderr.write(`${binary} does not exist: run \`npm run build\` first\n`)
    return 1
  }

  process.stdout.write(
    `binary ${binary}, N=${runs} per series; times in ms (wall, including process start)\n\n`
  )
  const versions: Array<number> = []
  for (let i = 0; i < runs + 3; i++) {
    const c = call([], binary, { CNI_COMMAND: "VERSION" }, { cniVersion: "1.0.0" })
    mustSucceed("VERSION", c)
    if (i >= 3) versions.push(c.ms) // the first runs only warm the page cache
  }
  process.stdout.write(`VERSION                       ${fmt(stats(versions))}\n`)

  const missing = [
    ...(isRoot() ? [] : ["root"]),
    ...["ip", "iptables", "nft"].filter((t) => !hasTool(t, t === "ip" ? ["-V"] : ["--version"])),
    ...["ptp", "host-local"].filter((p) => !existsSync(join(SYSTEM_CNI, p))).map((p) => join(SYSTEM_CNI, p))
  ]
  if (missing.length > 0) {
    process.stdout.write(`\nADD/DEL skipped: missing ${missing.join(", ")}\n`)
    return 0
  }

  cleanupOnSignals()
  const prefix = randomPrefix("trw-bench")
  const nodeNs = `${prefix}-node`
  const podNs = `${prefix}-pod`
  const dir = tempDir("trw-bench-")
  await createNetns(nodeNs)
  await createNetns(podNs)
  try {
    const inNode = ["ip", "netns", "exec", nodeNs]
    const ipam = { type: "host-local", subnet: "10.253.0.0/24", dataDir: join(dir, "ipam") }
    const bare = { cniVersion: "1.0.0", name: "bench", type: "ptp", ipam }
    const wrapper = (backend: "iptables" | "nftables") => ({
      cniVersion: "1.0.0",
      name: "bench",
      type: "tenant-routing-wrapper",
      backend,
      stateDir: join(dir, "state"),
      delegate: { type: "ptp", ipam },
      runtimeConfig: { "io.kubernetes.cri.pod-annotations": { "tenant.routing/fwmark": "tenant-a" } }
    })
    const envFor = (command: "ADD" | "DEL", i: number) => ({
      CNI_COMMAND: command,
      CNI_CONTAINERID: `bench${i}`,
      CNI_NETNS: netnsPath(podNs),
      CNI_IFNAME: "eth0",
      CNI_PATH: SYSTEM_CNI,
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod${i}`
    })

    const measure = (label: string, plugin: string, conf: Record<string, unknown>): Series => {
      const series: Series = { add: [], del: [], both: [] }
      for (let i = 0; i < runs + 2; i++) {
        const add = call(inNode, plugin, envFor("ADD", i), conf)
        mustSucceed(`${label} ADD`, add)
        // libcni hands the ADD result to DEL as prevResult (CNI spec 0.4.0+).
        const del = call(inNode, plugin, envFor("DEL", i), { ...conf, prevResult: JSON.parse(add.stdout) })
        mustSucceed(`${label} DEL`, del)
        if (i < 2) continue // warm-up
        series.add.push(add.ms)
        series.del.push(del.ms)
        series.both.push(add.ms + del.ms)
      }
      return series
    }

    const results: Array<[string, Series]> = [
      ["bare ptp", measure("bare ptp", join(SYSTEM_CNI, "ptp"), bare)],
      ["wrapper iptables", measure("wrapper (iptables)", binary, wrapper("iptables"))],
      ["wrapper nftables", measure("wrapper (nftables)", binary, wrapper("nftables"))]
    ]
    process.stdout.write("\ndelegate ptp + host-local, tenant-a, in a throwaway node netns:\n")
    for (const [label, s] of results) {
      process.stdout.write(`${label.padEnd(18)} ADD      ${fmt(stats(s.add))}\n`)
      process.stdout.write(`${"".padEnd(18)} DEL      ${fmt(stats(s.del))}\n`)
      process.stdout.write(`${"".padEnd(18)} ADD+DEL  ${fmt(stats(s.both))}\n`)
    }
    const base = stats(results[0]![1].both).p50
    for (const [label, s] of results.slice(1)) {
      process.stdout.write(`${label} adds ${(stats(s.both).p50 - base).toFixed(1)} ms per ADD+DEL (p50)\n`)
    }

    // Every DEL must have removed its entries: nothing may be left in either backend.
    const left = spawnSync(
      "ip",
      ["netns", "exec", nodeNs, binary, "inspect", "--json", "--state-dir", join(dir, "state")],
      { encoding: "utf8" }
    )
    if (left.status !== 0 || left.stdout.trim() !== "[]") {
      throw new Error(`entries left after the benchmark: ${left.stdout}${left.stderr}`)
    }
    return 0
  } finally {
    await deleteNetns(podNs)
    await deleteNetns(nodeNs)
    removePath(dir)
  }
}

process.exitCode = await main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.message : String(e)}\n`)
  return 1
})
