#!/usr/bin/env bash
# Usage: bench/run.sh [--quick] [--skip-peers] [--only token-locks]
#
# Benchmarks pglock (release build) against the built-ins, the do-it-yourself alternatives,
# the round-trip floor, MariaDB and Redis, on throwaway servers on this machine, and writes
# bench/results.md (bench/results-quick.md with --quick). Full mode takes about 21 minutes on
# 2 cores, quick mode about 4. Installs what it needs first. `--only token-locks` runs only the
# section on locks owned by a token (about 2.5 minutes; PgBouncer, Redis, a server with fsync on)
# and replaces that section and its targets in the results file, keeping the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
pglock_setup

apt_install_missing mariadb-server redis-server pgbouncer libmariadb-dev python3-venv

venv=${PGLOCK_BENCH_VENV:-/opt/pglock/bench-venv}
if ! "$venv/bin/python" -c 'import psycopg, MySQLdb, redis, matplotlib' 2>/dev/null; then
  log "installing the Python clients and matplotlib into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'psycopg[binary]>=3.2' 'mysqlclient>=2.2' 'redis>=5' \
    'matplotlib>=3.7'
fi

pg_config=$(pg_config_for 15)
log "building and installing pglock (release, with the benchmark's probes) into PostgreSQL 15"
scripts/install.sh --pg-config "$pg_config" --features bench_probes

output=bench/results.md
for arg in "$@"; do
  [ "$arg" = --quick ] && output=bench/results-quick.md
done
log "benchmarking; results go to $output"
"$venv/bin/python" bench/bench.py --pg-config "$pg_config" --output "$output" "$@"
