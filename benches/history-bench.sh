#!/usr/bin/env bash
# History benchmarks, run by hand (not in CI), as root:
#
#   benches/history-bench.sh                     # summary latency, SQLite and PostgreSQL
#   BASELINE_REV=main benches/history-bench.sh   # also ingest: this tree against BASELINE_REV
#
# 1. Summary latency: `cargo bench --bench summary` (benches/summary.rs)
#    seeds 1,000,000 installations and 730 days of rollup directly into a
#    fresh SQLite file and a throwaway PostgreSQL (fsync on), then prints
#    p50/p95 of load_summary + publishable + JSON for 30 days, 1 year, all.
# 2. With BASELINE_REV: builds that revision's collector (release, in a
#    scratch copy of the tree) and runs benches/collector-bench.sh with it
#    as BASELINE, so the collector with the rollup and the one before it
#    take the same load side by side.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

work=$(mktemp -d /tmp/history-bench.XXXXXX)
cleanup() {
  if [ -n "${SURVEYD_TEST_POSTGRES_DIR:-}" ]; then .ci/postgres.sh stop; fi
  rm -rf "$work"
}
trap cleanup EXIT

eval "$(PG_FSYNC=on .ci/postgres.sh 2>/dev/null)"
SURVEYD_BENCH_POSTGRES_URL=$SURVEYD_TEST_POSTGRES_URL cargo bench --quiet --bench summary

if [ -n "${BASELINE_REV:-}" ]; then
  git archive "$BASELINE_REV" | tar -x -C "$work"
  target=${CARGO_TARGET_DIR:-$top/target}
  (cd "$work" && CARGO_TARGET_DIR=$target cargo build --quiet --release --bin surveyd-collector)
  cp "$target/release/surveyd-collector" "$work/baseline-collector"
  # collector-bench.sh rebuilds this tree's collector over the baseline's.
  SURVEYD_BENCH_POSTGRES_URL=$SURVEYD_TEST_POSTGRES_URL BASELINE="$work/baseline-collector" \
    benches/collector-bench.sh
fi
