#!/usr/bin/env bash
# Throwaway PostgreSQL clusters for scripts/run.sh and scripts/test.sh: created in a temporary
# directory owned by postgres, listening on a Unix socket there only, removed on exit.
# Source after scripts/lib.sh.

# cluster_start PG_CONFIG [postgres -c settings...]: sets PGHOST, PGPORT, PGUSER, PGDATABASE,
# PGLOCK_CLUSTER_DIR (with server.log), PGLOCK_CLUSTER_BINDIR and PGLOCK_CLUSTER_OPTIONS (the
# server's command-line options, to start it again).
cluster_start() {
  PGLOCK_CLUSTER_BINDIR=$("$1" --bindir)
  shift
  PGLOCK_CLUSTER_DIR=$(postgres_dir cluster)
  trap cluster_stop EXIT
  sudo -u postgres "$PGLOCK_CLUSTER_BINDIR/initdb" -D "$PGLOCK_CLUSTER_DIR/data" -U postgres \
    -A trust --no-sync --encoding UTF8 --locale C >/dev/null
  local options="-c listen_addresses='' -k $PGLOCK_CLUSTER_DIR -p 5432 -c fsync=off"
  local setting
  for setting in "$@"; do options+=" -c $setting"; done
  # RUST_BACKTRACE in the server's environment: errors must reach clients without a Rust
  # backtrace all the same, and the regression outputs pin that down.
  sudo -u postgres env RUST_BACKTRACE=1 "$PGLOCK_CLUSTER_BINDIR/pg_ctl" \
    -D "$PGLOCK_CLUSTER_DIR/data" -l "$PGLOCK_CLUSTER_DIR/server.log" -w -o "$options" start >/dev/null
  export PGHOST=$PGLOCK_CLUSTER_DIR PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
  # For the test scripts that read the log or restart the server.
  PGLOCK_CLUSTER_OPTIONS=$options
  export PGLOCK_CLUSTER_DIR PGLOCK_CLUSTER_BINDIR PGLOCK_CLUSTER_OPTIONS
}

# cluster_restart [postgres -c settings...]: restarts the running cluster with these settings
# added to its options (PGLOCK_CLUSTER_OPTIONS too).
cluster_restart() {
  local setting
  for setting in "$@"; do PGLOCK_CLUSTER_OPTIONS+=" -c $setting"; done
  sudo -u postgres env RUST_BACKTRACE=1 "$PGLOCK_CLUSTER_BINDIR/pg_ctl" \
    -D "$PGLOCK_CLUSTER_DIR/data" -l "$PGLOCK_CLUSTER_DIR/server.log" -w -m fast \
    -o "$PGLOCK_CLUSTER_OPTIONS" restart >/dev/null
  export PGLOCK_CLUSTER_OPTIONS
}

cluster_stop() {
  [ -n "${PGLOCK_CLUSTER_DIR:-}" ] || return 0
  sudo -u postgres "$PGLOCK_CLUSTER_BINDIR/pg_ctl" -D "$PGLOCK_CLUSTER_DIR/data" \
    -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGLOCK_CLUSTER_DIR"
  PGLOCK_CLUSTER_DIR=
}
