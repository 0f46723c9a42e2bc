#!/usr/bin/env bash
# The Python client as a package: `pip install` from clients/python, offline (no index, no
# build isolation: setuptools and wheel come from the environment), into a directory of its
# own; then README.md's example runs against that installed copy, not the source tree.
# Needs: PYTHON (with psycopg, setuptools and wheel) and a libpq environment for a server with
# pglock preloaded (the example takes a token-owned lock).
set -euo pipefail
cd "$(dirname "$0")"
target=$(mktemp -d)
source=$(mktemp -d)
trap 'rm -rf "$target" "$source"' EXIT
# From a copy: setuptools builds in the source tree (build/, *.egg-info), which must stay clean.
cp -r pyproject.toml README.md pglock "$source/"
"${PYTHON:-python3}" -m pip install --quiet --no-build-isolation --no-index --no-deps \
  --target "$target" "$source"
[ -f "$target/pglock/py.typed" ] || { echo "test_package: py.typed is not installed" >&2; exit 1; }
example=$(awk '/^```python$/ { on = 1; next } /^```$/ { on = 0 } on' README.md)
[ -n "$example" ] || { echo "test_package: no python block in README.md" >&2; exit 1; }
{
  echo "import pglock"
  echo "assert pglock.__file__.startswith('$target'), pglock.__file__"
  printf '%s\n' "$example"
  echo "print('python client: installed with pip; README.md example ran from', pglock.__file__)"
} >"$target/readme_example.py"
(cd "$target" && PYTHONPATH="$target" "${PYTHON:-python3}" readme_example.py)
