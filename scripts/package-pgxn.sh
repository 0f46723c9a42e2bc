#!/usr/bin/env bash
# Usage: scripts/package-pgxn.sh [OUTDIR]    (default OUTDIR: target/pgxn)
#
# Builds pglock-<version>.zip for PGXN (the PostgreSQL Extension Network) from the committed
# tree at HEAD: every file git tracks, under a pglock-<version>/ prefix, with META.json at its
# top as PGXN wants. Checks the versions first (scripts/check-versions.sh); prints the zip's path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/check-versions.sh
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
outdir=${1:-target/pgxn}
mkdir -p "$outdir"
zip=$outdir/pglock-$version.zip
git archive --format zip --prefix "pglock-$version/" -o "$zip" HEAD
echo "$zip"
