#!/usr/bin/env bash
# Fencing tokens across a restart and a crash: the first token after `pg_ctl restart -m
# immediate`, and after SIGKILL of the postmaster, is greater than the last one before.
#
# Needs: the running throwaway cluster of scripts/cluster.sh (PGHOST, PGPORT, PGUSER,
# PGLOCK_CLUSTER_DIR, PGLOCK_CLUSTER_BINDIR, PGLOCK_CLUSTER_OPTIONS) with `CREATE EXTENSION
# pglock` done in postgres. Leaves the cluster running.
set -euo pipefail
: "${PGLOCK_CLUSTER_DIR:?}" "${PGLOCK_CLUSTER_BINDIR:?}" "${PGLOCK_CLUSTER_OPTIONS:?}"
data=$PGLOCK_CLUSTER_DIR/data
sql() { "$PGLOCK_CLUSTER_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
pg_ctl() { sudo -u postgres "$PGLOCK_CLUSTER_BINDIR/pg_ctl" -D "$data" "$@"; }

# last_token NAME COUNT: takes COUNT fenced holds of NAME one after another (each released),
# checks that they increase, and prints the last token.
last_token() {
  sql -c "DO \$\$
DECLARE previous bigint := 0; token bigint;
BEGIN
  FOR i IN 1 .. $2 LOOP
    token := pglock.try_lock_fenced('$1');
    IF token IS NULL OR token <= previous THEN
      RAISE EXCEPTION 'token % after %', token, previous;
    END IF;
    previous := token;
    PERFORM pglock.unlock('$1');
  END LOOP;
  RAISE NOTICE '%', previous;
END \$\$" 2>&1 | sed -n 's/^NOTICE:  //p'
}

check_greater() { # WHAT BEFORE AFTER
  if ! (($3 > $2)); then
    echo "fencing_restart: after $1 the token $3 is not greater than $2" >&2
    exit 1
  fi
  echo "fencing_restart: after $1: $2 -> $3"
}

# Restart, immediate mode: no shutdown checkpoint, recovery from the WAL.
before=$(last_token restart 50)
# A session holding a fenced lock across the crash, too.
sql -c "SELECT pglock.lock_fenced('held-across-restart'), pg_sleep(60)" >/dev/null 2>&1 &
sleep 0.5
pg_ctl restart -m immediate -w -l "$PGLOCK_CLUSTER_DIR/server.log" >/dev/null
after=$(last_token restart 1)
check_greater "pg_ctl restart -m immediate" "$before" "$after"
wait || true  # the holder's connection failed with the server

# Crash: SIGKILL of the postmaster. Its children exit once they notice; then start again.
before=$(last_token crash 50)
postmaster=$(head -1 "$data/postmaster.pid")
kill -KILL "$postmaster"
for _ in $(seq 300); do
  if pg_ctl start -w -l "$PGLOCK_CLUSTER_DIR/server.log" -o "$PGLOCK_CLUSTER_OPTIONS" \
      >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
after=$(last_token crash 1)
check_greater "SIGKILL of the postmaster" "$before" "$after"
