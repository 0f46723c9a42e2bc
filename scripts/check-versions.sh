#!/usr/bin/env bash
# Checks that pg-versions, Cargo.toml's features and README.md name the same PostgreSQL versions.
set -euo pipefail
cd "$(dirname "$0")/.."

declared=$(awk '!/^#/ && NF { print $1 }' pg-versions | sort | xargs)
features=$(grep -oE '^pg[0-9]+ = ' Cargo.toml | grep -oE '[0-9]+' | sort | xargs)
readme=$(grep -oE 'Supported PostgreSQL versions: [0-9, ]+' README.md | grep -oE '[0-9]+' | sort | xargs)

status=0
if [ "$features" != "$declared" ]; then
  echo "Cargo.toml features ($features) differ from pg-versions ($declared)" >&2
  status=1
fi
if [ "$readme" != "$declared" ]; then
  echo "README.md's 'Supported PostgreSQL versions:' ($readme) differs from pg-versions ($declared)" >&2
  status=1
fi
exit $status
