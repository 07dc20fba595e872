/**
 * The kernel's policy routing as node-setup sees it: read the rules of a family, read the routes of
 * one table, make one change. Deciding what to change is `RoutingPlan`'s job; interpreters only read
 * and apply (`live/RoutingIproute2.ts` runs `ip`, `memory/RoutingMemory.ts` models the kernel).
 *
 * An interpreter reports every rule and every route it sees, in the kernel's order, including those
 * it cannot fully model (they carry `other`), with the protocol the kernel keeps for each, so the
 * planner can tell ours (tagged with `OUR_PROTOCOL`) from foreign ones.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type { Family } from "./NodeSetupConfig.ts"
import type { Change, IpRule, Route } from "./RoutingPlan.ts"

export class RoutingError extends Schema.TaggedError<RoutingError>()("RoutingError", {
  msg: Schema.String
}) {}

export class Routing extends Context.Service<
  Routing,
  {
    /** Every policy rule of the family, in the order the kernel evaluates them. */
    readonly rules: (family: Family) => Effect.Effect<ReadonlyArray<IpRule>, RoutingError>
    /** Every route of one table and family; an empty or never-created table gives none. */
    readonly routes: (family: Family, table: number) => Effect.Effect<ReadonlyArray<Route>, RoutingError>
    /** Every route of the family, in any table, that carries `protocol`: how node-setup finds all of its own. */
    readonly routesWithProtocol: (
      family: Family,
      protocol: number
    ) => Effect.Effect<ReadonlyArray<Route>, RoutingError>
    /** Add, delete or (routes only) replace one rule or route, failing when the kernel refuses. */
    readonly apply: (change: Change) => Effect.Effect<void, RoutingError>
  }
>()("tenant-routing/Routing") {}
