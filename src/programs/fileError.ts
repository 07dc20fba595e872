/**
 * A file operation that failed, said in the operator's words: what the file is for, what is wrong
 * with it, and what to do — never the platform's internals (`NotFound: FileSystem.readFile (...)`).
 * The operator subcommands build every file message of theirs with `describeFileError`.
 */
import type { PlatformError } from "effect/PlatformError"

/**
 * `what` names the file's role ("tenants file"), `path` the file, `hint` the way out ("pass --config
 * FILE or create it"), used when the file is missing; other failures carry their own advice.
 */
export const describeFileError = (
  error: PlatformError,
  what: string,
  path: string,
  hint: string,
  write = false
): string => {
  const reason = error.reason
  switch (reason._tag) {
    case "NotFound":
      return write
        ? `cannot write ${what} ${path}: a directory on its path does not exist`
        : `${what} ${path} does not exist; ${hint}`
    case "PermissionDenied":
      return `cannot ${write ? "write" : "read"} ${what} ${path}: permission denied; run as root or fix the file's permissions`
    case "BadResource":
      // Node's EISDIR arrives here: name the usual mistake.
      return (reason.cause as { code?: unknown } | undefined)?.code === "EISDIR"
        ? `${what} ${path} is a directory, not a file`
        : `${what} ${path} is not a regular file`
    default:
      return `cannot ${write ? "write" : "read"} ${what} ${path}: ${reason.description ?? reason._tag}`
  }
}
