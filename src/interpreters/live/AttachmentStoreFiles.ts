/**
 * The state records (src/domain/AttachmentStore.ts) as files: `<stateDir>/<network>/<containerId>/
 * <ifname>.json` (docs/DESIGN.md §4), directories 0700 and files 0600 (they name pods and tenants).
 *
 * A write is atomic (src/programs/atomicFile.ts): the JSON goes to `<ifname>.json:tmp-<random>` in the
 * same directory, is fsynced and renamed over the record, so a reader (or a reboot) sees the old
 * record or the new one, never a torn one. `:` cannot occur in an interface name
 * (CNI spec), so a temporary file names exactly one attachment and is never taken for a record.
 * remove deletes the record, that attachment's temporary files (left by a crash mid-write) and the
 * container directory once empty; the network directory stays (it is shared and cheap).
 *
 * Records are decoded with the AttachmentRecord Schema; one that cannot be read, does not decode, or
 * names another attachment than its path is a StateFailed naming the file for `read`, and for `list`
 * a `skipped` entry with that reason (AttachmentStore.ts): skipped and reported, never silently.
 * Path components are checked (no `/`, NUL, `.` or `..`), though the config and env decoders
 * already enforce the CNI character rules, since they become paths.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { StateFailed } from "../../domain/cni/Errors.ts"
import { AttachmentRecord } from "../../domain/datapath/AttachmentRecord.ts"
import {
  AttachmentStore,
  type RecordListing,
  type UnreadableRecord
} from "../../domain/datapath/AttachmentStore.ts"
import type { Attachment } from "../../domain/datapath/Owner.ts"
import { writeFileAtomic } from "../../programs/atomicFile.ts"

const RECORD = ".json"
const TMP = `${RECORD}:tmp-`

const RecordJson = Schema.fromJsonString(AttachmentRecord)
const fileServices = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer)

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code

const io = <A>(what: string, file: string, f: () => Promise<A>): Effect.Effect<A, StateFailed> =>
  Effect.tryPromise({
    try: f,
    catch: (e) => new StateFailed({ msg: `${what} ${file}: ${e instanceof Error ? e.message : String(e)}` })
  })

/** Like `io`, but the listed error codes give `fallback` instead of failing. */
const ioOr = <A, B>(
  what: string,
  file: string,
  codes: ReadonlyArray<string>,
  fallback: B,
  f: () => Promise<A>
) =>
  Effect.tryPromise({ try: f, catch: (e) => e }).pipe(
    Effect.catch((e) =>
      codes.includes(errno(e) ?? "")
        ? Effect.succeed(fallback)
        : Effect.fail(
            new StateFailed({ msg: `${what} ${file}: ${e instanceof Error ? e.message : String(e)}` })
          )
    )
  )

const badComponent = (s: string): boolean => s === "" || s === "." || s === ".." || /[/\0]/.test(s)

const dirOf = (stateDir: string, a: Attachment): Effect.Effect<string, StateFailed> =>
  [a.network, a.containerId, a.ifname].some(badComponent) || a.ifname.includes(":")
    ? Effect.fail(new StateFailed({ msg: `attachment ${JSON.stringify(a)} cannot name a state file` }))
    : Effect.succeed(path.join(stateDir, a.network, a.containerId))

const decodeFile = (
  file: string,
  text: string,
  a?: Attachment
): Effect.Effect<AttachmentRecord, StateFailed> =>
  Schema.decodeUnknownEffect(RecordJson)(text).pipe(
    Effect.mapError((e) => new StateFailed({ msg: `undecodable state record ${file}: ${e.message}` })),
    Effect.filterOrFail(
      (r) =>
        a === undefined ||
        (r.network === a.network && r.containerId === a.containerId && r.ifname === a.ifname),
      () => new StateFailed({ msg: `state record ${file} names another attachment` })
    )
  )

const readRecord = (file: string, a: Attachment): Effect.Effect<AttachmentRecord | undefined, StateFailed> =>
  ioOr("reading", file, ["ENOENT", "ENOTDIR"], undefined, () => fs.readFile(file, "utf8")).pipe(
    Effect.flatMap((text) => (text === undefined ? Effect.succeed(undefined) : decodeFile(file, text, a)))
  )

const write = (stateDir: string, record: AttachmentRecord): Effect.Effect<void, StateFailed> =>
  Effect.gen(function* () {
    const dir = yield* dirOf(stateDir, record)
    const file = path.join(dir, `${record.ifname}${RECORD}`)
    const text = `${yield* Schema.encodeEffect(RecordJson)(record).pipe(
      Effect.mapError((e) => new StateFailed({ msg: `unencodable state record for ${file}: ${e.message}` }))
    )}\n`
    yield* io("creating", dir, () => fs.mkdir(dir, { recursive: true, mode: 0o700 }))
    // One fsync per record, on the file: a power loss may bring back the previous record (the
    // runtime re-creates every pod after a reboot anyway), never a torn one.
    yield* writeFileAtomic(file, text, {
      mode: 0o600,
      tmpPrefix: `${record.ifname}${TMP}`,
      syncDirectory: false
    }).pipe(
      Effect.mapError((e) => new StateFailed({ msg: `writing ${file}: ${e.message}` })),
      Effect.provide(fileServices)
    )
  })

const remove = (stateDir: string, a: Attachment): Effect.Effect<void, StateFailed> =>
  Effect.gen(function* () {
    const dir = yield* dirOf(stateDir, a)
    const names = yield* ioOr("listing", dir, ["ENOENT", "ENOTDIR"], [] as Array<string>, () =>
      fs.readdir(dir)
    )
    const mine = names.filter((n) => n === `${a.ifname}${RECORD}` || n.startsWith(`${a.ifname}${TMP}`))
    yield* Effect.forEach(
      mine,
      (n) => io("removing", path.join(dir, n), () => fs.rm(path.join(dir, n), { force: true })),
      {
        discard: true
      }
    )
    // Only when empty: other interfaces of the same container keep their records. Another call
    // may write into it concurrently only without NodeLock, which every caller holds.
    yield* ioOr("removing", dir, ["ENOENT", "ENOTEMPTY", "EEXIST"], undefined, () => fs.rmdir(dir))
  })

const subdirs = (dir: string) =>
  ioOr("listing", dir, ["ENOENT", "ENOTDIR"], [] as Array<import("node:fs").Dirent>, () =>
    fs.readdir(dir, { withFileTypes: true })
  ).pipe(Effect.map((entries) => entries.filter((e) => e.isDirectory()).map((e) => e.name)))

const list = (stateDir: string, network: string | undefined): Effect.Effect<RecordListing, StateFailed> =>
  Effect.gen(function* () {
    if (network !== undefined && badComponent(network)) {
      return yield* new StateFailed({
        msg: `network ${JSON.stringify(network)} cannot name a state directory`
      })
    }
    const networks = network === undefined ? yield* subdirs(stateDir) : [network]
    const records: Array<AttachmentRecord> = []
    const skipped: Array<UnreadableRecord> = []
    for (const net of networks) {
      for (const containerId of yield* subdirs(path.join(stateDir, net))) {
        const dir = path.join(stateDir, net, containerId)
        const names = yield* ioOr("listing", dir, ["ENOENT", "ENOTDIR"], [] as Array<string>, () =>
          fs.readdir(dir)
        )
        for (const name of names.filter((n) => n.endsWith(RECORD) && !n.includes(":")).sort()) {
          const a = { network: net, containerId, ifname: name.slice(0, -RECORD.length) }
          const file = path.join(dir, name)
          const r = yield* Effect.result(readRecord(file, a))
          if (Result.isFailure(r)) skipped.push({ attachment: a, file, reason: r.failure.msg })
          else if (r.success !== undefined) records.push(r.success)
        }
      }
    }
    return { records, skipped }
  })

export const make = (): AttachmentStore["Service"] =>
  AttachmentStore.of({
    read: (stateDir, a) =>
      Effect.flatMap(dirOf(stateDir, a), (dir) => readRecord(path.join(dir, `${a.ifname}${RECORD}`), a)),
    write,
    remove,
    list
  })

export const layer: Layer.Layer<AttachmentStore> = Layer.sync(AttachmentStore, make)
