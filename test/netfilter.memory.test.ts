/**
 * The Netfilter contract against the memory model (src/interpreters/memory/NetfilterMemory.ts), the
 * kernel stand-in of every property test: where this suite passes, the model behaves like the live
 * backends (test/netfilter.live.test.ts runs the same laws in a netns).
 */
import { FaultPlan } from "../src/interpreters/memory/Faults.ts"
import * as NetfilterMemory from "../src/interpreters/memory/NetfilterMemory.ts"
import { Kernel } from "../src/interpreters/memory/NetfilterMemory.ts"
import { netfilterContract } from "./conformance/netfilterContract.ts"

netfilterContract("memory", () => NetfilterMemory.layer(new Kernel(), new FaultPlan()), { propertyRuns: 100 })
