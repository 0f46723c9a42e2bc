#!/usr/bin/env bash
# Usage: scripts/test.sh [--quick] [MAJOR...]    (default: every version in pg-versions)
#
# --quick is the inner loop: one version (15 unless given), soaks of 5 s, sqlsmith for 15 s a
# seed, and no failover, pg_auto_failover, Prometheus or packaging steps. .ci/run runs the whole suite.
# Each step's duration is printed at the end of a run.
#
# Runs pglock's whole test suite against each PostgreSQL version:
#   1. Rust tests (`cargo pgrx test`): unit tests, in-backend tests, and tests/sessions.rs,
#      which drives several real connections against pgrx's test instance;
#   2. pg_regress (tests/pg_regress): single-session behaviour and every SQLSTATE, and
#      isolation specs (tests/isolation) for deterministic multi-session behaviour, against a
#      throwaway cluster with the extension installed (not preloaded; the Rust tests' instance
#      has pglock in shared_preload_libraries);
#   3. a streaming standby made with pg_basebackup (tests/standby), with a recovery conflict
#      during a wait;
#   4. examples/: go-pglock's use cases as runnable Python scripts that assert their outcome,
#      the clients' tests (clients/go, clients/python), and tests/server: checks that read the
#      server log;
#   5. PgBouncer in transaction pooling mode in front of the cluster (tests/pgbouncer/pooler.sh),
#      and random SQL from sqlsmith against a cluster of its own (tests/server/sqlsmith.sh;
#      PGLOCK_SQLSMITH_SECONDS=600 soaks);
#   6. fencing tokens across `pg_ctl restart -m immediate` and SIGKILL of the postmaster
#      (tests/server/fencing_restart.sh); then, with pglock preloaded, the lease worker across
#      crash restarts (tests/server/leases_restart.sh), the examples of README.md and docs/ as
#      shown, and docs/functions.md against the catalog (tests/server/docs_examples.sh),
#      token-owned locks across restarts
#      (tests/server/token_locks_restart.sh), under kills of every process they involve
#      (tests/server/token_chaos.py) and through PgBouncer (tests/pgbouncer/token_locks.py,
#      examples/serverless_job.py), and tokens, leases and token-owned locks across failover to
#      a synchronous standby (tests/standby/failover.py), which ends the cluster;
#   7. on PostgreSQL 15 only: pglock's Prometheus queries through prometheus-postgres-exporter
#      (tests/server/prometheus.py); the failover story on pg_auto_failover, with a monitor, a
#      primary, a secondary and `pg_autoctl perform failover` (tests/standby/pg_auto_failover.sh);
#      and the Debian package, built, installed with dpkg, used and removed (tests/package/deb.sh).
# Installs whatever is missing first (scripts/setup.sh). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
pglock_setup
source scripts/cluster.sh

bash scripts/check-versions.sh
python3 scripts/check-links.py
python3 scripts/check-errors.py

quick=
majors=()
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    *) majors+=("$arg") ;;
  esac
done
if ((${#majors[@]} == 0)); then
  if [ -n "$quick" ]; then majors=(15); else majors=("${PGLOCK_VERSIONS[@]}"); fi
fi
[ -z "$quick" ] || export PGLOCK_SQLSMITH_SECONDS=${PGLOCK_SQLSMITH_SECONDS:-15}
soak_seconds=${PGLOCK_SOAK_SECONDS:-}
chaos_seconds=${PGLOCK_CHAOS_SECONDS:-}

# step LABEL: logs the start of a step; the durations are printed by print_steps at the end.
step_names=()
step_seconds=()
step_label="setup (tools, versions)"
step_started=$SECONDS
step() {
  step_names+=("$step_label")
  step_seconds+=($((SECONDS - step_started)))
  step_label=$1
  step_started=$SECONDS
  log "$1"
}
print_steps() {
  step "done"
  local i
  log "durations (total ${SECONDS} s):"
  for i in "${!step_names[@]}"; do
    printf '%6d s  %s\n' "${step_seconds[$i]}" "${step_names[$i]}" >&2
  done
}

work=/tmp/pglock-test
mkdir -p "$work"
chown postgres: "$work"
tests=$(cd tests/pg_regress/sql && ls ./*.sql | sed 's|^\./||; s|\.sql$||' | sort)
specs=$(cd tests/isolation/specs && ls ./*.spec | sed 's|^\./||; s|\.spec$||' | sort)

# start_standby [postgres options...]: makes a streaming standby of the running cluster with
# pg_basebackup and starts it on port 5433 with its socket in $standby (a new directory).
start_standby() {
  local bindir=$PGLOCK_CLUSTER_BINDIR
  standby=$(postgres_dir standby)
  # A fast checkpoint: the default spread one can take minutes on an idle server.
  sudo -u postgres timeout 300 "$bindir/pg_basebackup" -D "$standby/data" -R -X stream \
    --no-sync --checkpoint=fast \
    -h "$PGHOST" -p "$PGPORT" -U postgres
  # pg_basebackup -R writes every option its own libpq knows; the standby's walreceiver may load
  # an older system libpq (the PyPI builds do), which rejects the newer ones (sslcertmode).
  # Only these are needed; a later line of the file wins.
  echo "primary_conninfo = 'host=$PGHOST port=$PGPORT user=postgres application_name=standby'" |
    sudo -u postgres tee -a "$standby/data/postgresql.auto.conf" >/dev/null
  sudo -u postgres "$bindir/pg_ctl" -D "$standby/data" -l "$standby/server.log" -w \
    -o "-c listen_addresses='' -k $standby -p 5433 -c hot_standby=on -c max_standby_streaming_delay=200ms $*" \
    start >/dev/null
}

stop_standby() {
  sudo -u postgres "$PGLOCK_CLUSTER_BINDIR/pg_ctl" -D "$standby/data" -m immediate stop \
    >/dev/null 2>&1 || true
  rm -rf "$standby"
}

# standby_test PG_CONFIG: runs tests/standby against a streaming standby of the running cluster.
standby_test() {
  "$PGLOCK_CLUSTER_BINDIR/psql" -qX -c 'CREATE DATABASE pglock_standby'
  "$PGLOCK_CLUSTER_BINDIR/psql" -qX -d pglock_standby -c 'CREATE EXTENSION pglock'
  start_standby
  local status=0
  regress "$("$1" --pkglibdir)/pgxs/src/test/regress/pg_regress" tests/standby \
    "$work/standby-$major" --host="$standby" --port=5433 --use-existing \
    --dbname=pglock_standby standby || status=$?
  tests/standby/recovery_conflict.sh "$standby" 5433 pglock_standby || status=$?
  stop_standby
  return $status
}

# failover_test: makes the standby synchronous, then stops the primary and promotes the
# standby (tests/standby/failover.py). Both preload pglock, for the lease worker. The cluster
# is gone afterwards: run it last.
failover_test() {
  # Prepared transactions on both (a standby needs at least the primary's number).
  cluster_restart max_prepared_transactions=10
  start_standby -c shared_preload_libraries=pglock -c max_prepared_transactions=10 \
    -c max_worker_processes=32
  "$PGLOCK_CLUSTER_BINDIR/psql" -qX -c "ALTER SYSTEM SET synchronous_standby_names = '*'" \
    -c 'SELECT pg_reload_conf()' >/dev/null
  local tries=600
  until [ "$("$PGLOCK_CLUSTER_BINDIR/psql" -qXAt -c \
      "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ]; do
    ((tries--)) || { log "the standby never became synchronous"; stop_standby; return 1; }
    sleep 0.1
  done
  local status=0
  PRIMARY_HOST=$PGHOST PRIMARY_PORT=$PGPORT STANDBY_HOST=$standby STANDBY_PORT=5433 \
    timeout 300 "$PGLOCK_PYTHON" tests/standby/failover.py "$PGLOCK_CLUSTER_DIR/data" \
    "$standby/data" "$PGLOCK_CLUSTER_BINDIR" || status=$?
  stop_standby
  return $status
}

# regress TOOL INPUTDIR OUTPUT [options and test names...]: runs pg_regress or
# pg_isolation_regress (from the version's PGXS) as postgres, showing the diffs on failure.
regress() {
  local tool=$1 inputdir=$2 out=$3
  shift 3
  rm -rf "$out"
  mkdir -p "$out"
  chown postgres: "$out"
  if ! sudo -u postgres "$tool" --inputdir="$inputdir" --outputdir="$out" \
        --bindir="$PGLOCK_CLUSTER_BINDIR" --user=postgres "$@"; then
    cat "$out/regression.diffs" >&2 || true
    return 1
  fi
}

for major in "${majors[@]}"; do
  pg_config=$(pg_config_for "$major")
  [ -x "$pg_config" ] || { log "PostgreSQL $major is not in pg-versions"; exit 2; }

  # The soaks (random load for a time: tests/shapes.rs, tests/chaos.rs, the reconnecting
  # clients of tests/pgbouncer/token_locks.py) run their full 20 s on the first version and 5 s
  # on the others and in --quick: every test runs on every version, the long random runs once.
  # PGLOCK_SOAK_SECONDS and PGLOCK_CHAOS_SECONDS, when set, apply to every version.
  if [ -n "$quick" ] || [ "$major" != "${majors[0]}" ]; then
    export PGLOCK_SOAK_SECONDS=${soak_seconds:-5} PGLOCK_CHAOS_SECONDS=${chaos_seconds:-5}
  else
    export PGLOCK_SOAK_SECONDS=${soak_seconds:-20} PGLOCK_CHAOS_SECONDS=${chaos_seconds:-20}
  fi

  step "PostgreSQL $major: Rust tests"
  rm -rf "$work/pgrx-data-$major"  # a fresh test instance every run
  # RUST_BACKTRACE reaches the test server (pgrx passes RUST* variables on): errors must reach
  # clients without a Rust backtrace all the same (tests/interrupts.rs checks both).
  RUST_BACKTRACE=1 cargo pgrx test "pg$major" --runas postgres --pgdata "$work/pgrx-data-$major"

  step "PostgreSQL $major: pg_regress"
  scripts/install.sh --debug --pg-config "$pg_config"
  cluster_start "$pg_config"
  pgxs=$("$pg_config" --pkglibdir)/pgxs/src/test
  regress "$pgxs/regress/pg_regress" tests/pg_regress "$work/regress-$major" \
    --host="$PGHOST" --port="$PGPORT" --load-extension=pglock --dbname=pglock_regress $tests

  step "PostgreSQL $major: isolation specs"
  regress "$pgxs/isolation/pg_isolation_regress" tests/isolation "$work/isolation-$major" \
    --host="$PGHOST" --port="$PGPORT" --load-extension=pglock --dbname=pglock_isolation $specs

  step "PostgreSQL $major: a streaming standby"
  standby_test "$pg_config"

  step "PostgreSQL $major: interrupts serviced during timed waits (server log)"
  "$PGLOCK_CLUSTER_BINDIR/psql" -qX -c 'CREATE EXTENSION pglock'
  tests/server/memory_contexts.sh

  step "PostgreSQL $major: examples"
  PYTHON=$PGLOCK_PYTHON examples/run_all.sh

  step "PostgreSQL $major: the clients (clients/go, clients/rust, clients/python)"
  clients/go/test.sh
  clients/rust/test.sh
  PYTHONPATH=clients/python "$PGLOCK_PYTHON" clients/python/test_pglock.py
  PYTHONPATH=clients/python "$PGLOCK_PYTHON" clients/python/test_aio.py

  step "PostgreSQL $major: behind PgBouncer in transaction pooling mode"
  PYTHON=$PGLOCK_PYTHON bash tests/pgbouncer/pooler.sh

  step "PostgreSQL $major: random SQL from sqlsmith against every function"
  tests/server/sqlsmith.sh "$pg_config"

  step "PostgreSQL $major: fencing tokens across a restart and a crash"
  tests/server/fencing_restart.sh

  step "PostgreSQL $major: the lease worker across crash restarts"
  # Preloaded from here on; token-owned locks need prepared transactions, and a worker process
  # for each acquire that waits.
  cluster_restart shared_preload_libraries=pglock max_prepared_transactions=20 \
    max_worker_processes=32
  tests/server/leases_restart.sh

  step "PostgreSQL $major: the examples of README.md and docs/, as shown"
  tests/server/docs_examples.sh

  step "PostgreSQL $major: upgrading a running preloaded server, locks held"
  "$PGLOCK_PYTHON" tests/server/upgrade_running.py

  step "PostgreSQL $major: token-owned locks across restarts and through PgBouncer"
  tests/server/token_locks_restart.sh
  "$PGLOCK_PYTHON" tests/server/token_chaos.py
  PYTHON=$PGLOCK_PYTHON bash tests/pgbouncer/pooler.sh tests/pgbouncer/token_locks.py
  PYTHON=$PGLOCK_PYTHON bash tests/pgbouncer/pooler.sh examples/serverless_job.py
  PYTHONPATH=clients/python PYTHON=$PGLOCK_PYTHON \
    bash tests/pgbouncer/pooler.sh clients/python/test_token_locks.py
  PYTHON=$PGLOCK_PYTHON clients/python/test_package.sh
  clients/go/test.sh tokens
  clients/rust/test.sh tokens
  if [ -n "$quick" ]; then
    cluster_stop
    continue
  fi
  if [ "$major" = 15 ]; then
    step "PostgreSQL $major: Prometheus metrics through prometheus-postgres-exporter"
    "$PGLOCK_PYTHON" tests/server/prometheus.py
  fi

  step "PostgreSQL $major: fencing tokens and leases across failover to a synchronous standby"
  failover_test
  cluster_stop

  if [ "$major" = 15 ]; then
    step "PostgreSQL $major: fencing tokens and leases across a pg_auto_failover failover"
    tests/standby/pg_auto_failover.sh "$PGLOCK_PYTHON"

    step "PostgreSQL $major: the Debian package"
    tests/package/deb.sh
    scripts/install.sh --debug --pg-config "$pg_config"  # the source build back in place

    step "the PGXN distribution"
    tests/package/pgxn.sh
  fi
done
print_steps
log "all tests passed on PostgreSQL ${majors[*]}${quick:+ (quick)}"
