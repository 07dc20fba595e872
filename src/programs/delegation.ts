/**
 * Talking to the delegate plugin: building its config (our network's name, the negotiated version,
 * runtimeConfig, prevResult), negotiating the version for 1.1.0 configs, and the verbs as calls of
 * the one `Delegate.run` primitive.
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type { Command } from "../domain/cni/CniEnv.ts"
import { type CniResult, convertResult } from "../domain/cni/CniResult.ts"
import { atLeast, GC_STATUS_SINCE, highestCommon, SUPPORTED_VERSIONS } from "../domain/cni/CniVersion.ts"
import { Delegate } from "../domain/cni/Delegate.ts"
import { DelegateFailed } from "../domain/cni/Errors.ts"
import type { Call } from "./Call.ts"

const VersionAnswer = Schema.Struct({ supportedVersions: Schema.Array(Schema.String) })

const runDelegate = (call: Call, command: Command, conf: Readonly<Record<string, unknown>>) =>
  Delegate.use((d) =>
    d.run({
      command,
      type: call.config.delegate?.type ?? "",
      conf,
      containerId: call.env.containerId,
      netns: call.env.netns,
      ifname: call.env.ifname,
      args: call.env.rawArgs,
      path: call.env.path,
      timeoutMs: call.config.delegateTimeoutMs
    })
  )

/** The versions the delegate says it speaks (its VERSION answer). */
export const delegateVersions = (call: Call) =>
  runDelegate(call, "VERSION", { cniVersion: call.config.cniVersion }).pipe(
    Effect.flatMap((out) =>
      Schema.decodeUnknownEffect(VersionAnswer)(out).pipe(
        Effect.map((v) => v.supportedVersions),
        Effect.mapError(
          () =>
            new DelegateFailed({ msg: `${call.config.delegate?.type}: VERSION answer is not a version list` })
        )
      )
    )
  )

/**
 * The version to speak with the delegate: the config's own up to 1.0.0; for 1.1.0 the highest both
 * support, since the Debian/reference plugins of many distributions stop at 1.0.0.
 */
export const negotiate = (call: Call) =>
  !atLeast(call.config.cniVersion, GC_STATUS_SINCE)
    ? Effect.succeed(call.config.cniVersion as string)
    : Effect.flatMap(delegateVersions(call), (theirs) => {
        const v = highestCommon(SUPPORTED_VERSIONS, theirs)
        return v === undefined
          ? Effect.fail(
              new DelegateFailed({
                msg: `${call.config.delegate?.type}: shares no CNI version with us (it speaks ${theirs.join(", ")})`
              })
            )
          : Effect.succeed(v)
      })

/** The delegate's config: its own keys, then ours that it must see. */
export const delegateConf = (
  call: Call,
  cniVersion: string,
  extra: Readonly<Record<string, unknown>> = {}
): Readonly<Record<string, unknown>> => ({
  ...call.config.delegate?.conf,
  name: call.config.name,
  cniVersion,
  ...(call.config.runtimeConfig === undefined ? {} : { runtimeConfig: call.config.runtimeConfig }),
  ...extra
})

const withPrev = (prev: CniResult | undefined, version: string) =>
  prev === undefined ? {} : { prevResult: convertResult(prev, version) }

export const delegateAdd = (call: Call, version: string) =>
  runDelegate(call, "ADD", delegateConf(call, version))

export const delegateDel = (call: Call, version: string, prev: CniResult | undefined) =>
  runDelegate(call, "DEL", delegateConf(call, version, withPrev(prev, version)))

export const delegateCheck = (call: Call, version: string, prev: CniResult | undefined) =>
  runDelegate(call, "CHECK", delegateConf(call, version, withPrev(prev, version)))

export const delegateGc = (call: Call, extra: Readonly<Record<string, unknown>>) =>
  runDelegate(call, "GC", delegateConf(call, GC_STATUS_SINCE, extra))

export const delegateStatus = (call: Call) => runDelegate(call, "STATUS", delegateConf(call, GC_STATUS_SINCE))

/** GC and STATUS go only to delegates that speak 1.1.0 (docs/DESIGN.md §5). */
export const delegateSpeaks11 = (call: Call) =>
  call.config.delegate === undefined
    ? Effect.succeed(false)
    : Effect.map(delegateVersions(call), (vs) => vs.includes(GC_STATUS_SINCE))
