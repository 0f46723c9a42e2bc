#!/usr/bin/env bash
# Locks owned by a token across a clean restart, a backend's SIGKILL (the postmaster
# reinitialises shared memory) and `pg_ctl restart -m immediate`: after each, the lock is still
# held (a session lock of its name and the built-in on its key are refused), shows in
# pglock.locks with its token, and its token still renews and releases it (prepared transactions
# with pglock's prefix that its worker did not make are not adopted); a restored lock that
# is not renewed expires (logged) and a waiter gets it; every later token is greater.
#
# Needs: the running throwaway cluster of scripts/cluster.sh started with pglock in
# shared_preload_libraries and max_prepared_transactions > 0 (PGLOCK_CLUSTER_OPTIONS has them),
# and `CREATE EXTENSION pglock` done in postgres. Leaves the cluster running.
set -euo pipefail
: "${PGLOCK_CLUSTER_DIR:?}" "${PGLOCK_CLUSTER_BINDIR:?}" "${PGLOCK_CLUSTER_OPTIONS:?}"
data=$PGLOCK_CLUSTER_DIR/data
sql() { "$PGLOCK_CLUSTER_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
pg_ctl() { sudo -u postgres "$PGLOCK_CLUSTER_BINDIR/pg_ctl" -D "$data" "$@"; }
fail() { echo "token_locks_restart: $*" >&2; exit 1; }

# Waits (at most 60 s) until the server takes connections and the token worker serves.
wait_for_worker() {
  for _ in $(seq 600); do
    if [ "$(sql -c "SELECT pglock.status()->'token_locks'->>'worker_running'" 2>/dev/null)" = true ] &&
       sql -c "SELECT pglock.renew('no such lock', 1)" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  fail "no token worker after $1"
}

# still_held WHEN NAME TOKEN: the lock is held, shown with its token, and the token renews it.
still_held() {
  [ "$(sql -c "SELECT pglock.try_lock('$2')")" = f ] || fail "$1: $2 was free"
  [ "$(sql -c "SELECT pg_try_advisory_lock_shared(pglock.key('$2'))")" = f ] ||
    fail "$1: the built-in got $2"
  [ "$(sql -c "SELECT count(*) FROM pglock.locks WHERE key = pglock.key('$2')
               AND pid IS NULL AND token = $3")" = 1 ] || fail "$1: pglock.locks does not show $2"
  [ "$(sql -c "SELECT pglock.renew('$2', $3, '5 min')")" = t ] || fail "$1: token $3 did not renew $2"
  echo "token_locks_restart: $1: $2 held by token $3, renewed"
}

wait_for_worker "start"
kept=$(sql -c "SELECT pglock.acquire('kept', '5 min', '0')")
[ -n "$kept" ] || fail "kept was not granted"
# A lock that will not be renewed after the restarts: it expires with a full TTL from each.
lapsing=$(sql -c "SELECT pglock.acquire('lapsing', '2 s', '0')")
still_held "before any restart" kept "$kept"

# Prepared transactions with pglock's prefix that the token worker did not make, planted before
# the restart: a role without grants names kept's key with a token far above every real one and
# holds nothing (the review's forged GID), and names a key it does hold; the superuser names a
# key it holds with a token beyond the WAL. None is adopted: each is logged and left alone.
# A lock the superuser prepared in 0.4.0's GID format, with a token below the WAL position, is
# adopted (locks of 0.4.0 survive the upgrade).
sql -c "SET client_min_messages = warning" -c "DROP ROLE IF EXISTS pglock_forger" -c "CREATE ROLE pglock_forger LOGIN"
db=$(sql -c "SELECT oid FROM pg_database WHERE datname = current_database()")
me=$(sql -c "SELECT oid FROM pg_roles WHERE rolname = current_user")
key() { sql -c "SELECT pglock.key('$1')"; }
wal() { sql -c "SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint"; }
forged_kept="pglock:9000000000000000000:$db:$(key kept):x:600000000:$me"
forged_held="pglock:$(wal):$db:$(key planted):x:600000000:$me"
beyond_wal="pglock:9000000000000000001:$db:$(key beyond):x:600000000:$me"
legacy_token=$(wal)
legacy="pglock:$legacy_token:$db:$(key legacy):x:60000000:$me"
sql -U pglock_forger -c "BEGIN" -c "PREPARE TRANSACTION '$forged_kept'"
sql -U pglock_forger -c "BEGIN" -c "SELECT pg_advisory_xact_lock(pglock.key('planted'))" \
  -c "PREPARE TRANSACTION '$forged_held'" >/dev/null
sql -c "BEGIN" -c "SELECT pg_advisory_xact_lock(pglock.key('beyond'))" \
  -c "PREPARE TRANSACTION '$beyond_wal'" >/dev/null
sql -c "BEGIN" -c "SELECT pg_advisory_xact_lock(pglock.key('legacy'))" \
  -c "PREPARE TRANSACTION '$legacy'" >/dev/null
# A lock the token worker prepared before pglock.token_database changed: in another database,
# where the worker cannot finish it. Logged, left alone.
sql -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS pglock_elsewhere" -c "CREATE DATABASE pglock_elsewhere" >/dev/null
elsewhere_db=$(sql -c "SELECT oid FROM pg_database WHERE datname = 'pglock_elsewhere'")
granted=$(sql -c "SELECT (extract(epoch FROM now() - '2000-01-01 UTC') * 1000000)::bigint")
elsewhere="pglock:$(wal):$elsewhere_db:$(key elsewhere):x:60000000:$me:$granted"
sql -d pglock_elsewhere -c "BEGIN" -c "SELECT pg_advisory_xact_lock(12345)" \
  -c "PREPARE TRANSACTION '$elsewhere'" >/dev/null
# The hold's start, which the restart must not move (pglock.token_max_hold counts from it).
kept_since=$(sql -c "SELECT since FROM pglock.token_locks() WHERE token = $kept")

pg_ctl restart -m fast -w -l "$PGLOCK_CLUSTER_DIR/server.log" -o "$PGLOCK_CLUSTER_OPTIONS" >/dev/null
wait_for_worker "a clean restart"
still_held "a clean restart" kept "$kept"

for gid in "$forged_kept" "$forged_held" "$beyond_wal" "$elsewhere"; do
  grep -qF "prepared transaction \"$gid\" is not adopted" "$PGLOCK_CLUSTER_DIR/server.log" ||
    fail "the planted $gid was not refused in the log"
done
grep -A1 -F "prepared transaction \"$elsewhere\" is not adopted" "$PGLOCK_CLUSTER_DIR/server.log" |
  grep -q "another database" || fail "the lock of another database was refused for another reason"
[ "$(sql -c "SELECT since FROM pglock.token_locks() WHERE token = $kept")" = "$kept_since" ] ||
  fail "the restart moved kept's hold start ($kept_since)"
[ "$(sql -c "SELECT count(*) FROM pglock.locks WHERE pid IS NULL AND token > 8000000000000000000")" = 0 ] ||
  fail "a forged token was adopted"
[ "$(sql -c "SELECT pglock.fence_ok('kept', 9000000000000000000)")" = f ] || fail "the forged token fenced kept"
[ "$(sql -c "SELECT pglock.fence_ok('kept', $kept)")" = t ] || fail "kept's own token no longer fences"
[ "$(sql -c "SELECT pglock.release('beyond', 9000000000000000001)")" = f ] || fail "a token beyond the WAL released"
[ "$(sql -c "SELECT count(*) FROM pglock.token_locks() WHERE key IN (pglock.key('planted'), pglock.key('beyond'))")" = 0 ] ||
  fail "a planted lock shows as token-owned"
[ "$(sql -c "SELECT pglock.fence_ok('legacy', $legacy_token)")" = t ] || fail "the lock in 0.4.0's format was not adopted"
[ "$(sql -c "SELECT pglock.release('legacy', $legacy_token)")" = t ] || fail "the lock in 0.4.0's format was not released"
[ "$(sql -c "SELECT count(*) FROM pg_prepared_xacts WHERE gid = '$legacy'")" = 0 ] ||
  fail "the release of the lock in 0.4.0's format left its prepared transaction"
for gid in "$forged_kept" "$forged_held" "$beyond_wal"; do
  sql -c "ROLLBACK PREPARED '$gid'"
done
sql -d pglock_elsewhere -c "ROLLBACK PREPARED '$elsewhere'"
sql -c "DROP DATABASE pglock_elsewhere" -c "DROP ROLE pglock_forger"
echo "token_locks_restart: four planted or stranded prepared transactions refused and logged; kept's hold start kept; a lock in 0.4.0's format adopted and released"

# A backend killed with SIGKILL: every process ends, shared memory (the token table with it)
# starts empty, and the worker reads the prepared transactions back.
sql -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
sleep 0.5
victim=$(sql -c "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' LIMIT 1")
[ -n "$victim" ] || fail "no backend to kill"
kill -KILL "$victim"
wait || true
wait_for_worker "a crash restart"
grep -q "all server processes terminated; reinitializing" "$PGLOCK_CLUSTER_DIR/server.log" ||
  fail "the postmaster did not reinitialise"
still_held "a crash restart" kept "$kept"

pg_ctl restart -m immediate -w -l "$PGLOCK_CLUSTER_DIR/server.log" -o "$PGLOCK_CLUSTER_OPTIONS" >/dev/null
wait_for_worker "pg_ctl restart -m immediate"
still_held "pg_ctl restart -m immediate" kept "$kept"

# The lapsing lock was never renewed: it expires 2 s after the last restart, and a waiter gets it.
start=$SECONDS
next=$(sql -c "SELECT pglock.acquire('lapsing', '1 min', '30 s')")
[ -n "$next" ] || fail "the waiter did not get lapsing after its expiry"
((next > lapsing)) || fail "the new token $next is not greater than $lapsing"
grep -q "token-owned lock \"lapsing\" expired\|token-owned lock with key .* expired" \
  "$PGLOCK_CLUSTER_DIR/server.log" || fail "the expiry was not logged"
[ "$(sql -c "SELECT pglock.renew('lapsing', $lapsing)")" = f ] || fail "the expired token renewed"
echo "token_locks_restart: lapsing expired after the restart; the waiter got it in $((SECONDS - start)) s (token $next > $lapsing)"

[ "$(sql -c "SELECT pglock.release('kept', $kept)")" = t ] || fail "token $kept did not release kept"
[ "$(sql -c "SELECT pglock.release('lapsing', $next)")" = t ] || fail "token $next did not release lapsing"
[ "$(sql -c "SELECT pglock.try_lock('kept')")" = t ] || fail "kept stayed taken after its release"
[ "$(sql -c "SELECT count(*) FROM pg_prepared_xacts")" = 0 ] || fail "prepared transactions left"
again=$(sql -c "SELECT pglock.acquire('kept', '1 min', '0')")
((again > kept)) || fail "the new token $again is not greater than $kept"
[ "$(sql -c "SELECT pglock.release('kept', $again)")" = t ] || fail "token $again did not release kept"
echo "token_locks_restart: kept released with its token after three restarts; taken again with $again"
