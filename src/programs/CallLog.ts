/**
 * The one log line of a call (docs/DESIGN.md §7): everything known when the call ends, whether it
 * succeeded or failed. A verb hands back its facts only when it succeeds (Outcome.log), so for a
 * failed call they are noted on the way: the services the verb uses are wrapped to note the pod's IPs
 * (the delegate's ADD result), and the backend, tenant and mark (the entries installed for this
 * attachment, the record written or read). Whatever the verb logs on the way (a warning, a debug
 * note) is collected into the line instead of becoming a line of its own, so a reader of the log
 * finds a call's whole story in one place.
 *
 * Observing is all this does: every wrapped method returns exactly what the real one returned.
 */
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import type * as LogLevel from "effect/LogLevel"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { CniResult, podIps } from "../domain/cni/CniResult.ts"
import { Delegate } from "../domain/cni/Delegate.ts"
import type { AttachmentRecord } from "../domain/datapath/AttachmentRecord.ts"
import { AttachmentStore } from "../domain/datapath/AttachmentStore.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import { ownerTag } from "../domain/datapath/Owner.ts"
import { formatMark } from "../domain/net/Mark.ts"
import { attachmentOf, type Call } from "./Call.ts"

/** The facts of one call as far as they are known; later observations refine earlier ones. */
export interface CallFacts {
  network?: string
  owner?: string
  tenant?: string | null
  mark?: string | null
  ips?: ReadonlyArray<string>
  backend?: string
}

/** A message the verb logged, carried in the call's line. */
export interface Note {
  readonly level: LogLevel.LogLevel
  readonly message: string
  readonly [field: string]: unknown
}

/** The facts known before the verb runs: from the config alone. */
export const factsOf = (call: Call): CallFacts => {
  const facts: CallFacts = { network: call.config.name, backend: call.config.backend }
  if (call.env.command === "ADD" || call.env.command === "DEL" || call.env.command === "CHECK")
    facts.owner = ownerTag(attachmentOf(call))
  // Chained mode: the pod's IPs are in prevResult from the start.
  if (
    call.env.command === "ADD" &&
    call.config.delegate === undefined &&
    call.config.prevResult !== undefined
  )
    facts.ips = podIps(call.config.prevResult)
  return facts
}

const noteRecord = (facts: CallFacts, r: AttachmentRecord | undefined) => {
  if (r === undefined) return
  facts.tenant = r.tenant
  facts.mark = r.mark === null ? null : formatMark(r.mark)
  facts.ips = r.ips
  facts.backend = r.backend
}

/**
 * Runs a verb with its services observed into `facts` and its log messages collected into `notes`
 * (at the call's minimum level, which the fiber applies before any logger sees a message).
 */
export const observed = <A, E, R>(
  call: Call,
  facts: CallFacts,
  notes: Array<Note>,
  verb: Effect.Effect<A, E, R | Delegate | Netfilter | AttachmentStore>
): Effect.Effect<A, E, R | Delegate | Netfilter | AttachmentStore> => {
  const owner = facts.owner
  const tenantOf = (mark: number) => call.config.tenants.find((t) => t.mark === mark)?.name ?? null
  return verb.pipe(
    Effect.updateService(Delegate, (d) => ({
      run: (dc) =>
        Effect.map(d.run(dc), (out) => {
          if (dc.command === "ADD") {
            const decoded = Schema.decodeUnknownResult(CniResult)(out)
            if (Result.isSuccess(decoded)) facts.ips = podIps(decoded.success)
          }
          return out
        })
    })),
    Effect.updateService(Netfilter, (nf) => ({
      ...nf,
      apply: (backend, changes) =>
        Effect.suspend(() => {
          // ADD notes the entries it installs; DEL, which reads no record, the ones it removes.
          const own = (call.env.command === "DEL" ? changes.remove : changes.add).filter(
            (e) => e.owner === owner
          )
          if (own.length > 0 && facts.mark === undefined) {
            facts.backend = backend
            facts.mark = formatMark(own[0]!.mark)
            facts.tenant = tenantOf(own[0]!.mark)
            if (call.env.command === "DEL") facts.ips = [...new Set(own.map((e) => e.ip))]
          }
          return nf.apply(backend, changes)
        })
    })),
    Effect.updateService(AttachmentStore, (store) => ({
      ...store,
      read: (dir, a) =>
        Effect.map(store.read(dir, a), (r) => {
          noteRecord(facts, r)
          return r
        }),
      write: (dir, r) =>
        Effect.suspend(() => {
          noteRecord(facts, r)
          return store.write(dir, r)
        })
    })),
    Effect.provide(
      Logger.layer([
        Logger.make((o) => {
          notes.push(noteOf(o.logLevel, o.message))
        })
      ])
    )
  )
}

/** `Effect.logWarning("text", { error })` logs `["text", { error }]`: text joined, fields merged. */
const noteOf = (level: LogLevel.LogLevel, message: unknown): Note => {
  const parts: ReadonlyArray<unknown> = Array.isArray(message) ? message : [message]
  const texts: Array<string> = []
  const fields: Record<string, unknown> = {}
  for (const p of parts) {
    if (typeof p === "object" && p !== null && !Array.isArray(p)) Object.assign(fields, p)
    else texts.push(String(p))
  }
  return { ...fields, level, message: texts.join(" ") }
}
