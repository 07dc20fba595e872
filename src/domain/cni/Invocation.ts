/**
 * One plugin call, decoded from what the runtime hands over: the environment and stdin bytes.
 * Order of checks (each with its own code): environment (4), stdin bytes (6), config (7, or 1 for an
 * unsupported version). VERSION reads only `cniVersion` from stdin, as the spec allows it a minimal input,
 * and answers whatever stdin holds (empty, not JSON, too large), as the reference plugins' skel does:
 * a runtime probing versions must get the list, in 1.1.0 when stdin names no version we speak.
 */
import * as Result from "effect/Result"
import { type CniEnv, decodeEnv } from "./CniEnv.ts"
import { isSupportedVersion, NEWEST_VERSION } from "./CniVersion.ts"
import { decodeConfig, type PluginConfig } from "./Config.ts"
import {
  type IncompatibleVersion,
  type InvalidConfig,
  type InvalidEnvironment,
  UndecodableInput
} from "./Errors.ts"

export const MAX_STDIN_BYTES = 4 * 1024 * 1024

export type Invocation =
  | { readonly _tag: "Version"; readonly cniVersion: string }
  | {
      readonly _tag: "Call"
      readonly env: CniEnv
      readonly config: PluginConfig
      readonly raw: Readonly<Record<string, unknown>>
    }

export type InvocationError = InvalidEnvironment | UndecodableInput | InvalidConfig | IncompatibleVersion

/** The cniVersion to answer in, best effort, even when the input is broken. */
export const replyVersion = (json: unknown): string => {
  const v = (json as { cniVersion?: unknown } | null)?.cniVersion
  return typeof v === "string" && isSupportedVersion(v) ? v : NEWEST_VERSION
}

/** stdin as a JSON value (any JSON: the config decoder judges its shape). */
export const parseStdin = (bytes: Uint8Array): Result.Result<unknown, UndecodableInput> => {
  if (bytes.length > MAX_STDIN_BYTES)
    return Result.fail(new UndecodableInput({ msg: `stdin is larger than ${MAX_STDIN_BYTES} bytes` }))
  let text: string
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes)
  } catch {
    return Result.fail(new UndecodableInput({ msg: "stdin is not valid UTF-8" }))
  }
  try {
    return Result.succeed(JSON.parse(text) as unknown)
  } catch (e) {
    return Result.fail(
      new UndecodableInput({ msg: `stdin is not JSON: ${(e as Error).message.slice(0, 200)}` })
    )
  }
}

/** The cniVersion to answer in for raw stdin bytes, whatever they hold. */
export const replyVersionOf = (stdin: Uint8Array): string => {
  const parsed = parseStdin(stdin)
  return Result.isSuccess(parsed) ? replyVersion(parsed.success) : NEWEST_VERSION
}

/** Why a call could not be decoded, with the version to answer in. */
export interface InvocationFailure {
  readonly error: InvocationError
  readonly cniVersion: string
}

export const decodeInvocation = (
  rawEnv: Readonly<Record<string, string | undefined>>,
  stdin: Uint8Array
): Result.Result<Invocation, InvocationFailure> => {
  const env = decodeEnv(rawEnv)
  const parsed = parseStdin(stdin)
  const cniVersion = Result.isSuccess(parsed) ? replyVersion(parsed.success) : NEWEST_VERSION
  if (Result.isFailure(env)) return Result.fail({ error: env.failure, cniVersion })
  if (env.success.command === "VERSION") return Result.succeed({ _tag: "Version", cniVersion })
  if (Result.isFailure(parsed)) return Result.fail({ error: parsed.failure, cniVersion })
  const config = decodeConfig(parsed.success)
  if (Result.isFailure(config)) return Result.fail({ error: config.failure, cniVersion })
  return Result.succeed({
    _tag: "Call",
    env: env.success,
    config: config.success,
    raw: parsed.success as Record<string, unknown>
  })
}
