#!/usr/bin/env bash
# Checks that pg-versions, Cargo.toml's features and README.md name the same PostgreSQL versions,
# and that META.json (PGXN) is well-formed, has what PGXN requires, and gives Cargo.toml's version
# and the oldest version in pg-versions.
set -euo pipefail
cd "$(dirname "$0")/.."

declared=$(awk '!/^#/ && NF { print $1 }' pg-versions | sort | xargs)
features=$(grep -oE '^pg[0-9]+ = ' Cargo.toml | grep -oE '[0-9]+' | sort | xargs)
readme=$(grep -oE 'Supported PostgreSQL versions: [0-9, ]+' README.md | grep -oE '[0-9]+' | sort | xargs)

status=0
if [ "$features" != "$declared" ]; then
  echo "Cargo.toml features ($features) differ from pg-versions ($declared)" >&2
  status=1
fi
if [ "$readme" != "$declared" ]; then
  echo "README.md's 'Supported PostgreSQL versions:' ($readme) differs from pg-versions ($declared)" >&2
  status=1
fi
# META.json: PGXN's required keys, the same version as Cargo.toml (which pglock.control's
# default_version takes at build time), and the oldest supported PostgreSQL as the prerequisite.
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
oldest=$(echo "$declared" | tr ' ' '\n' | sort -n | head -1)
if ! python3 - "$version" "$oldest" <<'PY'
import json, sys
version, oldest = sys.argv[1], sys.argv[2]
meta = json.load(open("META.json"))
problems = [f"no {key}" for key in
            ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec")
            if key not in meta]
if meta.get("version") != version:
    problems.append(f"version {meta.get('version')} is not Cargo.toml's {version}")
provided = meta.get("provides", {}).get("pglock", {})
if provided.get("version") != version:
    problems.append(f"provides.pglock.version {provided.get('version')} is not {version}")
if provided.get("file") != "pglock.control":
    problems.append("provides.pglock.file is not pglock.control")
for phase in ("runtime", "build"):
    required = meta.get("prereqs", {}).get(phase, {}).get("requires", {}).get("PostgreSQL")
    if required != f"{oldest}.0.0":
        problems.append(f"prereqs.{phase} PostgreSQL {required} is not {oldest}.0.0")
if meta.get("meta-spec", {}).get("version") != "1.0.0":
    problems.append("meta-spec.version is not 1.0.0")
for problem in problems:
    print(f"META.json: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
then
  status=1
fi
exit $status
