/**
 * VERSION: the versions we speak. Needs no config beyond cniVersion, and touches nothing.
 */
import { SUPPORTED_VERSIONS } from "../domain/cni/CniVersion.ts"
import type { Outcome } from "./Call.ts"

export const cmdVersion = (cniVersion: string): Outcome => ({
  output: { cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] },
  log: {}
})
