#!/usr/bin/env bash
# The original project's node script, kept as a thin wrapper: it writes a tenants file for the
# original's two tenants and hands it to `tenant-routing-wrapper node-setup`, which does the work
# declaratively and idempotently (docs/DESIGN.md §6). Any further arguments (--dry-run, --remove,
# --write-rt-tables) are passed on.
#
# Environment (defaults in brackets; the gateways default to documentation addresses, RFC 5737, so
# set them on a real node):
#   TENANT_A_GW [192.0.2.2]   TENANT_A_MARK [0x10]  TENANT_A_TABLE [100]  TENANT_A_PRIORITY [1000]
#   TENANT_B_GW [198.51.100.2] TENANT_B_MARK [0x20] TENANT_B_TABLE [200]  TENANT_B_PRIORITY [1001]
#   MARK_MASK [union of the two marks]
#   TRW_BIN [/opt/cni/bin/tenant-routing-wrapper]
# A gateway variable may hold several addresses separated by spaces or commas (IPv4 and/or IPv6);
# several make a multipath route. Values are checked by node-setup, which names any bad field.
set -euo pipefail

TENANT_A_GW=${TENANT_A_GW:-192.0.2.2}
TENANT_A_MARK=${TENANT_A_MARK:-0x10}
TENANT_A_TABLE=${TENANT_A_TABLE:-100}
TENANT_A_PRIORITY=${TENANT_A_PRIORITY:-1000}
TENANT_B_GW=${TENANT_B_GW:-198.51.100.2}
TENANT_B_MARK=${TENANT_B_MARK:-0x20}
TENANT_B_TABLE=${TENANT_B_TABLE:-200}
TENANT_B_PRIORITY=${TENANT_B_PRIORITY:-1001}
MARK_MASK=${MARK_MASK:-}
TRW_BIN=${TRW_BIN:-/opt/cni/bin/tenant-routing-wrapper}

# JSON string of one value; the values are addresses and numbers, so escaping `\` and `"` suffices
# to keep any odd input a string that node-setup then rejects with a clear message.
json_string() {
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}

# JSON array of the addresses in a space- or comma-separated list.
json_gateways() {
  local out="" gw
  for gw in ${1//,/ }; do
    out+="${out:+, }$(json_string "$gw")"
  done
  printf '[%s]' "$out"
}

# Numbers stay numbers when they are plain decimal; anything else goes in as a string, so a typo
# is reported by node-setup ("expected a table id ...") instead of producing invalid JSON.
json_number() {
  if [[ $1 =~ ^[0-9]+$ ]]; then printf '%s' "$1"; else json_string "$1"; fi
}

tenant() {
  printf '"%s": {"mark": %s, "table": %s, "tableName": "%s", "gateways": %s, "priority": %s}' \
    "$1" "$(json_string "$2")" "$(json_number "$3")" "$1" "$(json_gateways "$4")" "$(json_number "$5")"
}

config=$(mktemp "${TMPDIR:-/tmp}/tenant-routing-tenants.XXXXXX")
trap 'rm -f "$config"' EXIT

{
  printf '{'
  if [ -n "$MARK_MASK" ]; then printf '"markMask": %s, ' "$(json_string "$MARK_MASK")"; fi
  printf '"tenants": {'
  tenant tenant-a "$TENANT_A_MARK" "$TENANT_A_TABLE" "$TENANT_A_GW" "$TENANT_A_PRIORITY"
  printf ', '
  tenant tenant-b "$TENANT_B_MARK" "$TENANT_B_TABLE" "$TENANT_B_GW" "$TENANT_B_PRIORITY"
  printf '}}\n'
} >"$config"

# Not exec: the trap must still remove the temporary file afterwards.
"$TRW_BIN" node-setup --config "$config" "$@"
