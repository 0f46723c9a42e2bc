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
#   3. a streaming standby made with pg_basebackup (tests/standby);
#   4. examples/: go-pglock's use cases as runnable Python scripts that assert their outcome;
#   5. PgBouncer in transaction pooling mode in front of the cluster (tests/clients/pooler.sh).
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

# standby_test PG_CONFIG: makes a streaming standby of the running cluster with pg_basebackup
# and runs tests/standby against it.
standby_test() {
  local bindir=$PGLOCK_CLUSTER_BINDIR standby out
  "$bindir/psql" -qX -c 'CREATE DATABASE pglock_standby'
  "$bindir/psql" -qX -d pglock_standby -c 'CREATE EXTENSION pglock'
  standby=$(mktemp -d /tmp/pglock-standby.XXXXXX)
  chmod 755 "$standby"
  chown postgres: "$standby"
  sudo -u postgres "$bindir/pg_basebackup" -D "$standby/data" -R -X stream --no-sync \
    -h "$PGHOST" -p "$PGPORT" -U postgres
  sudo -u postgres "$bindir/pg_ctl" -D "$standby/data" -l "$standby/server.log" -w \
    -o "-c listen_addresses='' -k $standby -p 5433 -c hot_standby=on" start >/dev/null
  out=$work/standby-$major
  rm -rf "$out"
  mkdir -p "$out"
  chown postgres: "$out"
  local status=0
  sudo -u postgres "$("$1" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
    --inputdir=tests/standby --outputdir="$out" --bindir="$bindir" --host="$standby" \
    --port=5433 --user=postgres --use-existing --dbname=pglock_standby standby || status=$?
  sudo -u postgres "$bindir/pg_ctl" -D "$standby/data" -m immediate stop >/dev/null
  rm -rf "$standby"
  if [ "$status" != 0 ]; then
    cat "$out/regression.diffs" >&2 || true
    exit 1
  fi
}

for major in "${majors[@]}"; do
  pg_config=$(pg_config_for "$major")
  [ -x "$pg_config" ] || { log "PostgreSQL $major is not in pg-versions"; exit 2; }

  log "PostgreSQL $major: Rust tests"
  cargo pgrx test "pg$major" --runas postgres --pgdata "$work/pgrx-data-$major"

  log "PostgreSQL $major: pg_regress"
  scripts/install.sh --debug --pg-config "$pg_config"
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

  log "PostgreSQL $major: a streaming standby"
  standby_test "$pg_config"

  log "PostgreSQL $major: examples"
  psql_bin=$PGLOCK_CLUSTER_BINDIR/psql
  "$psql_bin" -qX -c 'CREATE EXTENSION pglock'
  PYTHON=$PGLOCK_PYTHON examples/run_all.sh

  log "PostgreSQL $major: behind PgBouncer in transaction pooling mode"
  PYTHON=$PGLOCK_PYTHON bash tests/clients/pooler.sh
  cluster_stop
done
log "all tests passed on PostgreSQL ${majors[*]}"
