/**
 * Whether a conflist chains `cilium-cni` after this plugin in a way Cilium accepts, and whether
 * another CNI config in the directory would win over ours (docs/DESIGN.md §7). Pure: `install`
 * refuses what `cniChainingIssue` returns (exit 2) and warns about `conflistsBefore`; `doctor`'s
 * `cni-chaining` check reports both for the conflist installed on a node.
 *
 * Why: `cilium-cni` receives our result as `prevResult` and accepts it only in chaining mode. It takes
 * the mode from the `chaining-mode` key of its own entry, else from the conflist's `name`; when that
 * names none of its chainers, every ADD fails with "CNI PrevResult supplied, but not in chaining mode".
 * And a runtime loads only the config file that sorts first (libcni's `ConfFiles` + sort), so a
 * Cilium-written `05-cilium.conflist` next to a `10-…` of ours silently takes every pod away from us.
 */
import { isCniConfFile } from "../doctor/DoctorConfig.ts"

export const CILIUM_PLUGIN_TYPE = "cilium-cni"

/**
 * Chaining modes `cilium-cni` has a chainer for (its `plugins/cilium-cni/chaining/*` packages, each
 * registering a name). `generic-veth` is the one that fits us: our delegate makes a veth pair
 * (`ptp`), and generic-veth attaches Cilium's programs to whatever veth the earlier plugins made.
 * A name not listed here is refused: cilium-cni would fail every ADD with it.
 */
export const CILIUM_CHAINING_MODES: ReadonlyArray<string> = [
  "generic-veth",
  "portmap",
  "aws-cni",
  "azure",
  "flannel",
  "cbr0",
  "terway"
]

const typeOf = (plugin: unknown): unknown =>
  typeof plugin === "object" && plugin !== null ? (plugin as { type?: unknown }).type : undefined

/**
 * Why `cilium-cni` would refuse every ADD of this conflist, or undefined when it would not (or the
 * conflist has no `cilium-cni` entry). Every `cilium-cni` entry is looked at, not only the one right
 * after ours: each receives a prevResult.
 */
export const cniChainingIssue = (conflist: unknown): string | undefined => {
  if (typeof conflist !== "object" || conflist === null) return undefined
  const { name, plugins } = conflist as { name?: unknown; plugins?: unknown }
  if (!Array.isArray(plugins)) return undefined
  for (const [i, plugin] of plugins.entries()) {
    if (typeOf(plugin) !== CILIUM_PLUGIN_TYPE) continue
    const own = (plugin as Record<string, unknown>)["chaining-mode"]
    const known = CILIUM_CHAINING_MODES.join(", ")
    if (own !== undefined) {
      if (typeof own === "string" && CILIUM_CHAINING_MODES.includes(own)) continue
      return `plugins.${i} (${CILIUM_PLUGIN_TYPE}) has "chaining-mode": ${JSON.stringify(own)}, which cilium-cni has no chainer for (known: ${known}); set "chaining-mode": "generic-veth"`
    }
    if (typeof name === "string" && CILIUM_CHAINING_MODES.includes(name)) continue
    return `plugins.${i} (${CILIUM_PLUGIN_TYPE}) has no "chaining-mode" and the conflist's name ${JSON.stringify(name)} is not a chaining mode, so cilium-cni would fail every ADD ("CNI PrevResult supplied, but not in chaining mode"); add "chaining-mode": "generic-veth" to that entry`
  }
  return undefined
}

/**
 * The CNI config files in a directory listing that a runtime would load before `ours` (libcni sorts
 * the names as strings and uses the first it can load), in that order.
 */
export const conflistsBefore = (names: ReadonlyArray<string>, ours: string): ReadonlyArray<string> =>
  names.filter((n) => n !== ours && isCniConfFile(n) && n < ours).sort()
