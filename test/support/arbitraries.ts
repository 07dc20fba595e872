/**
 * fast-check generators for the laws: tenant sets whose marks reach the edges (1, the high bit
 * 0x80000000 and 0xffff1fff, the largest mark outside the reserved bits), configs writing marks and
 * masks as strings or JSON numbers, annotation values in every accepted spelling plus hostile ones,
 * pods. Unsigned arithmetic here uses BigInt, never the operators under test.
 */
import * as fc from "fast-check"
import { formatMark, RESERVED_BITS } from "../../src/domain/net/Mark.ts"

export interface TenantSpec {
  readonly name: string
  readonly mark: number
}

/** 0xffff1fff: every bit but the reserved ones, the largest mark and mask a config may use. */
export const MAX_FREE_MARK = (0xffffffff & ~RESERVED_BITS) >>> 0

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

/**
 * The plugin config for these tenants, each mark written as a string ("0x10") or, where
 * `asNumber` says so (one flag for all, or one per tenant), as a JSON number (16).
 */
export const tenantsConf = (
  tenants: ReadonlyArray<TenantSpec>,
  asNumber: boolean | ReadonlyArray<boolean> = false
) =>
  Object.fromEntries(
    tenants.map((t, i) => [
      t.name,
      { mark: (typeof asNumber === "boolean" ? asNumber : asNumber[i]) ? t.mark : formatMark(t.mark) }
    ])
  )

/** The tenants' config with marks randomly as strings or JSON numbers, tenant by tenant. */
export const tenantsConfArb = (tenants: ReadonlyArray<TenantSpec>) =>
  fc
    .array(fc.boolean(), { minLength: tenants.length, maxLength: tenants.length })
    .map((flags) => tenantsConf(tenants, flags))

/** The union of the tenants' marks, unsigned (what `markMask` defaults to, docs/DESIGN.md §2). */
export const unionOf = (tenants: ReadonlyArray<TenantSpec>): number =>
  tenants.reduce((m, t) => Number((BigInt(m) | BigInt(t.mark)) & 0xffffffffn), 0)

/**
 * An explicit `markMask` for these tenants, or none (the default, their union): a superset of the
 * union up to 0xffff1fff, written as a string or a JSON number.
 */
export const markMaskArb = (tenants: ReadonlyArray<TenantSpec>) =>
  fc.option(
    fc
      .tuple(
        fc.oneof(fc.constant(MAX_FREE_MARK), fc.constant(0), fc.integer({ min: 0, max: 0xffffffff })),
        fc.boolean()
      )
      .map(([extra, asNumber]) => {
        const mask = Number((BigInt(unionOf(tenants)) | BigInt(extra)) & BigInt(MAX_FREE_MARK))
        return { mask, wire: asNumber ? mask : formatMark(mask) }
      }),
    { nil: undefined }
  )

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
