#!/usr/bin/env bash
# Installs what tests/kopano_mysql.rs needs to run its own throwaway MariaDB
# servers: mariadbd and mariadb-install-db (mariadb-server-core) and the
# my_print_defaults that mariadb-install-db calls (mariadb-client-core).
# Only the binaries: the tests start and stop their servers themselves, on
# 127.0.0.1 and a socket in a temp dir, so no system service is installed
# or started. Safe to run again: it installs only what is missing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
packages=(mariadb-server-core mariadb-client-core)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
/usr/sbin/mariadbd --version
