/**
 * What `doctor` reports (docs/DESIGN.md §7): one named result per check and subject (ok / warn / fail,
 * a one-line reason, a one-line hint), and the exit code and summary they add up to. The checks that
 * produce them are the other files of this folder; `Diagnose.ts` runs them all in a fixed order.
 */

export type Status = "ok" | "warn" | "fail"

export type CheckName =
  | "config"
  | "backend"
  | "tenant-rule"
  | "suppress-rule"
  | "tenant-route"
  | "rp-filter"
  | "stale-entries"
  | "stale-records"
  | "unknown-marks"
  | "mark-clash"
  | "cilium-host-routing"
  | "cni-chaining"
  | "namespace-read"

export interface CheckResult {
  readonly check: CheckName
  /** What the result is about: a tenant (`tenant-a/ipv4`), an interface, a mark user; "" for the node. */
  readonly subject: string
  readonly status: Status
  /** One line: what was found. */
  readonly reason: string
  /** One line: what to do about it; "" when ok. */
  readonly hint: string
}

export const result = (
  check: CheckName,
  subject: string,
  status: Status,
  reason: string,
  hint = ""
): CheckResult => ({ check, subject, status, reason, hint: status === "ok" ? "" : hint })

/** 1 when any check failed, else 0 (warnings alone do not fail doctor). */
export const exitCodeOf = (results: ReadonlyArray<CheckResult>): number =>
  results.some((r) => r.status === "fail") ? 1 : 0

export const summaryOf = (results: ReadonlyArray<CheckResult>): Readonly<Record<Status, number>> => ({
  ok: results.filter((r) => r.status === "ok").length,
  warn: results.filter((r) => r.status === "warn").length,
  fail: results.filter((r) => r.status === "fail").length
})
