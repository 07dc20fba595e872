/**
 * The node-wide lock (src/domain/NodeLock.ts) as a bound abstract unix socket: holding the lock is
 * having `\0tenant-routing.lock` bound. Binding is atomic and exclusive (a second bind fails with
 * EADDRINUSE), and the kernel unbinds the name when the holder's socket closes, including when the
 * process is killed with SIGKILL, so a crashed call can never leave the node wedged, and there is no
 * file to clean up.
 *
 * Abstract socket names are per network namespace. That matches "node-wide": CNI plugins always run
 * in the host netns (the runtime passes the pod's netns as CNI_NETNS, it does not enter it), and it
 * isolates tests, which run in their own netns or use another name.
 *
 * Limits: waiters poll (jittered exponential backoff from 1 ms, capped at 20 ms per try), so there is
 * no FIFO fairness; a caller gives up after `timeout` (30 s) with TryAgainLater (code 11: the runtime
 * retries; nothing failed in netfilter). The lock is not reentrant: a nested withLock waits for itself
 * until the timeout.
 */
import * as net from "node:net"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import { NetfilterFailed, TryAgainLater } from "../../domain/cni/Errors.ts"
import { NodeLock } from "../../domain/datapath/NodeLock.ts"

export const DEFAULT_LOCK_NAME = "tenant-routing.lock"

export interface NodeLockSocketOptions {
  /** The abstract socket name, without the leading NUL. */
  readonly name?: string
  /** How long to wait for the lock before failing. */
  readonly timeout?: Duration.Input
}

class Busy {
  readonly _tag = "Busy"
}

/** Binds the name once: the server (lock held), Busy, or a failure that retrying will not cure. */
const bind = (name: string): Effect.Effect<net.Server, Busy | NetfilterFailed> =>
  Effect.callback<net.Server, Busy | NetfilterFailed>((resume) => {
    const server = net.createServer()
    server.once("error", (e: NodeJS.ErrnoException) => {
      server.close()
      resume(
        e.code === "EADDRINUSE"
          ? Effect.fail(new Busy())
          : Effect.fail(new NetfilterFailed({ msg: `node lock @${name}: ${e.message}`, removal: false }))
      )
    })
    server.listen({ path: `\0${name}` }, () => {
      // Holding the lock must not keep the event loop (the CNI process) alive on its own.
      server.unref()
      resume(Effect.succeed(server))
    })
    // Interrupted while binding: release whatever got bound.
    return Effect.sync(() => void server.close())
  })

const release = (server: net.Server): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    server.close(() => resume(Effect.void))
  })

export const make = (options: NodeLockSocketOptions = {}): NodeLock["Service"] => {
  const name = options.name ?? DEFAULT_LOCK_NAME
  const timeout = options.timeout ?? "30 seconds"
  const retry = Schedule.max([
    Schedule.min([Schedule.exponential("1 millis", 1.5), Schedule.spaced("20 millis")]).pipe(
      Schedule.jittered
    ),
    Schedule.during(timeout)
  ])
  const acquire = bind(name).pipe(
    Effect.retry({ schedule: retry, while: (e) => e instanceof Busy }),
    Effect.catch(
      (e): Effect.Effect<never, TryAgainLater | NetfilterFailed> =>
        e instanceof Busy
          ? Effect.fail(
              new TryAgainLater({
                msg: `node lock @${name} still held by another process after ${Duration.format(Duration.fromInputUnsafe(timeout))}`
              })
            )
          : Effect.fail(e)
    )
  )
  return NodeLock.of({
    // Not acquireUseRelease: its acquire is uninterruptible, and waiting for the lock must stay
    // interruptible (a caller's timeout). A bind interrupted midway closes its own socket.
    withLock: (self) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(acquire), (server) => restore(self).pipe(Effect.ensuring(release(server))))
      )
  })
}

export const layer = (options: NodeLockSocketOptions = {}): Layer.Layer<NodeLock> =>
  Layer.succeed(NodeLock, make(options))
