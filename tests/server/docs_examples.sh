#!/usr/bin/env bash
# Runs the examples of README.md and docs/*.md against the running server and fails with a diff
# when one no longer shows what the server prints (tests/server/docs_examples.py says how:
# psql transcripts compared cell by cell, SQL blocks checked against their comments).
#
# Needs: the running cluster of scripts/cluster.sh with pglock preloaded and
# max_prepared_transactions > 0, `CREATE EXTENSION pglock` done in postgres.
set -euo pipefail
: "${PGLOCK_CLUSTER_BINDIR:?}"
cd "$(dirname "$0")/../.."
PSQL=$PGLOCK_CLUSTER_BINDIR/psql python3 tests/server/docs_examples.py README.md docs/*.md
# Every function's COMMENT is its entry in docs/functions.md, and each is described in docs/.
PSQL=$PGLOCK_CLUSTER_BINDIR/psql PGDATABASE=postgres python3 scripts/function_reference.py --check
