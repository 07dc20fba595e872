/**
 * The CNI spec versions this plugin speaks, and how to compare them.
 */
export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number]

/** The newest version we speak: the answer's version when the input names none we know. */
export const NEWEST_VERSION: CniVersion = "1.1.0"
/** CHECK arrived in 0.4.0; GC and STATUS in 1.1.0. */
export const CHECK_SINCE: CniVersion = "0.4.0"
export const GC_STATUS_SINCE: CniVersion = "1.1.0"
/** Results changed shape (`ips[].version` dropped, `interfaces` indices) in 1.0.0. */
export const RESULT_1X_SINCE: CniVersion = "1.0.0"

export const isSupportedVersion = (v: string): v is CniVersion =>
  (SUPPORTED_VERSIONS as ReadonlyArray<string>).includes(v)

const parts = (v: string): [number, number, number] => {
  const [a = 0, b = 0, c = 0] = v.split(".").map((x) => Number.parseInt(x, 10) || 0)
  return [a, b, c]
}

/** Semver-ish comparison of `x.y.z` version strings: negative, zero or positive. */
export const compareVersions = (a: string, b: string): number => {
  const [a1, a2, a3] = parts(a)
  const [b1, b2, b3] = parts(b)
  return a1 - b1 || a2 - b2 || a3 - b3
}

export const atLeast = (v: string, min: string): boolean => compareVersions(v, min) >= 0

/** The highest version in both lists, for talking to a delegate (docs/DESIGN.md §5). */
export const highestCommon = (
  ours: ReadonlyArray<string>,
  theirs: ReadonlyArray<string>
): string | undefined =>
  ours
    .filter((v) => theirs.includes(v))
    .sort(compareVersions)
    .at(-1)
