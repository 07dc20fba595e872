/**
 * The agent against the standalone program, in a throwaway node namespace with the real ptp and
 * host-local, for both backends: the same calls (ADD with the tenant from runtimeConfig annotations,
 * ADD untagged, ADD naming an unknown tenant, CHECK, DEL, VERSION) go once through the agent (the
 * protocol client of test/support/agentClient.ts) and once through `node bin/tenant-routing.ts`;
 * stdout, exit codes, state records, kernel entries and log lines must be the same once what differs
 * by nature (container ids, IPs, MACs, veth names, durations, timestamps) is masked.
 *
 * Then the Go shim (shim/main.go, built with shim/build.ts) end to end: shim → agent; no agent →
 * the shim runs `tenant-routing` next to it (here a script running the program from source); the agent
 * killed with SIGKILL during a call → the shim answers code 11, and the retried ADD converges.
 *
 * Faults of a running node, both backends: the agent restarted (SIGTERM, then a new one) during a
 * burst of concurrent ADDs → every call answers (0) or gets 11, and once the 11s are retried there is
 * exactly one entry per pod IP and one record per pod; SIGTERM with calls in flight → the socket goes
 * at once, the calls finish and answer, and the agent exits 0.
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync
} from "node:fs"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { buildShim } from "../shim/build.ts"
import {
  ANNOTATION,
  type Backend,
  entriesOf,
  integrationRequired,
  logLines,
  missingPrerequisites,
  NODE_ENV,
  POD_ANNOTATIONS,
  ROOT,
  readRecord,
  SYSTEM_CNI
} from "./integration/harness.ts"
import {
  createNetns,
  deleteNetns,
  execIn,
  hasTool,
  netnsPath,
  randomPrefix,
  removePath,
  run,
  tempDir
} from "./sim/netns.ts"
import { type AgentProcess, call, startAgent } from "./support/agentClient.ts"

const WRAPPER = join(ROOT, "bin", "tenant-routing.ts")

interface Answer {
  readonly exit: number
  readonly stdout: string
}
type Runner = (env: Record<string, string>, stdin: string) => Promise<Answer>

/** Masks what differs between two runs by nature, leaving everything the plugin decides. */
const mask = (text: string): string =>
  text
    .replace(/agentpath|alonepath|shimpath/g, "PATH")
    .replace(/\b10\.77\.\d+\.\d+\b/g, "IP4")
    .replace(/\b(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b/gi, "MAC")
    .replace(/\bveth[0-9a-f]{8}\b/g, "VETH")
    .replace(/trw-agt-[0-9a-f]{8}/g, "NS")

const maskedLogs = (file: string): ReadonlyArray<unknown> =>
  logLines(file).map((line) => {
    const { timestamp: _t, fiberId: _f, spans: _s, ...rest } = line as Record<string, unknown>
    const message = Array.isArray(rest.message)
      ? rest.message.map((m) => {
          if (typeof m !== "object" || m === null) return m
          const { durationMs: _d, ...fields } = m as Record<string, unknown>
          return fields
        })
      : rest.message
    return JSON.parse(mask(JSON.stringify({ ...rest, message })))
  })

const missing = [...missingPrerequisites(), ...(hasTool("go", ["version"]) ? [] : ["go"])]

describe.skipIf(missing.length > 0 && !integrationRequired)(
  "the agent against the standalone program (netns)",
  () => {
    const prefix = randomPrefix("trw-agt")
    const nodeNs = `${prefix}-node`
    let dir = ""
    let socket = ""
    let agent: AgentProcess | undefined
    const podNamespaces: Array<string> = []

    const startNodeAgent = async () => {
      agent = startAgent(["--socket", socket], { prefix: ["ip", "netns", "exec", nodeNs] })
      await agent.ready
      return agent
    }

    beforeAll(async () => {
      assert.deepStrictEqual(missing, [], "prerequisites")
      dir = tempDir("trw-agent-netns-")
      socket = join(dir, "run", "agent.sock")
      await createNetns(nodeNs)
      await startNodeAgent()
    }, 120_000)

    afterAll(async () => {
      if (agent !== undefined && agent.child.exitCode === null && agent.child.signalCode === null) {
        agent.child.kill("SIGTERM")
        await agent.exited
      }
      for (const ns of podNamespaces) await deleteNetns(ns)
      await deleteNetns(nodeNs)
      if (dir !== "") removePath(dir)
    }, 60_000)

    const podNetns = async (name: string) => {
      const ns = `${prefix}-${name}`
      await createNetns(ns)
      podNamespaces.push(ns)
      return netnsPath(ns)
    }

    const conf = (backend: Backend, path: string, extra: Record<string, unknown> = {}) => ({
      cniVersion: "1.0.0",
      name: `agt-${backend}`,
      type: "tenant-routing-wrapper",
      backend,
      tenants: { "tenant-a": { mark: "0x10" }, "tenant-b": { mark: "0x20" } },
      stateDir: join(dir, `state-${path}`),
      logFile: join(dir, `${path}-${backend}.log`),
      logLevel: "info",
      agentSocket: socket,
      delegate: {
        type: "ptp",
        ipam: {
          type: "host-local",
          dataDir: join(dir, "ipam"),
          ranges: [[{ subnet: backend === "iptables" ? "10.77.1.0/24" : "10.77.2.0/24" }]],
          routes: [{ dst: "0.0.0.0/0" }]
        }
      },
      ...extra
    })

    const env = (command: string, containerId: string, netns: string, pod: string, cniPath: string) => ({
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: netns,
      CNI_IFNAME: "eth0",
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod}`,
      CNI_PATH: cniPath
    })

    const viaAgent: Runner = async (e, stdin) => {
      const r = await call(socket, e, stdin)
      return { exit: r.exit, stdout: r.stdout }
    }
    const viaProgram =
      (file: string, args: ReadonlyArray<string>): Runner =>
      async (e, stdin) => {
        const r = await execIn(nodeNs, file, args, {
          env: { ...NODE_ENV, ...e },
          input: stdin,
          timeoutMs: 120_000
        })
        return { exit: r.code, stdout: r.stdout }
      }
    const standalone = viaProgram(process.execPath, [WRAPPER])

    /** The case list, run through one path; returns everything compared. */
    const scenario = async (backend: Backend, path: string, run: Runner) => {
      const c = conf(backend, path)
      const cniPath = SYSTEM_CNI
      const out: Record<string, unknown> = {}
      const rt = { netns: await podNetns(`${path}-rt-${backend.slice(0, 3)}`), id: `${path}-rt` }
      const none = { netns: await podNetns(`${path}-no-${backend.slice(0, 3)}`), id: `${path}-none` }
      const bad = { netns: await podNetns(`${path}-bd-${backend.slice(0, 3)}`), id: `${path}-bad` }
      const withTenant = (t: string) => ({ ...c, runtimeConfig: { [POD_ANNOTATIONS]: { [ANNOTATION]: t } } })

      const addRt = await run(
        env("ADD", rt.id, rt.netns, rt.id, cniPath),
        JSON.stringify(withTenant("tenant-b"))
      )
      out.addRt = addRt
      out.addNone = await run(env("ADD", none.id, none.netns, none.id, cniPath), JSON.stringify(c))
      out.addBad = await run(
        env("ADD", bad.id, bad.netns, bad.id, cniPath),
        JSON.stringify(withTenant("tenant-zzz"))
      )
      out.records = [rt, none, bad].map((p) => readRecord(c.stateDir, c.name, p.id, "eth0") ?? null)
      out.entries = (await entriesOf(nodeNs, c.name))
        .filter((e) => e.owner.includes(path))
        .map((e) => ({ ...e, handle: "" }))
      const prevResult = addRt.exit === 0 ? (JSON.parse(addRt.stdout) as unknown) : undefined
      out.check = await run(
        env("CHECK", rt.id, rt.netns, rt.id, cniPath),
        JSON.stringify({ ...withTenant("tenant-b"), prevResult })
      )
      out.del = [
        await run(env("DEL", rt.id, rt.netns, rt.id, cniPath), JSON.stringify(withTenant("tenant-b"))),
        await run(env("DEL", none.id, none.netns, none.id, cniPath), JSON.stringify(c)),
        await run(env("DEL", bad.id, bad.netns, bad.id, cniPath), JSON.stringify(c))
      ]
      out.afterDel = {
        records: [rt, none, bad].map((p) => readRecord(c.stateDir, c.name, p.id, "eth0") ?? null),
        entries: (await entriesOf(nodeNs, c.name)).filter((e) => e.owner.includes(path)).length
      }
      out.version = await run({ CNI_COMMAND: "VERSION" }, JSON.stringify({ cniVersion: "1.0.0" }))
      out.logs = maskedLogs(c.logFile)
      return JSON.parse(mask(JSON.stringify(out))) as Record<string, unknown>
    }

    for (const backend of ["iptables", "nftables"] as const) {
      it(`${backend}: ADD (runtimeConfig tenant, untagged, unknown tenant), CHECK, DEL, VERSION answer alike through the agent and standalone`, async () => {
        const throughAgent = await scenario(backend, "agentpath", viaAgent)
        const alone = await scenario(backend, "alonepath", standalone)
        // The scenario itself did what it should (so "equal" is not "equally broken").
        assert.strictEqual((throughAgent.addRt as Answer).exit, 0, JSON.stringify(throughAgent.addRt))
        assert.strictEqual((throughAgent.addNone as Answer).exit, 0)
        assert.strictEqual((throughAgent.addBad as Answer).exit, 1)
        assert.strictEqual((JSON.parse((throughAgent.addBad as Answer).stdout) as { code: number }).code, 100)
        assert.deepStrictEqual(throughAgent.check, { exit: 0, stdout: "" })
        assert.strictEqual((throughAgent.entries as Array<unknown>).length, 1)
        assert.deepStrictEqual(throughAgent.afterDel, { records: [null, null, null], entries: 0 })
        assert.strictEqual((throughAgent.logs as Array<unknown>).length, 7)
        assert.deepStrictEqual(throughAgent, alone)
      }, 300_000)
    }

    it("agent --tenants FILE applies the tenants file with the live routing at start and again when it is replaced; SIGTERM stops it", async () => {
      const ns = `${prefix}-tenants`
      await createNetns(ns)
      podNamespaces.push(ns)
      for (const args of [
        // No dummy module on every kernel: a veth pair does as well for reachable gateways.
        ["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
        ["link", "set", "d0", "up"],
        ["link", "set", "d1", "up"],
        ["addr", "add", "192.0.2.1/24", "dev", "d0"],
        ["addr", "add", "198.51.100.1/24", "dev", "d0"]
      ])
        assert.strictEqual((await run("ip", ["-n", ns, ...args])).code, 0, args.join(" "))
      const file = join(dir, "tenants", "tenants.json")
      mkdirSync(join(dir, "tenants"))
      const write = (tenants: Record<string, unknown>) => {
        writeFileSync(`${file}.tmp`, JSON.stringify({ tenants }))
        renameSync(`${file}.tmp`, file)
      }
      const a = { mark: "0x10", table: 100, gateways: ["192.0.2.2"], priority: 1000 }
      const b = { mark: "0x20", table: 200, gateways: ["198.51.100.2"], priority: 1001 }
      write({ a })
      const rules = async () => (await run("ip", ["-N", "-n", ns, "-4", "rule", "show"])).stdout
      const tenantsAgent = startAgent(
        ["--socket", join(dir, "tenants-run", "agent.sock"), "--tenants", file],
        {
          prefix: ["ip", "netns", "exec", ns]
        }
      )
      try {
        await tenantsAgent.ready
        assert.match(tenantsAgent.stderr(), /"node-setup run",\{"reason":"start","changes":[1-9]/)
        assert.match(await rules(), /^1000:.*fwmark 0x10.*lookup 100\b/m)
        write({ a, b })
        while (!tenantsAgent.stderr().includes('"node-setup run",{"reason":"change"'))
          await new Promise((r) => setTimeout(r, 50))
        assert.match(await rules(), /^1001:.*fwmark 0x20.*lookup 200/m)
        tenantsAgent.child.kill("SIGTERM")
        assert.deepStrictEqual(await tenantsAgent.exited, { code: 0, signal: null })
      } finally {
        if (tenantsAgent.child.exitCode === null) tenantsAgent.child.kill("SIGKILL")
      }
    }, 300_000)

    describe("through the Go shim", () => {
      let binDir = ""
      let shim = ""
      beforeAll(async () => {
        binDir = join(dir, "bin")
        shim = join(binDir, "tenant-routing-wrapper")
        await buildShim({ arch: "amd64", out: shim })
        // The full program the shim falls back to: the program from source, as the executable would be.
        const fallback = join(binDir, "tenant-routing")
        writeFileSync(fallback, `#!/bin/sh\nexec ${process.execPath} ${WRAPPER} "$@"\n`)
        chmodSync(fallback, 0o755)
      }, 300_000)

      const viaShim: Runner = (e, stdin) => viaProgram(shim, [])(e, stdin)
      const versionStdin = (socketPath: string) =>
        JSON.stringify({ cniVersion: "1.0.0", agentSocket: socketPath })

      it("shim → agent: the agent serves the call (its log shows it) and the shim prints its answer", async () => {
        const before = (agent!.stderr().match(/"VERSION ok"/g) ?? []).length
        const r = await viaShim({ CNI_COMMAND: "VERSION" }, versionStdin(socket))
        const expected = await standalone({ CNI_COMMAND: "VERSION" }, versionStdin(socket))
        assert.deepStrictEqual(r, expected)
        assert.strictEqual((agent!.stderr().match(/"VERSION ok"/g) ?? []).length, before + 1)
      }, 120_000)

      it("no agent: the shim runs tenant-routing next to it, with the same stdin, and prints its answer", async () => {
        const none = join(dir, "nowhere", "agent.sock")
        const r = await execIn(nodeNs, shim, [], {
          env: { ...NODE_ENV, CNI_COMMAND: "VERSION" },
          input: versionStdin(none)
        })
        const expected = await standalone({ CNI_COMMAND: "VERSION" }, versionStdin(none))
        assert.deepStrictEqual({ exit: r.code, stdout: r.stdout }, expected)
        assert.match(r.stderr, /agent not serving/)
      }, 120_000)

      it("agent killed (SIGKILL) during an ADD: the shim answers code 11; the retried ADD converges to one entry and one record", async () => {
        const backend: Backend = "nftables"
        // A delegate that says it started (its pid), then waits for a go-ahead before running ptp.
        const started = join(dir, "slow.started")
        const goAhead = join(dir, "slow.go")
        const slow = join(binDir, "trw-slow")
        writeFileSync(
          slow,
          `#!/bin/sh\necho $$ > ${started}\nwhile [ ! -e ${goAhead} ]; do sleep 0.05; done\nexec ${SYSTEM_CNI}/ptp\n`
        )
        chmodSync(slow, 0o755)
        const c = conf(backend, "shimpath", {})
        const cfg = JSON.stringify({
          ...c,
          runtimeConfig: { [POD_ANNOTATIONS]: { [ANNOTATION]: "tenant-a" } },
          delegate: { ...c.delegate, type: "trw-slow" }
        })
        const netns = await podNetns("shimpath-kill")
        const e = env("ADD", "shimpath-kill", netns, "shimpath-kill", `${binDir}:${SYSTEM_CNI}`)
        const pending = viaShim(e, cfg)
        while (!existsSync(started)) await new Promise((r) => setTimeout(r, 20))
        agent!.child.kill("SIGKILL")
        await agent!.exited
        // The delegate was the killed agent's child, in a process group of its own: end it too.
        process.kill(Number(readFileSync(started, "utf8").trim()), "SIGKILL")
        const killed = await pending
        assert.strictEqual(killed.exit, 1)
        assert.strictEqual((JSON.parse(killed.stdout) as { code: number }).code, 11)

        writeFileSync(goAhead, "")
        await startNodeAgent()
        const retried = await viaShim(e, cfg)
        assert.strictEqual(retried.exit, 0, retried.stdout)
        const ip = (JSON.parse(retried.stdout) as { ips: Array<{ address: string }> }).ips[0]!.address.split(
          "/"
        )[0]!
        const entries = (await entriesOf(nodeNs, c.name)).filter((x) => x.ip === ip)
        assert.strictEqual(entries.length, 1)
        assert.strictEqual(entries[0]!.mark, 0x10)
        assert.isDefined(readRecord(c.stateDir, c.name, "shimpath-kill", "eth0"))
        const del = await viaShim({ ...e, CNI_COMMAND: "DEL" }, cfg)
        assert.strictEqual(del.exit, 0, del.stdout)
        assert.strictEqual((await entriesOf(nodeNs, c.name)).filter((x) => x.ip === ip).length, 0)
      }, 300_000)

      /** A delegate that marks its start (a file named by its pid) and runs ptp once `gate` exists. */
      const gatedDelegate = (tag: string, gate: string) => {
        const started = join(dir, `${tag}.started`)
        mkdirSync(started)
        const file = join(binDir, `trw-${tag}`)
        writeFileSync(
          file,
          `#!/bin/sh\ntouch ${started}/$$\nwhile [ ! -e ${gate} ]; do sleep 0.05; done\nexec ${SYSTEM_CNI}/ptp\n`
        )
        chmodSync(file, 0o755)
        return { type: `trw-${tag}`, started: () => readdirSync(started).length }
      }
      const codeOf = (a: Answer) => (a.exit === 0 ? 0 : (JSON.parse(a.stdout) as { code: number }).code)
      const ipOf = (a: Answer) =>
        (JSON.parse(a.stdout) as { ips: Array<{ address: string }> }).ips[0]!.address.split("/")[0]!
      const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

      /** The burst's pods: each ADD through the shim, with its own netns and container id. */
      const burstOf = async (backend: Backend, tag: string, n: number, delegateType: string) => {
        const c = conf(backend, tag)
        const cfg = JSON.stringify({
          ...c,
          runtimeConfig: { [POD_ANNOTATIONS]: { [ANNOTATION]: "tenant-a" } },
          delegate: { ...c.delegate, type: delegateType }
        })
        const envs: Array<Record<string, string>> = []
        for (let i = 0; i < n; i++) {
          const netns = await podNetns(`${tag}-${i}`)
          envs.push(env("ADD", `${tag}-${i}`, netns, `${tag}-${i}`, `${binDir}:${SYSTEM_CNI}`))
        }
        /** Exactly one entry per pod IP, all tenant-a's, none other of this burst; one record per pod. */
        const assertConverged = async (answers: ReadonlyArray<Answer>) => {
          const ips = answers.map(ipOf)
          assert.strictEqual(new Set(ips).size, n, "one IP per pod")
          const entries = (await entriesOf(nodeNs, c.name)).filter((e) => e.owner.includes(tag))
          assert.deepStrictEqual(entries.map((e) => e.ip).sort(), [...ips].sort())
          assert.isTrue(entries.every((e) => e.mark === 0x10))
          for (let i = 0; i < n; i++) assert.isDefined(readRecord(c.stateDir, c.name, `${tag}-${i}`, "eth0"))
        }
        return { c, cfg, envs, assertConverged }
      }

      for (const backend of ["iptables", "nftables"] as const) {
        it(`${backend}: agent restarted (SIGTERM, then a new agent) during a burst of concurrent ADDs through the shim: each call answers or gets 11; retried, exactly one entry per pod IP and one record per pod`, async () => {
          const tag = `burst-${backend.slice(0, 3)}`
          const gate = join(dir, `${tag}.go`)
          const delegate = gatedDelegate(tag, gate)
          const burst = await burstOf(backend, tag, 8, delegate.type)
          const pending = burst.envs.map((e) => viaShim(e, burst.cfg))
          // At least one call is inside its delegate when the agent is told to stop.
          while (delegate.started() === 0) await pause(20)
          const old = agent!
          old.child.kill("SIGTERM")
          writeFileSync(gate, "")
          assert.deepStrictEqual(await old.exited, { code: 0, signal: null })
          await startNodeAgent()
          const answers = await Promise.all(pending)
          for (const a of answers) assert.include([0, 11], codeOf(a), a.stdout)
          // What the runtime does with 11: call again, until it is answered.
          const final = await Promise.all(
            answers.map(async (a, i) => {
              let r = a
              while (codeOf(r) === 11) r = await viaShim(burst.envs[i]!, burst.cfg)
              return r
            })
          )
          for (const r of final) assert.strictEqual(r.exit, 0, r.stdout)
          await burst.assertConverged(final)
        }, 600_000)

        it(`${backend}: SIGTERM with calls in flight: the socket goes at once, the calls finish and answer, the agent exits 0 (its 5 s guard would exit 1)`, async () => {
          const tag = `term-${backend.slice(0, 3)}`
          const gate = join(dir, `${tag}.go`)
          const delegate = gatedDelegate(tag, gate)
          const burst = await burstOf(backend, tag, 3, delegate.type)
          const pending = burst.envs.map((e) => viaShim(e, burst.cfg))
          // Every call is in its delegate, held there until the gate opens.
          while (delegate.started() < burst.envs.length) await pause(20)
          const old = agent!
          old.child.kill("SIGTERM")
          while (existsSync(socket)) await pause(10)
          assert.strictEqual(old.child.exitCode, null, "still finishing its calls")
          writeFileSync(gate, "")
          const answers = await Promise.all(pending)
          for (const a of answers) assert.strictEqual(a.exit, 0, a.stdout)
          assert.deepStrictEqual(await old.exited, { code: 0, signal: null })
          assert.isFalse(existsSync(socket))
          assert.match(old.stderr(), /"agent stopped"/)
          await burst.assertConverged(answers)
          await startNodeAgent()
        }, 600_000)
      }
    })
  }
)
