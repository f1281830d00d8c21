#!/usr/bin/env bash
# Builds the packages of surveyd and surveyd-collector from this tree:
#
#   packaging/build.sh [--deb-version VERSION] OUTDIR
#
# leaves surveyd_*.deb, surveyd-collector_*.deb, surveyd-*.rpm and
# surveyd-collector-*.rpm in OUTDIR. With --deb-version only the .debs are
# built, with that version (packaging/test.sh builds a newer one to test
# upgrades). Needs
# cargo-deb and cargo-generate-rpm (`cargo install cargo-deb
# cargo-generate-rpm`), dpkg-deb and strip.
#
# The man pages and completions are generated first, from the clap
# definitions and etc/surveyd.cfg (examples/gen-docs.rs), into
# TARGET/release/surveyd-pkg/, where the package metadata in Cargo.toml
# expects them; the release binaries are built once, for both formats.
set -euo pipefail
cd "$(dirname "$0")/.."

deb_version=()
if [ "${1:-}" = "--deb-version" ] && [ $# -ge 2 ]; then
    deb_version=(--deb-version "$2")
    shift 2
fi
if [ $# -ne 1 ]; then
    echo "usage: $0 [--deb-version VERSION] OUTDIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out"

# One-line synopses; the RPM summaries in Cargo.toml say the same.
declare -A synopsis=(
    [surveyd]="privacy-first usage-survey daemon for groupware servers"
    [surveyd-collector]="ingest service for surveyd and kopano-server usage reports"
)

target=$(cargo metadata --no-deps --format-version 1 |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
pkg=$target/release/surveyd-pkg
rm -rf "$pkg"

echo "build: man pages and completions -> $pkg"
cargo run --locked --quiet --example gen-docs -- "$pkg" >/dev/null
gzip -9n "$pkg"/man/*

echo "build: release binaries"
cargo build --locked --release --bins

# cargo-deb takes the synopsis from Cargo's package description, which
# names both programs and is too long for one line, and writes no md5sums
# (which debsums checks). Both are set here, with dpkg-deb.
finish_deb() {
    local deb=$1 name=$2 tree
    tree=$(mktemp -d)
    dpkg-deb -R "$deb" "$tree"
    # cargo-deb writes Description last.
    sed -i '/^Description:/,$d' "$tree/DEBIAN/control"
    {
        printf 'Description: %s\n' "${synopsis[$name]}"
        fold -s -w 78 "packaging/debian/$name.description" |
            sed 's/ *$//; s/^/ /; s/^ $/ ./'
    } >>"$tree/DEBIAN/control"
    (cd "$tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
        sort -z | xargs -0 md5sum) >"$tree/DEBIAN/md5sums"
    chmod 644 "$tree/DEBIAN/md5sums"
    dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
    rm -rf "$tree"
    echo "$deb"
}

echo "build: .deb packages"
# cargo deb deletes older builds of the same package from TARGET/debian,
# so each package is written straight to OUTDIR. It compresses fast: the
# package is compressed for good by finish_deb.
for name in surveyd surveyd-collector; do
    variant=()
    [ "$name" = surveyd ] || variant=(--variant collector)
    deb=$(cargo deb --locked --no-build --quiet --fast "${variant[@]}" "${deb_version[@]}" \
        --output "$out")
    finish_deb "$deb" "$name"
done
[ ${#deb_version[@]} -eq 0 ] || exit 0

echo "build: .rpm packages"
mkdir -p "$pkg/bin"
for bin in surveyd surveyd-collector; do
    strip --strip-all -o "$pkg/bin/$bin" "$target/release/$bin"
done
cargo generate-rpm --output "$out/"
cargo generate-rpm --variant collector --output "$out/"
ls "$out"/*.rpm
