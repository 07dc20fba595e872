/**
 * CNI results (the ADD answer, and `prevResult`) in every version we speak, and conversion between
 * them. Internally a result always has the 1.x shape; 0.3.x/0.4.0 differ only by the `version` field
 * on each IP ("4"/"6"), which is derived from the address on the way out and dropped on the way in.
 * Unknown keys on the result and its parts are kept, so a chained plugin's additions survive us.
 */
import * as Schema from "effect/Schema"
import { isCidr, isIp, parseCidr } from "../net/Ip.ts"
import { atLeast, RESULT_1X_SINCE } from "./CniVersion.ts"

const Cidr = Schema.String.check(
  Schema.makeFilter((s: string) => isCidr(s) || `expected address/prefix, got ${JSON.stringify(s)}`)
)
const Address = Schema.String.check(
  Schema.makeFilter((s: string) => isIp(s) || `expected an IP address, got ${JSON.stringify(s)}`)
)
const Index = Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0))

const open = { key: Schema.String, value: Schema.Unknown }
const withRest = <F extends Schema.Struct.Fields>(fields: F) =>
  Schema.StructWithRest(Schema.Struct(fields), [Schema.Record(open.key, open.value)])

export const Interface = withRest({
  name: Schema.String,
  mac: Schema.optionalKey(Schema.String),
  mtu: Schema.optionalKey(Schema.Number),
  sandbox: Schema.optionalKey(Schema.String)
})

export const IpConfig = withRest({
  address: Cidr,
  gateway: Schema.optionalKey(Address),
  interface: Schema.optionalKey(Index),
  /** 0.3.x/0.4.0 only; recomputed on output. */
  version: Schema.optionalKey(Schema.Literals(["4", "6"]))
})

export const Route = withRest({
  dst: Cidr,
  gw: Schema.optionalKey(Address)
})

export const CniResult = withRest({
  cniVersion: Schema.String,
  interfaces: Schema.optionalKey(Schema.Array(Interface)),
  ips: Schema.optionalKey(Schema.Array(IpConfig)),
  routes: Schema.optionalKey(Schema.Array(Route)),
  dns: Schema.optionalKey(Schema.Unknown)
})
export type CniResult = typeof CniResult.Type

/** The pod's addresses in a result: every IP, without prefix length, in canonical form, unique. */
export const podIps = (result: CniResult): ReadonlyArray<string> => {
  const seen = new Set<string>()
  for (const ip of result.ips ?? []) {
    const parsed = parseCidr(ip.address)
    if (parsed !== undefined) seen.add(parsed.ip.text)
  }
  return [...seen]
}

/**
 * The same result in another version: `version` on IPs before 1.0.0, none from 1.0.0 on.
 * Interfaces, IPs, routes and DNS are carried unchanged otherwise (law: conversion keeps them).
 */
export const convertResult = (result: CniResult, to: string): CniResult => {
  const legacy = !atLeast(to, RESULT_1X_SINCE)
  const ips = result.ips?.map((ip) => {
    const { version: _dropped, ...rest } = ip
    if (!legacy) return rest
    const family = parseCidr(ip.address)?.ip.family ?? 4
    return { ...rest, version: family === 4 ? ("4" as const) : ("6" as const) }
  })
  return { ...result, cniVersion: to, ...(ips === undefined ? {} : { ips }) }
}
