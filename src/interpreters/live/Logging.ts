/**
 * Where one CNI call's log lines go: JSON lines appended to `logFile`, or to stderr when no file is
 * configured or it cannot be opened. Never stdout (docs/DESIGN.md §1: stdout carries only the CNI
 * result), which is why this replaces Effect's default logger (it writes with console.log).
 *
 * Each call is its own short-lived process, so the file is opened per call with O_APPEND: every line
 * is one `write(2)`, and the kernel appends concurrent writers' lines whole, without interleaving.
 * Lines are written synchronously rather than batched, so nothing is lost when the process exits
 * right after its result is printed, and no flush timer delays that exit.
 *
 * Rotation: at the start of a call, a file larger than `logMaxBytes` is renamed to `<logFile>.1`
 * (replacing the previous one), once. Two calls may race here; the check that the path still names
 * the file we measured keeps the window tiny, and the worst case is one lost `.1` generation, never a
 * corrupt line. The file is created with mode 0600 (logs name pods and tenants, not secrets, but
 * there is no reason for other users to read them); an existing file keeps its mode.
 */
import { closeSync, fstatSync, mkdirSync, openSync, renameSync, statSync, writeSync } from "node:fs"
import { dirname } from "node:path"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as LogLevel from "effect/LogLevel"
import * as References from "effect/References"
import * as Result from "effect/Result"
// The settings come from the call's config; dispatch owns their shape (type-only: nothing loaded).
import type { LogSettings } from "../../programs/dispatch.ts"

const LEVELS: Record<LogSettings["logLevel"], LogLevel.LogLevel> = {
  debug: "Debug",
  info: "Info",
  warn: "Warn",
  error: "Error"
}

/** Writes every line whole, even when the kernel accepts a write partially. */
const writeLine = (fd: number, line: string) => {
  const bytes = Buffer.from(line + "\n", "utf8")
  let off = 0
  while (off < bytes.length) off += writeSync(fd, bytes, off)
}

/** An open descriptor; `fd` becomes undefined once closed, so a late line can never reach a reused fd. */
interface Sink {
  fd: number | undefined
}

/** The logger for a descriptor; a failing write is dropped: logging must never fail a call. */
const jsonTo = (sink: Sink) =>
  Logger.map(Logger.formatJson, (line) => {
    if (sink.fd === undefined) return
    try {
      writeLine(sink.fd, line)
    } catch {
      // Disk full or the fd gone: the CNI result matters more than its log line.
    }
  })

const stderrJson = jsonTo({ fd: 2 })

/** Rotates once if the file at `path` is over `maxBytes`; errors (e.g. no file yet) mean nothing to do. */
const rotateIfLarge = (path: string, maxBytes: number) => {
  try {
    const fd = openSync(path, "r")
    try {
      const measured = fstatSync(fd)
      if (measured.size <= maxBytes) return
      // Another call may have rotated it since; only move the very file we measured.
      const now = statSync(path)
      if (now.ino === measured.ino && now.dev === measured.dev) renameSync(path, `${path}.1`)
    } finally {
      closeSync(fd)
    }
  } catch {
    // Missing file, or a concurrent rotation won the race: either way there is nothing to rotate.
  }
}

/** Opens (creating 0600, and a missing last directory 0700) the log file, or says why it cannot. */
const openLogFile = (path: string, maxBytes: number): Result.Result<Sink, string> => {
  try {
    // One level only (e.g. /var/log/tenant-routing): `recursive: true` was seen to spin forever
    // under /proc in Node 24, and a deeper missing tree is a typo better reported than created.
    try {
      mkdirSync(dirname(path), { mode: 0o700 })
    } catch {
      // Exists already, or cannot be made: openSync below gives the reason that matters.
    }
    rotateIfLarge(path, maxBytes)
    return Result.succeed({ fd: openSync(path, "a", 0o600) })
  } catch (e) {
    return Result.fail(e instanceof Error ? e.message : String(e))
  }
}

/**
 * The logging of one call: replaces every logger (the default one writes to stdout) and sets the
 * minimum level. Building it never fails; a log file that cannot be opened falls back to stderr and
 * says so there.
 */
export const loggingFor = (settings: LogSettings): Layer.Layer<never> => {
  const level = Layer.succeed(References.MinimumLogLevel, LEVELS[settings.logLevel])
  const path = settings.logFile
  if (path === undefined) return Layer.mergeAll(Logger.layer([stderrJson]), level)
  const file = Layer.unwrap(
    Effect.acquireRelease(
      Effect.sync(() => openLogFile(path, settings.logMaxBytes)),
      (opened) =>
        Effect.sync(() => {
          if (Result.isSuccess(opened) && opened.success.fd !== undefined) {
            closeSync(opened.success.fd)
            opened.success.fd = undefined
          }
        })
    ).pipe(
      Effect.flatMap((opened) =>
        Result.isSuccess(opened)
          ? Effect.succeed(Logger.layer([jsonTo(opened.success)]))
          : Effect.logWarning("log file unusable, logging to stderr", {
              logFile: path,
              error: opened.failure
            }).pipe(Effect.provide(Logger.layer([stderrJson])), Effect.as(Logger.layer([stderrJson])))
      )
    )
  )
  return Layer.mergeAll(file, level)
}

/** For code that runs before a call's settings are known (start-up, last-resort failures). */
export const stderrLogging: Layer.Layer<never> = Logger.layer([stderrJson])
