#!/bin/bash
# The checks packaging/test.sh runs inside a booted Debian 12 container, as
# the oneshot unit surveyd-check.service; the container powers off when it
# ends. Packages are in /pkgs (and the newer build in /upgrade); the log
# goes to /out/log, the verdict (PASS or FAIL) to /out/result and the
# exposure figures to /out/exposure. /etc/surveyd-check.env gives
# MESSAGE_ID (of each report record) and MAX_EXPOSURE.
#
# Everything runs inside: the collector listens on 127.0.0.1:8080, the only
# network there is (the container has a private network namespace).
set -uo pipefail
exec >/out/log 2>&1
echo FAIL >/out/result
# shellcheck source=/dev/null
. /etc/surveyd-check.env

export DEBIAN_FRONTEND=noninteractive
CFG=/etc/surveyd/surveyd.cfg
URL=http://127.0.0.1:8080/api/stats/v1/submit

fail() {
    echo "FAIL: $*"
    echo "--- systemctl status"
    systemctl --no-pager status surveyd surveyd-collector 2>&1 | tail -40
    echo "--- journal"
    journalctl --no-pager -n 60 -u surveyd -u surveyd-collector 2>&1
    exit 1
}
ok() { echo "ok: $*"; }

# Runs "$@" every half second until it succeeds, for at most $1 seconds.
wait_for() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
}

main_pid() { systemctl show -p MainPID --value surveyd; }

# Sets KEY = VALUE in the conffile: the commented default line is replaced,
# as an admin would edit it.
set_key() {
    sed -i "s|^#\?$1 =.*|$1 = $2|" "$CFG"
    grep -qx "$1 = $2" "$CFG" || fail "cannot set $1 in $CFG"
}

collector_rows() { surveyd-collector report --format json; }
has_row_with() { collector_rows | grep -Eq "$1"; }

# What the collector logged of every request it got (its debug log, on
# through the drop-in below): any upload or deletion request shows here.
collector_requests() { journalctl -u surveyd-collector -o cat | grep -c '^request ' || true; }

# The state dir's consent file, wherever DynamicUser= put it.
consent_files() { ls -d /var/lib/surveyd/consent /var/lib/private/surveyd/consent 2>/dev/null; }

consent_mode() {
    surveyd consent --json | grep -Eo '"mode": *"(off|local|upload)"' | head -n 1 | grep -Eo '[a-z]+"$' | tr -d '"'
}

audit_events() { grep -c "\"event\":\"$1\"" /var/log/surveyd/audit.log || true; }
at_least_local_reports() { [ "$(audit_events local)" -ge "$1" ]; }

# Installs surveyd as a configuration manager would: the debconf answer
# preseeded, and the configuration (the packaged file, pointed at the
# collector) in place before the package, kept by --force-confold.
# DEBCONF_DEBUG shows every question the package's scripts put to debconf;
# the output goes to /tmp/install-$1.log.
install_preseeded() {
    echo "surveyd surveyd/upload_consent boolean $1" | debconf-set-selections
    local unpacked
    unpacked=$(mktemp -d)
    dpkg-deb -x /pkgs/surveyd_*.deb "$unpacked"
    install -D -m 644 "$unpacked/etc/surveyd/surveyd.cfg" "$CFG"
    rm -rf "$unpacked"
    set_key surveyclient_url "$URL"
    set_key surveyclient_start_delay 1
    set_key surveyclient_error_delay 1
    set_key surveyclient_interval 2
    DEBCONF_DEBUG=developer apt-get install -y -q -o Dpkg::Use-Pty=0 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        /pkgs/surveyd_*.deb >"/tmp/install-$1.log" 2>&1 ||
        { cat "/tmp/install-$1.log"; fail "apt-get install surveyd (preseeded $1)"; }
    grep -q 'INPUT medium surveyd/upload_consent' "/tmp/install-$1.log" ||
        { cat "/tmp/install-$1.log"; fail "a fresh installation did not ask surveyd/upload_consent"; }
}

echo "== install surveyd-collector"
# Debug logging names every request the collector gets.
mkdir -p /etc/systemd/system/surveyd-collector.service.d
printf '[Service]\nEnvironment=RUST_LOG=info,surveyd::collector::http=debug\n' \
    >/etc/systemd/system/surveyd-collector.service.d/debug.conf
apt-get install -y -q -o Dpkg::Use-Pty=0 /pkgs/surveyd-collector_*.deb || fail "apt-get install surveyd-collector"
systemctl is-active -q surveyd-collector || fail "surveyd-collector is not active after installation"
wait_for 20 collector_rows || fail "surveyd-collector report does not answer"
ok "surveyd-collector installed and active; its report is empty: $(collector_rows | tr -d '\n')"

echo "== install surveyd, preseeded \"no\": local mode, nothing leaves"
install_preseeded false
systemctl is-active -q surveyd || fail "surveyd is not active after installation"
ok "surveyd installed, enabled ($(systemctl is-enabled surveyd)) and active; the installation asked surveyd/upload_consent"
[ "$(consent_mode)" = local ] || fail "preseeded no: surveyd consent --json says: $(surveyd consent --json)"
[ "$(audit_events consent)" = 1 ] || fail "the answer is not one consent event in the audit log"
wait_for 60 at_least_local_reports 3 || fail "no three local reports in the audit log: $(surveyd audit)"
[ "$(collector_rows | grep -c '"uid"')" = 0 ] || fail "preseeded no, yet the collector has a row"
[ "$(collector_requests)" = 0 ] || fail "preseeded no, yet the collector got requests: $(journalctl -u surveyd-collector -o cat | grep '^request ')"
ok "preseeded no: surveyd consent says local, $(audit_events local) local reports in the audit log, the collector got no request"

pid=$(main_pid)
status=/proc/$pid/status
grep -q '^CapEff:[[:space:]]*0000000000000000$' "$status" || fail "the service has capabilities"
grep -q '^NoNewPrivs:[[:space:]]*1$' "$status" || fail "NoNewPrivs is not set"
grep -q '^Seccomp:[[:space:]]*2$' "$status" || fail "no system call filter"
uid=$(awk '/^Uid:/ {print $2}' "$status")
[ "$uid" != 0 ] || fail "the service runs as root"
if nsenter --target "$pid" --mount -- touch /usr/.surveyd-write-test 2>/dev/null; then
    fail "/usr is writable in the service's mount namespace"
fi
owner=$(stat -c %u /var/lib/private/surveyd/consent)
[ "$owner" = "$uid" ] || fail "the consent file belongs to uid $owner, the service runs as $uid"
ok "sandbox of PID $pid: uid $uid, no capabilities, no_new_privs, seccomp filter, /usr read-only; the consent recorded at installation belongs to that uid"

echo "== purge forgets the answer"
apt-get purge -y -q -o Dpkg::Use-Pty=0 surveyd || fail "apt-get purge surveyd"
[ -z "$(consent_files)" ] || fail "left after purge: $(consent_files)"
[ -z "$(debconf-show surveyd 2>/dev/null)" ] || fail "debconf still knows: $(debconf-show surveyd)"
ok "after purge: no consent file, and debconf has forgotten surveyd/upload_consent"

echo "== install surveyd, preseeded \"yes\": reports reach the collector"
install_preseeded true
systemctl is-active -q surveyd || fail "surveyd is not active after installation"
[ "$(consent_mode)" = upload ] || fail "preseeded yes: surveyd consent --json says: $(surveyd consent --json)"
wait_for 30 has_row_with '"uid"' || fail "no row reached the collector"
[ "$(collector_requests)" -ge 1 ] ||
    fail "the collector's log shows no request, so it cannot have shown one in local mode either"
ok "preseeded yes: surveyd consent says upload, and a report is a row in the collector: $(collector_rows | tr -d '\n' | cut -c1-300)"

echo "== systemctl reload applies an edited conffile"
pid=$(main_pid)
set_key surveyclient_program_name reload-test
set_key surveyclient_interval 2
systemctl reload surveyd || fail "systemctl reload surveyd failed on a valid file"
[ "$(main_pid)" = "$pid" ] || fail "reload restarted the service"
wait_for 30 has_row_with '"program_name": ?"reload-test"' ||
    fail "no report with the reloaded program name reached the collector"
ok "after reload (same PID $pid) reports carry program_name reload-test"
set_key surveyclient_interval 1h
if systemctl reload surveyd; then
    fail "systemctl reload accepted surveyclient_interval = 1h"
fi
systemctl is-active -q surveyd || fail "surveyd stopped after a rejected reload"
[ "$(main_pid)" = "$pid" ] || fail "a rejected reload restarted the service"
ok "reload of an invalid file fails and keeps the service running: $(systemctl show -p StatusText --value surveyd)"
set_key surveyclient_interval 2
systemctl reload surveyd || fail "systemctl reload surveyd failed after the file was fixed"

echo "== the journal and the audit log"
records=$(journalctl -u surveyd MESSAGE_ID="$MESSAGE_ID" -o cat | wc -l)
[ "$records" -ge 1 ] || fail "journalctl -u surveyd MESSAGE_ID=$MESSAGE_ID shows no report"
ok "journalctl -u surveyd MESSAGE_ID=$MESSAGE_ID: $records report records, the last: $(journalctl -u surveyd MESSAGE_ID="$MESSAGE_ID" -o cat -n 1)"
verdict=$(surveyd audit verify) || fail "surveyd audit verify: $verdict"
ok "surveyd audit verify: $verdict"

echo "== exposure of the units as installed"
: >/out/exposure
for unit in surveyd surveyd-collector; do
    systemd-analyze security --no-pager "$unit.service"
    level=$(systemd-analyze security --no-pager "$unit.service" |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    [ -n "$level" ] || fail "no exposure level for $unit.service"
    echo "$unit.service $level" >>/out/exposure
    awk -v l="$level" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(l <= max) }' ||
        fail "$unit.service exposure $level is above $MAX_EXPOSURE"
    ok "$unit.service exposure $level (at most $MAX_EXPOSURE), measured in the booted container"
done

echo "== upgrade to a newer build"
pid=$(main_pid)
conf_sum=$(md5sum <"$CFG")
consents=$(audit_events consent)
# Were the answer applied again, this would turn uploads off.
echo "surveyd surveyd/upload_consent boolean false" | debconf-set-selections
DEBCONF_DEBUG=developer dpkg -i /upgrade/surveyd_*.deb >/tmp/upgrade.log 2>&1 ||
    { cat /tmp/upgrade.log; fail "dpkg -i of the newer build"; }
if grep -Eq '(INPUT [a-z]+|GET) surveyd/upload_consent' /tmp/upgrade.log; then
    cat /tmp/upgrade.log
    fail "the upgrade asked or read surveyd/upload_consent"
fi
[ "$(consent_mode)" = upload ] || fail "after the upgrade surveyd consent --json says: $(surveyd consent --json)"
[ "$(audit_events consent)" = "$consents" ] || fail "the upgrade recorded a consent event"
ok "the upgrade neither asked nor applied surveyd/upload_consent: still upload mode, still $consents consent event"
installed=$(dpkg-query -W -f '${Version}' surveyd)
[ "$installed" = "$(dpkg-deb -f /upgrade/surveyd_*.deb Version)" ] ||
    fail "installed version is $installed after the upgrade"
systemctl is-active -q surveyd || fail "surveyd is not active after the upgrade"
[ "$(main_pid)" != "$pid" ] || fail "the upgrade did not restart surveyd (MainPID still $pid)"
[ "$(md5sum <"$CFG")" = "$conf_sum" ] || fail "the upgrade changed the edited $CFG"
ok "upgraded to $installed: restarted (MainPID $pid -> $(main_pid)), edited conffile kept"

collector_pid=$(systemctl show -p MainPID --value surveyd-collector)
rows=$(collector_rows | grep -c '"uid"')
dpkg -i /upgrade/surveyd-collector_*.deb || fail "dpkg -i of the newer surveyd-collector"
systemctl is-active -q surveyd-collector || fail "surveyd-collector is not active after the upgrade"
[ "$(systemctl show -p MainPID --value surveyd-collector)" != "$collector_pid" ] ||
    fail "the upgrade did not restart surveyd-collector"
[ "$(collector_rows | grep -c '"uid"')" -ge "$rows" ] || fail "the collector lost rows in the upgrade"
ok "surveyd-collector upgraded too: restarted, its $rows rows kept"

echo "== stop"
systemctl stop surveyd || fail "systemctl stop surveyd"
result=$(systemctl show -p Result --value surveyd)
code=$(systemctl show -p ExecMainStatus --value surveyd)
if [ "$result" != success ] || [ "$code" != 0 ]; then
    fail "stop ended with Result=$result, exit status $code"
fi
ok "systemctl stop: Result=$result, exit status $code"

echo "== remove keeps the audit log, purge leaves nothing"
apt-get remove -y -q -o Dpkg::Use-Pty=0 surveyd || fail "apt-get remove surveyd"
[ -s /var/log/surveyd/audit.log ] || fail "apt-get remove deleted the audit log"
[ -f "$CFG" ] || fail "apt-get remove deleted the conffile"
[ -n "$(consent_files)" ] || fail "apt-get remove deleted the consent"
ok "after remove the audit log ($(wc -l </var/log/surveyd/audit.log) lines), the consent and the conffile are kept"
rm -r /etc/systemd/system/surveyd-collector.service.d
apt-get purge -y -q -o Dpkg::Use-Pty=0 surveyd surveyd-collector || fail "apt-get purge"
leftovers=$(ls -d /etc/surveyd /usr/lib/systemd/system/surveyd* /lib/systemd/system/surveyd* \
    /etc/systemd/system/*/surveyd* /var/lib/systemd/deb-systemd-helper-enabled/surveyd* \
    /var/lib/systemd/deb-systemd-helper-enabled/*/surveyd* \
    /var/lib/systemd/deb-systemd-helper-masked/surveyd* /var/lib/surveyd* \
    /var/lib/private/surveyd* /var/log/surveyd* /var/log/private/surveyd* \
    /run/surveyd* 2>/dev/null)
[ -z "$leftovers" ] || fail "left after purge: $leftovers"
for unit in surveyd surveyd-collector; do
    state=$(systemctl show -p LoadState --value "$unit.service")
    [ "$state" = not-found ] || fail "$unit.service is still known to systemd ($state)"
done
if getent passwd | grep -q surveyd || getent group | grep -q surveyd; then
    fail "a surveyd user or group is left"
fi
known=$(dpkg-query -W -f '${Package} ${db:Status-Status}\n' 'surveyd*' 2>/dev/null |
    grep -v ' not-installed$')
[ -z "$known" ] || fail "dpkg still has: $known"
[ -z "$(debconf-show surveyd 2>/dev/null)" ] || fail "debconf still knows: $(debconf-show surveyd)"
ok "after purge: no unit, user, state, consent, debconf answer, log or conffile of surveyd or surveyd-collector"

echo PASS >/out/result
echo "== all checks passed"
