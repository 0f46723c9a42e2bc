#!/usr/bin/env bash
# Usage: scripts/test.sh [MAJOR...]    (default: every version in pg-versions)
#
# Runs pglock's whole test suite against each PostgreSQL version:
#   1. Rust tests (`cargo pgrx test`): unit tests, in-backend tests, and tests/sessions.rs,
#      which drives several real connections against pgrx's test instance;
#   2. pg_regress (tests/pg_regress): single-session behaviour and every SQLSTATE, and
#      isolation specs (tests/isolation) for deterministic multi-session behaviour, against a
#      throwaway cluster with the extension installed (not preloaded; the Rust tests' instance
#      has pglock in shared_preload_libraries);
#   3. examples/: go-pglock's use cases as runnable Python scripts that assert their outcome.
# Installs whatever is missing first (scripts/setup.sh). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/cluster.sh

bash scripts/check-versions.sh

majors=("$@")
((${#majors[@]})) || majors=("${PGLOCK_VERSIONS[@]}")

work=/tmp/pglock-test
mkdir -p "$work"
chown postgres: "$work"
tests=$(cd tests/pg_regress/sql && ls ./*.sql | sed 's|^\./||; s|\.sql$||' | sort)
specs=$(cd tests/isolation/specs && ls ./*.spec | sed 's|^\./||; s|\.spec$||' | sort)

for major in "${majors[@]}"; do
  pg_config=$(pg_config_for "$major")
  [ -x "$pg_config" ] || { log "PostgreSQL $major is not in pg-versions"; exit 2; }

  log "PostgreSQL $major: Rust tests"
  cargo pgrx test "pg$major" --runas postgres --pgdata "$work/pgrx-data-$major"

  log "PostgreSQL $major: pg_regress"
  cargo pgrx install --pg-config "$pg_config" >/dev/null
  cluster_start "$pg_config"
  out=$work/regress-$major
  rm -rf "$out"
  mkdir -p "$out"
  chown postgres: "$out"
  if ! sudo -u postgres "$("$pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
        --inputdir=tests/pg_regress --outputdir="$out" --bindir="$PGLOCK_CLUSTER_BINDIR" \
        --host="$PGHOST" --port="$PGPORT" --user=postgres --load-extension=pglock \
        --dbname=pglock_regress $tests; then
    cat "$out/regression.diffs" >&2 || true
    exit 1
  fi

  log "PostgreSQL $major: isolation specs"
  out=$work/isolation-$major
  rm -rf "$out"
  mkdir -p "$out"
  chown postgres: "$out"
  if ! sudo -u postgres "$("$pg_config" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress" \
        --inputdir=tests/isolation --outputdir="$out" --bindir="$PGLOCK_CLUSTER_BINDIR" \
        --host="$PGHOST" --port="$PGPORT" --user=postgres --load-extension=pglock \
        --dbname=pglock_isolation $specs; then
    cat "$out/regression.diffs" >&2 || true
    exit 1
  fi

  log "PostgreSQL $major: examples"
  psql_bin=$PGLOCK_CLUSTER_BINDIR/psql
  "$psql_bin" -qX -c 'CREATE EXTENSION pglock'
  PYTHON=$PGLOCK_PYTHON examples/run_all.sh
  cluster_stop
done
log "all tests passed on PostgreSQL ${majors[*]}"
