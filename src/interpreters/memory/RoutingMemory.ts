/**
 * An in-memory model of the kernel's policy rules and routes, for property tests of node-setup.
 *
 * It keeps the kernel behaviours the planner depends on (verified with ip on Linux 6.x):
 * - rules are evaluated by priority, and a new rule goes after those of equal priority;
 *   adding a rule equal to an existing one, protocol included, fails ("File exists"); one that differs
 *   only in its protocol is another rule;
 * - `rule del` deletes the first rule that matches the fields given, the others being wildcards, and
 *   a protocol of 0 (unspec) too;
 * - a table holds one route per (family, destination, metric), whatever its protocol; a second one
 *   fails ("File exists"), `replace` swaps it (or adds when the slot is empty);
 * - `route del` needs the type, the metric, the protocol and the next hops in their installed order;
 * - every entry keeps the protocol it was added with: a rule added without one has unspec, a route
 *   `boot` (ip's default). They are stored as `ip -j -d` reads them back: default protocol absent.
 * It does not model what the kernel refuses for other reasons (unreachable gateways, unknown tables).
 *
 * Fault injection: `failAt: n` makes the n-th `apply` call fail without changing anything.
 * `RoutingMemory` (provided alongside `Routing`) exposes the state and the number of apply calls.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import type { Family } from "../../domain/node-setup/NodeSetupConfig.ts"
import { Routing, RoutingError } from "../../domain/node-setup/Routing.ts"
import {
  type Change,
  effectiveMetric,
  type IpRule,
  ROUTE_DEFAULT_PROTOCOL,
  type Route,
  type RoutingState,
  RULE_DEFAULT_PROTOCOL,
  routeProtocol,
  ruleDeleteMatches,
  ruleProtocol,
  sameRule,
  sameSlot
} from "../../domain/node-setup/RoutingPlan.ts"

export interface RoutingMemoryOptions {
  readonly initial?: RoutingState
  /** The 1-based `apply` call that fails. */
  readonly failAt?: number
}

export class RoutingMemory extends Context.Service<
  RoutingMemory,
  {
    /** All rules (kernel order) and routes (insertion order) right now. */
    readonly snapshot: Effect.Effect<RoutingState>
    /** How many times `apply` was called, failed calls included. */
    readonly applyCalls: Effect.Effect<number>
  }
>()("tenant-routing/RoutingMemory") {}

/** The kernel's order: by priority, insertion order among equals. */
const insertRule = (rules: ReadonlyArray<IpRule>, rule: IpRule): ReadonlyArray<IpRule> => {
  const at = rules.findIndex((r) => r.priority > rule.priority)
  return at < 0 ? [...rules, rule] : [...rules.slice(0, at), rule, ...rules.slice(at)]
}

const routeDeleteMatches = (request: Route, candidate: Route): boolean =>
  sameSlot(request, candidate) &&
  request.kind === candidate.kind &&
  request.other === candidate.other &&
  routeProtocol(request) === routeProtocol(candidate) &&
  request.gateways.length === candidate.gateways.length &&
  request.gateways.every((g, i) => g === candidate.gateways[i])

/** As the kernel lists it: effective metric, protocol only when it is not the default. */
const storedRule = (rule: IpRule): IpRule => {
  const { protocol: _, ...rest } = rule
  return ruleProtocol(rule) === RULE_DEFAULT_PROTOCOL ? rest : { ...rest, protocol: ruleProtocol(rule) }
}
const storedRoute = (route: Route): Route => {
  const { protocol: _, ...rest } = route
  const stored = { ...rest, metric: effectiveMetric(route) }
  return routeProtocol(route) === ROUTE_DEFAULT_PROTOCOL
    ? stored
    : { ...stored, protocol: routeProtocol(route) }
}

const step = (state: RoutingState, change: Change): RoutingState | string => {
  const e = change.entry
  if (e._tag === "Rule") {
    if (change.op === "add") {
      return state.rules.some((r) => sameRule(r, e.rule))
        ? "File exists"
        : { ...state, rules: insertRule(state.rules, storedRule(e.rule)) }
    }
    if (change.op === "replace") return "Operation not supported"
    const at = state.rules.findIndex((r) => ruleDeleteMatches(e.rule, r))
    return at < 0 ? "No such file or directory" : { ...state, rules: state.rules.filter((_, i) => i !== at) }
  }
  const slot = state.routes.findIndex((r) => sameSlot(r, e.route))
  if (change.op === "add") {
    return slot >= 0 ? "File exists" : { ...state, routes: [...state.routes, storedRoute(e.route)] }
  }
  if (change.op === "replace") {
    return slot < 0
      ? { ...state, routes: [...state.routes, storedRoute(e.route)] }
      : { ...state, routes: state.routes.map((r, i) => (i === slot ? storedRoute(e.route) : r)) }
  }
  const at = state.routes.findIndex((r) => routeDeleteMatches(e.route, r))
  return at < 0 ? "No such process" : { ...state, routes: state.routes.filter((_, i) => i !== at) }
}

/** Both services over one fresh state; build a new layer per test or property run. */
export const layer = (options: RoutingMemoryOptions = {}): Layer.Layer<Routing | RoutingMemory> =>
  Layer.effectContext(
    Effect.gen(function* () {
      const initial = options.initial ?? { rules: [], routes: [] }
      const state = yield* Ref.make<RoutingState>({
        rules: initial.rules.map(storedRule).reduce(insertRule, [] as ReadonlyArray<IpRule>),
        routes: initial.routes.map(storedRoute)
      })
      const calls = yield* Ref.make(0)
      const routing = Routing.of({
        rules: (family: Family) =>
          Ref.get(state).pipe(Effect.map((s) => s.rules.filter((r) => r.family === family))),
        routes: (family: Family, table: number) =>
          Ref.get(state).pipe(
            Effect.map((s) => s.routes.filter((r) => r.family === family && r.table === table))
          ),
        routesWithProtocol: (family: Family, protocol: number) =>
          Ref.get(state).pipe(
            Effect.map((s) => s.routes.filter((r) => r.family === family && routeProtocol(r) === protocol))
          ),
        apply: Effect.fnUntraced(function* (change: Change) {
          const n = yield* Ref.updateAndGet(calls, (c) => c + 1)
          if (n === options.failAt) return yield* new RoutingError({ msg: `injected failure at apply #${n}` })
          const next = step(yield* Ref.get(state), change)
          if (typeof next === "string") return yield* new RoutingError({ msg: `${next} (${change.op})` })
          yield* Ref.set(state, next)
        })
      })
      const control = RoutingMemory.of({ snapshot: Ref.get(state), applyCalls: Ref.get(calls) })
      return Context.make(Routing, routing).pipe(Context.add(RoutingMemory, control))
    })
  )
