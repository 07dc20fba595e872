/**
 * Owner tags and the SHA-256 behind them: known answers for every form (so a changed format or a
 * hash of the wrong input fails here, not in a cluster after an upgrade), the FIPS 180-4 vectors,
 * and laws over generated attachments that crowd each other (same container and other ifname, long
 * ids sharing a 120-byte prefix, names one character apart).
 */
import { createHash } from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import {
  type Attachment,
  belongsTo,
  isOwnerTag,
  legacyTag,
  MAX_TAG_BYTES,
  ownerTag,
  parseTag,
  tagsOf
} from "../src/domain/datapath/Owner.ts"
import { sha256Hex } from "../src/domain/net/Sha256.ts"

describe("SHA-256 (FIPS 180-4 vectors)", () => {
  it("hashes the published messages to the published digests", () => {
    const vectors: ReadonlyArray<readonly [string, string]> = [
      ["", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
      ["abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
      [
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
      ],
      [
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
      ],
      ["a".repeat(1_000_000), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"]
    ]
    for (const [message, digest] of vectors) assert.strictEqual(sha256Hex(message), digest)
  })

  it("agrees with node:crypto on any UTF-8 text, across every padding boundary", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: "grapheme", maxLength: 300 }),
          fc.nat(200).map((n) => "x".repeat(n))
        ),
        (s) => {
          assert.strictEqual(sha256Hex(s), createHash("sha256").update(s, "utf8").digest("hex"))
        }
      )
    )
  })
})

describe("owner tags: known answers", () => {
  it("a short owner of [A-Za-z0-9_./-] is its own tag", () => {
    const a = { network: "tenant-routing", containerId: "abc", ifname: "eth0" }
    assert.strictEqual(ownerTag(a), "tenant-routing/abc/eth0")
    assert.deepStrictEqual(tagsOf(a), ["tenant-routing/abc/eth0"])
    assert.isUndefined(legacyTag(a))
    assert.deepStrictEqual(parseTag("tenant-routing/abc/eth0"), { form: "plain", attachment: a })
  })

  it("a long owner is h:<16 hex of sha256(network)>:<32 hex of sha256(owner)>; its legacy form h:<32 hex>", () => {
    const a = { network: "n", containerId: "a".repeat(200), ifname: "eth0" }
    assert.strictEqual(ownerTag(a), "h:1b16b1df538ba12d:10b36505c9c8d24d79d2316febb44abf")
    assert.strictEqual(legacyTag(a), "h:10b36505c9c8d24d79d2316febb44abf")
    assert.deepStrictEqual(tagsOf(a), [
      "h:1b16b1df538ba12d:10b36505c9c8d24d79d2316febb44abf",
      "h:10b36505c9c8d24d79d2316febb44abf"
    ])
  })

  it("an owner with a character outside the plain set is hashed, whatever its length", () => {
    const a = { network: "tenant-routing", containerId: "abc", ifname: "eth@0" }
    assert.strictEqual(ownerTag(a), "h:6c4e506b25346bb7:586b31bfe5cb93e55071b960ec2acf1f")
    assert.strictEqual(legacyTag(a), "h:586b31bfe5cb93e55071b960ec2acf1f")
  })

  it("the 120-byte bound: 120 stays plain, 121 is hashed", () => {
    const at = (n: number) => ({
      network: "n",
      containerId: "c".repeat(n - "n//eth0".length),
      ifname: "eth0"
    })
    assert.strictEqual(ownerTag(at(MAX_TAG_BYTES)), `n/${"c".repeat(113)}/eth0`)
    assert.match(ownerTag(at(MAX_TAG_BYTES + 1)), /^h:[0-9a-f]{16}:[0-9a-f]{32}$/)
  })

  it("parses every form and says which network a tag belongs to, when it can", () => {
    assert.deepStrictEqual(parseTag("h:1b16b1df538ba12d:10b36505c9c8d24d79d2316febb44abf"), {
      form: "hashed",
      networkHash: "1b16b1df538ba12d"
    })
    assert.deepStrictEqual(parseTag("h:10b36505c9c8d24d79d2316febb44abf"), { form: "legacy-hashed" })
    for (const notATag of [
      "",
      "abc",
      "a/b",
      "a//b",
      "h:xyz",
      "h:10b3",
      "a/b/c/d",
      "a b/c/d",
      `${"a".repeat(119)}/b/c`
    ])
      assert.isUndefined(parseTag(notATag), notATag)
    assert.isTrue(belongsTo("h:1b16b1df538ba12d:10b36505c9c8d24d79d2316febb44abf", "n"))
    assert.isFalse(belongsTo("h:1b16b1df538ba12d:10b36505c9c8d24d79d2316febb44abf", "m"))
    assert.isTrue(belongsTo("net-a/c1/eth0", "net-a"))
    assert.isFalse(belongsTo("net-a/c1/eth0", "net-b"))
    assert.isUndefined(belongsTo("h:10b36505c9c8d24d79d2316febb44abf", "n"))
  })
})

// Names as the CNI decoders admit them (CniEnv.ts, Config.ts), edges included.
const nameArb = fc.oneof(
  fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,20}$/),
  fc.stringMatching(/^[a-z0-9]{100,127}$/)
)
const containerIdArb = fc.oneof(
  fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,30}$/),
  fc.stringMatching(/^[a-f0-9]{64}$/),
  fc.stringMatching(/^[a-f0-9]{100,1023}$/)
)
const ifnameArb = fc.oneof(
  fc.constantFrom("eth0", "net1", "e", "eth@0", "é", "a.b", "123456789012345"),
  fc.stringMatching(/^[a-zA-Z0-9_.@-]{1,15}$/).filter((s) => s !== "." && s !== "..")
)
const attachmentArb: fc.Arbitrary<Attachment> = fc.record({
  network: nameArb,
  containerId: containerIdArb,
  ifname: ifnameArb
})

/** A second attachment as close to the first as the generator can make it. */
const neighbourArb = (a: Attachment): fc.Arbitrary<Attachment> =>
  fc.oneof(
    ifnameArb.map((ifname) => ({ ...a, ifname })),
    nameArb.map((network) => ({ ...a, network })),
    // Long ids that agree on their first 120 bytes, so no prefix of the owner tells them apart.
    fc
      .tuple(
        fc.stringMatching(/^[a-f0-9]{120}$/),
        fc.stringMatching(/^[a-f0-9]{1,40}$/),
        fc.stringMatching(/^[a-f0-9]{1,40}$/)
      )
      .chain(([prefix, x, y]) =>
        fc.constant([
          { ...a, containerId: prefix + x },
          { ...a, containerId: prefix + y }
        ])
      )
      .map(([, b]) => b),
    fc.constant({ ...a, containerId: `${a.containerId}0` }),
    fc.constant({ ...a, network: `${a.network}.` })
  )

const same = (a: Attachment, b: Attachment) =>
  a.network === b.network && a.containerId === b.containerId && a.ifname === b.ifname

describe("owner tags: laws", () => {
  it("distinct attachments always get distinct tags, and never one of the other's legacy tags", () => {
    fc.assert(
      fc.property(
        attachmentArb.chain((a) => fc.tuple(fc.constant(a), neighbourArb(a))),
        ([a, b]) => {
          fc.pre(!same(a, b))
          assert.notStrictEqual(ownerTag(a), ownerTag(b))
          assert.notInclude(tagsOf(b), ownerTag(a))
        }
      ),
      { numRuns: 500 }
    )
  })

  it("two long ids sharing a 120-byte prefix get distinct tags", () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[a-f0-9]{120}$/),
        fc.uniqueArray(fc.stringMatching(/^[a-f0-9]{1,8}$/), { minLength: 2, maxLength: 2 }),
        (prefix, [x, y]) => {
          const tag = (s: string) => ownerTag({ network: "net", containerId: prefix + s, ifname: "eth0" })
          assert.notStrictEqual(tag(x!), tag(y!))
        }
      )
    )
  })

  it("every tag is an owner tag of at most 120 bytes of [A-Za-z0-9_./:-] that belongs to its network", () => {
    fc.assert(
      fc.property(attachmentArb, (a) => {
        const tag = ownerTag(a)
        assert.isAtMost(new TextEncoder().encode(tag).length, MAX_TAG_BYTES)
        assert.match(tag, /^[A-Za-z0-9_./:-]+$/)
        assert.isTrue(isOwnerTag(tag))
        assert.isTrue(belongsTo(tag, a.network))
        const parsed = parseTag(tag)
        if (parsed?.form === "plain") assert.deepStrictEqual(parsed.attachment, a)
        else assert.strictEqual(parsed?.form, "hashed")
        for (const t of tagsOf(a)) assert.isTrue(isOwnerTag(t))
      }),
      { numRuns: 300 }
    )
  })

  it("any string, however hostile, yields a tag within the bound (the backends' comment limits)", () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 300 }),
        fc.string({ maxLength: 300 }),
        fc.string({ maxLength: 20 }),
        (network, containerId, ifname) => {
          const tag = ownerTag({ network, containerId, ifname })
          assert.isAtMost(new TextEncoder().encode(tag).length, MAX_TAG_BYTES)
          assert.isTrue(isOwnerTag(tag))
        }
      )
    )
  })
})
