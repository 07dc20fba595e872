/**
 * The laws every AttachmentStore interpreter obeys, run against the memory store and the files
 * store (in a temporary directory), so programs tested on memory behave the same on disk.
 * Each law gets a fresh layer and a fresh state directory.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Layer, Result } from "effect"
import type { StateFailed } from "../../src/domain/cni/Errors.ts"
import { type AttachmentRecord, makeRecord } from "../../src/domain/datapath/AttachmentRecord.ts"
import { AttachmentStore } from "../../src/domain/datapath/AttachmentStore.ts"
import type { Attachment } from "../../src/domain/datapath/Owner.ts"

export interface AttachmentStoreContractOptions {
  /** A state directory for one law (a fresh temporary directory for the files store). */
  readonly stateDir: () => string
  /** Puts `text` where the attachment's record belongs (a torn file, a stray writer), in the current layer. */
  readonly corrupt: (stateDir: string, a: Attachment, text: string) => void
}

/** What can stand in a record's place: empty, torn, not JSON, not a record, another attachment's. */
export const CORRUPTIONS: ReadonlyArray<readonly [string, (a: Attachment) => string]> = [
  ["empty", () => ""],
  ["torn", (a) => JSON.stringify(record(a)).slice(0, 40)],
  ["not JSON", () => "not json"],
  ["not a record", () => '{"owner": 1}'],
  ["another attachment's", (a) => JSON.stringify(record({ ...a, containerId: `${a.containerId}x` }))]
]

export const attachment = (network: string, containerId: string, ifname = "eth0"): Attachment => ({
  network,
  containerId,
  ifname
})

export const record = (
  a: Attachment,
  tenant: string | null = "tenant-a",
  ips = ["10.0.0.5/24"]
): AttachmentRecord =>
  makeRecord(a, tenant === null ? null : { name: tenant, mark: 0x10 }, 0x30, ips, "nftables")

const byOwner = (l: ReadonlyArray<AttachmentRecord>) => [...l].sort((x, y) => x.owner.localeCompare(y.owner))

export const attachmentStoreContract = (
  name: string,
  makeLayer: () => Layer.Layer<AttachmentStore>,
  opts: AttachmentStoreContractOptions
) =>
  describe(`AttachmentStore contract: ${name}`, () => {
    const law = (
      title: string,
      body: (store: AttachmentStore["Service"], dir: string) => Effect.Effect<void, StateFailed>
    ) =>
      it.effect(title, () =>
        Effect.gen(function* () {
          yield* body(yield* AttachmentStore, opts.stateDir())
        }).pipe(Effect.provide(makeLayer()))
      )

    const a = attachment("net-a", "c0ffee", "eth0")

    law("a record never written reads as absent; an empty store lists nothing", (store, dir) =>
      Effect.gen(function* () {
        assert.isUndefined(yield* store.read(dir, a))
        assert.deepStrictEqual((yield* store.list(dir, undefined)).records, [])
        assert.deepStrictEqual((yield* store.list(dir, "net-a")).records, [])
      })
    )

    law("write then read gives the record back", (store, dir) =>
      Effect.gen(function* () {
        const r = record(a, "tenant-a", ["10.0.0.5/24", "fd00::5/64"])
        yield* store.write(dir, r)
        assert.deepStrictEqual(yield* store.read(dir, a), r)
      })
    )

    law("an untagged record (tenant and mark null) round-trips", (store, dir) =>
      Effect.gen(function* () {
        const r = record(a, null)
        yield* store.write(dir, r)
        assert.deepStrictEqual(yield* store.read(dir, a), r)
      })
    )

    law("a second write replaces the first", (store, dir) =>
      Effect.gen(function* () {
        yield* store.write(dir, record(a, "tenant-a"))
        const second = record(a, "tenant-b", ["10.0.0.9/24"])
        yield* store.write(dir, second)
        assert.deepStrictEqual(yield* store.read(dir, a), second)
        assert.deepStrictEqual((yield* store.list(dir, undefined)).records, [second])
      })
    )

    law("remove then read is absent; removing an absent record succeeds", (store, dir) =>
      Effect.gen(function* () {
        yield* store.write(dir, record(a))
        yield* store.remove(dir, a)
        assert.isUndefined(yield* store.read(dir, a))
        yield* store.remove(dir, a)
        yield* store.remove(dir, attachment("never", "written"))
        assert.deepStrictEqual((yield* store.list(dir, undefined)).records, [])
      })
    )

    law("removing one interface keeps the container's other interfaces", (store, dir) =>
      Effect.gen(function* () {
        const eth0 = record(attachment("net-a", "c1", "eth0"))
        const net1 = record(attachment("net-a", "c1", "net1"))
        yield* store.write(dir, eth0)
        yield* store.write(dir, net1)
        yield* store.remove(dir, attachment("net-a", "c1", "eth0"))
        assert.deepStrictEqual((yield* store.list(dir, "net-a")).records, [net1])
      })
    )

    law("list names exactly one network's records, or every network's", (store, dir) =>
      Effect.gen(function* () {
        const rs = [
          record(attachment("net-a", "c1")),
          record(attachment("net-a", "c2", "net1")),
          record(attachment("net-b", "c1")),
          record(attachment("net-b", "c3"), null)
        ]
        yield* Effect.forEach(rs, (r) => store.write(dir, r), { discard: true })
        assert.deepStrictEqual(byOwner((yield* store.list(dir, "net-a")).records), byOwner(rs.slice(0, 2)))
        assert.deepStrictEqual(byOwner((yield* store.list(dir, "net-b")).records), byOwner(rs.slice(2)))
        assert.deepStrictEqual(byOwner((yield* store.list(dir, undefined)).records), byOwner(rs))
        assert.deepStrictEqual((yield* store.list(dir, "net-c")).records, [])
      })
    )

    law("records of long names (hashed owner tags) round-trip", (store, dir) =>
      Effect.gen(function* () {
        const long = attachment("n".repeat(60), "f".repeat(64), "eth0")
        const r = record(long)
        assert.isTrue(r.tag.startsWith("h:"))
        yield* store.write(dir, r)
        assert.deepStrictEqual(yield* store.read(dir, long), r)
        assert.deepStrictEqual((yield* store.list(dir, long.network)).records, [r])
      })
    )

    for (const [kind, text] of CORRUPTIONS) {
      law(
        `an unreadable record (${kind}) is set aside by list with its reason, the rest listed; read of it fails naming it`,
        (store, dir) =>
          Effect.gen(function* () {
            const bad = attachment("net-a", "c-bad", "eth0")
            const good = [record(attachment("net-a", "c1")), record(attachment("net-a", "c-bad", "net1"))]
            yield* Effect.forEach(good, (r) => store.write(dir, r), { discard: true })
            opts.corrupt(dir, bad, text(bad))
            for (const network of ["net-a", undefined]) {
              const listing = yield* store.list(dir, network)
              assert.deepStrictEqual(byOwner(listing.records), byOwner(good))
              assert.strictEqual(listing.skipped.length, 1)
              const [u] = listing.skipped
              assert.deepStrictEqual(u!.attachment, bad)
              assert.include(u!.file, "c-bad")
              assert.include(u!.file, "eth0.json")
              assert.match(u!.reason, kind === "another attachment's" ? /another attachment/ : /undecodable/)
            }
            assert.deepStrictEqual(yield* store.list(dir, "net-b"), { records: [], skipped: [] })
            const read = yield* Effect.result(store.read(dir, bad))
            assert.isTrue(Result.isFailure(read), "reading an unreadable record fails")
            if (Result.isFailure(read)) assert.include(read.failure.msg, "c-bad")
          })
      )
    }

    law("a write replaces an unreadable record; remove takes it away", (store, dir) =>
      Effect.gen(function* () {
        const bad = attachment("net-a", "c-bad", "eth0")
        opts.corrupt(dir, bad, "")
        const r = record(bad)
        yield* store.write(dir, r)
        assert.deepStrictEqual(yield* store.list(dir, "net-a"), { records: [r], skipped: [] })
        opts.corrupt(dir, bad, "{")
        yield* store.remove(dir, bad)
        assert.deepStrictEqual(yield* store.list(dir, undefined), { records: [], skipped: [] })
        assert.isUndefined(yield* store.read(dir, bad))
      })
    )

    law("stores under different state directories are independent", (store, dir) =>
      Effect.gen(function* () {
        const other = opts.stateDir()
        yield* store.write(dir, record(a, "tenant-a"))
        assert.isUndefined(yield* store.read(other, a))
        assert.deepStrictEqual((yield* store.list(other, undefined)).records, [])
      })
    )
  })
