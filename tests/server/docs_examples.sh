#!/usr/bin/env bash
# Runs the SQL examples of the README and the manual exactly as printed: each ```sql block
# placed after a line `<!-- tested: tests/server/docs_examples.sh ... -->` in README.md or
# docs/*.md runs in a psql session of its own (variables, \gset and all), and the results its
# comments announce (`-- true`, `-- false`, `-- UPDATE n`, `-- 2`) must come out, in order.
#
# Needs: the running cluster of scripts/cluster.sh with pglock preloaded and
# max_prepared_transactions > 0, `CREATE EXTENSION pglock` done in postgres.
set -euo pipefail
: "${PGLOCK_CLUSTER_BINDIR:?}"
cd "$(dirname "$0")/../.."
PSQL=$PGLOCK_CLUSTER_BINDIR/psql python3 - README.md docs/*.md <<'PY'
import os, re, subprocess, sys

count = 0
for path in sys.argv[1:]:
    text = open(path).read()
    for block in re.findall(r"<!-- tested: tests/server/docs_examples\.sh[^\n]*-->\n```sql\n(.*?)```", text, re.S):
        want = [{"true": "t", "false": "f"}.get(word, word)
                for word in re.findall(r"-- (true|false|UPDATE \d+|\d+)\b", block)]
        run = subprocess.run([os.environ["PSQL"], "-X", "-At", "-v", "ON_ERROR_STOP=1"],
                             input=block, capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            sys.exit(f"{path}: the example failed:\n{run.stderr}")
        got = [line for line in run.stdout.splitlines()
               if line in ("t", "f") or re.fullmatch(r"UPDATE \d+|\d+", line)]
        if got != want:
            sys.exit(f"{path}: the example printed {got}, its comments say {want}")
        count += 1
        print(f"docs_examples: {path}: the example ran as printed ({len(want)} results checked)")
if count == 0:
    sys.exit("docs_examples: no tested example found")
PY
