#!/usr/bin/env bash
# Checks systemd/surveyd-collector.service: `systemd-analyze verify` and an
# offline exposure score of at most 1.5.
#
#   .ci/collector-unit.sh [PATH-TO-BUILT-surveyd-collector]
#
# verify insists that ExecStart= exists, and the unit names the installed
# path /usr/bin/surveyd-collector; so a temp copy of the unit with that path
# replaced by the freshly built binary is what gets verified.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
unit="$top/systemd/surveyd-collector.service"
bin=${1:-${CARGO_TARGET_DIR:-$top/target}/debug/surveyd-collector}
[ -x "$bin" ] || { echo "no built binary at $bin (cargo build first)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/bin/surveyd-collector|$bin|" "$unit" >"$tmp/surveyd-collector.service"
systemd-analyze verify "$tmp/surveyd-collector.service"
echo "verify: ok"

score=$(systemd-analyze security --offline=true "$unit" 2>/dev/null \
  | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "exposure: $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 1.5) }' \
  || { echo "exposure $score is above 1.5" >&2; exit 1; }
