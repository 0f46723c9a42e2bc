#!/usr/bin/env bash
# Usage: scripts/package-deb.sh MAJOR [OUTDIR]    (default OUTDIR: target/debian)
#
# Builds postgresql-MAJOR-pglock_<version>_<arch>.deb from a release build, laid out as Debian's
# PostgreSQL extension packages are (postgresql-15-pgaudit, postgresql-15-cron, ...):
#   /usr/lib/postgresql/MAJOR/lib/pglock.so
#   /usr/share/postgresql/MAJOR/extension/pglock.control and every pglock--*.sql
#   /usr/share/doc/postgresql-MAJOR-pglock/{copyright,README.md}
# with Depends: postgresql-MAJOR. MAJOR must be a Debian PostgreSQL (see pg-versions); prints
# the package's path. Install it with `dpkg -i`, then CREATE EXTENSION pglock.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
pglock_setup

major=${1:?usage: scripts/package-deb.sh MAJOR [OUTDIR]}
outdir=${2:-target/debian}
[ "$(pg_source "$major")" = debian ] ||
  { log "PostgreSQL $major is not Debian's here (see pg-versions)"; exit 2; }
pg_config=$(pg_config_for "$major")
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
arch=$(dpkg --print-architecture)
package=postgresql-$major-pglock

log "building pglock $version (release) for PostgreSQL $major"
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
cargo pgrx package --pg-config "$pg_config" --out-dir "$staging/pgrx" >/dev/null

root=$staging/root
libdir=$root/usr/lib/postgresql/$major/lib
extdir=$root/usr/share/postgresql/$major/extension
docdir=$root/usr/share/doc/$package
install -d "$libdir" "$extdir" "$docdir" "$root/DEBIAN"
install -m 644 "$(find "$staging/pgrx" -name pglock.so)" "$libdir/pglock.so"
install -m 644 "$(find "$staging/pgrx" -name pglock.control)" "$extdir/"
install -m 644 "$(find "$staging/pgrx" -name "pglock--$version.sql")" "$extdir/"
# The frozen install scripts of earlier versions and every upgrade script.
install -m 644 sql/pglock--*.sql "$extdir/"
install -m 644 README.md "$docdir/"
cat >"$docdir/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pglock

Files: *
Copyright: the pglock developers
License: PostgreSQL
 Permission to use, copy, modify, and distribute this software and its documentation for any
 purpose, without fee, and without a written agreement is hereby granted, provided that the
 above copyright notice and this paragraph and the following two paragraphs appear in all
 copies.
 .
 IN NO EVENT SHALL THE AUTHORS BE LIABLE TO ANY PARTY FOR DIRECT, INDIRECT, SPECIAL,
 INCIDENTAL, OR CONSEQUENTIAL DAMAGES, INCLUDING LOST PROFITS, ARISING OUT OF THE USE OF THIS
 SOFTWARE AND ITS DOCUMENTATION, EVEN IF THE AUTHORS HAVE BEEN ADVISED OF THE POSSIBILITY OF
 SUCH DAMAGE.
 .
 THE AUTHORS SPECIFICALLY DISCLAIM ANY WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED
 WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE. THE SOFTWARE PROVIDED
 HEREUNDER IS ON AN "AS IS" BASIS, AND THE AUTHORS HAVE NO OBLIGATIONS TO PROVIDE MAINTENANCE,
 SUPPORT, UPDATES, ENHANCEMENTS, OR MODIFICATIONS.
COPYRIGHT

installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: pglock developers <pglock@localhost>
Depends: postgresql-$major, libc6
Section: database
Priority: optional
Installed-Size: $installed_kb
Description: named distributed locks for every PostgreSQL client
 pglock gives every SQL client named locks kept in PostgreSQL's own lock manager:
 timeouts without polling, stacking, shared and exclusive modes, many locks at once,
 semaphores, upgradeable locks, fencing tokens and leases, and MySQL's GET_LOCK family.
 .
 This package is for PostgreSQL $major. Run CREATE EXTENSION pglock in each database;
 add pglock to shared_preload_libraries for leases and names across sessions.
CONTROL
(cd "$root" && find usr -type f -exec md5sum {} + >DEBIAN/md5sums)

mkdir -p "$outdir"
deb=$outdir/${package}_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
log "built $deb"
echo "$deb"
