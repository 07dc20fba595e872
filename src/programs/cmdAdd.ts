/**
 * ADD (docs/DESIGN.md §5): run the delegate (or read prevResult in chained mode) while resolving the
 * tenant, install the pod's marks and its record, print the result in the config's version.
 *
 * A running delegate is never interrupted: the resolution is reduced to a value first, so a failure
 * there waits for the delegate, whose ADD is then undone by its DEL. Any failure after the delegate
 * ran (its own failure to answer usefully included) removes what this call installed, runs the
 * delegate DEL, and returns the error.
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { CniResult, convertResult, podIps } from "../domain/cni/CniResult.ts"
import { type CniFailure, DelegateFailed, InvalidConfig, type TryAgainLater } from "../domain/cni/Errors.ts"
import { podRefOf } from "../domain/datapath/AttachmentRecord.ts"
import { ownerTag } from "../domain/datapath/Owner.ts"
import { formatMark } from "../domain/net/Mark.ts"
import type { AnnotationSource } from "../domain/tenancy/AnnotationSource.ts"
import type { Tenant } from "../domain/tenancy/Tenant.ts"
import { attachmentOf, type Call, type Outcome } from "./Call.ts"
import { attach } from "./datapath.ts"
import { delegateAdd, delegateDel, negotiate } from "./delegation.ts"
import { connectApi, resolveForCall } from "./resolve.ts"

/** The failures failurePolicy open lets a pod start untagged through (API unavailable or slow). */
const coveredByOpen = (e: { readonly _tag: string }): e is TryAgainLater => e._tag === "TryAgainLater"

/** The delegate's result (wrapper mode) or prevResult (chained mode), with how to undo it. */
const obtainResult = (call: Call) =>
  Effect.gen(function* () {
    const { config } = call
    if (config.delegate === undefined) {
      if (config.prevResult === undefined) {
        return yield* new InvalidConfig({
          msg: "invalid network config: chained mode (no delegate) needs prevResult",
          issues: [{ path: "prevResult", message: "required when no delegate is configured" }]
        })
      }
      return { result: config.prevResult, undo: Effect.void }
    }
    const version = yield* negotiate(call)
    const undo = (result: CniResult | undefined) =>
      delegateDel(call, version, result).pipe(
        Effect.catch((e) => Effect.logError("delegate DEL after a failed ADD failed", { error: e.msg })),
        Effect.uninterruptible
      )
    // A delegate that ran and failed without a CNI error of its own (garbage or oversized output, a
    // crash, the deadline) may hold an allocation: its DEL runs. One that answered with its own CNI
    // error has cleaned up by the spec, and host-local's "duplicate allocation" refusal of a repeated
    // ADD must not release the lease the first ADD still uses.
    const out = yield* delegateAdd(call, version).pipe(
      Effect.catchTag("DelegateFailed", (e) =>
        e.ran === true ? undo(undefined).pipe(Effect.andThen(Effect.fail(e))) : Effect.fail(e)
      ),
      Effect.uninterruptible
    )
    const decoded = Schema.decodeUnknownResult(CniResult)(out)
    if (Result.isFailure(decoded)) {
      yield* undo(undefined)
      return yield* new DelegateFailed({ msg: `${config.delegate.type}: ADD printed no valid CNI result` })
    }
    return { result: decoded.success, undo: undo(decoded.success) }
  })

export const cmdAdd = Effect.fn("cmdAdd")(function* (call: Call) {
  const { config } = call
  const a = attachmentOf(call)
  const open = config.failurePolicy === "open"

  // The kubeconfig is loaded before the delegate runs (docs/DESIGN.md §2), so a broken one costs nothing;
  // only a failure that failurePolicy open covers is carried on, to end as an untagged pod.
  const reader = yield* Effect.result(connectApi(call))
  if (Result.isFailure(reader) && !(open && coveredByOpen(reader.failure))) return yield* reader.failure
  const resolution: Effect.Effect<Tenant | null, CniFailure, AnnotationSource> = Result.isFailure(reader)
    ? Effect.fail(reader.failure)
    : resolveForCall(call, reader.success)

  const [obtained, resolved] = yield* Effect.all([obtainResult(call), Effect.result(resolution)], {
    concurrency: 2
  })

  const afterDelegate = Effect.gen(function* () {
    let tenant: Tenant | null = null
    if (Result.isFailure(resolved)) {
      const e = resolved.failure
      if (!(open && coveredByOpen(e))) return yield* e
      yield* Effect.logWarning(
        "tenant unknown (API unavailable); failurePolicy open: the pod starts untagged",
        { error: e.msg }
      )
    } else tenant = resolved.success
    const ips = podIps(obtained.result)
    const attached = yield* attach(config, a, ips, tenant, open, podRefOf(call.env))
    return { ips, backend: attached.backend, tenant: attached.tenant }
  })
  const done = yield* afterDelegate.pipe(Effect.onError(() => obtained.undo))

  return {
    output: convertResult(obtained.result, config.cniVersion),
    log: {
      owner: ownerTag(a),
      tenant: done.tenant?.name ?? null,
      mark: done.tenant === null ? null : formatMark(done.tenant.mark),
      ips: done.ips,
      backend: done.backend
    }
  } satisfies Outcome
})
