#!/usr/bin/env bash
# The PGXN distribution: scripts/package-pgxn.sh builds pglock-<version>.zip from HEAD; the zip
# holds every tracked file under pglock-<version>/, META.json among them with the version of
# Cargo.toml, and nothing untracked.
#
# Usage: tests/package/pgxn.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "pgxn: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

zip=$(scripts/package-pgxn.sh "$work")
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
[ "$zip" = "$work/pglock-$version.zip" ] || fail "unexpected path $zip"
python3 - "$zip" "$version" <<'PY' || fail "the zip is not what PGXN wants"
import json, subprocess, sys, zipfile
path, version = sys.argv[1:3]
prefix = f"pglock-{version}/"
with zipfile.ZipFile(path) as archive:
    names = [name for name in archive.namelist() if not name.endswith("/")]
    meta = json.loads(archive.read(prefix + "META.json"))
tracked = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD"], check=True,
                         capture_output=True,
                         text=True).stdout.split()
assert all(name.startswith(prefix) for name in names), "a file outside the prefix"
assert sorted(name[len(prefix):] for name in names) == sorted(tracked), "not the tracked files"
assert meta["version"] == version and meta["provides"]["pglock"]["version"] == version, meta
print(f"pgxn: {path.rsplit('/', 1)[-1]}: {len(names)} files, META.json version {version}")
PY
