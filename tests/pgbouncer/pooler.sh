#!/usr/bin/env bash
# Runs tests/pgbouncer/pooler.py (or the Python script given) behind a throwaway PgBouncer in
# transaction pooling mode.
#
# Needs: the running PostgreSQL in the libpq environment (PGHOST a Unix socket directory, PGPORT,
# PGUSER), `CREATE EXTENSION pglock` done in database postgres, pgbouncer installed, root (to
# run pgbouncer as the postgres user: it refuses to run as root), and a Python with psycopg in
# $PYTHON. Exits with the script's status.
# Usage: PYTHON=/path/to/python-with-psycopg tests/pgbouncer/pooler.sh [SCRIPT.py]
set -euo pipefail

: "${PGHOST:?must be the Unix socket directory of the server}"
: "${PGPORT:?}" "${PGUSER:?}"
PYTHON=${PYTHON:-python3}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script=${1:-$script_dir/pooler.py}

bouncer_port=6432
bouncer_dir=$(mktemp -d /tmp/pglock-pgbouncer.XXXXXX)
bouncer_pid=

stop_bouncer() {
  if [ -n "$bouncer_pid" ] && kill -0 "$bouncer_pid" 2>/dev/null; then
    kill -TERM "$bouncer_pid" # immediate shutdown
    for _ in $(seq 50); do
      kill -0 "$bouncer_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$bouncer_pid" 2>/dev/null; then kill -KILL "$bouncer_pid"; fi
    wait "$bouncer_pid" 2>/dev/null || true
  fi
  rm -rf "$bouncer_dir"
}
trap stop_bouncer EXIT
trap 'exit 1' INT TERM HUP

chmod 755 "$bouncer_dir"
chown postgres: "$bouncer_dir"

# Two pools over the same database:
# - postgres: default_pool_size = 2 server connections. Two, so that two clients can each hold a
#   transaction open at once (needed to see one block the other), and no more, so that server
#   connections are visibly shared between clients.
# - postgres_single: pool_size = 1. Every client's transactions run on the one server
#   connection, which makes "another client lands on the connection holding my session lock"
#   certain rather than likely.
# - postgres_wide: pool_size = 10, for many clients at once (each waiting acquire keeps its
#   server connection for the wait, as any statement does).
# Transaction pooling never runs server_reset_query (DISCARD ALL) between clients, so session
# state, session locks included, stays on a server connection when it changes hands.
backend="host=$PGHOST port=$PGPORT dbname=postgres"
cat >"$bouncer_dir/pgbouncer.ini" <<EOF
[databases]
postgres = $backend
postgres_single = $backend pool_size=1
postgres_wide = $backend pool_size=10

[pgbouncer]
pool_mode = transaction
default_pool_size = 2
min_pool_size = 0
reserve_pool_size = 0
server_reset_query_always = 0
; Unix socket only: no listen_addr means no TCP listener.
unix_socket_dir = $bouncer_dir
listen_port = $bouncer_port
auth_type = trust
auth_file = $bouncer_dir/userlist.txt
logfile = $bouncer_dir/pgbouncer.log
; A client waiting longer than this for a server connection is disconnected, not queued forever.
query_wait_timeout = 15
EOF
# trust still requires the user to be listed.
printf '"%s" ""\n' "$PGUSER" >"$bouncer_dir/userlist.txt"
chown postgres: "$bouncer_dir"/*

# In the background, as our own child; -u: drop root for postgres (pgbouncer refuses root).
pgbouncer -u postgres -q "$bouncer_dir/pgbouncer.ini" &
bouncer_pid=$!

# Wait (10 s at most) until a query goes through PgBouncer to the server.
probe="import psycopg; psycopg.connect(connect_timeout=2).execute('SELECT 1')"
bouncer_env=(PGHOST="$bouncer_dir" PGPORT="$bouncer_port" PGDATABASE=postgres)
ready=false
deadline=$((SECONDS + 10))
while ((SECONDS < deadline)) && kill -0 "$bouncer_pid" 2>/dev/null; do
  if env "${bouncer_env[@]}" "$PYTHON" -c "$probe" 2>/dev/null; then
    ready=true
    break
  fi
  sleep 0.2
done
if ! $ready; then
  echo "pgbouncer did not accept connections; its log:" >&2
  cat "$bouncer_dir/pgbouncer.log" >&2 || true
  exit 1
fi

# The script reaches PgBouncer through the libpq variables and the server directly through
# PGLOCK_DIRECT_HOST / PGLOCK_DIRECT_PORT.
status=0
PGLOCK_DIRECT_HOST=$PGHOST PGLOCK_DIRECT_PORT=$PGPORT \
  PGLOCK_POOLED_DB=postgres PGLOCK_SINGLE_DB=postgres_single PGLOCK_WIDE_DB=postgres_wide \
  env "${bouncer_env[@]}" timeout 180 "$PYTHON" "$script" || status=$?
exit "$status"
