#!/usr/bin/env bash
# Fencing tokens and leases across a pg_auto_failover failover (PostgreSQL 15, Debian's
# postgresql-15-auto-failover): a monitor, a primary and a secondary on this machine, on
# localhost ports 55460-55462, each node with pglock preloaded; tests/standby/pg_auto_failover.py
# runs the story with `pg_autoctl perform failover`. Everything is stopped and removed on exit;
# each step is bounded in time.
#
# Usage: tests/standby/pg_auto_failover.sh PYTHON (pglock installed into PostgreSQL 15)
set -euo pipefail
python=${1:?usage: $0 PYTHON}
bindir=/usr/lib/postgresql/15/bin
monitor_port=55460 primary_port=55461 secondary_port=55462
source "$(dirname "$0")/../../scripts/lib.sh"
dir=$(postgres_dir paf)
autoctl="sudo -u postgres env XDG_CONFIG_HOME=$dir/config XDG_DATA_HOME=$dir/data timeout 120 pg_autoctl"
fail() { echo "pg_auto_failover: $*" >&2; exit 1; }

cleanup() {
  local node
  for node in node2 node1 monitor; do
    [ -d "$dir/$node" ] && $autoctl stop --pgdata "$dir/$node" >/dev/null 2>&1 || true
  done
  sleep 1
  pkill -KILL -f "pg_autoctl.*$dir" 2>/dev/null || true
  for node in node2 node1 monitor; do
    [ -f "$dir/$node/postmaster.pid" ] &&
      sudo -u postgres "$bindir/pg_ctl" -D "$dir/$node" -m immediate stop >/dev/null 2>&1 || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT

# Loopback only, and modest memory: pg_autoctl's defaults listen everywhere and size
# shared_buffers for a machine of its own. A later line of postgresql.conf wins.
local_settings() { # PGDATA [settings...]
  local data=$1
  shift
  {
    echo "listen_addresses = 'localhost'"
    echo "shared_buffers = '128MB'"
    printf '%s\n' "$@"
  } | sudo -u postgres tee -a "$data/postgresql.conf" >/dev/null
}

# start NODE: runs `pg_autoctl run` for it in the background (stopped by cleanup).
start() {
  sudo -u postgres env XDG_CONFIG_HOME="$dir/config" XDG_DATA_HOME="$dir/data" \
    setsid pg_autoctl run --pgdata "$dir/$1" >"$dir/$1.log" 2>&1 </dev/null &
}

wait_ready() { # PORT
  for _ in $(seq 600); do
    "$bindir/pg_isready" -q -h localhost -p "$1" && return 0
    sleep 0.1
  done
  fail "no server on port $1"
}

monitor_sql() {
  psql -X -At -h localhost -p "$monitor_port" -U autoctl_node -d pg_auto_failover -c "$1"
}

# wait_for_states STATE...: until the nodes' reported states (by node id) are these, each
# node's goal is the state it reports (no transition under way) and the monitor's health check
# has found it up: only then does the monitor accept `perform failover`.
wait_for_states() {
  local want=$*
  for _ in $(seq 1200); do
    [ "$(monitor_sql "SELECT string_agg(reportedstate::text, ' ' ORDER BY nodeid)
                      FROM pgautofailover.node
                      WHERE goalstate = reportedstate AND health = 1" 2>/dev/null)" = "$want" ] &&
      return 0
    sleep 0.1
  done
  fail "the nodes never reached: $want ($(monitor_sql 'SELECT nodename, reportedstate, goalstate, health FROM pgautofailover.node' 2>&1))"
}

$autoctl create monitor --pgdata "$dir/monitor" --pgport "$monitor_port" --hostname localhost \
  --pgctl "$bindir/pg_ctl" --auth trust --no-ssl >"$dir/create.log" 2>&1 ||
  fail "creating the monitor: $(tail -5 "$dir/create.log")"
local_settings "$dir/monitor"
start monitor
monitor="postgres://autoctl_node@localhost:$monitor_port/pg_auto_failover?sslmode=disable"
wait_ready "$monitor_port"

create_node() { # NAME PORT
  $autoctl create postgres --pgdata "$dir/$1" --pgport "$2" --hostname localhost --name "$1" \
    --pgctl "$bindir/pg_ctl" --auth trust --no-ssl --monitor "$monitor" \
    >>"$dir/create.log" 2>&1 || fail "creating $1: $(tail -5 "$dir/create.log")"
}
create_node node1 "$primary_port"
# The secondary is a base backup of the primary, so it inherits these settings.
local_settings "$dir/node1" "shared_preload_libraries = 'pg_stat_statements,pglock'"
start node1
wait_ready "$primary_port"
wait_for_states "single"
psql -X -q -h localhost -p "$primary_port" -U postgres -c "CREATE EXTENSION pglock"
create_node node2 "$secondary_port"
start node2
wait_for_states "primary secondary"
echo "pg_auto_failover: monitor, primary and secondary running"

AUTOCTL=$autoctl MONITOR_PGDATA=$dir/monitor \
  timeout 300 "$python" tests/standby/pg_auto_failover.py "$primary_port" "$secondary_port"
wait_for_states "secondary primary"
