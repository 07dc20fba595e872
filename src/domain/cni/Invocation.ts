/**
 * One plugin call, decoded from what the runtime hands over: the environment and stdin bytes.
 * Order of checks (each with its own code): environment (4), stdin bytes (6), config (7, or 1 for an
 * unsupported version). VERSION reads only `cniVersion` from stdin, as the spec allows it a minimal input,
 * and answers whatever stdin holds (empty, not JSON, too large), as the reference plugins' skel does:
 * a runtime probing versions must get the list, in 1.1.0 when stdin names no version we speak.
 */
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

export const parseStdin = (bytes: Uint8Array): { json: unknown } | { error: UndecodableInput } => {
  if (bytes.length > MAX_STDIN_BYTES) {
    return { error: new UndecodableInput({ msg: `stdin is larger than ${MAX_STDIN_BYTES} bytes` }) }
  }
  let text: string
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes)
  } catch {
    return { error: new UndecodableInput({ msg: "stdin is not valid UTF-8" }) }
  }
  try {
    return { json: JSON.parse(text) }
  } catch (e) {
    return {
      error: new UndecodableInput({ msg: `stdin is not JSON: ${(e as Error).message.slice(0, 200)}` })
    }
  }
}

export const decodeInvocation = (
  rawEnv: Readonly<Record<string, string | undefined>>,
  stdin: Uint8Array
): { invocation: Invocation } | { error: InvocationError; cniVersion: string } => {
  const env = decodeEnv(rawEnv)
  const parsed = parseStdin(stdin)
  const cniVersion = "json" in parsed ? replyVersion(parsed.json) : NEWEST_VERSION
  if ("error" in env) return { error: env.error, cniVersion }
  if (env.env.command === "VERSION") return { invocation: { _tag: "Version", cniVersion } }
  if ("error" in parsed) return { error: parsed.error, cniVersion }
  const config = decodeConfig(parsed.json)
  if ("error" in config) return { error: config.error, cniVersion }
  return {
    invocation: {
      _tag: "Call",
      env: env.env,
      config: config.config,
      raw: parsed.json as Record<string, unknown>
    }
  }
}
