#!/usr/bin/env bash
# Installs what building and testing pglock needs, skipping whatever is already there:
# Debian packages (PostgreSQL 15 server and headers, clang, sudo), cargo-pgrx, `cargo pgrx init`.
# Sourced by scripts/run.sh and scripts/test.sh; safe to run again.
set -euo pipefail

PGLOCK_PGRX_VERSION=0.18.1
PGLOCK_PG_MAJOR=15
PGLOCK_PG_CONFIG=/usr/lib/postgresql/$PGLOCK_PG_MAJOR/bin/pg_config
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
for pkg in postgresql-$PGLOCK_PG_MAJOR postgresql-server-dev-$PGLOCK_PG_MAJOR \
           postgresql-client-$PGLOCK_PG_MAJOR clang libclang-dev sudo pkg-config; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  log "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGLOCK_PGRX_VERSION\$"; then
  log "installing cargo-pgrx $PGLOCK_PGRX_VERSION (a few minutes, once)"
  cargo install cargo-pgrx --version "$PGLOCK_PGRX_VERSION" --locked --quiet
fi

if ! grep -qs "^pg$PGLOCK_PG_MAJOR = \"$PGLOCK_PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "pointing cargo-pgrx at PostgreSQL $PGLOCK_PG_MAJOR"
  cargo pgrx init --pg$PGLOCK_PG_MAJOR "$PGLOCK_PG_CONFIG" >/dev/null
fi
