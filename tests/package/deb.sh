#!/usr/bin/env bash
# The Debian package (PostgreSQL 15): scripts/package-deb.sh builds it; it has Debian's
# layout and fields; `dpkg -i` installs it into Debian's PostgreSQL 15 with any pglock files
# from a source install removed first, so that the package alone must be enough; a fresh
# cluster with pglock preloaded creates the extension, takes a lock with a lease, and upgrades
# from 0.1.0; `dpkg -r` removes every file again. Leaves PostgreSQL 15 without pglock: run
# scripts/install.sh afterwards to put a source build back.
#
# Usage: tests/package/deb.sh (as root)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
major=15
package=postgresql-$major-pglock
bindir=/usr/lib/postgresql/$major/bin
libdir=/usr/lib/postgresql/$major/lib
extdir=/usr/share/postgresql/$major/extension
work=$(postgres_dir deb)
fail() { echo "package: $*" >&2; exit 1; }
cleanup() {
  sudo -u postgres "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  dpkg -r "$package" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

deb=$(scripts/package-deb.sh "$major" "$work")
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
[ "$(basename "$deb")" = "${package}_${version}_$(dpkg --print-architecture).deb" ] ||
  fail "unexpected file name $deb"
[ "$(dpkg-deb -f "$deb" Package)" = "$package" ] || fail "wrong Package"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "wrong Version"
dpkg-deb -f "$deb" Depends | grep -qx "postgresql-$major, libc6" || fail "wrong Depends"
contents=$(dpkg-deb -c "$deb" | awk '{ print $6 }')
# The library, the control file, the current install script, and every frozen install script
# and upgrade script of sql/.
scripts=()
for script in sql/pglock--*.sql; do
  scripts+=("./usr/share/postgresql/$major/extension/$(basename "$script")")
done
for path in "./usr/lib/postgresql/$major/lib/pglock.so" "./usr/share/postgresql/$major/extension/pglock.control" \
    "./usr/share/postgresql/$major/extension/pglock--$version.sql" "${scripts[@]}" \
    "./usr/share/doc/$package/copyright"; do
  grep -qx "$path" <<<"$contents" || fail "$path is not in the package"
done

dpkg -s "$package" >/dev/null 2>&1 && fail "$package is installed already"
rm -f "$libdir/pglock.so" "$extdir"/pglock.control "$extdir"/pglock--*.sql
dpkg -i "$deb" >/dev/null
dpkg -s "$package" | grep -q "^Status: install ok installed" || fail "dpkg did not install it"

sudo -u postgres "$bindir/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
sudo -u postgres "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
  -o "-c listen_addresses='' -k $work -p 5440 -c shared_preload_libraries=pglock" start >/dev/null
sql() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -At -h "$work" -p 5440 -U postgres "$@"; }
sql -d postgres -c "CREATE EXTENSION pglock"
[ "$(sql -d postgres -c "SELECT extversion FROM pg_extension WHERE extname = 'pglock'")" = "$version" ] ||
  fail "CREATE EXTENSION did not install $version"
[ "$(sql -d postgres -c "SELECT pglock.lock('smoke', '1 s') AND pglock.set_lease('smoke', '1 min')
                           AND pglock.try_lock_fenced('fenced') > 0
                           AND (SELECT count(*) FROM pglock.held()) = 2")" = t ] ||
  fail "the smoke test failed"
[ "$(sql -d postgres -c "SELECT count(*) FROM pg_stat_activity
                         WHERE backend_type = 'pglock lease worker'")" = 1 ] ||
  fail "no lease worker"
sql -d postgres -c "CREATE DATABASE upgraded"
sql -d upgraded -c "CREATE EXTENSION pglock VERSION '0.1.0'" -c "ALTER EXTENSION pglock UPDATE"
[ "$(sql -d upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'pglock'")" = "$version" ] ||
  fail "the upgrade from 0.1.0 did not reach $version"
echo "package: $(basename "$deb") installs, creates, locks, leases and upgrades from 0.1.0"
sudo -u postgres "$bindir/pg_ctl" -D "$work/data" -m fast stop >/dev/null

dpkg -r "$package" >/dev/null
[ ! -e "$libdir/pglock.so" ] && ! ls "$extdir"/pglock* >/dev/null 2>&1 ||
  fail "dpkg -r left files behind"
echo "package: dpkg -r removed every file"
