/**
 * AttachmentStoreFiles on a real file system (a temporary directory per law): the shared contract,
 * then what only files have: the layout and modes of docs/DESIGN.md §4, undecodable records, leftover
 * temporary files, hostile path components, and concurrent writers.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { AttachmentStore } from "../src/domain/datapath/AttachmentStore.ts"
import * as AttachmentStoreFiles from "../src/interpreters/live/AttachmentStoreFiles.ts"
import { attachment, attachmentStoreContract, record } from "./conformance/attachmentStoreContract.ts"

const root = mkdtempSync(path.join(tmpdir(), "trw-store-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let n = 0
const stateDir = () => path.join(root, `s${n++}`, "state")

attachmentStoreContract("files", () => AttachmentStoreFiles.layer, {
  stateDir,
  corrupt: (dir, a, text) => {
    mkdirSync(path.join(dir, a.network, a.containerId), { recursive: true, mode: 0o700 })
    writeFileSync(path.join(dir, a.network, a.containerId, `${a.ifname}.json`), text, { mode: 0o600 })
  }
})

const withStore = <A, E>(f: (store: AttachmentStore["Service"], dir: string) => Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    return yield* f(yield* AttachmentStore, stateDir())
  }).pipe(Effect.provide(AttachmentStoreFiles.layer))

const mode = (p: string) => statSync(p).mode & 0o777

describe("AttachmentStoreFiles", () => {
  it.effect(
    "writes <stateDir>/<network>/<containerId>/<ifname>.json, dirs 0700, file 0600, no temp left",
    () =>
      withStore((store, dir) =>
        Effect.gen(function* () {
          const a = attachment("net-a", "c1", "eth0")
          yield* store.write(dir, record(a))
          const file = path.join(dir, "net-a", "c1", "eth0.json")
          assert.strictEqual(mode(file), 0o600)
          for (const d of [dir, path.join(dir, "net-a"), path.join(dir, "net-a", "c1")])
            assert.strictEqual(mode(d), 0o700)
          assert.deepStrictEqual(readdirSync(path.join(dir, "net-a", "c1")), ["eth0.json"])
        })
      )
  )

  it.effect("an undecodable record is StateFailed naming the file for read, and set aside by list", () =>
    withStore((store, dir) =>
      Effect.gen(function* () {
        const a = attachment("net-a", "c1", "eth0")
        yield* store.write(dir, record(a))
        const file = path.join(dir, "net-a", "c1", "eth0.json")
        writeFileSync(file, '{"owner": 1}')
        const read = yield* Effect.flip(store.read(dir, a))
        assert.include(read.msg, file)
        assert.strictEqual(read.code, 101)
        const listed = yield* store.list(dir, "net-a")
        assert.deepStrictEqual(listed.records, [])
        assert.strictEqual(listed.skipped[0]?.file, file)
        assert.include(listed.skipped[0]?.reason, file)
        writeFileSync(file, "not json")
        assert.include((yield* Effect.flip(store.read(dir, a))).msg, file)
      })
    )
  )

  it.effect("a record whose content names another attachment is refused", () =>
    withStore((store, dir) =>
      Effect.gen(function* () {
        const original = record(attachment("net-a", "c1", "eth0"))
        yield* store.write(dir, original)
        mkdirSync(path.join(dir, "net-a", "c2"))
        const copy = path.join(dir, "net-a", "c2", "eth0.json")
        writeFileSync(copy, JSON.stringify(original))
        const listed = yield* store.list(dir, "net-a")
        assert.deepStrictEqual(listed.records, [original])
        assert.strictEqual(listed.skipped[0]?.file, copy)
        assert.include(listed.skipped[0]?.reason, "another attachment")
        assert.include((yield* Effect.flip(store.read(dir, attachment("net-a", "c2", "eth0")))).msg, copy)
      })
    )
  )

  it.effect("remove deletes the record, that attachment's temp files, and the container dir once empty", () =>
    withStore((store, dir) =>
      Effect.gen(function* () {
        const eth0 = attachment("net-a", "c1", "eth0")
        const net1 = attachment("net-a", "c1", "net1")
        yield* store.write(dir, record(eth0))
        yield* store.write(dir, record(net1))
        const cdir = path.join(dir, "net-a", "c1")
        // Left by writers that crashed before their rename.
        writeFileSync(path.join(cdir, "eth0.json:tmp-dead01"), "{")
        writeFileSync(path.join(cdir, "net1.json:tmp-dead02"), "{")
        assert.strictEqual((yield* store.list(dir, "net-a")).records.length, 2, "temp files are not records")
        yield* store.remove(dir, eth0)
        assert.deepStrictEqual(readdirSync(cdir).sort(), ["net1.json", "net1.json:tmp-dead02"])
        yield* store.remove(dir, net1)
        assert.deepStrictEqual(readdirSync(path.join(dir, "net-a")), [])
      })
    )
  )

  it.effect("path components that could escape the state directory are refused", () =>
    withStore((store, dir) =>
      Effect.gen(function* () {
        for (const a of [
          attachment("..", "c1"),
          attachment("net-a", "../../etc"),
          attachment("net-a", "c1", "eth0/x"),
          attachment("net-a", "c1", "eth:0"),
          attachment("net-a", "")
        ]) {
          assert.strictEqual((yield* Effect.flip(store.write(dir, record(a))))._tag, "StateFailed")
          assert.strictEqual((yield* Effect.flip(store.read(dir, a)))._tag, "StateFailed")
        }
        assert.strictEqual((yield* Effect.flip(store.list(dir, "..")))._tag, "StateFailed")
      })
    )
  )

  it.effect("concurrent writers of one record leave one whole record and no temp files", () =>
    withStore((store, dir) =>
      Effect.gen(function* () {
        const a = attachment("net-a", "c1", "eth0")
        const versions = Array.from({ length: 20 }, (_, i) => record(a, "tenant-a", [`10.0.0.${i + 1}/24`]))
        yield* Effect.forEach(versions, (r) => store.write(dir, r), {
          concurrency: "unbounded",
          discard: true
        })
        const final = yield* store.read(dir, a)
        assert.isTrue(versions.some((v) => JSON.stringify(v) === JSON.stringify(final)))
        assert.deepStrictEqual(readdirSync(path.join(dir, "net-a", "c1")), ["eth0.json"])
      })
    )
  )
})
