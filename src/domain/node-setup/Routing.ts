/**
 * The kernel's policy routing as node-setup sees it: read the rules of a family, read the routes of
 * one table, make one change. Deciding what to change is `RoutingPlan`'s job; interpreters only read
 * and apply (`live/RoutingIproute2.ts` runs `ip`, `memory/RoutingMemory.ts` models the kernel).
 *
 * An interpreter reports every rule and every route it sees, in the kernel's order, including those
 * it cannot fully model (they carry `other`), so the planner can tell ours from foreign ones.
 */
import { Context, type Effect, Schema } from "effect"
import type { Family } from "./NodeSetupConfig.ts"
import type { Change, IpRule, Route } from "./RoutingPlan.ts"

export class RoutingError extends Schema.TaggedError<RoutingError>()("RoutingError", {
  message: Schema.String
}) {}

export class Routing extends Context.Service<
  Routing,
  {
    /** Every policy rule of the family, in the order the kernel evaluates them. */
    readonly rules: (family: Family) => Effect.Effect<ReadonlyArray<IpRule>, RoutingError>
    /** Every route of one table and family; an empty or never-created table gives none. */
    readonly routes: (family: Family, table: number) => Effect.Effect<ReadonlyArray<Route>, RoutingError>
    /** Add or delete one rule or route, failing when the kernel refuses. */
    readonly apply: (change: Change) => Effect.Effect<void, RoutingError>
  }
>()("tenant-routing/Routing") {}
