/**
 * Firewall marks: parsing the literals people write in annotations and configs, and the mark bits
 * that other node components already own.
 *
 * Literals are hex (`0x10`, `0X0010`) or decimal (`16`). JSON numbers are accepted by the config
 * schema and arrive here as numbers. A mark is a 32-bit unsigned integer; 0 means "no mark" and is
 * never a tenant.
 */

/** Bits kube-proxy (iptables/ipvs modes) uses: 0x4000 masquerade, 0x8000 drop. */
export const KUBERNETES_BITS = 0xc000
/** Bit the CNI portmap plugin uses to request masquerading of hairpin traffic. */
export const PORTMAP_BITS = 0x2000
export const RESERVED_BITS = KUBERNETES_BITS | PORTMAP_BITS

/** Why a mark or mask may not be used (it touches bits kube-proxy or portmap own), if it may not. */
export const reservedBitsProblem = (bits: number): string | undefined => {
  const taken = and32(bits, RESERVED_BITS)
  return taken === 0
    ? undefined
    : `${formatMark(bits)} touches ${formatMark(taken)}, bits kube-proxy (0xc000) or portmap (0x2000) use`
}

export const MAX_MARK = 0xffffffff

const HEX = /^0[xX][0-9a-fA-F]+$/
const DEC = /^[0-9]+$/

/** The number a mark literal denotes, or undefined when it is not a literal (e.g. a tenant name). */
export const parseMarkLiteral = (text: string): number | undefined => {
  if (HEX.test(text)) {
    const digits = text.slice(2).replace(/^0+(?=.)/, "")
    return digits.length > 8 ? Number.POSITIVE_INFINITY : Number.parseInt(digits, 16)
  }
  if (DEC.test(text)) {
    const digits = text.replace(/^0+(?=.)/, "")
    return digits.length > 10 ? Number.POSITIVE_INFINITY : Number.parseInt(digits, 10)
  }
  return undefined
}

export const isMarkValue = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= MAX_MARK

/** Canonical text of a mark: `0x` and lowercase hex, as nft and iptables print it. */
export const formatMark = (mark: number): string => "0x" + (mark >>> 0).toString(16)

/** Bitwise helpers on unsigned 32-bit values (JS bit operators are signed). */
export const and32 = (a: number, b: number): number => (a & b) >>> 0
export const or32 = (a: number, b: number): number => (a | b) >>> 0
export const not32 = (a: number): number => ~a >>> 0
