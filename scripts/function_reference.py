"""docs/functions.md, every function of the extension with its COMMENT, from a running server.

    PSQL=psql python3 scripts/function_reference.py --write   # regenerate after changing a COMMENT
    PSQL=psql python3 scripts/function_reference.py --check   # the test: fails on any difference

The page is written from the catalog of a database where pglock is installed (PGDATABASE or
postgres), so each entry says exactly what `\\df+ pglock.*` says. --check also fails when a
function has no COMMENT, and when a function's name appears nowhere in the manual's other pages.
"""

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "functions.md"

HEAD = """# Function reference

Every function of the extension's schema, with its `COMMENT` (what `\\df+ pglock.*` shows), in
name order. The topic pages say more: [functions](api.md), [lock shapes](shapes.md),
[fencing tokens and leases](fencing-and-leases.md), [locks owned by a token](token-locks.md),
[observability](observability.md). This page is generated from the catalog by
`scripts/function_reference.py --write`; the test suite runs it with `--check`, so a `COMMENT`
and its entry here cannot disagree.

| function | returns | what it does |
|---|---|---|
"""


def catalog():
    query = """
        SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               coalesce(obj_description(p.oid, 'pg_proc'), '')
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pglock'
        ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)"""
    run = subprocess.run([os.environ.get("PSQL", "psql"), "-XAt", "-F", "\x1f", "-v",
                          "ON_ERROR_STOP=1", "-c", query], capture_output=True, text=True,
                         check=True)
    return [line.split("\x1f") for line in run.stdout.splitlines()]


def page(rows):
    def cell(text):
        return text.replace("|", "\\|")
    lines = [f"| `{name}({cell(args)})` | {cell(result)} | {cell(comment)} |"
             for name, args, result, comment in rows]
    return HEAD + "\n".join(lines) + "\n"


def main(mode):
    rows = catalog()
    if not rows:
        sys.exit("function_reference: no function in schema pglock (is the extension installed?)")
    want = page(rows)
    if mode == "--write":
        PAGE.write_text(want)
        print(f"function_reference: wrote {PAGE.relative_to(ROOT)} ({len(rows)} functions)")
        return
    problems = [f"pglock.{name}({args}) has no COMMENT" for name, args, _, comment in rows
                if not comment]
    have = PAGE.read_text() if PAGE.exists() else ""
    if have != want:
        diff = "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True),
                                            "docs/functions.md", "the catalog"))
        problems.append("docs/functions.md and the catalog's COMMENTs differ "
                        f"(scripts/function_reference.py --write):\n{diff}")
    manual = "".join(p.read_text() for p in (ROOT / "docs").glob("*.md") if p != PAGE)
    for name in sorted({row[0] for row in rows}):
        if not re.search(rf"`(pglock\.)?{name}[(`]", manual):
            problems.append(f"pglock.{name} is described nowhere in docs/ but functions.md")
    if problems:
        sys.exit("function_reference: " + "\nfunction_reference: ".join(problems))
    print(f"function_reference: {len(rows)} functions: each COMMENT is its entry in "
          "docs/functions.md, and each is described in the manual")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("--write", "--check"):
        sys.exit(__doc__)
    main(sys.argv[1])
