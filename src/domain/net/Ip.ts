/**
 * IP addresses as the kernel prints them. Pure parsing, because the domain must not import
 * node:net: an address is accepted only in a form we can normalise, and every address we compare
 * (from a CNI result, a state record, or an nft/iptables listing) goes through `canonicalIp` so that
 * `2001:DB8::0:1` and `2001:db8::1` are the same pod IP.
 */

export type Family = 4 | 6

export interface IpAddress {
  readonly family: Family
  /** RFC 5952 text for IPv6 (lowercase, longest zero run compressed), dotted quad for IPv4. */
  readonly text: string
}

const V4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/

const parseV4 = (s: string): IpAddress | undefined => (V4.test(s) ? { family: 4, text: s } : undefined)

/** The eight 16-bit groups of an IPv6 address (`::` and a trailing dotted quad allowed, no zone). */
export const parseV6Groups = (s: string): Array<number> | undefined => {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.length > 45) return undefined
  // An embedded IPv4 tail (::ffff:10.0.0.1) stands for the last two groups: parse it apart.
  const lastColon = s.lastIndexOf(":")
  const v4Tail = s.includes(".") ? parseV4(s.slice(lastColon + 1)) : undefined
  if (s.includes(".") && v4Tail === undefined) return undefined
  const body = v4Tail === undefined ? s : `${s.slice(0, lastColon + 1)}0:0`
  const halves = body.split("::")
  if (halves.length > 2) return undefined
  const group = (g: string) => (/^[0-9a-fA-F]{1,4}$/.test(g) ? Number.parseInt(g, 16) : Number.NaN)
  const side = (h: string | undefined) => (h === undefined || h === "" ? [] : h.split(":").map(group))
  const head = side(halves[0])
  const rest = side(halves[1])
  if (head.some(Number.isNaN) || rest.some(Number.isNaN)) return undefined
  const known = head.length + rest.length
  let groups: Array<number>
  if (halves.length === 2) {
    if (known > 7) return undefined
    groups = [...head, ...new Array<number>(8 - known).fill(0), ...rest]
  } else {
    if (known !== 8) return undefined
    groups = head
  }
  if (v4Tail !== undefined) {
    const o = v4Tail.text.split(".").map(Number) as [number, number, number, number]
    groups[6] = (o[0] << 8) | o[1]
    groups[7] = (o[2] << 8) | o[3]
  }
  return groups
}

const formatV6 = (groups: ReadonlyArray<number>): string => {
  // RFC 5952: compress the longest run of two or more zero groups, the first one on a tie.
  let best = -1
  let bestLen = 0
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen && j - i >= 2) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (best < 0) return hex.join(":")
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`
}

/** Parses an address without prefix length; undefined when it is not one. */
export const parseIp = (s: string): IpAddress | undefined => {
  if (s.includes(":")) {
    const groups = parseV6Groups(s)
    return groups === undefined ? undefined : { family: 6, text: formatV6(groups) }
  }
  return parseV4(s)
}

/** Parses `address/prefix` (the CNI result's form); the prefix must fit the family. */
export const parseCidr = (s: string): { readonly ip: IpAddress; readonly prefix: number } | undefined => {
  const slash = s.indexOf("/")
  if (slash < 0) return undefined
  const ip = parseIp(s.slice(0, slash))
  const p = s.slice(slash + 1)
  if (ip === undefined || !/^\d{1,3}$/.test(p)) return undefined
  const prefix = Number(p)
  return prefix <= (ip.family === 4 ? 32 : 128) ? { ip, prefix } : undefined
}

export const isIp = (s: string): boolean => parseIp(s) !== undefined
export const isCidr = (s: string): boolean => parseCidr(s) !== undefined

/** Canonical text of an address that is known to parse; the input itself otherwise. */
export const canonicalIp = (s: string): string => parseIp(s)?.text ?? s
