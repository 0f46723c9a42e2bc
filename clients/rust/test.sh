#!/usr/bin/env bash
# The Rust client's checks and tests against the server of the libpq environment (PGHOST,
# PGPORT, PGUSER; pglock created in the postgres database): cargo fmt, clippy, cargo doc with
# warnings as errors, and the tests. `tokens` runs the tests that need pglock preloaded: the
# token-owned locks and README.md's example (a doctest).
#
# Usage: clients/rust/test.sh [tokens]
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"
export DATABASE_URL="postgres:///postgres?host=${PGHOST:?}&port=${PGPORT:?}&user=${PGUSER:-postgres}"
if [ "${1:-}" = tokens ]; then
  cargo test --quiet --test tokens
  cargo test --quiet --doc
  exit
fi
cargo fmt -- --check
cargo clippy --quiet --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps
cargo test --quiet --lib --test keys --test session
