/**
 * `runCni`'s one log line per call on the memory node: its level and text by outcome, the ids it
 * carries (verb, clipped container id and ifname, pod from CNI_ARGS), the duration as a difference
 * of two clock readings, and the log settings handed to the logging layer.
 */
import { describe, it } from "@effect/vitest"
import { Effect, Logger } from "effect"
import { TestClock } from "effect/testing"
import { assert } from "vitest"
import { type LogSettings, runCni } from "../src/programs/dispatch.ts"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const pod = { containerId: "c1", namespace: "default", name: "p" }

interface Line {
  readonly level: string
  readonly text: unknown
  readonly fields: Record<string, unknown>
}

const runLogged = async (
  w: World,
  env: Record<string, string | undefined>,
  stdin: unknown,
  startAt = 5_000
) => {
  const lines: Array<Line> = []
  const settings: Array<LogSettings> = []
  const capture = Logger.make((o) => {
    const parts = Array.isArray(o.message) ? o.message : [o.message]
    lines.push({
      level: o.logLevel,
      text: parts.find((p) => typeof p === "string"),
      fields: (parts.find((p) => typeof p === "object" && p !== null) ?? {}) as Record<string, unknown>
    })
  })
  const bytes = new TextEncoder().encode(typeof stdin === "string" ? stdin : JSON.stringify(stdin))
  const out = await Effect.runPromise(
    Effect.gen(function* () {
      yield* TestClock.setTime(startAt)
      return yield* runCni(env, bytes, (s) => {
        settings.push(s)
        return Logger.layer([capture])
      })
    }).pipe(Effect.provide(w.layer()), Effect.provide(TestClock.layer()))
  )
  return { out, lines, settings }
}

const chained = (extra: Record<string, unknown> = {}) => {
  const conf = originalConf(extra)
  delete conf.delegate
  return conf
}

describe("runCni's log line", () => {
  it("a successful ADD logs one Info line 'ADD ok' with ids, pod, outcome and a zero duration on a still clock", async () => {
    const w = new World()
    w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
    const { out, lines } = await runLogged(w, cniEnv("ADD", pod), originalConf())
    assert.strictEqual(out.exitCode, 0, out.stdout)
    const last = lines.at(-1)!
    assert.strictEqual(last.level, "Info")
    assert.strictEqual(last.text, "ADD ok")
    assert.strictEqual(last.fields.verb, "ADD")
    assert.strictEqual(last.fields.containerId, "c1")
    assert.strictEqual(last.fields.ifname, "eth0")
    assert.strictEqual(last.fields.pod, "default/p")
    assert.strictEqual(last.fields.outcome, "ok")
    assert.strictEqual(last.fields.durationMs, 0)
    assert.isUndefined(last.fields.warnings)
  })

  it("a failed call logs one Error line '<VERB> failed' with code and error, and prints the CNI error", async () => {
    const w = new World()
    const { out, lines } = await runLogged(w, cniEnv("ADD", pod), chained())
    assert.strictEqual(out.exitCode, 1)
    const doc = parse(out) as { code: number; msg: string; cniVersion: string }
    assert.strictEqual(doc.code, 7)
    assert.strictEqual(doc.cniVersion, "1.0.0")
    const last = lines.at(-1)!
    assert.strictEqual(last.level, "Error")
    assert.strictEqual(last.text, "ADD failed")
    assert.strictEqual(last.fields.outcome, "error")
    assert.strictEqual(last.fields.code, 7)
    assert.strictEqual(last.fields.error, doc.msg)
    assert.strictEqual(last.fields.verb, "ADD")
  })

  it("a success with a warning (failurePolicy open, API down) logs at Warn with the warnings", async () => {
    const w = new World()
    w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
    w.faults.faults = [{ op: "api.connect", nth: 1, kind: "fail" }]
    const { out, lines } = await runLogged(w, cniEnv("ADD", pod), originalConf({ failurePolicy: "open" }))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    const last = lines.at(-1)!
    assert.strictEqual(last.level, "Warn")
    assert.strictEqual(last.text, "ADD ok")
    assert.isArray(last.fields.warnings)
    assert.include(JSON.stringify(last.fields.warnings), "failurePolicy open")
  })

  it("an undecodable stdin is refused with the error printed, logged as failed, with the default log settings", async () => {
    const w = new World()
    const { out, lines, settings } = await runLogged(w, cniEnv("ADD", pod), "{not json")
    assert.strictEqual(out.exitCode, 1)
    const doc = parse(out) as { code: number; msg: string }
    assert.isNumber(doc.code)
    assert.isAbove(doc.code, 0)
    const last = lines.at(-1)!
    assert.strictEqual(last.level, "Error")
    assert.strictEqual(last.text, "ADD failed")
    assert.strictEqual(last.fields.outcome, "error")
    assert.strictEqual(last.fields.code, doc.code)
    assert.strictEqual(last.fields.error, doc.msg)
    assert.deepStrictEqual(settings, [
      { logFile: undefined, logLevel: "info", logMaxBytes: 10 * 1024 * 1024 }
    ])
  })

  it("a call's own log settings (logLevel, logFile) reach the logging layer", async () => {
    const w = new World()
    w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
    const { settings } = await runLogged(
      w,
      cniEnv("ADD", pod),
      originalConf({ logLevel: "debug", logFile: "/var/log/trw.log" })
    )
    assert.strictEqual(settings.length, 1)
    assert.strictEqual(settings[0]!.logLevel, "debug")
    assert.strictEqual(settings[0]!.logFile, "/var/log/trw.log")
  })

  it("VERSION answers the supported versions, logs 'VERSION ok', uses the default log settings", async () => {
    const w = new World()
    const { out, lines, settings } = await runLogged(w, { CNI_COMMAND: "VERSION" }, { cniVersion: "1.0.0" })
    assert.strictEqual(out.exitCode, 0)
    const doc = parse(out) as { cniVersion: string; supportedVersions: Array<string> }
    assert.include(doc.supportedVersions, "1.1.0")
    const last = lines.at(-1)!
    assert.strictEqual(last.text, "VERSION ok")
    assert.strictEqual(last.fields.outcome, "ok")
    assert.strictEqual(last.fields.verb, "VERSION")
    assert.strictEqual(settings[0]!.logLevel, "info")
  })

  it("no CNI_COMMAND is logged as verb '?'", async () => {
    const w = new World()
    const env = { ...cniEnv("ADD", pod), CNI_COMMAND: undefined }
    const { out, lines } = await runLogged(w, env, originalConf())
    assert.strictEqual(out.exitCode, 1)
    assert.strictEqual(lines.at(-1)!.fields.verb, "?")
    assert.strictEqual(lines.at(-1)!.text, "? failed")
  })

  it("clips a 300-character container id to 256 in the log line", async () => {
    const w = new World()
    const id = "a".repeat(300)
    const { lines } = await runLogged(w, cniEnv("DEL", { ...pod, containerId: id }), originalConf())
    assert.strictEqual(lines.at(-1)!.fields.containerId, "a".repeat(256))
  })

  it("names the pod only when CNI_ARGS has both namespace and name", async () => {
    const w = new World()
    const podField = async (args: string) =>
      (await runLogged(w, { ...cniEnv("DEL", pod), CNI_ARGS: args }, originalConf())).lines.at(-1)!.fields.pod
    assert.strictEqual(await podField("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=n"), "ns/n")
    assert.strictEqual(await podField("K8S_POD_NAME=n;K8S_POD_NAMESPACE=ns;X=1"), "ns/n")
    assert.isUndefined(await podField("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns"))
    assert.isUndefined(await podField("IgnoreUnknown=1;K8S_POD_NAME=n"))
    assert.isUndefined(await podField("XK8S_POD_NAMESPACE=ns;XK8S_POD_NAME=n"))
  })

  it("reports the duration as the clock's advance during the call, not a sum of timestamps", async () => {
    const w = new World()
    const { lines } = await runLogged(w, cniEnv("DEL", pod), originalConf(), 1_000_000)
    assert.strictEqual(lines.at(-1)!.fields.durationMs, 0)
  })
})
