/**
 * The `stale-entries`, `stale-records` and `unknown-marks` checks: the netfilter entries of both
 * backends against the attachments' state records. Entries without a record warn (harmless until ADD
 * reuses the IP, which then removes them; legacy hashed ones separately, since GC cannot collect
 * them), and so do unreadable records that the store skipped; records of tagged attachments whose entry is missing fail
 * (such a pod's egress is not tenant-routed); entries whose mark no tenant has fail (no rule routes
 * them). Doctor takes no node lock, so an ADD or DEL running meanwhile can show here: run it again.
 */
import { BACKENDS } from "../cni/Config.ts"
import { parseTag } from "../datapath/Owner.ts"
import { canonicalIp } from "../net/Ip.ts"
import { formatMark } from "../net/Mark.ts"
import { type CheckResult, result } from "./CheckResult.ts"
import { type DoctorFacts, isUnreadable } from "./Facts.ts"

const EXAMPLES = 3
const examples = (items: ReadonlyArray<string>): string =>
  items.slice(0, EXAMPLES).join(", ") +
  (items.length > EXAMPLES ? ` and ${items.length - EXAMPLES} more` : "")

export const staleChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const out: Array<CheckResult> = []
  const stateDir = facts.config.plugin?.stateDir ?? "the state directory"
  const listed = BACKENDS.flatMap((b) => {
    const e = facts.entries[b]
    return isUnreadable(e) ? [] : e.map((entry) => ({ backend: b, entry }))
  })
  for (const b of BACKENDS) {
    const e = facts.entries[b]
    if (isUnreadable(e))
      out.push(
        result("stale-entries", b, "warn", `cannot list ${b} entries: ${e.unreadable}`, "run doctor as root")
      )
  }
  const records = facts.records
  if (isUnreadable(records)) {
    out.push(
      result(
        "stale-records",
        "",
        "warn",
        `cannot read the state records in ${stateDir}: ${records.unreadable}`,
        "run doctor as root"
      )
    )
  } else {
    const tags = new Set(records.map((r) => r.tag))
    const withoutRecord = listed.filter(({ entry }) => !tags.has(entry.owner))
    // Legacy hashed tags name no network, so GC cannot collect them without a record (Owner.ts).
    const legacy = withoutRecord.filter(({ entry }) => parseTag(entry.owner)?.form === "legacy-hashed")
    const orphans = withoutRecord.filter((o) => !legacy.includes(o))
    if (legacy.length > 0)
      out.push(
        result(
          "stale-entries",
          "",
          "warn",
          `${legacy.length} entries of an older version's hashed tags without a record: ${examples(legacy.map(({ backend, entry }) => `${backend} ${entry.ip} ${formatMark(entry.mark)} ${entry.owner}`))}`,
          "GC cannot tell their network, so it leaves them; ADD removes any on an IP it reuses; if no pod owns the IP, remove the entry by hand"
        )
      )
    const bad = facts.unreadableRecords ?? []
    if (bad.length > 0)
      out.push(
        result(
          "stale-records",
          "",
          "warn",
          `${bad.length} unreadable state records skipped: ${examples(bad.map((u) => `${u.file} (${u.reason})`))}`,
          "GC removes one once its pod is gone, ADD rewrites it and DEL removes it; CHECK of that pod fails until then"
        )
      )
    out.push(
      orphans.length === 0
        ? result(
            "stale-entries",
            "",
            "ok",
            `${listed.length - legacy.length} entries, each with its attachment's record`
          )
        : result(
            "stale-entries",
            "",
            "warn",
            `${orphans.length} entries without a record: ${examples(orphans.map(({ backend, entry }) => `${backend} ${entry.ip} ${formatMark(entry.mark)} ${entry.owner}`))}`,
            "left by a DEL that never ran; the runtime's CNI GC removes them, and ADD removes any on an IP it reuses"
          )
    )
    const missing = records.flatMap((r) =>
      r.mark === null
        ? []
        : r.ips
            .filter(
              (ip) =>
                !listed.some(
                  ({ entry }) =>
                    entry.owner === r.tag && entry.mark === r.mark && entry.ip === canonicalIp(ip)
                )
            )
            .map((ip) => `${r.owner} ${ip} ${r.tenant ?? "?"} ${formatMark(r.mark as number)}`)
    )
    out.push(
      missing.length === 0
        ? result(
            "stale-records",
            "",
            "ok",
            `${records.filter((r) => r.mark !== null).length} tagged attachments, each with its entries`
          )
        : result(
            "stale-records",
            "",
            "fail",
            `${missing.length} tagged pod IPs without their entry: ${examples(missing)}; if the pod still runs, its egress is not tenant-routed`,
            "restart the pod (CNI CHECK reports it as drift); a record that outlived its pod goes with the runtime's CNI GC"
          )
    )
  }
  const marks = new Set(facts.config.source.tenants.map((t) => t.mark))
  const unknown = listed.filter(({ entry }) => !marks.has(entry.mark))
  const unknownMarks = [...new Set(unknown.map(({ entry }) => entry.mark))].map(formatMark)
  out.push(
    unknown.length === 0
      ? result("unknown-marks", "", "ok", `every entry carries a tenant's mark`)
      : result(
          "unknown-marks",
          "",
          "fail",
          `${unknown.length} entries carry marks no tenant has (${unknownMarks.join(", ")}): ${examples(unknown.map(({ backend, entry }) => `${backend} ${entry.ip} ${entry.owner}`))}; no rule routes them`,
          "restart those pods under the current tenants, or give the mark back to a tenant"
        )
  )
  return out
}
