#!/usr/bin/env bash
# The Go client's checks and tests (scripts/test.sh runs this with a cluster up and pglock
# created in its postgres database): gofmt, go vet, and `go test` (tests and the testable
# examples docs/clients.md shows) against that server. Offline: Debian's Go and lib/pq.
#
# Usage: clients/go/test.sh [tokens]    (PGHOST, PGPORT, PGUSER set)
# With `tokens`, only the tests of token-owned locks (build tag tokens), which need pglock
# preloaded.
set -euo pipefail
cd "$(dirname "$0")"
export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOPATH=${GOPATH:-/tmp/pglock-go/path} \
  GOCACHE=${GOCACHE:-/tmp/pglock-go/cache}
export PGLOCK_TEST_DSN="host=${PGHOST:?} port=${PGPORT:?} user=${PGUSER:-postgres} dbname=postgres sslmode=disable"
unformatted=$(gofmt -l .)
[ -z "$unformatted" ] || { echo "go client: not gofmt-ed: $unformatted" >&2; exit 1; }
go vet -tags tokens ./...
if [ "${1:-}" = tokens ]; then
  out=$(go test -count=1 -v -tags tokens -run '^TestToken' ./... 2>&1) || { echo "$out" >&2; exit 1; }
else
  out=$(go test -count=1 -v ./... 2>&1) || { echo "$out" >&2; exit 1; }
fi
if grep -q -- '--- SKIP' <<<"$out"; then
  echo "$out" >&2
  echo "go client: a test was skipped" >&2
  exit 1
fi
echo "go client: $(grep -c -- '--- PASS' <<<"$out") tests and examples passed"
