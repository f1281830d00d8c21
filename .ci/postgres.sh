#!/usr/bin/env bash
# Throwaway PostgreSQL for the collector's tests (run as root).
#
#   eval "$(.ci/postgres.sh)"        # start; exports SURVEYD_TEST_POSTGRES_URL
#   .ci/postgres.sh stop             # stop and delete the cluster it started
#
# Starts a fresh cluster in a temp dir as the `postgres` user, listening on
# 127.0.0.1 (a random free port) and on a socket inside that dir only,
# creates the database `surveyd_test`, and prints export lines on stdout;
# everything else goes to stderr. Installs Debian's postgresql if missing.
# PG_FSYNC=on keeps fsync (the default off suits throwaway test data; the
# benchmark turns it on).
set -euo pipefail

find_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg() { runuser -u postgres -- "$@"; }

if [ "${1:-start}" = stop ]; then
  dir=${SURVEYD_TEST_POSTGRES_DIR:?SURVEYD_TEST_POSTGRES_DIR is not set}
  pg "$(find_bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  rm -rf "$dir"
  exit 0
fi

bindir=$(find_bindir)
if [ -z "$bindir" ] || ! id postgres >/dev/null 2>&1; then
  echo "installing postgresql from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bindir=$(find_bindir)
fi

dir=$(mktemp -d /tmp/surveyd-pg.XXXXXX)
chown postgres:postgres "$dir"
chmod 700 "$dir"
# The package's own cluster is not touched; this one is trust-only on
# loopback and lives as long as the test run.
pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }

started=
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 40000))
  if pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=${PG_FSYNC:-off} -c max_connections=200" \
      start >&2; then
    started=1
    break
  fi
done
[ -n "$started" ] || { echo "could not start PostgreSQL:" >&2; cat "$dir/server.log" >&2; exit 1; }

pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres surveyd_test
echo "export SURVEYD_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/surveyd_test"
echo "export SURVEYD_TEST_POSTGRES_DIR=$dir"
