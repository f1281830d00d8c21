#!/usr/bin/env bash
# Ingest benchmark for surveyd-collector, run by hand (not in CI), as root:
#
#   benches/collector-bench.sh     # ROUNDS=3 DURATION=5s WARMUP=3s CONNS=64 THREADS=1
#
# Builds release binaries, then drives, one after the other on loopback with
# the same wrk settings and the same payload mix (benches/collector-bench.lua):
#   1. bare204: a hyper server that only answers 204 (the ceiling),
#   2. the collector on SQLite (a fresh file in a temp dir),
#   3. the collector on PostgreSQL (SURVEYD_BENCH_POSTGRES_URL, or a
#      throwaway cluster from .ci/postgres.sh, with fsync on).
# Other CPU-heavy processes on the machine skew the figures: servers and
# wrk run at nice -10 (as root) to stay ahead of background builds, and the
# load average before the run is printed with the figures.
# BASELINE=/path/to/an/older/surveyd-collector adds that binary on SQLite and
# on PostgreSQL (a database of its own) as base-sqlite and base-pg, to
# compare a change against (e.g. the history rollup against the commit
# before it; benches/history-bench.sh does that).
# All of them run side by side; each gets a warm-up, then ROUNDS measured
# runs taken in turn, and the best run of each is reported: reports/s, p99
# latency, non-2xx answers, and the share of the ceiling; then the median
# and every round.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}

# Above ordinary background work when allowed (root); as is otherwise.
prio=()
if [ "$(id -u)" = 0 ]; then prio=(nice -n -10); fi

command -v wrk >/dev/null || { echo "needs wrk (apt-get install -y wrk)" >&2; exit 1; }
cargo build --quiet --release --bin surveyd-collector --example bare204
target=${CARGO_TARGET_DIR:-$top/target}/release

work=$(mktemp -d /tmp/collector-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${SURVEYD_TEST_POSTGRES_DIR:-}" ]; then .ci/postgres.sh stop; fi
  rm -rf "$work"
}
trap cleanup EXIT
# Private copies: a concurrent build in a shared target dir cannot swap
# the binaries in the middle of a run.
cp "$target/surveyd-collector" "$target/examples/bare204" "$work/"

# start NAME CMD...: run CMD, wait for its "listening on ADDR" line,
# remember the address in addr[NAME].
declare -A addr
start() {
  local name=$1; shift
  : >"$work/$name.log"  # exists before the background job gets to it
  "${prio[@]}" "$@" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 1 200); do
    addr[$name]=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$work/$name.log" | head -n 1)
    [ -n "${addr[$name]}" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}

collector_config() {
  cat >"$work/$1.toml" <<TOML
listen = "127.0.0.1:0"
database = "$2"
receipt_key = "$work/$1-receipt-key.pk8"
# wrk's connections all come from one address: CONNS up to 4096.
max_connections_per_source = 4096
[rate_limit]
enabled = false
TOML
}

url() { echo "http://${addr[$1]}/api/stats/v1/submit"; }

# measure NAME: one wrk run; keeps the round with the most reports/s, as
# the one least disturbed by anything else running on the machine.
declare -A rps p99 bad all
measure() {
  local name=$1 out="$work/$1.wrk"
  "${prio[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s benches/collector-bench.lua "$(url "$name")" >"$out"
  local r q b
  r=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  q=$(awk '$1 == "99%" {print $2}' "$out")
  b=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$out")
  all[$name]="${all[$name]:-}${all[$name]:+ }${r%.*}"
  if awk -v a="$r" -v b="${rps[$name]:-0}" 'BEGIN { exit !(a > b) }'; then
    rps[$name]=$r; p99[$name]=$q; bad[$name]=${b:-0}
  fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start bare204 "$work/bare204"
collector_config sqlite "$work/bench.db"
start sqlite "$work/surveyd-collector" -c "$work/sqlite.toml" serve
if [ -z "${SURVEYD_BENCH_POSTGRES_URL:-}" ]; then
  eval "$(PG_FSYNC=on .ci/postgres.sh 2>/dev/null)"
  SURVEYD_BENCH_POSTGRES_URL=$SURVEYD_TEST_POSTGRES_URL
fi
collector_config postgres "$SURVEYD_BENCH_POSTGRES_URL"
start postgres "$work/surveyd-collector" -c "$work/postgres.toml" serve

targets=(bare204 sqlite postgres)
if [ -n "${BASELINE:-}" ]; then
  cp "$BASELINE" "$work/baseline-collector"
  collector_config base-sqlite "$work/base.db"
  start base-sqlite "$work/baseline-collector" -c "$work/base-sqlite.toml" serve
  base_url="${SURVEYD_BENCH_POSTGRES_URL%/*}/surveyd_bench_base"
  psql -q "$SURVEYD_BENCH_POSTGRES_URL" -c "DROP DATABASE IF EXISTS surveyd_bench_base" -c "CREATE DATABASE surveyd_bench_base"
  collector_config base-pg "$base_url"
  start base-pg "$work/baseline-collector" -c "$work/base-pg.toml" serve
  targets+=(base-sqlite base-pg)
fi
for name in "${targets[@]}"; do
  "${prio[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -s benches/collector-bench.lua "$(url "$name")" >/dev/null
done
for _ in $(seq 1 "$ROUNDS"); do
  for name in "${targets[@]}"; do measure "$name"; done
done
sqlite_rows=$("$work/surveyd-collector" -c "$work/sqlite.toml" report --format csv | tail -n +2 | wc -l)
pg_rows=$("$work/surveyd-collector" -c "$work/postgres.toml" report --format csv | tail -n +2 | wc -l)

echo
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "before:  load average $load_before"
echo "load:    wrk -t$THREADS -c$CONNS -d$DURATION, keep-alive, loopback; $ROUNDS rounds, best shown"
echo
# The median of the rounds beside the best: on a shared machine one
# target's rounds can differ by 15 % with nothing changed.
median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
printf '%-10s %12s %8s %10s %8s %11s   %s\n' target "reports/s" median "p99" "non-2xx" "of ceiling" "all rounds"
for name in "${targets[@]}"; do
  share=$(awk -v a="${rps[$name]}" -v b="${rps[bare204]}" 'BEGIN { printf "%.0f%%", 100 * a / b }')
  printf '%-10s %12s %8s %10s %8s %11s   %s\n' "$name" "${rps[$name]}" "$(median <<<"${all[$name]}")" "${p99[$name]}" "${bad[$name]}" "$share" "${all[$name]}"
done
echo
echo "rows after the runs: sqlite $sqlite_rows, postgres $pg_rows (distinct installations in the pool: $((THREADS * 50000)))"
