/**
 * The integration suite (tenantRoutingSuite.ts) with `backend: "iptables"`: real pods, real traffic, the
 * built executable, CNI 0.4.0, 1.0.0 and 1.1.0. Needs root; skipped without it unless
 * TRW_REQUIRE_INTEGRATION=1, which makes a missing prerequisite a failure.
 */
import { tenantRoutingSuite } from "./tenantRoutingSuite.ts"

tenantRoutingSuite("iptables")
