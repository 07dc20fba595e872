/**
 * One CNI call from bytes to bytes: decode the environment and stdin, run the verb, and turn its
 * outcome or failure into what goes on stdout and the exit status. This is the only place failures
 * are rendered (CniError.ts), so no verb can print twice or print something that is not CNI JSON.
 * Every call logs exactly one line (verb, ids, tenant, mark, IPs, backend, duration, outcome, code),
 * failed or not, with what the verb logged on the way inside it (CallLog.ts).
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as LogLevel from "effect/LogLevel"
import * as Result from "effect/Result"
import type { Command } from "../domain/cni/CniEnv.ts"
import { toCniError, unexpectedError } from "../domain/cni/CniError.ts"
import type { PluginConfig } from "../domain/cni/Config.ts"
import type { Delegate } from "../domain/cni/Delegate.ts"
import type { CniFailure } from "../domain/cni/Errors.ts"
import { decodeInvocation } from "../domain/cni/Invocation.ts"
import type { AttachmentStore } from "../domain/datapath/AttachmentStore.ts"
import type { Netfilter } from "../domain/datapath/Netfilter.ts"
import type { NodeLock } from "../domain/datapath/NodeLock.ts"
import type { AnnotationSource } from "../domain/tenancy/AnnotationSource.ts"
import type { Call, Outcome } from "./Call.ts"
import { type CallFacts, factsOf, type Note, observed } from "./CallLog.ts"
import { cmdAdd } from "./cmdAdd.ts"
import { cmdCheck } from "./cmdCheck.ts"
import { cmdDel } from "./cmdDel.ts"
import { cmdGc } from "./cmdGc.ts"
import { cmdStatus } from "./cmdStatus.ts"
import { cmdVersion } from "./cmdVersion.ts"

export type CniServices = Netfilter | NodeLock | AttachmentStore | Delegate | AnnotationSource

export interface LogSettings {
  readonly logFile: string | undefined
  readonly logLevel: PluginConfig["logLevel"]
  readonly logMaxBytes: number
}

export interface CniOutput {
  /** The one JSON document for stdout, or undefined when the verb prints nothing. */
  readonly stdout: string | undefined
  readonly exitCode: number
}

const DEFAULT_LOG: LogSettings = { logFile: undefined, logLevel: "info", logMaxBytes: 10 * 1024 * 1024 }

const verbs: Record<
  Exclude<Command, "VERSION">,
  (call: Call) => Effect.Effect<Outcome, CniFailure, CniServices>
> = {
  ADD: cmdAdd,
  DEL: cmdDel,
  CHECK: cmdCheck,
  GC: cmdGc,
  STATUS: cmdStatus
}

const print = (doc: unknown): string => JSON.stringify(doc)

export const runCni = (
  env: Readonly<Record<string, string | undefined>>,
  stdin: Uint8Array,
  logging: (settings: LogSettings) => Layer.Layer<never>
): Effect.Effect<CniOutput, never, CniServices> =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    const decoded = decodeInvocation(env, stdin)
    const call = Result.isSuccess(decoded) && decoded.success._tag === "Call" ? decoded.success : undefined
    const settings = call?.config ?? DEFAULT_LOG
    const verb = (env.CNI_COMMAND ?? "?").slice(0, 32)
    const cniVersion = Result.isFailure(decoded)
      ? decoded.failure.cniVersion
      : decoded.success._tag === "Call"
        ? decoded.success.config.cniVersion
        : decoded.success.cniVersion
    const facts: CallFacts = call === undefined ? {} : factsOf(call)
    const notes: Array<Note> = []

    const run: Effect.Effect<{ output: CniOutput; log: Record<string, unknown> }, never, CniServices> =
      Effect.gen(function* () {
        if (Result.isFailure(decoded)) {
          const doc = toCniError(decoded.failure.error, cniVersion)
          return {
            output: { stdout: print(doc), exitCode: 1 },
            log: { outcome: "error", code: doc.code, error: doc.msg, details: doc.details }
          }
        }
        const inv = decoded.success
        if (inv._tag === "Version") {
          return {
            output: { stdout: print(cmdVersion(inv.cniVersion).output), exitCode: 0 },
            log: { outcome: "ok" }
          }
        }
        const command = inv.env.command as Exclude<Command, "VERSION">
        // `facts` is read once the verb has ended, so a failure's line holds all it learned.
        return yield* observed(inv, facts, notes, verbs[command](inv)).pipe(
          Effect.map((o) => ({
            output: { stdout: o.output === undefined ? undefined : print(o.output), exitCode: 0 },
            log: { ...facts, ...o.log, outcome: "ok" }
          })),
          Effect.catch((e) => {
            const doc = toCniError(e, cniVersion)
            return Effect.succeed({
              output: { stdout: print(doc), exitCode: 1 },
              log: { ...facts, outcome: "error", code: doc.code, error: doc.msg, details: doc.details }
            })
          }),
          Effect.catchCause((cause) => {
            const doc = unexpectedError(cniVersion, Cause.pretty(cause).split("\n")[0] ?? "unknown")
            return Effect.succeed({
              output: { stdout: print(doc), exitCode: 1 },
              log: { ...facts, outcome: "error", code: doc.code, error: Cause.pretty(cause) }
            })
          })
        )
      })

    // Raw values, clipped: a refused call's line still says what was asked, without echoing 100k chars.
    const ids = {
      verb,
      containerId: clip(env.CNI_CONTAINERID),
      ifname: clip(env.CNI_IFNAME),
      pod: podOf(env.CNI_ARGS)
    }
    return yield* run.pipe(
      Effect.tap(({ output, log }) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const warnings = notes.filter((n) => LogLevel.isGreaterThanOrEqualTo(n.level, "Warn"))
          const debug = notes.filter((n) => LogLevel.isLessThan(n.level, "Warn"))
          const line = {
            ...ids,
            ...log,
            durationMs: now - started,
            ...(warnings.length > 0 ? { warnings } : {}),
            ...(debug.length > 0 ? { debug } : {})
          }
          if (output.exitCode !== 0) return Effect.logError(`${verb} failed`, line)
          // At warn level, so a log kept at `warn` still shows a call that succeeded with a warning.
          return warnings.length > 0
            ? Effect.logWarning(`${verb} ok`, line)
            : Effect.logInfo(`${verb} ok`, line)
        })
      ),
      Effect.map(({ output }) => output),
      Effect.provide(logging(settings))
    )
  })

const clip = (s: string | undefined): string | undefined => (s === undefined ? s : s.slice(0, 256))

/** `namespace/name` from CNI_ARGS for the log line, without trusting its shape. */
const podOf = (args: string | undefined): string | undefined => {
  const get = (k: string) => args?.match(new RegExp(`(?:^|;)${k}=([^;]{0,253})`))?.[1]
  const ns = get("K8S_POD_NAMESPACE")
  const name = get("K8S_POD_NAME")
  return ns === undefined || name === undefined ? undefined : `${ns}/${name}`
}
