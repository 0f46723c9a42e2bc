#!/usr/bin/env bash
# What a recovery conflict does to a session that waits for a pglock lock on a hot standby
# (pglock.allow_on_standby on), as docs/semantics.md's "Hot standby" says: a wait with a timeout runs in
# a subtransaction, where PostgreSQL turns the conflict into FATAL (the connection ends); a
# wait without one gets PostgreSQL's ordinary ERROR and the session lives on.
#
# Usage: recovery_conflict.sh STANDBY_HOST STANDBY_PORT DATABASE
# The primary is the libpq environment (PGHOST, PGPORT, PGUSER); the standby must run with a
# short max_standby_streaming_delay. PGLOCK_CLUSTER_BINDIR has psql.
set -euo pipefail
standby_host=$1 standby_port=$2 db=$3
primary() { "$PGLOCK_CLUSTER_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -At -d "$db" "$@"; }
standby() { "$PGLOCK_CLUSTER_BINDIR/psql" -X -q -At -h "$standby_host" -p "$standby_port" -d "$db" "$@"; }

wait_for() {  # wait_for SECONDS QUERY (on the standby): until it returns t
  local tries=$(($1 * 20))
  while [ "$(standby -c "$2")" != t ]; do
    ((tries--)) || { echo "recovery_conflict: timed out waiting for: $2" >&2; return 1; }
    sleep 0.05
  done
}

# conflict TIMEOUT: a standby session reads a table, then waits for a lock another standby
# session holds; the primary drops the table. Prints what the waiting session's psql printed.
conflict() {
  primary -c "CREATE TABLE conflict_probe (i int)"
  wait_for 30 "SELECT to_regclass('conflict_probe') IS NOT NULL"
  PGAPPNAME=pglock-rc-holder standby -c "SET pglock.allow_on_standby = on" \
    -c "SELECT pglock.lock('standby-busy'), pg_sleep(60)" >/dev/null 2>&1 &
  wait_for 10 "SELECT EXISTS (SELECT FROM pglock.locks WHERE key = pglock.key('standby-busy') AND granted)"
  local out
  out=$(mktemp)
  PGAPPNAME=pglock-rc-waiter standby -v VERBOSITY=default -c "SET pglock.allow_on_standby = on" \
    -c "BEGIN" -c "SELECT count(*) FROM conflict_probe" \
    -c "SELECT pglock.lock('standby-busy', $1)" -c "ROLLBACK" -c "SELECT 'still connected'" >"$out" 2>&1 &
  local waiter=$!
  wait_for 10 "SELECT EXISTS (SELECT FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
                              WHERE a.application_name = 'pglock-rc-waiter' AND NOT l.granted)"
  primary -c "DROP TABLE conflict_probe"
  wait "$waiter" || true
  standby -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = 'pglock-rc-holder'" >/dev/null
  wait || true
  cat "$out"
  rm -f "$out"
}

status=0
timed=$(conflict "'30 s'")
case $timed in
  *"FATAL:  terminating connection due to conflict with recovery"*) ;;
  *) echo "recovery_conflict: a timed wait did not end with FATAL: $timed" >&2; status=1 ;;
esac
untimed=$(conflict NULL)
case $untimed in
  *"ERROR:  canceling statement due to conflict with recovery"*"still connected"*) ;;
  *) echo "recovery_conflict: a wait without timeout did not get the ERROR: $untimed" >&2; status=1 ;;
esac
[ $status = 0 ] && echo "recovery_conflict: FATAL during a timed wait, ERROR during an untimed one, as documented"
exit $status
