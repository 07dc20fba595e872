/**
 * Tenants and how annotation values name them (docs/DESIGN.md §3).
 *
 * A value is a tenant name or a mark literal equal to one tenant's mark. Values are trimmed and
 * refused beyond 64 characters before anything else looks at them, so a hostile annotation can only
 * ever produce a TenantRejected error quoting a bounded, JSON-escaped excerpt.
 */
import * as Result from "effect/Result"
import { TenantRejected } from "../cni/Errors.ts"
import { formatMark, parseMarkLiteral } from "../net/Mark.ts"

export interface Tenant {
  readonly name: string
  readonly mark: number
}

export const MAX_VALUE_LENGTH = 64

export const DEFAULT_TENANTS: ReadonlyArray<Tenant> = [
  { name: "tenant-a", mark: 0x10 },
  { name: "tenant-b", mark: 0x20 }
]

const describeKnown = (tenants: ReadonlyArray<Tenant>): ReadonlyArray<string> =>
  tenants.map((t) => `${t.name} (${formatMark(t.mark)})`)

const quote = (s: string): string =>
  JSON.stringify(s.length > MAX_VALUE_LENGTH ? `${s.slice(0, MAX_VALUE_LENGTH)}…` : s)

/** The tenant a value names, or a TenantRejected naming the known tenants. */
export const tenantOf = (
  tenants: ReadonlyArray<Tenant>,
  raw: string,
  where: string
): Result.Result<Tenant, TenantRejected> => {
  const value = raw.trim()
  const known = describeKnown(tenants)
  if (value.length > MAX_VALUE_LENGTH) {
    return Result.fail(
      new TenantRejected({
        msg: `${where}: value longer than ${MAX_VALUE_LENGTH} characters: ${quote(value)}`,
        known
      })
    )
  }
  const mark = parseMarkLiteral(value)
  const tenant = tenants.find((t) => (mark === undefined ? t.name === value : t.mark === mark))
  if (tenant !== undefined) return Result.succeed(tenant)
  return Result.fail(
    new TenantRejected({
      // The known tenants go in the error's details (CniError.ts), not here: runtimes show both.
      msg: `${where}: unknown tenant ${quote(value)}`,
      known
    })
  )
}
