/**
 * Who else on the node uses which bits of the packet mark, and the `mark-clash` check of the plugin's
 * bits against theirs. Presence is judged from netfilter chains and tables, CNI binaries and the
 * conflist; `CiliumChecks.ts` reuses it.
 *
 * Mark bits of other software, from their sources:
 * - Kubernetes: kube-proxy's KUBE-MARK-MASQ sets 0x4000 (`--iptables-masquerade-bit`, default 14) and
 *   kubelet's KUBE-MARK-DROP 0x8000 (bit 15). Present when chains `KUBE-*` or an nft table
 *   `kube-proxy` exist; bits are 0xc000 plus whatever KUBE-MARK-* rules are seen setting.
 * - portmap (containernetworking/plugins plugins/meta/portmap): `markMasqBit` default 13 = 0x2000,
 *   set in CNI-HOSTPORT-SETMARK. Present when /opt/cni/bin/portmap or chains `CNI-HOSTPORT-*` exist.
 * - Cilium: bpf/lib/common.h says "the upper 16 bits plus lower 8 bits (e.g. mask 0XFFFF00FF) contain
 *   the packets security identity", MARK_MAGIC_HOST_MASK 0x0F00 holds the magic values (proxy, host,
 *   encrypt/decrypt, identity, to-proxy, SNAT done, overlay) that its BPF programs and ip rules
 *   (`fwmark 0x200/0xf00 lookup 2004`, ...) test, and 0xF000 carries the IPsec key index
 *   (MARK_MAGIC_KEY_MASK 0xFF00); WireGuard's MagicMarkWireGuardEncrypted is 0x1E00
 *   (pkg/datapath/linux/linux_defaults/mark.go). No bit is unused. Present when chains `CILIUM_*`,
 *   /opt/cni/bin/cilium-cni, or a `cilium-cni` plugin in the conflist exist.
 * - Calico: Felix's `iptablesMarkMask` (and `nftablesMarkMask`) default 0xffff0000. Present when
 *   chains `cali-*` or an nft table `calico` exist.
 * A clash is judged on the bits the plugin rewrites, i.e. the whole markMask (`mark & ~mask | tenant`),
 * not only the tenants' own bits.
 */
import { and32, formatMark, KUBERNETES_BITS, or32, PORTMAP_BITS } from "../net/Mark.ts"
import { type CheckResult, result } from "./CheckResult.ts"
import { type DoctorFacts, isUnreadable, type LoadedConfig, type PluginSettings } from "./Facts.ts"
import type { NetfilterInventory } from "./NodeFacts.ts"

export interface MarkUser {
  /** Short name, the result's subject: `kubernetes`, `portmap`, `cilium/magic`, `cilium/key`, `cilium/identity`, `calico`. */
  readonly user: string
  /** Who uses the bits for what, from which source. */
  readonly role: string
  readonly bits: number
  /** Why doctor thinks the user is present. */
  readonly evidence: string
  readonly hint: string
}

const KUBE_BITS = KUBERNETES_BITS
const CILIUM_MAGIC = 0x0f00
const CILIUM_KEY = 0xf000
const CILIUM_IDENTITY = 0xffff00ff
const CALICO_BITS = 0xffff0000

export interface Presence {
  readonly kubernetes: string | undefined
  readonly portmap: string | undefined
  readonly cilium: string | undefined
  readonly calico: string | undefined
}

/** Evidence of each user, or undefined. */
export const presenceOf = (
  inventory: NetfilterInventory,
  files: DoctorFacts["files"],
  plugin: PluginSettings | undefined
): Presence => {
  const chain = (re: RegExp) => inventory.chains.find((c) => re.test(c.chain))
  const nft = (name: string) => inventory.nftTables.find((t) => t.name === name)
  const chained = (type: string) => plugin?.otherPlugins.includes(type) === true
  const first = (...evidence: ReadonlyArray<string | undefined>) => evidence.find((e) => e !== undefined)
  const chainEv = (c: ReturnType<typeof chain>) =>
    c === undefined ? undefined : `chain ${c.chain} (${c.tool} ${c.table})`
  const nftEv = (t: ReturnType<typeof nft>) =>
    t === undefined ? undefined : `nft table ${t.family} ${t.name}`
  return {
    kubernetes: first(chainEv(chain(/^KUBE-/)), nftEv(nft("kube-proxy"))),
    portmap: first(
      chainEv(chain(/^CNI-HOSTPORT-/)),
      files.portmap ? "the portmap plugin binary" : undefined,
      chained("portmap") ? "portmap in the conflist" : undefined
    ),
    cilium: first(
      chainEv(chain(/^CILIUM_/)),
      files.ciliumCni ? "the cilium-cni plugin binary" : undefined,
      chained("cilium-cni") ? "cilium-cni in the conflist" : undefined
    ),
    calico: first(
      chainEv(chain(/^cali-/)),
      nftEv(nft("calico")),
      chained("calico") ? "calico in the conflist" : undefined
    )
  }
}

/** Bits set by rules of chains whose names match. */
const bitsSetBy = (inventory: NetfilterInventory, re: RegExp): number =>
  inventory.markSets.filter((m) => re.test(m.chain)).reduce((acc, m) => or32(acc, m.mask), 0)

export const markUsers = (inventory: NetfilterInventory, presence: Presence): ReadonlyArray<MarkUser> => {
  const users: Array<MarkUser> = []
  if (presence.kubernetes !== undefined) {
    users.push({
      user: "kubernetes",
      role: "kube-proxy masquerades 0x4000 and kubelet drops 0x8000 (plus bits KUBE-MARK-* rules set)",
      bits: or32(KUBE_BITS, bitsSetBy(inventory, /^KUBE-MARK-/)),
      evidence: presence.kubernetes,
      hint: "choose tenant marks and markMask outside the bits KUBE-MARK-* chains set (iptables-save | grep KUBE-MARK)"
    })
  }
  if (presence.portmap !== undefined) {
    users.push({
      user: "portmap",
      role: "portmap masquerades hairpin traffic with markMasqBit 13 = 0x2000",
      bits: or32(PORTMAP_BITS, bitsSetBy(inventory, /^CNI-HOSTPORT-/)),
      evidence: presence.portmap,
      hint: "choose tenant marks and markMask outside portmap's markMasqBit"
    })
  }
  if (presence.cilium !== undefined) {
    users.push(
      {
        user: "cilium/magic",
        role: "Cilium's magic marks use 0x0f00 (bpf/lib/common.h MARK_MAGIC_HOST_MASK)",
        bits: CILIUM_MAGIC,
        evidence: presence.cilium,
        hint: "keep tenant marks and markMask out of 0x0f00: Cilium's BPF programs and ip rules (fwmark 0x200/0xf00 …) read these bits on every packet"
      },
      {
        user: "cilium/key",
        role: "Cilium's IPsec key index and WireGuard mark use 0xf000 (MARK_MAGIC_KEY_MASK, MagicMarkWireGuardEncrypted 0x1e00)",
        bits: CILIUM_KEY,
        evidence: presence.cilium,
        hint: "keep tenant marks and markMask out of 0xf000"
      },
      {
        user: "cilium/identity",
        role: "Cilium carries the security identity in 0xffff00ff (bpf/lib/common.h)",
        bits: CILIUM_IDENTITY,
        evidence: presence.cilium,
        hint: "Cilium leaves no bit free: tenant bits here rewrite the identity of identity-carrying packets; make sure nothing Cilium does after mangle PREROUTING depends on it (host firewall, BPF masquerade, egress gateway)"
      }
    )
  }
  if (presence.calico !== undefined) {
    users.push({
      user: "calico",
      role: "Calico Felix's iptablesMarkMask defaults to 0xffff0000 (plus bits cali-* rules set)",
      bits: or32(CALICO_BITS, bitsSetBy(inventory, /^cali-/)),
      evidence: presence.calico,
      hint: "keep tenant marks and markMask outside Felix's iptablesMarkMask/nftablesMarkMask"
    })
  }
  return users
}

/** The bits the plugin rewrites on marked packets: the tenants file's and the conflist's markMask. */
export const ownedBits = (config: LoadedConfig): number =>
  or32(config.source.markMask, config.plugin?.markMask ?? 0)

export const clashChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const inv = facts.inventory
  if (isUnreadable(inv)) {
    return [
      result(
        "mark-clash",
        "",
        "warn",
        `cannot list netfilter chains: ${inv.unreadable}`,
        "run doctor as root"
      )
    ]
  }
  const users = markUsers(inv, presenceOf(inv, facts.files, facts.config.plugin))
  if (users.length === 0) {
    return [result("mark-clash", "", "ok", "no other mark users found (kube-proxy, portmap, Cilium, Calico)")]
  }
  const owned = ownedBits(facts.config)
  const tenants = facts.config.source.tenants
  return users.map((u) => {
    const overlap = and32(owned, u.bits)
    const subject = u.user
    if (overlap === 0) {
      return result(
        "mark-clash",
        subject,
        "ok",
        `found ${u.evidence}; ${u.role}; markMask ${formatMark(owned)} stays clear of ${formatMark(u.bits)}`
      )
    }
    const touching = tenants
      .filter((t) => and32(t.mark, u.bits) !== 0)
      .map((t) => `${t.name} ${formatMark(t.mark)}`)
    return result(
      "mark-clash",
      subject,
      "warn",
      `found ${u.evidence}; ${u.role}; markMask ${formatMark(owned)} overlaps ${formatMark(u.bits)} in ${formatMark(overlap)}${touching.length > 0 ? ` (${touching.join(", ")})` : ""}`,
      u.hint
    )
  })
}
