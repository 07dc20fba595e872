/**
 * Replacing a file so that a reader (ip reading rt_tables, a runtime executing the plugin, CHECK
 * reading a state record) sees the old content or the new, never half, even across a crash: the bytes
 * go to a temporary file in the same directory, are synced, get exactly `mode` (the umask filters a
 * create's mode), and are renamed over the target; then the directory is synced so the rename is
 * durable. On failure the temporary file is removed. Every file this project writes goes through here.
 */
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Path from "effect/Path"
import type { PlatformError } from "effect/PlatformError"
import * as Random from "effect/Random"

export interface AtomicWriteOptions {
  readonly mode: number
  /** Mode of directories created on the way; none are created when undefined. */
  readonly dirMode?: number
  /**
   * Name of the temporary file before its random suffix (default `.<name>.trw-`), so an owner can
   * recognise and clean up what a crash left behind.
   */
  readonly tmpPrefix?: string
  /**
   * Also sync the directory, making the rename itself survive a power loss (default true). Without
   * it a crash may bring back the old file, never a torn one.
   */
  readonly syncDirectory?: boolean
}

/** The content written by `fill` into the open temporary file (e.g. streamed from another file). */
export const replaceFileAtomic = <E, R>(
  path: string,
  options: AtomicWriteOptions,
  fill: (file: FileSystem.File) => Effect.Effect<void, E, R>
): Effect.Effect<void, PlatformError | E, FileSystem.FileSystem | Path.Path | R> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    const dir = paths.dirname(path)
    const suffix = ((yield* Random.nextInt) >>> 0).toString(36)
    const tmp = paths.join(dir, `${options.tmpPrefix ?? `.${paths.basename(path)}.trw-`}${suffix}`)
    if (options.dirMode !== undefined)
      yield* fs.makeDirectory(dir, { recursive: true, mode: options.dirMode })
    yield* Effect.scoped(
      Effect.gen(function* () {
        const file = yield* fs.open(tmp, { flag: "wx", mode: options.mode })
        yield* fill(file)
        yield* file.sync
      })
    ).pipe(
      Effect.andThen(fs.chmod(tmp, options.mode)),
      Effect.andThen(fs.rename(tmp, path)),
      Effect.onError(() => fs.remove(tmp, { force: true }).pipe(Effect.ignore))
    )
    if (options.syncDirectory !== false)
      yield* Effect.scoped(Effect.flatMap(fs.open(dir, { flag: "r" }), (d) => d.sync))
  })

/** `content` written whole. */
export const writeFileAtomic = (
  path: string,
  content: Uint8Array | string,
  options: AtomicWriteOptions
): Effect.Effect<void, PlatformError, FileSystem.FileSystem | Path.Path> =>
  replaceFileAtomic(path, options, (file) =>
    file.writeAll(typeof content === "string" ? new TextEncoder().encode(content) : content)
  )
