#!/usr/bin/env bash
# The package test: builds the .deb and .rpm packages from this tree and
# proves them, printing each step it checked:
#
#   1. lintian on both .debs: no error, no warning;
#   2. the .rpms: file lists, scriptlets, %config(noreplace), and an
#      install, verify and erase with `rpm --root` in a throwaway root;
#   3. a minimal Debian 12 root (debootstrap, cached as a tarball under
#      /var/cache/surveyd-test), booted with systemd-nspawn, where
#      packaging/container-check.sh installs (the consent question
#      preseeded "no", then "yes"), runs, reloads, upgrades, removes and
#      purges the packages under the real systemd 252;
#   4. the exposure of both units (systemd-analyze security), offline on
#      the unit files as packaged and inside the booted container: at most
#      1.5 each.
#
# Runs as root (debootstrap, systemd-nspawn); installs the Debian packages
# and cargo subcommands it needs. Exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly MAX_EXPOSURE=1.5
readonly SUITE=bookworm
readonly INCLUDE=systemd,systemd-sysv,dbus,ca-certificates,procps
readonly CACHE_DIR=/var/cache/surveyd-test
# Bounds on the slow steps, in seconds.
readonly DEBOOTSTRAP_TIMEOUT=900
readonly CONTAINER_TIMEOUT=420

started=$SECONDS
step() { echo; echo "=== $* [$((SECONDS - started)) s]"; }
ok() { echo "ok: $*"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

work=
child=
cleanup() {
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    if [ -n "$work" ]; then
        umount "$work" 2>/dev/null || umount --lazy "$work"
        rmdir "$work"
    fi
}
trap cleanup EXIT

# Runs "$@" in the background and waits for it, killing it after $1
# seconds; returns non-zero (and says why) if it fails or takes too long.
bounded() {
    local seconds=$1 what=$2
    shift 2
    "$@" &
    child=$!
    local deadline=$((SECONDS + seconds))
    while kill -0 "$child" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            kill "$child" 2>/dev/null || true
            wait "$child" 2>/dev/null || true
            child=
            echo "FAIL: $what did not finish within $seconds s" >&2
            return 1
        fi
        sleep 1
    done
    local status=0
    wait "$child" || status=$?
    child=
    if [ $status -ne 0 ]; then
        echo "FAIL: $what failed (exit status $status)" >&2
        return 1
    fi
}

[ "$(id -u)" = 0 ] || fail "run as root: debootstrap, systemd-nspawn and rpm --root need it"

step "tools"
missing=()
for tool in lintian:lintian rpm:rpm debootstrap:debootstrap \
    systemd-nspawn:systemd-container strip:binutils dpkg-deb:dpkg; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm
ok "$(lintian --version), $(rpm --version), debootstrap $(dpkg-query -W -f '${Version}' debootstrap), $(systemd-nspawn --version | head -1), $(cargo deb --version), $(cargo generate-rpm --version)"

# The work dir is a tmpfs: the roots unpacked there (about 250 MB each)
# are gone at once when it is unmounted, where deleting them from disk
# takes longer than the tests.
work=$(mktemp -d /var/tmp/surveyd-test.XXXXXX)
mount -t tmpfs -o size=3g,mode=755 surveyd-test "$work"

step "build the packages"
bounded 3600 "packaging/build.sh" packaging/build.sh "$work/pkgs" || exit 1
version=$(dpkg-deb -f "$work"/pkgs/surveyd_*.deb Version)
bounded 600 "packaging/build.sh --deb-version" \
    packaging/build.sh --deb-version "$version+test1" "$work/upgrade" || exit 1
ok "built $(cd "$work/pkgs" && echo *) and, for the upgrade test, version $version+test1"

step "lintian"
# --fail-on none: lintian's own verdict would count the overridden tags
# that --show-overrides prints; E: and W: lines are counted here instead.
lintian_out=$(lintian --fail-on none --display-info --show-overrides \
    "$work"/pkgs/surveyd_*.deb "$work"/pkgs/surveyd-collector_*.deb 2>&1) ||
    fail "lintian did not run: $lintian_out"
echo "$lintian_out"
errors=$(grep -c '^E:' <<<"$lintian_out" || true)
warnings=$(grep -c '^W:' <<<"$lintian_out" || true)
if [ "$errors" != 0 ] || [ "$warnings" != 0 ]; then
    fail "lintian: $errors errors, $warnings warnings"
fi
ok "lintian: 0 errors, 0 warnings (overrides, marked O: above, are justified in packaging/debian/*.lintian-overrides)"

step "rpm: files, config, scriptlets"
for name in surveyd surveyd-collector; do
    rpm_file=$(ls "$work"/pkgs/"$name"-[0-9]*.rpm)
    echo "--- rpm -qpl $(basename "$rpm_file")"
    rpm -qpl "$rpm_file"
    echo "--- rpm -qp --scripts $(basename "$rpm_file")"
    rpm -qp --scripts "$rpm_file"
    files=$(rpm -qpl "$rpm_file")
    for path in "/usr/bin/$name" "/usr/lib/systemd/system/$name.service" \
        "/usr/share/man/man8/$name.8.gz"; do
        grep -qx "$path" <<<"$files" || fail "$rpm_file lacks $path"
    done
    config=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_file" | grep '^c')
    grep -Eq '^cn /etc/surveyd/' <<<"$config" ||
        fail "$rpm_file has no %config(noreplace) file in /etc/surveyd"
    scripts=$(rpm -qp --scripts "$rpm_file")
    for scriptlet in "systemctl --no-reload preset $name.service" \
        "systemctl --no-reload disable --now $name.service" "systemctl try-restart $name.service"; do
        grep -qF "$scriptlet" <<<"$scripts" || fail "$rpm_file scriptlets lack: $scriptlet"
    done
    ok "$name rpm: binary, unit, man page, config $(awk '{print $2}' <<<"$config") as %config(noreplace), systemd scriptlets"
done

step "Debian $SUITE root (debootstrap, cached)"
mirror=$(
    {
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null
    } | awk -v suite="$SUITE" 'BEGIN { RS = "" }
        $0 ~ "(^|\n)Suites:([^\n]* )?" suite "( |\n|$)" && $0 ~ "(^|\n)Types:[^\n]*deb( |\n|$)" {
            if (match($0, /(^|\n)URIs:[ \t]*[^ \t\n]+/)) {
                uri = substr($0, RSTART, RLENGTH); sub(/.*URIs:[ \t]*/, "", uri); print uri; exit
            }
        }'
)
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        sed -E 's/\[[^]]*\]//' | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }')
fi
[ -n "$mirror" ] || fail "no $SUITE mirror in /etc/apt/sources.list(.d)"
cache=$CACHE_DIR/$SUITE-minbase-$(printf '%s %s' "$INCLUDE" "$mirror" | sha256sum | cut -c1-12).tar
if [ -f "$cache" ]; then
    ok "reusing $cache ($(du -h "$cache" | cut -f1)), made with $INCLUDE from $mirror"
else
    mkdir -p "$CACHE_DIR"
    bounded "$DEBOOTSTRAP_TIMEOUT" debootstrap debootstrap --variant=minbase \
        --include="$INCLUDE" "$SUITE" "$work/bootstrap" "$mirror" >"$work/debootstrap.log" ||
        { tail -20 "$work/debootstrap.log"; exit 1; }
    # The downloaded .debs are not needed in the root.
    rm -f "$work"/bootstrap/var/cache/apt/archives/*.deb
    tar -C "$work/bootstrap" --numeric-owner -cf "$cache.tmp" .
    mv "$cache.tmp" "$cache"
    rm -rf "$work/bootstrap"
    ok "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $mirror, cached as $cache"
fi

step "rpm -i --root in a throwaway root"
# The throwaway root is the Debian root, so that the scriptlets run with a
# real /bin/sh and systemctl. --nodeps: rpm's database there is empty
# (dpkg owns that root's files), so rpm cannot see that /bin/sh, libc and
# libgcc_s are present.
rpmroot=$work/rpmroot
mkdir "$rpmroot"
tar -C "$rpmroot" --numeric-owner -xf "$cache"
rpm --root "$rpmroot" --initdb
rpm_out=$(rpm -i --root "$rpmroot" --nodeps "$work"/pkgs/surveyd-[0-9]*.rpm \
    "$work"/pkgs/surveyd-collector-[0-9]*.rpm 2>&1) || fail "rpm -i: $rpm_out"
echo "$rpm_out"
for says in "installed in local mode" "surveyd preview" "surveyd consent yes"; do
    grep -qF "$says" <<<"$rpm_out" || fail "the %post message of surveyd does not say: $says"
done
rpm --root "$rpmroot" -V --nodeps surveyd surveyd-collector || fail "rpm -V after rpm -i"
for name in surveyd surveyd-collector; do
    [ -x "$rpmroot/usr/bin/$name" ] || fail "rpm -i did not install /usr/bin/$name"
    [ -L "$rpmroot/etc/systemd/system/multi-user.target.wants/$name.service" ] ||
        fail "the %post scriptlet did not enable $name.service"
done
[ ! -e "$rpmroot/var/lib/surveyd/consent" ] && [ ! -e "$rpmroot/var/lib/private/surveyd/consent" ] ||
    fail "rpm -i recorded a consent"
ok "rpm -i --root: files installed and verified, both units enabled by the %post preset, no consent recorded (local mode) and the %post message says how to consent"
rpm -e --root "$rpmroot" surveyd surveyd-collector
left=$(ls -d "$rpmroot"/usr/bin/surveyd* "$rpmroot"/etc/surveyd \
    "$rpmroot"/etc/systemd/system/multi-user.target.wants/surveyd* 2>/dev/null || true)
[ -z "$left" ] || fail "left after rpm -e: $left"
ok "rpm -e --root: files, /etc/surveyd and the enablement links are gone"
rm -rf "$rpmroot"

step "offline exposure of the units as packaged"
unpacked=$work/unpacked
for name in surveyd surveyd-collector; do
    dpkg-deb -x "$work"/pkgs/"$name"_*.deb "$unpacked"
done
declare -A offline
for name in surveyd surveyd-collector; do
    analysis=$(systemd-analyze security --no-pager --offline=true --root="$unpacked" "$name.service")
    echo "$analysis"
    level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$analysis")
    [ -n "$level" ] || fail "no exposure level for $name.service"
    awk -v l="$level" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(l <= max) }' ||
        fail "$name.service: offline exposure $level is above $MAX_EXPOSURE"
    offline[$name]=$level
    ok "$name.service: offline exposure $level (at most $MAX_EXPOSURE)"
done

step "boot the Debian root with systemd-nspawn and check the packages inside"
root=$work/root
mkdir "$root" "$work/out"
tar -C "$root" --numeric-owner -xf "$cache"
install -m 755 packaging/container-check.sh "$root/usr/local/sbin/surveyd-check"
message_id=$(sed -n 's/.*REPORT_SENT_MESSAGE_ID: &str = "\([0-9a-f]*\)".*/\1/p' src/sys/logging.rs)
[ -n "$message_id" ] || fail "no REPORT_SENT_MESSAGE_ID in src/sys/logging.rs"
printf 'MESSAGE_ID=%s\nMAX_EXPOSURE=%s\n' "$message_id" "$MAX_EXPOSURE" >"$root/etc/surveyd-check.env"
cat >"$root/etc/systemd/system/surveyd-check.service" <<'EOF'
[Unit]
Description=surveyd package checks
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/surveyd-check
TimeoutStartSec=360
EOF
# --private-network: the container has only its own loopback, where the
# collector listens; nothing it sends can leave the machine.
bounded "$CONTAINER_TIMEOUT" "the booted container" \
    systemd-nspawn -D "$root" --register=no --keep-unit -q --private-network \
    --bind-ro="$work/pkgs:/pkgs" --bind-ro="$work/upgrade:/upgrade" --bind="$work/out:/out" \
    -b systemd.firstboot=off systemd.wants=surveyd-check.service >"$work/console.log" 2>&1 ||
    { tail -40 "$work/console.log"; exit 1; }
cat "$work/out/log" 2>/dev/null || fail "the container wrote no log; console: $(tail -40 "$work/console.log")"
[ "$(cat "$work/out/result" 2>/dev/null)" = PASS ] || fail "the checks in the container failed (log above)"
ok "all checks in the booted container passed"

step "summary"
while read -r unit level; do
    name=${unit%.service}
    echo "exposure $unit: offline ${offline[$name]}, in the booted container $level (limit $MAX_EXPOSURE)"
done <"$work/out/exposure"
echo "packaging/test.sh: all steps passed in $((SECONDS - started)) s"
