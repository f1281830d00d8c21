#!/usr/bin/env bash
# Hostile-client figures for surveyd-collector, run by hand (not in CI):
#
#   benches/collector-hostile.sh    # IDLE=10000 ROUNDS=5 BODIES=2000 WHAT="idle memory"
#
# Builds the release collector and runs benches/collector-hostile.py with a
# fresh SQLite file per part, default settings apart from the rate limit
# (off, so that the load reaches the connection caps and the body budget):
#   idle:   one address opens IDLE idle connections while another posts
#           reports; prints the other client's latencies and the shed count;
#   memory: ROUNDS rounds of BODIES concurrent 64 KiB bodies from one
#           address (per-source cap raised to BODIES); prints VmRSS
#           after each round and the peak.
# The client needs one descriptor per idle connection: the script raises
# its own open-file limit to the hard limit (IDLE + 100 at least).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
need=$(( ${IDLE:-10000} + 100 ))
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  echo "needs an open-file limit of $need for the client (ulimit -Hn is $(ulimit -Hn))" >&2
  exit 1
fi
cargo build --quiet --release --bin surveyd-collector
target=${CARGO_TARGET_DIR:-$top/target}/release
work=$(mktemp -d /tmp/collector-hostile.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$target/surveyd-collector" "$work/"
python3 benches/collector-hostile.py "$work/surveyd-collector" "$work"
