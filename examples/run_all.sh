#!/usr/bin/env bash
# Runs every example against the PostgreSQL in the libpq environment (PGHOST, PGPORT, ...),
# with `CREATE EXTENSION pglock` done. Each example asserts its own outcome.
# Usage: PYTHON=/path/to/python-with-psycopg examples/run_all.sh
set -euo pipefail
cd "$(dirname "$0")"
for example in skip_duplicate_job migration_lock leader_election worker_pool fan_out \
    migration_with_readers fencing; do
  echo "--- examples/$example.py"
  "${PYTHON:-python3}" "$example.py"
done
