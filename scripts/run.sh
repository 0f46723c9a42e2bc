#!/usr/bin/env bash
# Usage: scripts/run.sh [MAJOR]    (default 15; any version in pg-versions)
#
# Builds pglock, starts a throwaway PostgreSQL with `CREATE EXTENSION pglock` done, and opens
# psql there. Without a terminal on stdin it runs a short two-session demo instead and exits.
# The cluster lives in a temporary directory, listens on a Unix socket only, and is removed
# on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
pglock_setup
source scripts/cluster.sh

major=${1:-15}
pg_config=$(pg_config_for "$major")
[ -x "$pg_config" ] || { log "PostgreSQL $major is not in pg-versions"; exit 2; }

log "building and installing pglock into PostgreSQL $major"
scripts/install.sh --debug --pg-config "$pg_config"

log "starting a throwaway PostgreSQL $major"
cluster_start "$pg_config"
psql() { "$PGLOCK_CLUSTER_BINDIR/psql" "$@"; }
psql -qX -c 'CREATE EXTENSION pglock'

if [ -t 0 ]; then
  log "psql with pglock installed; \\q to leave (the cluster is removed then)"
  psql -X
  exit 0
fi

# Not a terminal: show two sessions contending for one name.
log "demo: two sessions, one name"
session() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
session -c "SELECT 'A: lock(''nightly-report'') -> ' || pglock.lock('nightly-report')" \
        -c "SELECT 'A: ... two seconds of work ...' FROM pg_sleep(2)" \
        -c "SELECT 'A: unlock(''nightly-report'') -> ' || pglock.unlock('nightly-report')" &
sleep 0.5
session -c "SELECT 'B: try_lock(''nightly-report'') -> ' || pglock.try_lock('nightly-report')" \
        -c "SELECT 'B: lock(''nightly-report'', ''100 ms'') -> ' || pglock.lock('nightly-report', '100 ms')" \
        -c "SELECT 'B: lock(''nightly-report'', ''5 seconds'') -> ' || pglock.lock('nightly-report', '5 seconds')
                   || ' after waiting ' || round(extract(epoch FROM clock_timestamp() - statement_timestamp()), 1) || ' s'" \
        -c "SELECT 'B: held() -> ' || name || ', key ' || key || ', ' || mode || ', ' || scope || ', depth ' || depth FROM pglock.held()"
wait
log "demo finished"
