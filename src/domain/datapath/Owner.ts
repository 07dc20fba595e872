/**
 * Who owns a netfilter entry: one attachment of one network. The tag is written into every rule
 * comment and set element, so DEL and GC remove exactly their own entries even after IP reuse. This
 * file is the one place that makes, recognises and parses tags (docs/DESIGN.md §4); the backends
 * embed TAG_PATTERN in their parsers and refuse to render anything `isOwnerTag` rejects.
 *
 * Three forms, every one at most 120 bytes of `[A-Za-z0-9_./:-]` (an nft element comment holds at
 * most 128 bytes and an iptables comment 256; `:` and `/` are why iptables-save quotes hashed tags):
 * - plain `<network>/<containerId>/<ifname>` when the owner is at most 120 bytes of `[A-Za-z0-9_./-]`;
 * - hashed `h:<16 hex of sha256(network)>:<32 hex of sha256(owner)>` otherwise. The network part lets
 *   GC attribute an entry to its network without the attachment's record (a record deleted, or never
 *   written after a crash); a foreign network is mistaken for ours only if the two names share 64
 *   bits of SHA-256;
 * - legacy hashed `h:<32 hex of sha256(owner)>`, written by versions before the network part existed.
 *   Still recognised and removed (DEL computes it too), but it names no network: GC collects such an
 *   entry only through a record of its network that names it; one without a record is left for
 *   `doctor` to report, since it could belong to any network on the node.
 *
 * Never change these formats: entries installed by an older version must still be found by a newer one.
 */
import { sha256Hex } from "../net/Sha256.ts"

export interface Attachment {
  readonly network: string
  readonly containerId: string
  readonly ifname: string
}

export const MAX_TAG_BYTES = 120

const PLAIN_CHAR = "[A-Za-z0-9_./-]"
const PLAIN_CHARS = new RegExp(`^${PLAIN_CHAR}+$`)
const PLAIN = `${PLAIN_CHAR}{1,${MAX_TAG_BYTES}}`
const HASHED = "h:([0-9a-f]{16}):([0-9a-f]{32})"
const LEGACY_HASHED = "h:[0-9a-f]{32}"

/** Every owner tag, as regular-expression source without anchors or capturing groups. */
export const TAG_PATTERN = [HASHED, LEGACY_HASHED, PLAIN].map((p) => p.replace(/\((?!\?)/g, "(?:")).join("|")

const TAG = new RegExp(`^(?:${TAG_PATTERN})$`)
const HASHED_TAG = new RegExp(`^${HASHED}$`)
const LEGACY_TAG = new RegExp(`^${LEGACY_HASHED}$`)

/** Whether `s` is an owner tag in any of the three forms (safe to write into a batch). */
export const isOwnerTag = (s: string): boolean => TAG.test(s)

/** The plain owner, `<network>/<containerId>/<ifname>`. */
export const ownerOf = (a: Attachment): string => `${a.network}/${a.containerId}/${a.ifname}`

const ownerHash = (owner: string): string => sha256Hex(owner).slice(0, 32)

/** The network part of a hashed tag. */
export const networkHash = (network: string): string => sha256Hex(network).slice(0, 16)

const needsHash = (owner: string): boolean =>
  new TextEncoder().encode(owner).length > MAX_TAG_BYTES || !PLAIN_CHARS.test(owner)

/** The tag as written into the kernel now. */
export const ownerTag = (a: Attachment): string => {
  const owner = ownerOf(a)
  return needsHash(owner) ? `h:${networkHash(a.network)}:${ownerHash(owner)}` : owner
}

/** The tag versions before the network part gave this attachment (undefined: it was plain). */
export const legacyTag = (a: Attachment): string | undefined => {
  const owner = ownerOf(a)
  return needsHash(owner) ? `h:${ownerHash(owner)}` : undefined
}

/** Every tag this attachment's entries may carry, current first (DEL and GC match all of them). */
export const tagsOf = (a: Attachment): ReadonlyArray<string> => {
  const legacy = legacyTag(a)
  return legacy === undefined ? [ownerTag(a)] : [ownerTag(a), legacy]
}

export type ParsedTag =
  | { readonly form: "plain"; readonly attachment: Attachment }
  | { readonly form: "hashed"; readonly networkHash: string }
  | { readonly form: "legacy-hashed" }

/**
 * What a tag says about its owner; undefined for a string that is no tag of ours (a plain tag must
 * have three non-empty parts: none of network, container id or ifname may hold a `/`).
 */
export const parseTag = (tag: string): ParsedTag | undefined => {
  if (!TAG.test(tag)) return undefined
  const hashed = HASHED_TAG.exec(tag)
  if (hashed !== null) return { form: "hashed", networkHash: hashed[1] as string }
  if (LEGACY_TAG.test(tag)) return { form: "legacy-hashed" }
  const parts = tag.split("/")
  if (parts.length !== 3 || parts.some((p) => p === "")) return undefined
  const [network, containerId, ifname] = parts as [string, string, string]
  return { form: "plain", attachment: { network, containerId, ifname } }
}

/**
 * Whether the tag belongs to `network`: true or false for plain and hashed tags, undefined for
 * legacy hashed tags and strings that are no tag (only a record can tell).
 */
export const belongsTo = (tag: string, network: string): boolean | undefined => {
  const parsed = parseTag(tag)
  if (parsed === undefined || parsed.form === "legacy-hashed") return undefined
  return parsed.form === "plain"
    ? parsed.attachment.network === network
    : parsed.networkHash === networkHash(network)
}
