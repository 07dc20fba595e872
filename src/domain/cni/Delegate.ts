/**
 * Running another CNI plugin: the delegate of wrapper mode. One primitive, `run`; the verbs are
 * conveniences derived from it in the programs, so a test interpreter implements only `run`.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type { Command } from "./CniEnv.ts"
import type { DelegateError, DelegateFailed } from "./Errors.ts"

export interface DelegateCall {
  readonly command: Command
  /** The plugin binary's name, looked up in `path`. */
  readonly type: string
  /** The complete config the delegate reads on stdin (name, cniVersion, prevResult, ...). */
  readonly conf: Readonly<Record<string, unknown>>
  readonly containerId: string
  readonly netns: string
  readonly ifname: string
  readonly args: string
  readonly path: ReadonlyArray<string>
  readonly timeoutMs: number
}

export class Delegate extends Context.Service<
  Delegate,
  {
    /** Runs the delegate once: its stdout JSON (undefined when it printed nothing), or its failure. */
    readonly run: (call: DelegateCall) => Effect.Effect<unknown, DelegateFailed | DelegateError>
  }
>()("tenant-routing/Delegate") {}
