/**
 * Who still holds this plugin on a node, for `uninstall` (docs/DESIGN.md §7): every attachment
 * with a state record is a pod whose DEL may still run our executables, so they stay until none is
 * left (or `--force`). The record names network/containerId/ifname; the pod's name comes from
 * libcni's result cache (`/var/lib/cni/results/<network>-<containerId>-<ifname>`, written by the
 * runtime on ADD with the CNI_ARGS it passed), when the runtime keeps one.
 */
import type { Attachment } from "../datapath/Owner.ts"

export interface Holder extends Attachment {
  /** `namespace/name`, when the runtime's cache names the pod. */
  readonly pod: string | undefined
  readonly tenant: string | null
  readonly ips: ReadonlyArray<string>
  /** Set when the record could not be read: the attachment still holds the executables. */
  readonly unreadable?: string
}

/** libcni's result cache file name of an attachment. */
export const cacheFileName = (a: Attachment): string => `${a.network}-${a.containerId}-${a.ifname}`

/** `namespace/name` from a libcni cache entry's `cniArgs` (`[["K8S_POD_NAME","x"], ...]`), if there. */
export const podOfCacheEntry = (entry: unknown): string | undefined => {
  const args = (entry as { cniArgs?: unknown } | null)?.cniArgs
  if (!Array.isArray(args)) return undefined
  const value = (key: string) => {
    const pair = args.find((p) => Array.isArray(p) && p[0] === key) as [string, unknown] | undefined
    return typeof pair?.[1] === "string" && pair[1] !== "" ? pair[1] : undefined
  }
  const name = value("K8S_POD_NAME")
  if (name === undefined) return undefined
  const namespace = value("K8S_POD_NAMESPACE")
  return namespace === undefined ? name : `${namespace}/${name}`
}

/** One line per holder: `pod ns/name (network/containerId/ifname, tenant t, 10.0.0.5)`. */
export const describeHolder = (h: Holder): string => {
  const where = `${h.network}/${h.containerId}/${h.ifname}`
  if (h.unreadable !== undefined) return `${where} (record unreadable: ${h.unreadable})`
  const details = [where, `tenant ${h.tenant ?? "none"}`, ...h.ips].join(", ")
  return h.pod === undefined ? details : `pod ${h.pod} (${details})`
}
