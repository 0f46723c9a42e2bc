#!/usr/bin/env bash
# Runs pglock's whole test suite against PostgreSQL 15:
#   1. Rust tests (`cargo pgrx test`): unit tests, in-backend tests, and tests/sessions.rs,
#      which drives several real connections against pgrx's test instance;
#   2. pg_regress (tests/pg_regress): single-session behaviour and every SQLSTATE, against a
#      throwaway cluster with the extension installed.
# Installs whatever is missing first (scripts/setup.sh). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/cluster.sh

work=/tmp/pglock-test
mkdir -p "$work"
chown postgres: "$work"

log "Rust tests on PostgreSQL $PGLOCK_PG_MAJOR"
cargo pgrx test "pg$PGLOCK_PG_MAJOR" --runas postgres --pgdata "$work/pgrx-data"

log "pg_regress on PostgreSQL $PGLOCK_PG_MAJOR"
cargo pgrx install --pg-config "$PGLOCK_PG_CONFIG" >/dev/null
cluster_start
regress_out=$work/regress
rm -rf "$regress_out"
mkdir -p "$regress_out"
chown postgres: "$regress_out"
tests=$(cd tests/pg_regress/sql && ls ./*.sql | sed 's|^\./||; s|\.sql$||' | sort)
pg_regress=$("$PGLOCK_PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress
if ! sudo -u postgres "$pg_regress" --inputdir=tests/pg_regress --outputdir="$regress_out" \
      --host="$PGHOST" --port="$PGPORT" --user=postgres --load-extension=pglock \
      --dbname=pglock_regress $tests; then
  cat "$regress_out/regression.diffs" >&2 || true
  exit 1
fi
