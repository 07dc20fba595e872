/**
 * fast-check generators for the laws: tenant sets whose marks reach the edges (1 and the largest
 * mark outside the reserved bits), annotation values in every accepted spelling plus hostile ones,
 * pods, and operation sequences over two networks.
 */
import * as fc from "fast-check"
import { formatMark, RESERVED_BITS } from "../../src/domain/net/Mark.ts"

export interface TenantSpec {
  readonly name: string
  readonly mark: number
}

const MAX_FREE_MARK = (0xffffffff & ~RESERVED_BITS) >>> 0

export const markArb = fc.oneof(
  fc.constantFrom(1, 0x10, 0x20, MAX_FREE_MARK, 0x80000000, 0x1fff),
  fc.integer({ min: 1, max: 0xffffffff }).map((m) => (m & ~RESERVED_BITS) >>> 0 || 1)
)

export const tenantNameArb = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}[a-z0-9]$/)

export const tenantsArb: fc.Arbitrary<ReadonlyArray<TenantSpec>> = fc
  .uniqueArray(fc.record({ name: tenantNameArb, mark: markArb }), {
    minLength: 1,
    maxLength: 4,
    selector: (t) => t.name
  })
  .filter((ts) => new Set(ts.map((t) => t.mark)).size === ts.length)

/** The plugin config for these tenants (marks written as strings or numbers, randomly). */
export const tenantsConf = (tenants: ReadonlyArray<TenantSpec>, asNumber = false) =>
  Object.fromEntries(tenants.map((t) => [t.name, { mark: asNumber ? t.mark : formatMark(t.mark) }]))

/** Every spelling that names tenant `t`: name, hex (any case, leading zeros), decimal, padded. */
export const spellingArb = (t: TenantSpec): fc.Arbitrary<string> =>
  fc.oneof(
    fc.constant(t.name),
    fc.constant(formatMark(t.mark)),
    fc.constant(`0X${t.mark.toString(16).toUpperCase()}`),
    fc.constant(`0x000${t.mark.toString(16)}`),
    fc.constant(String(t.mark)),
    fc.constant(`  ${t.name}\t`)
  )

/** Values that name no tenant: unknown names, marks of nobody, empty, huge, injection attempts. */
export const hostileValueArb = fc.oneof(
  fc.constant(""),
  fc.constant("   "),
  fc.constant("0"),
  fc.constant("0x0"),
  fc.constant("4294967296"),
  fc.constant("0x1ffffffff"),
  fc.constant("x".repeat(65)),
  fc.constant("a".repeat(100_000)),
  fc.constant('tenant-a"; iptables -F; echo "'),
  fc.constant("$(reboot)"),
  fc.constant("tenant-a\nCOMMIT"),
  fc.string({ maxLength: 80 }).map((s) => `zz-${s}`)
)

export const containerIdArb = fc.stringMatching(/^[a-f0-9]{8,64}$/)
