/**
 * Who owns a netfilter entry: one attachment of one network. The tag is written into every rule
 * comment and set element, so DEL and GC remove exactly their own entries even after IP reuse.
 *
 * Never change this format: entries installed by an older version must still be found by a newer one.
 */
import { sha256Hex } from "../net/Sha256.ts"

export interface Attachment {
  readonly network: string
  readonly containerId: string
  readonly ifname: string
}

export const MAX_TAG_BYTES = 120

/** The plain owner, `<network>/<containerId>/<ifname>`. */
export const ownerOf = (a: Attachment): string => `${a.network}/${a.containerId}/${a.ifname}`

/**
 * The tag as written into the kernel: the owner itself when it is short and uses only
 * `[A-Za-z0-9_.-/]` (safe inside an iptables comment and an nft string), else `h:` and 32 hex digits
 * of its SHA-256.
 */
export const ownerTag = (a: Attachment): string => {
  const owner = ownerOf(a)
  const bytes = new TextEncoder().encode(owner).length
  return bytes <= MAX_TAG_BYTES && /^[A-Za-z0-9_./-]+$/.test(owner)
    ? owner
    : `h:${sha256Hex(owner).slice(0, 32)}`
}

/** The network a plain tag belongs to; undefined for hashed tags (their record knows). */
export const networkOfTag = (tag: string): string | undefined =>
  tag.startsWith("h:") ? undefined : tag.slice(0, Math.max(0, tag.indexOf("/"))) || undefined
