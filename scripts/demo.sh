#!/usr/bin/env bash
# The whole job end to end on this machine, with no setup: a collector on
# loopback with its embedded SQLite default, the admin's consent, the
# daemon reporting to it as systemd would run it, then the audit log (with
# the collector's signed receipt, verified) and the stored row. Everything
# lives in a temp dir and is stopped by pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bins
bin="${CARGO_TARGET_DIR:-target}/debug"
work=$(mktemp -d /tmp/surveyd-demo.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# wait_for FILE PATTERN: poll (bounded) until FILE contains PATTERN.
wait_for() {
    for _ in $(seq 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: timed out waiting for '$2' in $1" >&2
    cat "$1" >&2 || true
    exit 1
}

cat >"$work/collector.toml" <<TOML
listen = "127.0.0.1:0"
database = "$work/surveys.db"
receipt_key = "$work/receipt-key.pk8"
TOML
"$bin/surveyd-collector" -c "$work/collector.toml" serve 2>"$work/collector.log" &
pids+=($!)
wait_for "$work/collector.log" "listening on"
addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$work/collector.log" | head -n1 | cut -d' ' -f3)
# The key the collector signs receipts with, as a vendor publishes it.
key=$("$bin/surveyd-collector" -c "$work/collector.toml" key | head -n1)

# Counts as a Kopano server would give them (a facts file; on a real
# server, surveyclient_facts = kopano-mysql asks the database).
cat >"$work/facts.json" <<JSON
{"usercnt_active": 42, "usercnt_contact": 7, "usercnt_na_user": 3, "usercnt_room": 2, "usercnt_equipment": 1, "usercnt_nonactive": 6}
JSON
cat >"$work/surveyd.cfg" <<CFG
# The demo reads this machine's real /etc/machine-id; only its hash leaves.
surveyclient_url = http://$addr/api/stats/v1/submit
surveyclient_start_delay = 0
surveyclient_audit_log = $work/log/audit.log
surveyclient_state_dir = $work/state
surveyclient_program_name = kopano-server
surveyclient_program_version = 8.7.80
user_plugin = db
attachment_storage = files
surveyclient_facts = file:$work/facts.json
surveyclient_collector_key = $key
CFG
echo "== surveyd check-config"
"$bin/surveyd" -c "$work/surveyd.cfg" check-config | grep -v '^mysql_'
echo
echo "== surveyd consent (nothing leaves before the admin says yes)"
"$bin/surveyd" -c "$work/surveyd.cfg" consent
echo
echo "== surveyd consent yes"
"$bin/surveyd" -c "$work/surveyd.cfg" consent yes
"$bin/surveyd" -c "$work/surveyd.cfg" run 2>"$work/surveyd.log" &
pids+=($!)
wait_for "$work/surveyd.log" "report [0-9]* sent"
seq=$(grep -o 'report [0-9]* sent' "$work/surveyd.log" | head -n1 | cut -d' ' -f2)
echo
echo "== the daemon's log"
cat "$work/surveyd.log"
echo
echo "== surveyd audit"
"$bin/surveyd" -c "$work/surveyd.cfg" audit
echo
echo "== surveyd audit show $seq"
"$bin/surveyd" -c "$work/surveyd.cfg" audit show "$seq"
echo
echo "== surveyd audit verify"
"$bin/surveyd" -c "$work/surveyd.cfg" audit verify
echo
echo "== surveyd-collector report (the stored row)"
"$bin/surveyd-collector" -c "$work/collector.toml" report
echo
if [ -s /etc/machine-id ] && grep -rqi "$(cat /etc/machine-id)" "$work"; then
    echo "demo: the raw machine id was found in $work" >&2
    exit 1
fi
echo "The raw machine id appears nowhere: not in the audit log, the logs or the database."
echo "machine_id_hash sent: $("$bin/surveyd" -c "$work/surveyd.cfg" preview | sed 's/.*"machine_id_hash":{[^}]*"value":"\([0-9a-f]*\)".*/\1/')"
echo "systemd-id128 says:   $(systemd-id128 machine-id --app-specific=187f157428b74898a629521121fa9f49 2>/dev/null || echo '(systemd-id128 not installed)')"
