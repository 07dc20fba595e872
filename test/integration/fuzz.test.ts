/**
 * Fuzzing the BUILT executable: fast-check makes the environment and stdin of one call — a valid
 * config mutated field by field (wrong types, huge numbers, 0, 0xffffffff, empty and 100k-char
 * strings, unicode, shell injection, newlines), random bytes, stdin over 4 MiB — for every verb (ADD,
 * DEL, CHECK, GC, STATUS, VERSION, unknown ones), with hostile container ids, interface names, netns
 * paths and CNI_ARGS, and runs the executable once per case inside a throwaway node namespace.
 *
 * Laws, per case: stdout is exactly one JSON document or nothing, as the verb and outcome require; a
 * failure is a CNI error with a documented code; the exit status is 0 or 1; a refused call changes
 * neither the kernel (iptables-save, ip6tables-save and nft list ruleset of the node namespace) nor the
 * state directory; no value from stdin reaches a spawned process's argv or environment (the delegate
 * here is a script that records both), and no injected shell command ever runs (it would create a
 * canary file). Runs: 60 in `npm test`, TRW_FUZZ_RUNS to change it.
 *
 * Then two executable-level checks of fixes: VERSION answers whatever stdin holds, and every call logs
 * exactly one line with everything known at that point, warnings inside it.
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { createNetns, deleteNetns, netnsPath, randomPrefix, removePath, run, tempDir } from "../sim/netns.ts"
import {
  ANNOTATION,
  entriesOf,
  type InstalledPlugin,
  installPlugin,
  integrationRequired,
  logLines,
  missingPrerequisites,
  NODE_ENV,
  netfilterSnapshot,
  POD_ANNOTATIONS
} from "./harness.ts"

const RUNS = Number(process.env.TRW_FUZZ_RUNS ?? 60)
const DOCUMENTED_CODES = [1, 4, 6, 7, 11, 50, 100, 101, 102, 103]
/** Every hostile value of stdin carries this, so a spawned process that received one is found out. */
const MARK = "HOSTILE7f3a"
/** The same for hostile environment values: the runtime's CNI_* variables pass on to the delegate. */
const ENV_MARK = "ENVHOSTILE5c1d"
const DELEGATE = "fuzz-delegate"
const VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const

/**
 * The delegate: records its argv, environment and stdin (one file each, NUL-separated), answers
 * VERSION, and ADD with one IPv4 address in the version it was asked for.
 */
const delegateScript = (records: string) => `#!/bin/bash
n="$(date +%s%N)-$$"
printf '%s\\0' "$0" "$@" > "${records}/$n.argv"
env -0 > "${records}/$n.env"
stdin="$(cat)"
printf '%s' "$stdin" > "${records}/$n.stdin"
case "$CNI_COMMAND" in
  VERSION) printf '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}' ;;
  ADD)
    v="$(printf '%s' "$stdin" | grep -o '"cniVersion":"[0-9.]*"' | head -1 | cut -d'"' -f4)"
    printf '{"cniVersion":"%s","interfaces":[{"name":"eth0"}],"ips":[{"version":"4","address":"10.201.0.7/24","interface":0}]}' "$v" ;;
esac
exit 0
`

describe.skipIf(missingPrerequisites().length > 0 && !integrationRequired)(
  "fuzzing the built executable",
  () => {
    const prefix = randomPrefix("trw-fuzz")
    const node = `${prefix}-node`
    const podNs = `${prefix}-pod`
    let dir = ""
    let plugin: InstalledPlugin = { argv: [], cniPath: [], commands: {} }
    let pluginDir = ""
    let delegateDir = ""
    let records = ""
    let stateDir = ""
    let canary = ""

    beforeAll(async () => {
      const missing = missingPrerequisites()
      if (missing.length > 0) throw new Error(`missing: ${missing.join(", ")}`)
      pluginDir = tempDir("trw-fuzz-plugins-")
      plugin = await installPlugin(pluginDir)
      dir = tempDir(`${prefix}-`)
      delegateDir = join(dir, "bin")
      records = join(dir, "records")
      stateDir = join(dir, "state")
      canary = join(dir, `canary-${MARK}`)
      mkdirSync(delegateDir)
      mkdirSync(records)
      writeFileSync(join(delegateDir, DELEGATE), delegateScript(records))
      chmodSync(join(delegateDir, DELEGATE), 0o755)
      await createNetns(node)
      await createNetns(podNs)
    }, 10 * 60_000)

    afterAll(async () => {
      await deleteNetns(podNs)
      await deleteNetns(node)
      if (dir !== "") removePath(dir)
      if (pluginDir !== "") removePath(pluginDir)
    })

    /** Runs the executable in the node namespace: what it printed and its exit status. */
    const call = (env: Readonly<Record<string, string>>, stdin: Uint8Array | string) =>
      run("ip", ["netns", "exec", node, plugin.argv[0]!], {
        input: typeof stdin === "string" ? stdin : Buffer.from(stdin),
        env: { ...NODE_ENV, ...env },
        timeoutMs: 120_000
      })

    const baseEnv = (command: string, containerId = "c0ffee") => ({
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_IFNAME: "eth0",
      CNI_NETNS: netnsPath(podNs),
      CNI_PATH: delegateDir,
      CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=fuzz-pod"
    })

    const validConfig = (version: string, tenant: string): Record<string, unknown> => ({
      cniVersion: version,
      name: "trw-fuzz",
      type: "tenant-routing-wrapper",
      backend: "nftables",
      stateDir,
      delegate: { type: DELEGATE, ipam: { type: "host-local", subnet: "10.201.0.0/24" } },
      runtimeConfig: { [POD_ANNOTATIONS]: { [ANNOTATION]: tenant } }
    })

    /** The state directory's files and contents, to compare before and after a call. */
    const stateSnapshot = (): string => {
      const out: Array<string> = []
      const walk = (d: string) => {
        if (!existsSync(d)) return
        for (const e of readdirSync(d, { withFileTypes: true })) {
          const p = join(d, e.name)
          if (e.isDirectory()) walk(p)
          else out.push(`${p}: ${readFileSync(p, "utf8")}`)
        }
      }
      walk(stateDir)
      return out.sort().join("\n")
    }

    /** What the delegate recorded since the last call, and the records cleared. */
    const takeRecords = (): ReadonlyArray<{ argv: ReadonlyArray<string>; env: ReadonlyArray<string> }> => {
      const runs = readdirSync(records)
        .filter((f) => f.endsWith(".argv"))
        .map((f) => {
          const base = join(records, f.slice(0, -".argv".length))
          const split = (p: string) =>
            readFileSync(p, "utf8")
              .split("\0")
              .filter((s) => s !== "")
          return { argv: split(`${base}.argv`), env: split(`${base}.env`) }
        })
      for (const f of readdirSync(records)) rmSync(join(records, f))
      return runs
    }

    // -------------------------------------------------------------------------------------------------
    // Generators

    const hostileString = fc.constantFrom(
      "",
      "x".repeat(100_000),
      `ünïcødé ☃ 🚀 ${MARK}`,
      `; touch ${"CANARY"} #${MARK}`,
      `$(touch CANARY)${MARK}`,
      `\`touch CANARY\`${MARK}`,
      `a\nb\r\n${MARK}`,
      `../../../../etc/${MARK}`,
      `ABSDIR/${MARK}`,
      `0x${MARK}`,
      `\u202e${MARK}\u0000`
    )
    const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
      hostileString,
      fc.constantFrom(null, true, false, 0, -1, 0xffffffff, 2 ** 53, 1e308, -0, 0.5, [], {}, [MARK], {
        [MARK]: MARK
      }),
      fc.integer(),
      fc.string({ maxLength: 40 }).map((s) => `${s}${MARK}`)
    )
    /** Paths of the valid config a mutation may replace (or delete: `undefined`). */
    const FIELDS: ReadonlyArray<ReadonlyArray<string>> = [
      ["cniVersion"],
      ["name"],
      ["type"],
      ["backend"],
      ["stateDir"],
      ["logFile"],
      ["logLevel"],
      ["logMaxBytes"],
      ["markMask"],
      ["tenants"],
      ["tenants", "tenant-a", "mark"],
      ["failurePolicy"],
      ["pinning"],
      ["apiTimeout"],
      ["delegateTimeout"],
      ["kubeconfig"],
      ["annotationKey"],
      ["prevResult"],
      ["delegate"],
      ["delegate", "type"],
      ["delegate", "ipam"],
      ["runtimeConfig"],
      ["runtimeConfig", POD_ANNOTATIONS],
      ["runtimeConfig", POD_ANNOTATIONS, ANNOTATION],
      ["cni.dev/valid-attachments"]
    ]
    /** Injections name the canary file; absolute paths stay inside the test's directory. */
    const withCanary = (v: unknown): unknown =>
      typeof v === "string" ? v.replaceAll("CANARY", canary).replaceAll("ABSDIR", dir) : v

    const setPath = (obj: Record<string, unknown>, path: ReadonlyArray<string>, value: unknown) => {
      const copy = structuredClone(obj)
      let at: Record<string, unknown> = copy
      for (const k of path.slice(0, -1)) {
        const next = at[k]
        if (typeof next !== "object" || next === null) at[k] = {}
        at = at[k] as Record<string, unknown>
      }
      const last = path[path.length - 1]!
      if (value === undefined) delete at[last]
      else at[last] = value
      return copy
    }

    const configStdin = fc
      .record({
        version: fc.constantFrom(...VERSIONS),
        tenant: fc.constantFrom("tenant-a", "tenant-b", "0x10", "0x20", ""),
        mutations: fc.array(
          fc.record({ path: fc.constantFrom(...FIELDS), value: fc.option(hostileValue, { nil: undefined }) }),
          { maxLength: 3 }
        )
      })
      .map(({ version, tenant, mutations }) =>
        JSON.stringify(
          mutations.reduce(
            (conf, m) => setPath(conf, m.path, withCanary(m.value)),
            validConfig(version, tenant)
          )
        )
      )
    const OVERSIZED = JSON.stringify({ cniVersion: "1.0.0", pad: "x".repeat(4 * 1024 * 1024 + 16) })
    const stdinArb: fc.Arbitrary<string | Uint8Array> = fc.oneof(
      { weight: 6, arbitrary: configStdin },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2048 }) },
      { weight: 1, arbitrary: fc.constantFrom("", "{", "null", "[]", '"x"', OVERSIZED) }
    )
    const hostileEnvValue = hostileString.map(
      (s) => withCanary(s.replaceAll("\u0000", "").replaceAll(MARK, ENV_MARK)) as string
    )
    const envArb = fc.record({
      command: fc.oneof(
        { weight: 8, arbitrary: fc.constantFrom("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION") },
        { weight: 1, arbitrary: fc.constantFrom("", "add", "FOO", `ADD; touch CANARY ${ENV_MARK}`) }
      ),
      mutations: fc.array(
        fc.record({
          key: fc.constantFrom("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH"),
          value: fc.option(hostileEnvValue, { nil: undefined })
        }),
        { maxLength: 2 }
      )
    })

    it(
      `${RUNS} cases of env x stdin: stdout is one JSON document or nothing as the verb requires, codes are ` +
        "documented, exit is 0 or 1, a refusal changes neither kernel nor state, no hostile value reaches a " +
        "spawned process",
      async () => {
        const tally = new Map<string, number>()
        await fc.assert(
          fc.asyncProperty(envArb, stdinArb, async (e, stdin) => {
            const env: Record<string, string> = baseEnv(e.command.replaceAll("CANARY", canary))
            for (const m of e.mutations) {
              if (m.value === undefined) delete env[m.key]
              else env[m.key] = m.value
            }
            takeRecords()
            const kernelBefore = await netfilterSnapshot(node)
            const stateBefore = stateSnapshot()
            const r = await call(env, stdin)
            const outcome = `${env.CNI_COMMAND ?? "-"} exit ${r.code}`
            tally.set(outcome, (tally.get(outcome) ?? 0) + 1)

            assert.include([0, 1], r.code, `exit status; stderr: ${r.stderr.slice(-2000)}`)
            const verb = env.CNI_COMMAND
            if (r.code === 0 && verb !== "VERSION" && verb !== "ADD")
              assert.strictEqual(r.stdout, "", `${verb} success prints nothing`)
            else {
              const doc = JSON.parse(r.stdout) as Record<string, unknown> // throws unless exactly one document
              assert.isObject(doc)
              if (r.code === 1) {
                assert.include(DOCUMENTED_CODES, doc.code, `code of ${r.stdout.slice(0, 500)}`)
                assert.isString(doc.msg)
                assert.isString(doc.cniVersion)
              } else if (verb === "VERSION") assert.isArray(doc.supportedVersions)
              else {
                assert.notProperty(doc, "code")
                assert.isArray(doc.ips)
              }
            }
            if (r.code === 1) {
              assert.strictEqual(await netfilterSnapshot(node), kernelBefore, "a refusal changed the kernel")
              assert.strictEqual(stateSnapshot(), stateBefore, "a refusal changed the state directory")
            }

            for (const rec of takeRecords()) {
              assert.deepStrictEqual(rec.argv.slice(1), [], "the delegate gets no arguments")
              // The environment the delegate gets is the runtime's (its CNI_* values pass on by
              // contract, hostile or not: ENV_MARK may be there); nothing of stdin may be in it.
              const leaked = rec.env.filter((kv) => kv.includes(MARK))
              assert.deepStrictEqual(leaked, [], "a hostile value reached the delegate's environment")
            }
            assert.isFalse(existsSync(canary), "an injected command ran")

            // A successful ADD is undone, so every case starts from the same kernel.
            if (r.code === 0 && verb === "ADD") {
              const del = await call({ ...env, CNI_COMMAND: "DEL" }, stdin)
              assert.strictEqual(del.code, 0, `DEL after ADD: ${del.stdout}`)
              takeRecords()
            }
          }),
          { numRuns: RUNS }
        )
        console.log(
          `[fuzz] ${RUNS} cases held; outcomes: ${[...tally]
            .sort()
            .map(([k, n]) => `${k} x${n}`)
            .join(", ")}`
        )
      },
      RUNS * 20_000 + 60_000
    )

    it("VERSION answers with the supported versions whatever stdin holds: empty, not JSON, bytes, over 4 MiB", async () => {
      for (const stdin of [
        "",
        "not json",
        new Uint8Array([0xff, 0xfe, 0x00]),
        OVERSIZED,
        '{"cniVersion":"0.4.0"}'
      ]) {
        const r = await call({ CNI_COMMAND: "VERSION" }, stdin)
        const label = typeof stdin === "string" ? JSON.stringify(stdin.slice(0, 30)) : "bytes"
        assert.strictEqual(r.code, 0, `${label}: ${r.stdout}`)
        const doc = JSON.parse(r.stdout) as { cniVersion: string; supportedVersions: ReadonlyArray<string> }
        assert.includeMembers([...doc.supportedVersions], ["0.3.1", "0.4.0", "1.0.0", "1.1.0"], label)
        assert.strictEqual(doc.cniVersion, stdin === '{"cniVersion":"0.4.0"}' ? "0.4.0" : "1.1.0", label)
      }
    })

    describe("one log line per call, with everything known at that point", () => {
      type Line = { level: string; message: [string, Record<string, unknown>] }
      const logFile = () => join(dir, "calls.log")
      const linesOf = (from: number) => (logLines(logFile()) as ReadonlyArray<Line>).slice(from)
      const withLog = (conf: Record<string, unknown>) => ({ ...conf, logFile: logFile(), logLevel: "info" })

      it("a failed ADD (unknown tenant) and a successful ADD/DEL each log one line with ids, pod, IPs, backend, tenant, mark, code", async () => {
        const before = logLines(logFile()).length
        const rejected = await call(
          baseEnv("ADD", "log-rejected"),
          JSON.stringify(withLog(validConfig("1.0.0", "tenant-zzz")))
        )
        assert.strictEqual(rejected.code, 1, rejected.stdout)
        const ok = await call(
          baseEnv("ADD", "log-ok"),
          JSON.stringify(withLog(validConfig("1.0.0", "tenant-b")))
        )
        assert.strictEqual(ok.code, 0, ok.stdout)
        const del = await call(
          baseEnv("DEL", "log-ok"),
          JSON.stringify(withLog(validConfig("1.0.0", "tenant-b")))
        )
        assert.strictEqual(del.code, 0, del.stdout)

        const lines = linesOf(before)
        assert.deepStrictEqual(
          lines.map((l) => `${l.level} ${l.message[0]}`),
          ["ERROR ADD failed", "INFO ADD ok", "INFO DEL ok"]
        )
        const [failed, added, deleted] = lines.map((l) => l.message[1])
        const ids = {
          verb: "ADD",
          ifname: "eth0",
          pod: "default/fuzz-pod",
          network: "trw-fuzz",
          backend: "nftables"
        }
        assert.deepInclude(failed, {
          ...ids,
          containerId: "log-rejected",
          owner: "trw-fuzz/log-rejected/eth0",
          ips: ["10.201.0.7"],
          outcome: "error",
          code: 100
        })
        assert.include(String(failed!.error), "tenant-zzz")
        assert.isNumber(failed!.durationMs)
        assert.deepInclude(added, {
          ...ids,
          containerId: "log-ok",
          tenant: "tenant-b",
          mark: "0x20",
          ips: ["10.201.0.7"],
          outcome: "ok"
        })
        assert.deepInclude(deleted, {
          ...ids,
          verb: "DEL",
          containerId: "log-ok",
          tenant: "tenant-b",
          mark: "0x20",
          ips: ["10.201.0.7"],
          outcome: "ok"
        })
      })

      it("an ADD failing at its last step (the record cannot be written) logs tenant, mark and IPs, and leaves no entry", async () => {
        const before = logLines(logFile()).length
        const r = await call(
          baseEnv("ADD", "log-nostate"),
          JSON.stringify({ ...withLog(validConfig("1.0.0", "0x10")), stateDir: "/dev/null/state" })
        )
        assert.strictEqual(r.code, 1, r.stdout)
        // Its entry was installed, then taken back. (The per-mark set and rule nftables needed for it
        // stay, empty: the backend keeps that scaffolding once made, and it marks nothing.)
        assert.deepStrictEqual(await entriesOf(node, "trw-fuzz"), [])
        const lines = linesOf(before)
        assert.strictEqual(lines.length, 1, JSON.stringify(lines))
        assert.deepInclude(lines[0]!.message[1], {
          verb: "ADD",
          containerId: "log-nostate",
          tenant: "tenant-a",
          mark: "0x10",
          ips: ["10.201.0.7"],
          backend: "nftables",
          outcome: "error",
          code: 101
        })
      })

      it("a warning (failurePolicy open, kubeconfig missing) travels inside the call's one line", async () => {
        const before = logLines(logFile()).length
        const conf = {
          ...withLog(validConfig("1.0.0", "tenant-a")),
          runtimeConfig: {},
          failurePolicy: "open",
          kubeconfig: join(dir, "no-such-kubeconfig")
        }
        const r = await call(baseEnv("ADD", "log-warn"), JSON.stringify(conf))
        assert.strictEqual(r.code, 0, r.stdout)
        const del = await call(baseEnv("DEL", "log-warn"), JSON.stringify(conf))
        assert.strictEqual(del.code, 0, del.stdout)
        const lines = linesOf(before)
        assert.deepStrictEqual(
          lines.map((l) => `${l.level} ${l.message[0]}`),
          ["WARN ADD ok", "INFO DEL ok"]
        )
        const line = lines[0]!.message[1]
        assert.deepInclude(line, { tenant: null, mark: null, ips: ["10.201.0.7"], outcome: "ok" })
        const warnings = line.warnings as ReadonlyArray<{ level: string; message: string }>
        assert.strictEqual(warnings.length, 1, JSON.stringify(warnings))
        assert.strictEqual(warnings[0]!.level, "Warn")
        assert.include(warnings[0]!.message, "failurePolicy open")
      })
    })
  }
)
