#!/usr/bin/env bash
# Builds the packages of surveyd and surveyd-collector from this tree:
#
#   packaging/build.sh OUTDIR
#
# leaves surveyd_*.deb, surveyd-collector_*.deb, surveyd-*.rpm and
# surveyd-collector-*.rpm in OUTDIR. Needs cargo-deb and
# cargo-generate-rpm (`cargo install cargo-deb cargo-generate-rpm`).
#
# The man pages and completions are generated first, from the clap
# definitions and etc/surveyd.cfg (examples/gen-docs.rs), into
# TARGET/release/surveyd-pkg/, where the package metadata in Cargo.toml
# expects them; the release binaries are built once, by cargo deb.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out"

target=$(cargo metadata --no-deps --format-version 1 |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
pkg=$target/release/surveyd-pkg
rm -rf "$pkg"

echo "build: man pages and completions -> $pkg"
cargo run --locked --quiet --example gen-docs -- "$pkg" >/dev/null
gzip -9n "$pkg"/man/*

echo "build: release binaries and .deb packages"
# cargo deb deletes older builds of the same package from TARGET/debian,
# so each package is written straight to OUTDIR.
cargo deb --locked --output "$out"
cargo deb --locked --no-build --variant collector --output "$out"

echo "build: .rpm packages"
mkdir -p "$pkg/bin"
for bin in surveyd surveyd-collector; do
    strip --strip-all -o "$pkg/bin/$bin" "$target/release/$bin"
done
cargo generate-rpm --output "$out/"
cargo generate-rpm --variant collector --output "$out/"

ls -l "$out"
