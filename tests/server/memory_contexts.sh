#!/usr/bin/env bash
# pg_log_backend_memory_contexts() against a session whose timed waits keep timing out: each
# request must reach the server log while that session is still looping. (Before the fix,
# pglock swallowed its own timeout's cancel with the memory-context request still pending and
# InterruptPending cleared, so the request waited until the loop ended.)
#
# Needs: the running throwaway cluster of scripts/cluster.sh (PGHOST, PGPORT, PGUSER,
# PGLOCK_CLUSTER_DIR, PGLOCK_CLUSTER_BINDIR) with `CREATE EXTENSION pglock` done in postgres.
set -euo pipefail
: "${PGLOCK_CLUSTER_DIR:?}" "${PGLOCK_CLUSTER_BINDIR:?}"
log=$PGLOCK_CLUSTER_DIR/server.log
sql() { "$PGLOCK_CLUSTER_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# wait_for SECONDS QUERY: until QUERY returns t, or fail.
wait_for() {
  local tries=$(($1 * 20))
  while [ "$(sql -c "$2")" != t ]; do
    ((tries--)) || { echo "memory_contexts: timed out waiting for: $2" >&2; return 1; }
    sleep 0.05
  done
}

PGAPPNAME=pglock-mc-holder sql -c "SELECT pglock.lock('busy-memory-contexts'), pg_sleep(60)" \
  >/dev/null 2>&1 &
wait_for 10 "SELECT EXISTS (SELECT FROM pglock.locks WHERE key = pglock.key('busy-memory-contexts') AND granted)"
PGAPPNAME=pglock-mc-looper sql -c "DO \$\$ BEGIN
    WHILE clock_timestamp() < statement_timestamp() + interval '40 s' LOOP
      PERFORM pglock.lock('busy-memory-contexts', '1 ms');
    END LOOP; END \$\$" >/dev/null 2>&1 &
wait_for 10 "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'pglock-mc-looper' AND state = 'active')"
pid=$(sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pglock-mc-looper'")

status=0
for round in 1 2 3 4 5; do
  sql -c "SELECT pg_log_backend_memory_contexts($pid)" >/dev/null
  tries=200  # 10 s: the loop itself runs 40 s
  until [ "$(grep -c "logging memory contexts of PID $pid" "$log")" -ge "$round" ]; do
    ((tries--)) || { echo "memory_contexts: request $round never reached PID $pid's log" >&2; status=1; break 2; }
    sleep 0.05
  done
done
still_looping=$(sql -c "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $pid AND state = 'active')")
sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name IN ('pglock-mc-holder', 'pglock-mc-looper')" >/dev/null
wait || true
if [ $status = 0 ] && [ "$still_looping" != t ]; then
  echo "memory_contexts: the loop ended before the requests were checked; nothing was proven" >&2
  status=1
fi
[ $status = 0 ] && echo "memory_contexts: 5 requests logged by a session whose waits kept timing out"
exit $status
