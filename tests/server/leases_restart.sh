#!/usr/bin/env bash
# The lease worker across a crash restart: a holder whose lease runs out is terminated (and a
# waiter gets the lock) before any crash, after a backend's SIGKILL makes the postmaster
# reinitialise shared memory, and after `pg_ctl restart -m immediate`. pglock.stats, also in
# shared memory only, is emptied by the crash.
#
# Needs: the running throwaway cluster of scripts/cluster.sh started with pglock in
# shared_preload_libraries (PGLOCK_CLUSTER_OPTIONS has it) and `CREATE EXTENSION pglock` done in
# postgres. Leaves the cluster running.
set -euo pipefail
: "${PGLOCK_CLUSTER_DIR:?}" "${PGLOCK_CLUSTER_BINDIR:?}" "${PGLOCK_CLUSTER_OPTIONS:?}"
data=$PGLOCK_CLUSTER_DIR/data
sql() { "$PGLOCK_CLUSTER_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
pg_ctl() { sudo -u postgres "$PGLOCK_CLUSTER_BINDIR/pg_ctl" -D "$data" "$@"; }
fail() { echo "leases_restart: $*" >&2; exit 1; }

# Waits (at most 60 s) until the server takes connections and the lease worker runs.
wait_for_worker() {
  for _ in $(seq 600); do
    if [ "$(sql -c "SELECT count(*) FROM pg_stat_activity
                    WHERE backend_type = 'pglock lease worker'" 2>/dev/null)" = 1 ]; then
      return 0
    fi
    sleep 0.1
  done
  fail "no lease worker after $1"
}

# A holder takes NAME with a 1 s lease and stops renewing; a waiter must get NAME within
# 30 s, and the holder's session must have been terminated by the worker.
lease_ends_holder() { # WHEN NAME
  local out=$PGLOCK_CLUSTER_DIR/holder.out
  sql -c "SET application_name = 'leases_restart'" \
      -c "SELECT pglock.lock('$2'), pglock.set_lease('$2', '1 s')" \
      -c "SELECT pg_sleep(60)" >"$out" 2>&1 &
  local holder=$!
  for _ in $(seq 100); do
    [ "$(sql -c "SELECT count(*) FROM pglock.locks WHERE name = '$2'
                 AND lease_expires_at IS NOT NULL")" = 1 ] && break
    sleep 0.05
  done
  local start=$SECONDS
  [ "$(sql -c "SELECT pglock.lock('$2', '30 s')")" = t ] || fail "$1: the waiter timed out"
  wait "$holder" && fail "$1: the holder's session survived its lease"
  grep -q "terminating connection" "$out" || fail "$1: the holder ended otherwise: $(cat "$out")"
  grep -q "lease on lock \"$2\" expired" "$PGLOCK_CLUSTER_DIR/server.log" ||
    fail "$1: the worker did not log the expiry"
  echo "leases_restart: $1: the stalled holder was terminated, the waiter got the lock ($((SECONDS - start)) s)"
}

wait_for_worker "start"
lease_ends_holder "before any crash" lease-before
# pglock.stats counted those locks; the crash below empties it with the rest of shared memory.
[ "$(sql -c "SELECT count(*) FROM pglock.stats WHERE name = 'lease-before' AND acquisitions >= 2")" = 1 ] ||
  fail "pglock.stats did not count the locks before the crash"

# A backend killed with SIGKILL: the postmaster ends every process, reinitialises shared
# memory (the lease table with it) and restarts the workers.
sql -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
sleep 0.5
victim=$(sql -c "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' LIMIT 1")
[ -n "$victim" ] || fail "no backend to kill"
kill -KILL "$victim"
wait || true
wait_for_worker "a crash restart"
grep -q "all server processes terminated; reinitializing" "$PGLOCK_CLUSTER_DIR/server.log" ||
  fail "the postmaster did not reinitialise"
[ "$(sql -c "SELECT count(*) FROM pglock.leases()")" = 0 ] || fail "leases survived the crash"
[ "$(sql -c "SELECT count(*) FROM pglock.stats")" = 0 ] || fail "statistics survived the crash"
lease_ends_holder "a crash restart" lease-after-crash

pg_ctl restart -m immediate -w -l "$PGLOCK_CLUSTER_DIR/server.log" >/dev/null
wait_for_worker "pg_ctl restart -m immediate"
lease_ends_holder "pg_ctl restart -m immediate" lease-after-restart
