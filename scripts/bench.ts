/**
 * `npm run bench`: what the plugin costs a pod start, measured on the built executables, side by side in
 * one run with bare `ptp` + host-local and with the reference `firewall` plugin chained after ptp.
 * Prints one table (target, measured, met); `--out FILE` also writes it as Markdown with the machine.
 *
 * 1. ADD and DEL through the shim served by the agent (tenant from runtimeConfig; tenant from the agent's
 *    synced watch cache of the test API server), and standalone (no agent: the shim execs tenant-routing);
 *    overhead = median of the per-iteration differences to bare ptp; per-call peak RSS; VERSION; sizes.
 * 2. A burst of 50 concurrent ADDs then 50 DELs, through the agent and standalone, state checked.
 * 3. The agent's resident memory after warm-up and after `--cycles` ADD/DEL cycles, holding a watch
 *    cache of 250 pods and 2000 namespaces.
 * 4. ADD/DEL with 5000 entries on the node vs an empty node, per backend, and the original plugin's
 *    iptables approach (`-C` then `-A` per pod) as the reference.
 *
 * Everything runs in throwaway network namespaces (`trw-bench-*`) and a temporary directory, removed at
 * the end, on failure and on SIGINT/SIGTERM; traffic and netfilter changes stay inside them. Needs root,
 * iproute2, iptables, nft, openssl, /usr/lib/cni/{ptp,host-local,firewall} and `/usr/bin/time` (Debian's
 * `time` package: installed with apt-get when missing), and dist/ built (built when stale).
 * Wall times include process creation (`ip netns exec` + `/usr/bin/time` for every series alike); the
 * machine may be loaded, so medians are the figures and the load average is printed next to them.
 *
 * Usage: node scripts/bench.ts [--runs N=30] [--cycles N=1000] [--entries N=5000] [--quick] [--out FILE]
 */
import { spawnSync } from "node:child_process"
import { existsSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { parseArgs } from "node:util"
import {
  BINARY,
  ensureBuilt,
  hasAgentCommand,
  installInto,
  isBuilt,
  missingPrerequisites,
  ROOT,
  type RunningAgent,
  SHIM,
  SYSTEM_CNI,
  startAgentIn
} from "../test/sim/fixture.ts"
import { cleanupOnSignals, isRoot, randomPrefix, removePath, tempDir } from "../test/sim/netns.ts"
import { burst } from "./bench/burst.ts"
import { callAsync, callSync, mustSucceed, TIME } from "./bench/calls.ts"
import { countEntries, fillThroughAgent, iptablesReference } from "./bench/flat.ts"
import {
  type Backend,
  cniEnv,
  type KubeApi,
  makeNode,
  makePods,
  NODE_NAME,
  removeNamespaces,
  startKubeApi,
  waitForWatches,
  wrapperConf
} from "./bench/node.ts"
import { loadAverage, machine, markdownTable, type Row, textTable } from "./bench/report.ts"
import { bare, measure, shim, withFirewall } from "./bench/series.ts"
import { max, median, mib, ms, p90, paired, signed } from "./bench/stats.ts"

const say = (line = "") => process.stdout.write(`${line}\n`)
const MiB = 1024

const ensureTime = (): string | undefined => {
  if (existsSync(TIME)) return undefined
  if (spawnSync("apt-get", ["--version"], { stdio: "ignore" }).status !== 0) return "missing"
  say("/usr/bin/time is missing: installing Debian's `time` package with apt-get ...")
  spawnSync("apt-get", ["install", "-y", "-qq", "time"], {
    stdio: "ignore",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }
  })
  return existsSync(TIME) ? "installed with apt-get (package time)" : "missing"
}

const main = async (): Promise<number> => {
  const { values } = parseArgs({
    options: {
      runs: { type: "string" },
      cycles: { type: "string" },
      entries: { type: "string" },
      quick: { type: "boolean", default: false },
      out: { type: "string" }
    }
  })
  const quick = values.quick === true
  const runs = Number(values.runs ?? (quick ? 8 : 30))
  const cycles = Number(values.cycles ?? (quick ? 100 : 1000))
  const entries = Number(values.entries ?? (quick ? 1000 : 5000))
  const BURST = 50
  for (const [name, n] of [
    ["runs", runs],
    ["cycles", cycles],
    ["entries", entries]
  ] as const)
    if (!Number.isInteger(n) || n < 1) {
      process.stderr.write(`--${name} must be a positive integer\n`)
      return 2
    }
  if (!isRoot()) {
    process.stderr.write("bench: creates network namespaces, which needs root\n")
    return 1
  }
  const timeNote = ensureTime()
  const missing = [
    ...missingPrerequisites(),
    ...(existsSync(join(SYSTEM_CNI, "firewall")) ? [] : [join(SYSTEM_CNI, "firewall")]),
    ...(timeNote === "missing" ? [TIME] : [])
  ]
  if (missing.length > 0) {
    process.stderr.write(`bench: missing ${missing.join(", ")}\n`)
    return 1
  }
  if (!isBuilt()) {
    say("dist/ is missing or older than the sources: building it ...")
    await ensureBuilt()
  }

  cleanupOnSignals()
  const started = performance.now()
  const prefix = randomPrefix("trw-bench")
  const dir = tempDir("trw-bench-")
  const binDir = join(dir, "bin")
  const { shim: shimPath, program } = installInto(binDir, { link: true })
  const cli = hasAgentCommand(program)
  const agentArgv = cli ? [program, "agent"] : [process.execPath, join(ROOT, "bin", "agent.ts")]
  const loads: Array<string> = [loadAverage()]
  say(
    `tenant-routing bench: N=${runs} per series, ${cycles} agent cycles, ${entries} entries${quick ? " (--quick)" : ""}`
  )
  say(`machine: ${machine().join("; ")}; load average at start ${loads[0]}`)
  say(
    `agent: ${cli ? "dist/tenant-routing agent" : "node bin/agent.ts (the executable has no agent subcommand: no watch cache)"}`
  )
  if (timeNote !== undefined) say(`/usr/bin/time: ${timeNote}`)

  const agents: Array<RunningAgent> = []
  const namespaces: Array<string> = []
  let api: KubeApi | undefined
  const rows: Array<Row> = []
  try {
    const node = await makeNode(`${prefix}-node`)
    namespaces.push(node.ns)
    const standaloneNode = await makeNode(`${prefix}-alone`)
    namespaces.push(standaloneNode.ns)
    const [podNs] = await makePods(`${prefix}-s`, 1)
    namespaces.push(podNs!)
    const burstPods = await makePods(`${prefix}-b`, BURST)
    namespaces.push(...burstPods)
    const stateDir = join(dir, "state")
    const dataDir = join(dir, "ipam")

    let agentExtra: Array<string> = []
    if (cli) {
      api = await startKubeApi(node, dir, 250, 2000)
      agentExtra = ["--kubeconfig", api.kubeconfig, "--node-name", NODE_NAME]
    }
    const agent = await startAgentIn(node.ns, agentArgv, join(dir, "agent", "agent.sock"), agentExtra)
    agents.push(agent)
    const synced = api === undefined ? false : await waitForWatches(api)
    say(
      `agent ready (pid ${agent.pid})${api === undefined ? "" : `; watch cache ${synced ? "watching" : "NOT watching after 60 s"}`}`
    )

    // VERSION, outside any namespace: the smallest call, i.e. start-up.
    const version = (plugin: string, stdin: object, rss: boolean) =>
      mustSucceed(
        "VERSION",
        callSync(plugin, { env: { CNI_COMMAND: "VERSION" }, stdin: JSON.stringify(stdin), rss })
      )
    const versions = (plugin: string, stdin: object) => {
      for (let i = 0; i < 3; i++) version(plugin, stdin, false)
      const wall = Array.from({ length: runs }, () => version(plugin, stdin, false).ms)
      const rss = Array.from({ length: 5 }, () => version(plugin, stdin, true).rssKiB)
      return { wall, rss }
    }
    const vAgent = versions(shimPath, { cniVersion: "1.0.0", agentSocket: agent.socket })
    const vAlone = versions(shimPath, { cniVersion: "1.0.0", agentSocket: join(dir, "nobody.sock") })
    const vPtp = versions(join(SYSTEM_CNI, "ptp"), { cniVersion: "1.0.0" })
    say(
      `VERSION p50: shim→agent ${ms(median(vAgent.wall))}, standalone ${ms(median(vAlone.wall))}, ptp ${ms(median(vPtp.wall))}`
    )

    // 1. Paired series.
    const common = { backend: "nftables" as Backend, stateDir, dataDir }
    const variants = [
      bare(node, "bare", dataDir, "10.251.1.0/24"),
      withFirewall(node, "firewall", dataDir, "10.251.2.0/24"),
      shim(node, shimPath, binDir, {
        ...common,
        network: "agentrc",
        subnet: "10.251.3.0/24",
        agentSocket: agent.socket
      }),
      ...(api === undefined
        ? []
        : [
            shim(node, shimPath, binDir, {
              ...common,
              network: "agentcache",
              subnet: "10.251.4.0/24",
              agentSocket: agent.socket,
              kubeconfig: api.kubeconfig
            })
          ]),
      // Standalone calls change netfilter too: on the agent's node they would make its view stale
      // before every other agent call, which a node with a running agent never sees.
      shim(standaloneNode, shimPath, binDir, { ...common, network: "standalone", subnet: "10.251.5.0/24" })
    ]
    const directBefore = api?.requests().filter((r) => r.query?.includes("watch=true") !== true).length ?? 0
    const series = measure(variants, podNs!, runs)
    const directReads =
      (api?.requests().filter((r) => r.query?.includes("watch=true") !== true).length ?? 0) - directBefore
    loads.push(loadAverage())
    const s = (label: string) => series.get(label)
    const b = s("bare")!
    say("\nADD / DEL, p50 (p90), ms:")
    for (const [label, x] of series)
      say(
        `  ${label.padEnd(11)} ADD ${median(x.add).toFixed(1)} (${p90(x.add).toFixed(1)})  DEL ${median(x.del).toFixed(1)} (${p90(x.del).toFixed(1)})  ` +
          `peak RSS ${mib(max(x.addRss))}` +
          (label === "bare"
            ? ""
            : `  overhead ADD ${signed(median(paired(x.add, b.add)))}, DEL ${signed(median(paired(x.del, b.del)))}`)
      )
    if (api !== undefined) say(`  API requests other than LIST/WATCH during the series: ${directReads}`)
    const over = (label: string, verb: "add" | "del") => {
      const x = s(label)
      return x === undefined ? Number.NaN : median(paired(x[verb], b[verb]))
    }
    const ratio = (label: string, verb: "add" | "del") => median(s(label)![verb]) / median(b[verb])
    const fmtOver = (label: string, verb: "add" | "del") =>
      s(label) === undefined
        ? "not measured (agent without --kubeconfig)"
        : `${signed(over(label, verb))} ms (×${ratio(label, verb).toFixed(1)}; p90 ${p90(paired(s(label)![verb], b[verb])).toFixed(1)})`
    const shimRss = Math.max(max(s("agentrc")!.addRss), max(s("agentrc")!.delRss), max(vAgent.rss))
    const aloneRss = Math.max(max(s("standalone")!.addRss), max(s("standalone")!.delRss), max(vAlone.rss))
    const shimSize = statSync(SHIM).size
    rows.push(
      {
        what: "agent: ADD overhead, tenant from runtimeConfig",
        target: "≤ 20 ms",
        measured: fmtOver("agentrc", "add"),
        met: over("agentrc", "add") <= 20
      },
      {
        what: "agent: ADD overhead, tenant from watch cache",
        target: "≤ 25 ms",
        measured:
          fmtOver("agentcache", "add") + (api === undefined ? "" : `; ${directReads} direct API reads`),
        met: s("agentcache") === undefined ? undefined : over("agentcache", "add") <= 25
      },
      {
        what: "agent: DEL overhead",
        target: "≤ 40 ms",
        measured: fmtOver("agentrc", "del"),
        met: over("agentrc", "del") <= 40
      },
      {
        what: "agent: shim peak RSS per call",
        target: "≤ 15 MiB",
        measured: mib(shimRss),
        met: shimRss <= 15 * MiB
      },
      {
        what: "shim file size",
        target: "≤ 10 MB",
        measured: `${(shimSize / 1e6).toFixed(1)} MB`,
        met: shimSize <= 10e6
      },
      {
        what: "agent: shim VERSION",
        target: "≤ 5 ms",
        measured: `${ms(median(vAgent.wall))} (p90 ${ms(p90(vAgent.wall))})`,
        met: median(vAgent.wall) <= 5
      },
      {
        what: "reference: firewall after ptp",
        target: "(+16 ms ADD, +30 ms DEL, ≤ 12 MiB)",
        measured: `ADD ${fmtOver("firewall", "add")}, DEL ${fmtOver("firewall", "del")}, ${mib(Math.max(max(s("firewall")!.addRss), max(s("firewall")!.delRss)))}`,
        met: undefined
      },
      {
        what: "reference: bare ptp",
        target: "",
        measured: `ADD ${ms(median(b.add))}, DEL ${ms(median(b.del))}, VERSION ${ms(median(vPtp.wall))}, ${mib(max(b.addRss))}`,
        met: undefined
      }
    )

    // 2. Bursts.
    const burstOf = (network: string, subnet: string, agentSocket?: string) =>
      burst(node, shimPath, program, binDir, burstPods, {
        network,
        backend: "nftables",
        stateDir,
        dataDir,
        subnet,
        ...(agentSocket === undefined ? {} : { agentSocket })
      })
    const burstAgent = await burstOf("burstagent", "10.252.1.0/24", agent.socket)
    const burstAlone = await burstOf("burstalone", "10.252.2.0/24")
    loads.push(loadAverage())
    say(
      `\nburst of ${BURST}: agent ADD ${ms(burstAgent.addMs)} + DEL ${ms(burstAgent.delMs)}; standalone ADD ${ms(burstAlone.addMs)} + DEL ${ms(burstAlone.delMs)}`
    )
    const burstProblems = [
      ...burstAgent.problems.map((p) => `agent: ${p}`),
      ...burstAlone.problems.map((p) => `standalone: ${p}`)
    ]
    for (const p of burstProblems) say(`  problem: ${p}`)
    const burstRatio = burstAgent.totalMs / burstAlone.totalMs
    rows.push({
      what: `burst ${BURST} ADD + ${BURST} DEL: agent / standalone wall`,
      target: "≤ 0.5×, state correct",
      measured: `×${burstRatio.toFixed(2)} (${(burstAgent.totalMs / 1000).toFixed(2)} s vs ${(burstAlone.totalMs / 1000).toFixed(2)} s); state ${burstProblems.length === 0 ? "correct" : "WRONG"}`,
      met: burstRatio <= 0.5 && burstProblems.length === 0
    })

    // 3. The agent's memory over ADD/DEL cycles.
    const cycleConf = wrapperConf({
      ...common,
      network: "cycles",
      subnet: "10.251.6.0/24",
      agentSocket: agent.socket,
      ...(api === undefined ? {} : { kubeconfig: api.kubeconfig })
    })
    // Four workers, each with a pod namespace of its own, so the cycles fit the run's time budget.
    const WORKERS = 4
    const cyclePods = await makePods(`${prefix}-c`, WORKERS)
    namespaces.push(...cyclePods)
    const cycle = async (i: number, podOf: string) => {
      const env = (verb: "ADD" | "DEL") =>
        cniEnv(verb, { podNs: podOf, id: `cycles${i}`, pod: `pod-${i % 250}`, cniPath: [binDir, SYSTEM_CNI] })
      const add = mustSucceed(
        "cycle ADD",
        await callAsync(shimPath, {
          prefix: node.prefix,
          env: env("ADD"),
          stdin: JSON.stringify(cycleConf),
          rss: false
        })
      )
      mustSucceed(
        "cycle DEL",
        await callAsync(shimPath, {
          prefix: node.prefix,
          env: env("DEL"),
          stdin: JSON.stringify({ ...cycleConf, prevResult: JSON.parse(add.stdout) as unknown }),
          rss: false
        })
      )
    }
    const cyclesFrom = async (from: number, to: number) => {
      let next = from
      await Promise.all(
        Array.from({ length: WORKERS }, async (_, w) => {
          while (next < to) await cycle(next++, cyclePods[w]!)
        })
      )
    }
    const warm = Math.min(50, Math.floor(cycles / 5))
    await cyclesFrom(0, warm)
    const rssWarm = agent.rssKiB()
    const anonWarm = agent.anonKiB()
    await cyclesFrom(warm, cycles)
    const rssEnd = agent.rssKiB()
    const anonEnd = agent.anonKiB()
    loads.push(loadAverage())
    const growth = (rssEnd - rssWarm) / rssWarm
    say(
      `\nagent RSS: ${mib(rssWarm)} after ${warm} cycles, ${mib(rssEnd)} after ${cycles} (${(growth * 100).toFixed(1)}%)`
    )
    rows.push({
      what: `agent RSS after ${cycles} cycles${api === undefined ? " (no watch cache)" : ", cache 250 pods + 2000 ns"}`,
      target: "≤ 120 MiB, growth ≤ 5%",
      measured: `${mib(rssEnd)}; ${mib(rssWarm)} after warm-up (${growth >= 0 ? "+" : ""}${(growth * 100).toFixed(1)}%); anonymous ${mib(anonWarm)} → ${mib(anonEnd)}`,
      met: rssEnd <= 120 * MiB && growth <= 0.05
    })

    // 4. Standalone rows (measured in the series above).
    rows.push(
      {
        what: "standalone: VERSION",
        target: "≤ 30 ms",
        measured: `${ms(median(vAlone.wall))} (p90 ${ms(p90(vAlone.wall))})`,
        met: median(vAlone.wall) <= 30
      },
      {
        what: "standalone: peak RSS per call",
        target: "≤ 65 MiB",
        measured: mib(aloneRss),
        met: aloneRss <= 65 * MiB
      },
      {
        what: "standalone: ADD overhead",
        target: "≤ 55 ms",
        measured: fmtOver("standalone", "add"),
        met: over("standalone", "add") <= 55
      },
      {
        what: "standalone: DEL overhead",
        target: "",
        measured: fmtOver("standalone", "del"),
        met: undefined
      },
      {
        what: "tenant-routing file size",
        target: "(124 MB before)",
        measured: `${(statSync(BINARY).size / 1e6).toFixed(1)} MB`,
        met: undefined
      }
    )
    await agent.kill("SIGTERM", 5_000)
    await api?.server.kill("SIGTERM", 3_000)

    // 5. Flat: empty vs `entries` entries, per backend, each on a node of its own with an agent of its own.
    say(
      `\nflat: ${entries} entries vs an empty node (shim → agent; bare ptp alongside shows the load's drift)`
    )
    for (const backend of ["nftables", "iptables"] as const) {
      const flatNode = await makeNode(`${prefix}-f${backend.slice(0, 3)}`)
      namespaces.push(flatNode.ns)
      const [flatPod] = await makePods(`${prefix}-f${backend.slice(0, 3)}`, 1)
      namespaces.push(flatPod!)
      const flatAgent = await startAgentIn(
        flatNode.ns,
        agentArgv,
        join(dir, `agent-${backend}`, "agent.sock")
      )
      agents.push(flatAgent)
      const flatState = join(dir, `state-${backend}`)
      const vs = [
        bare(flatNode, `bare${backend}`, dataDir, backend === "nftables" ? "10.253.1.0/24" : "10.253.2.0/24"),
        shim(flatNode, shimPath, binDir, {
          network: `flat${backend}`,
          backend,
          stateDir: flatState,
          dataDir,
          subnet: backend === "nftables" ? "10.253.3.0/24" : "10.253.4.0/24",
          agentSocket: flatAgent.socket
        })
      ]
      const empty = measure(vs, flatPod!, runs)
      const t0 = performance.now()
      await fillThroughAgent(flatAgent.socket, {
        backend,
        stateDir: flatState,
        podNs: flatPod!,
        count: entries
      })
      const held = countEntries(flatNode, backend)
      const full = measure(vs, flatPod!, runs)
      const e = empty.get(`flat${backend}`)!
      const f = full.get(`flat${backend}`)!
      const eb = empty.get(`bare${backend}`)!
      const fb = full.get(`bare${backend}`)!
      const r = { add: median(f.add) / median(e.add), del: median(f.del) / median(e.del) }
      say(
        `  ${backend}: filled ${held} entries in ${((performance.now() - t0) / 1000).toFixed(1)} s; ` +
          `ADD ${ms(median(e.add))} → ${ms(median(f.add))}, DEL ${ms(median(e.del))} → ${ms(median(f.del))}; ` +
          `bare ptp ADD ${ms(median(eb.add))} → ${ms(median(fb.add))}`
      )
      const measured = `ADD ×${r.add.toFixed(2)} (+${(median(f.add) - median(e.add)).toFixed(1)} ms), DEL ×${r.del.toFixed(2)} (+${(median(f.del) - median(e.del)).toFixed(1)} ms); ${held} held`
      if (backend === "nftables")
        rows.push({
          what: `flat nftables: ${entries} entries vs empty`,
          target: "≤ 1.25×",
          measured,
          met: r.add <= 1.25 && r.del <= 1.25 && held >= entries
        })
      else {
        const refNode = await makeNode(`${prefix}-ref`)
        namespaces.push(refNode.ns)
        const ref = iptablesReference(refNode, dir, entries, runs)
        const refGrowth = median(ref.full.add) - median(ref.empty.add)
        const ours = median(f.add) - median(e.add)
        say(
          `  original's iptables -C then -A: ADD ${ms(median(ref.empty.add))} → ${ms(median(ref.full.add))}; -D ${ms(median(ref.empty.del))} → ${ms(median(ref.full.del))}`
        )
        rows.push(
          {
            what: `flat iptables: ${entries} entries vs empty`,
            target: "growth ≤ the original's",
            measured,
            met: ours <= refGrowth && held >= entries
          },
          {
            what: "reference: original iptables -C, -A per pod",
            target: "(+13.5 ms ADD measured before)",
            measured: `ADD ${signed(refGrowth)} ms (${ms(median(ref.empty.add))} → ${ms(median(ref.full.add))}), DEL ${signed(median(ref.full.del) - median(ref.empty.del))} ms`,
            met: undefined
          }
        )
      }
      await flatAgent.kill("SIGTERM", 5_000)
    }
    loads.push(loadAverage())

    const seconds = ((performance.now() - started) / 1000).toFixed(0)
    say(`\n${textTable(rows)}\n`)
    say(`load average (1, 5, 15 min) during the run: ${loads.join(" | ")}; ${seconds} s`)
    if (values.out !== undefined) {
      writeFileSync(
        values.out,
        [
          `Run of ${new Date().toISOString()}: \`node scripts/bench.ts${process.argv.slice(2).length > 0 ? ` ${process.argv.slice(2).join(" ")}` : ""}\`, ${seconds} s.`,
          "",
          ...machine().map((m) => `- ${m}`),
          `- load average (1, 5, 15 min) at start, after the series, the bursts, the cycles, the flat runs: ${loads.join(" | ")}`,
          `- agent: ${cli ? "`tenant-routing agent` (built executable)" : "`node bin/agent.ts` (no watch cache)"}; N=${runs}, ${cycles} cycles, ${entries} entries`,
          "",
          markdownTable(rows),
          ""
        ].join("\n")
      )
      say(`written to ${values.out}`)
    }
    return 0
  } finally {
    for (const a of agents) await a.kill("SIGKILL", 1_000)
    await api?.server.kill("SIGKILL", 1_000)
    await removeNamespaces(namespaces)
    removePath(dir)
  }
}

process.exitCode = await main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
  return 1
})
