/**
 * The one place where a failure becomes the CNI error document printed on stdout (docs/DESIGN.md §5).
 *
 * `details` is a string, as the CNI spec and libcni's Go types require (an array there would make the
 * runtime fail to decode the whole error); for decode failures it holds the JSON text of the
 * `{path, message}` list, so tools can still parse it.
 */
import type { CniFailure } from "./Errors.ts"

export interface CniErrorDocument {
  readonly cniVersion: string
  readonly code: number
  readonly msg: string
  readonly details?: string
}

export const detailsOf = (e: CniFailure): string | undefined => {
  switch (e._tag) {
    case "InvalidConfig":
    case "InvalidEnvironment":
      return JSON.stringify(e.issues)
    case "DelegateError":
      return e.details
    case "TenantRejected":
      return `known tenants: ${e.known.join(", ")}`
    case "Drift":
      return e.differences.join("; ")
    default:
      return undefined
  }
}

export const toCniError = (e: CniFailure, cniVersion: string): CniErrorDocument => {
  const details = detailsOf(e)
  const msg = e._tag === "DelegateError" ? `${e.plugin}: ${e.msg}` : e.msg
  return { cniVersion, code: e.code, msg, ...(details === undefined ? {} : { details }) }
}

/** A bug, not an expected failure: code 999 ("other") with no internals on stdout. */
export const unexpectedError = (cniVersion: string, what: string): CniErrorDocument => ({
  cniVersion,
  code: 999,
  msg: `internal error: ${what}`
})
