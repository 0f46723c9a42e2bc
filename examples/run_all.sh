#!/usr/bin/env bash
# Runs every example against the PostgreSQL in the libpq environment (PGHOST, PGPORT, ...),
# with `CREATE EXTENSION pglock` done. Each example asserts its own outcome.
#
# The examples use names and tables of their own and spend their time sleeping (each one tells
# a story in seconds), so they run at the same time; each one's output is printed whole, in
# order, when it is done, and the run fails if any of them failed.
# Usage: PYTHON=/path/to/python-with-psycopg examples/run_all.sh
set -euo pipefail
cd "$(dirname "$0")"
examples=(skip_duplicate_job migration_lock leader_election worker_pool fan_out
          migration_with_readers fencing)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pids=()
for example in "${examples[@]}"; do
  "${PYTHON:-python3}" "$example.py" >"$out/$example.log" 2>&1 &
  pids+=($!)
done
failed=()
for i in "${!examples[@]}"; do
  status=0
  wait "${pids[$i]}" || status=$?
  echo "--- examples/${examples[$i]}.py"
  cat "$out/${examples[$i]}.log"
  ((status == 0)) || failed+=("${examples[$i]} (exit $status)")
done
if ((${#failed[@]})); then
  echo "examples failed: ${failed[*]}" >&2
  exit 1
fi
