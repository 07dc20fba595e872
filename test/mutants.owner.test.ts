/**
 * Owner tags at their edges: exactly 120 bytes stays plain and 121 is hashed, multi-byte owners
 * count bytes, every character outside the plain set hashes, and the tag recogniser's bounds
 * (hash lengths, hex case, part counts).
 */
import { describe, it } from "@effect/vitest"
import { assert } from "vitest"
import {
  belongsTo,
  isOwnerTag,
  legacyTag,
  MAX_TAG_BYTES,
  networkHash,
  ownerOf,
  ownerTag,
  parseTag,
  tagsOf
} from "../src/domain/datapath/Owner.ts"

/** An attachment whose plain owner is exactly `bytes` bytes long. */
const ofLength = (bytes: number) => {
  const fixed = "n//eth0".length
  return { network: "n", containerId: "c".repeat(bytes - fixed), ifname: "eth0" }
}

describe("owner tags at the edges", () => {
  it("an owner of exactly 120 bytes is its own tag; 121 bytes is hashed with a legacy form", () => {
    assert.strictEqual(MAX_TAG_BYTES, 120)
    const at = ofLength(120)
    assert.strictEqual(ownerOf(at).length, 120)
    assert.strictEqual(ownerTag(at), ownerOf(at))
    assert.isUndefined(legacyTag(at))
    assert.deepStrictEqual(tagsOf(at), [ownerOf(at)])
    assert.isTrue(isOwnerTag(ownerTag(at)))
    const over = ofLength(121)
    assert.match(ownerTag(over), /^h:[0-9a-f]{16}:[0-9a-f]{32}$/)
    assert.match(legacyTag(over)!, /^h:[0-9a-f]{32}$/)
    assert.deepStrictEqual(tagsOf(over), [ownerTag(over), legacyTag(over)!])
    assert.strictEqual(ownerTag(over).slice(2, 18), networkHash("n"))
    assert.strictEqual(ownerTag(over).slice(19), legacyTag(over)!.slice(2))
  })

  it("bytes, not characters, are counted: a short owner with multi-byte characters is hashed", () => {
    const a = { network: "né", containerId: "c", ifname: "eth0" }
    assert.match(ownerTag(a), /^h:/)
  })

  it("every character outside [A-Za-z0-9_./-] makes the tag hashed; each inside keeps it plain", () => {
    for (const ch of ["_", ".", "-", "A", "z", "0", "9"]) {
      const a = { network: `n${ch}`, containerId: "c", ifname: "eth0" }
      assert.strictEqual(ownerTag(a), `n${ch}/c/eth0`, ch)
    }
    for (const ch of [" ", ":", "@", "[", "`", "{", "~", "+"]) {
      const a = { network: `n${ch}`, containerId: "c", ifname: "eth0" }
      assert.match(ownerTag(a), /^h:[0-9a-f]{16}:[0-9a-f]{32}$/, ch)
    }
  })

  it("recognises only exact hash lengths in lower-case hex", () => {
    const h16 = "0123456789abcdef"
    const h32 = h16 + h16
    assert.isTrue(isOwnerTag(`h:${h16}:${h32}`))
    assert.isTrue(isOwnerTag(`h:${h32}`))
    assert.isFalse(isOwnerTag(`h:${h16}:${h32}0`))
    assert.isFalse(isOwnerTag(`h:${h16.slice(1)}:${h32}`))
    assert.isFalse(isOwnerTag(`h:${h32.toUpperCase()}`))
    assert.isFalse(isOwnerTag(`h:${h32.slice(1)}`))
    assert.isFalse(isOwnerTag(`x h:${h32}`))
    assert.isFalse(isOwnerTag(`h:${h32} `))
    assert.isFalse(isOwnerTag(""))
    assert.isFalse(isOwnerTag("c".repeat(121)))
    assert.isTrue(isOwnerTag("c".repeat(120)))
  })

  it("a plain tag needs exactly three non-empty parts", () => {
    assert.deepStrictEqual(parseTag("a/b/c"), {
      form: "plain",
      attachment: { network: "a", containerId: "b", ifname: "c" }
    })
    for (const t of ["a/b", "a/b/c/d", "/b/c", "a//c", "a/b/", "abc"]) assert.isUndefined(parseTag(t), t)
    assert.isUndefined(belongsTo("a/b", "a"))
    assert.isUndefined(belongsTo("not a tag", "a"))
  })
})
