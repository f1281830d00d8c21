#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS, one after the other,
# then prints per target: executions, exec/s, coverage (libFuzzer's cov and
# ft) and findings (crash/timeout/oom/leak artifacts new in this run).
#
#   fuzz/run.sh SECONDS [TARGET...]     (default: every target)
#
# Runs under `nice -n 10` without a sanitizer (`-s none`: ASan needs a
# nightly compiler), in libFuzzer's fork mode with crashes, timeouts and
# OOMs ignored, so that one finding does not end the run: every finding is
# kept in fuzz/artifacts/TARGET/ and fuzzing goes on. The grown corpus is
# fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET, which is never
# written), the full libFuzzer output fuzz/logs/TARGET-<time>.log. A
# dictionary fuzz/dicts/TARGET.dict, if there is one, gives libFuzzer the
# tokens (keys, JSON escapes) it would take long to guess.
#
# Replay one finding: cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail

usage() {
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 64
}
[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
seconds=$1
shift

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=()
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi
for target in "${targets[@]}"; do
    [[ -f fuzz/fuzz_targets/$target.rs ]] || { echo "$0: no fuzz target $target" >&2; exit 64; }
done

command -v cargo-fuzz >/dev/null || {
    echo "$0: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
    exit 69
}

echo "== building ${targets[*]}"
for target in "${targets[@]}"; do
    nice -n 10 cargo fuzz build -s none "$target"
done

artifacts_of() {
    find "fuzz/artifacts/$1" -maxdepth 1 -type f \
        \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) \
        -printf '%f\n' 2>/dev/null | sort
}

host=$(rustc -vV | sed -n 's/^host: //p')
mkdir -p fuzz/logs
summary=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/logs/$target-$(date -u +%Y%m%dT%H%M%SZ).log"
    before=$(artifacts_of "$target")
    binary=fuzz/target/$host/release/$target
    dict=()
    [[ -f fuzz/dicts/$target.dict ]] && dict=(-dict="fuzz/dicts/$target.dict")
    echo "== $target: fuzzing for $seconds s, output in $log"
    # libFuzzer's exit status reports the last finding; findings are
    # counted from the artifacts below instead.
    nice -n 10 cargo fuzz run -s none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 \
        -ignore_ooms=1 -timeout=10 -rss_limit_mb=2048 "${dict[@]}" >"$log" 2>&1 || true

    # Fork mode's status line: #RUNS: cov: N ft: N corp: N exec/s: N oom/timeout/crash: a/b/c time: Ns ...
    status=$(grep -E '^#[0-9]+: cov: ' "$log" | tail -n 1 || true)
    if [[ -z $status ]]; then
        echo "$target: libFuzzer printed no status line; the end of $log:" >&2
        tail -n 20 "$log" >&2
        summary+=("$(printf '%-8s %8s %12s %8s %7s %7s %7s %9s' "$target" "$seconds" failed - - - - -)")
        continue
    fi
    field() { sed -E "s|.* $1: ([0-9/]+).*|\\1|" <<<"$status"; }
    runs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$status")
    # Fork mode's exec/s is that of the last job; the run's average is
    # executions over time.
    elapsed=$(sed -E 's/.* time: ([0-9]+)s.*/\1/' <<<"$status")
    rate=$((runs / (elapsed > 0 ? elapsed : 1)))
    new=$(comm -13 <(echo "$before") <(artifacts_of "$target") | sed '/^$/d')
    findings=$(grep -c . <<<"$new" || true)
    echo "$target: executions $runs in $elapsed s, exec/s $rate, cov $(field cov), ft $(field ft)," \
        "corpus $(field corp), oom/timeout/crash $(field oom/timeout/crash), new artifacts $findings"
    if [[ -n $new ]]; then
        sed "s|^|    fuzz/artifacts/$target/|" <<<"$new"
        # Fork mode keeps the children's output to itself, so the distinct
        # panics (message and where) come from replaying the crash inputs.
        for artifact in $(grep '^crash-' <<<"$new" | head -n 50); do
            timeout 60 "$binary" "fuzz/artifacts/$target/$artifact" 2>&1 |
                awk '/panicked at/ { where = $0; getline; print where " " $0; exit }' || true
        done | sed -E 's/^.*panicked at //' | sort | uniq -c | sort -rn | sed 's/^/    /'
    fi
    # A crashed child (or replay) left its scratch directory behind (see
    # fuzz/src/lib.rs); its process is gone, so the directory can go too.
    for dir in /dev/shm/surveyd-fuzz-"$target"-* "${TMPDIR:-/tmp}"/surveyd-fuzz-"$target"-*; do
        [[ -d $dir ]] || continue
        kill -0 "${dir##*-}" 2>/dev/null || rm -rf -- "$dir"
    done

    summary+=("$(printf '%-8s %8s %12s %8s %7s %7s %7s %9s' "$target" "$elapsed" "$runs" \
        "$rate" "$(field cov)" "$(field ft)" "$(field corp)" "$findings")")
done

echo
echo "== summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -n 1))"
printf '%-8s %8s %12s %8s %7s %7s %7s %9s\n' target seconds executions exec/s cov ft corpus findings
printf '%s\n' "${summary[@]}"
