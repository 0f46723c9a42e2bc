#!/usr/bin/env bash
# Usage: scripts/install.sh --pg-config /path/to/pg_config [--debug] [--features LIST]
#
# Builds pglock (release unless --debug) and installs it into the PostgreSQL that pg_config
# describes: pglock.so into `pg_config --pkglibdir`; pglock.control, the install script of the
# current version and every upgrade script (sql/pglock--A--B.sql) into
# `pg_config --sharedir`/extension. The install scripts of earlier versions (sql/pglock--A.sql)
# go there too, so `CREATE EXTENSION pglock VERSION 'A'` works (the upgrade test uses it).
# Then run `CREATE EXTENSION pglock;` (or `ALTER EXTENSION pglock UPDATE;`) in each database.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_config= profile=--release features=()
usage="usage: $0 --pg-config PATH [--debug] [--features LIST]"
while (($#)); do
  case $1 in
    --pg-config) pg_config=$2; shift 2 ;;
    --debug) profile=; shift ;;
    --features) features=(--features "$2"); shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[ -x "$pg_config" ] || { echo "$usage" >&2; exit 2; }

export PATH="$HOME/.cargo/bin:$PATH"
cargo pgrx install $profile "${features[@]}" --pg-config "$pg_config" >/dev/null
extension_dir=$("$pg_config" --sharedir)/extension
for script in sql/pglock--*.sql; do
  case $(basename "$script") in
    pglock--*--*.sql) ;;  # upgrade scripts: cargo pgrx install copied them
    *) install -m 644 "$script" "$extension_dir/" ;;
  esac
done
