"""Runs the examples of README.md and docs/*.md against a real server, as pg_regress runs its.

Two kinds of example are checked:

- psql transcripts: every ``` block with a line that starts with `=# `. Its statements run in
  one psql session, in a database of their own made for the block, and each statement's output
  must be what the block shows, cell by cell, after normalizing what differs from run to run:
  timestamps and intervals everywhere, and the columns that hold pids, tokens and timings
  (VARYING_COLUMNS). A statement shown without output may print anything but an error. A
  block that cannot run here is marked explicitly on the line before it with
  `<!-- not run: the reason -->`; `<!-- run: numbers vary -->` normalizes every number of the
  block (for settings and capacities that depend on the server).
- SQL scripts: each ```sql block after a line `<!-- tested: tests/server/docs_examples.sh ... -->`
  runs in a psql session of its own in the database postgres (token-owned locks need it), and
  the results its comments announce (`-- true`, `-- false`, `-- UPDATE n`, `-- 2`) must come
  out, in order.

Then it checks itself: one transcript with a cell changed must fail.

Usage: python3 tests/server/docs_examples.py FILE...   (PSQL: psql of the running cluster, which
has pglock preloaded and max_prepared_transactions > 0)
"""

import difflib
import os
import re
import subprocess
import sys

PSQL = os.environ["PSQL"]
DB = "pglock_docs"

# Columns whose values are a pid, a token, a duration or a clock reading: they differ in every
# run, so their cells compare as "present or empty".
VARYING_COLUMNS = {"pid", "blocked_by", "token", "since", "waiting_since", "wait_duration",
                   "lease_expires_at", "acquired_at", "expires_at"}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:\d\d)?)?")
INTERVAL = re.compile(r"\b\d\d:\d\d:\d\d(\.\d+)?\b")
MARKER = re.compile(r"<!-- (not run|run|tested): ?(.*?) -->")
FENCE = re.compile(r"```(\w*)")


def blocks(text):
    """The page's fenced code blocks: (line number, language, marker kind, marker note, code),
    where the marker is an HTML comment on the line right before the opening fence. A marker
    that no fence follows is an error."""
    lines, found, i = text.splitlines(), [], 0
    while i < len(lines):
        marker = MARKER.fullmatch(lines[i].strip())
        if marker:
            if i + 1 == len(lines) or not FENCE.fullmatch(lines[i + 1]):
                raise ValueError(f"line {i + 1}: a marker with no code block right after it")
            i += 1
        fence = FENCE.fullmatch(lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"line {i + 1}: a code block that never ends")
        kind, note = marker.groups() if marker else (None, None)
        found.append((i + 1, fence.group(1), kind, note, "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return found


def psql(sql, db, script=False):
    """Runs `sql` in one psql session: a transcript goes on after an error (each statement's
    error is read from psql's ERROR variable); a script stops at the first."""
    args = [PSQL, "-X", "-v", f"ON_ERROR_STOP={1 if script else 0}", "-d", db]
    if script:
        args.insert(1, "-At")
    return subprocess.run(args, input=sql, capture_output=True, text=True, timeout=120)


def code(line):
    """A line of SQL without its trailing `--` comment. A `--` inside single quotes is kept;
    double quotes and dollar quoting are not looked at (no example needs them)."""
    quoted = False
    for i, char in enumerate(line):
        if char == "'":
            quoted = not quoted
        elif not quoted and line.startswith("--", i):
            return line[:i].rstrip()
    return line.rstrip()


def statements(block):
    """Splits a transcript into (statement, shown output lines) pairs."""
    result, lines, i = [], block.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("=# "):
            if line.strip() and not line.startswith("--"):
                raise ValueError(f"output before any statement: {line!r}")
            i += 1
            continue
        sql = [line[3:]]
        i += 1
        # A statement goes on (indented by three spaces) until it ends in ';' or \gset.
        while not re.search(r"(;|\\gset)$", code(sql[-1])):
            if i == len(lines) or not lines[i].startswith("   "):
                raise ValueError(f"a statement without its end: {sql!r}")
            sql.append(lines[i][3:])
            i += 1
        shown = []
        while i < len(lines) and not lines[i].startswith(("=# ", "-- ")):
            shown.append(lines[i])
            i += 1
        while shown and not shown[-1].strip():
            shown.pop()
        result.append(("\n".join(sql), shown))
    return result


def normalize(lines, every_number):
    """Lines as lists of cells, with clock readings and a table's varying columns replaced."""
    rows = []
    for line in lines:
        if re.fullmatch(r"-+(\+-+)*", line.strip()):
            rows.append(["<rule>"])
        else:
            rows.append([re.sub(r"\s+", " ", cell.strip()) for cell in line.split("|")])
    varying = set()
    for i, cells in enumerate(rows):
        if cells == ["<rule>"]:
            continue
        if i + 1 < len(rows) and rows[i + 1] == ["<rule>"]:
            # A table's header: remember which of its columns vary.
            varying = {j for j, name in enumerate(cells) if name in VARYING_COLUMNS}
            continue
        for j, cell in enumerate(cells):
            cell = INTERVAL.sub("<interval>", TIMESTAMP.sub("<timestamp>", cell))
            if every_number:
                cell = re.sub(r"-?\d+(\.\d+)?", "<n>", cell)
            cells[j] = "<varies>" if j in varying and cell else cell
    return rows


def run_transcript(block, every_number):
    """Runs one transcript; returns a list of differences (empty when it matched)."""
    steps = statements(block)
    setup = psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE);\nCREATE DATABASE {DB};", "postgres")
    if setup.returncode != 0 or "ERROR" in setup.stderr:
        sys.exit(f"docs_examples: could not make the database: {setup.stderr}")
    script = ["\\pset pager off", "CREATE EXTENSION pglock;"]
    for n, (sql, _) in enumerate(steps):
        script += [f"\\echo @@{n}@@", sql, f"\\echo @@end {n}@@ :ERROR :SQLSTATE"]
    run = psql("\n".join(script) + "\n", DB)
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE);", "postgres")
    problems = []
    for n, (sql, shown) in enumerate(steps):
        got = re.search(rf"^@@{n}@@\n(.*?)^@@end {n}@@ (\S+) (\S+)$", run.stdout, re.S | re.M)
        if not got:
            return [f"`{sql}` printed nothing at all; psql said:\n{run.stderr}"]
        output = [line.rstrip() for line in got.group(1).splitlines()]
        error, sqlstate = got.group(2), got.group(3)
        while output and not output[-1].strip():
            output.pop()
        if error == "true":
            problems.append(f"`{sql}` failed ({sqlstate}); psql said:\n{run.stderr}")
        elif shown and normalize(shown, every_number) != normalize(output, every_number):
            diff = difflib.unified_diff(shown, output, "shown", "printed", lineterm="")
            problems.append(f"`{sql}` printed something else:\n" + "\n".join(diff))
    return problems


def run_script(block):
    """Runs one SQL script block; returns a list of differences."""
    want = [{"true": "t", "false": "f"}.get(word, word)
            for word in re.findall(r"-- (true|false|UPDATE \d+|\d+)\b", block)]
    run = psql(block, "postgres", script=True)
    if run.returncode != 0:
        return [f"the example failed:\n{run.stderr}"]
    got = [line for line in run.stdout.splitlines()
           if line in ("t", "f") or re.fullmatch(r"UPDATE \d+|\d+", line)]
    if got != want:
        return [f"the example printed {got}, its comments say {want}"]
    return []


def main(paths):
    failed = ran = skipped = 0
    transcripts = []
    for path in paths:
        text = open(path).read()
        try:
            found = blocks(text)
        except ValueError as error:
            sys.exit(f"docs_examples: {path}: {error}")
        for line, language, kind, note, block in found:
            if kind == "tested":
                if language != "sql" or not note.startswith("tests/server/docs_examples.sh"):
                    sys.exit(f"docs_examples: {path}:{line}: `tested:` marks a ```sql block "
                             "this script runs")
                problems = run_script(block)
                ran += 1
                for problem in problems:
                    failed += 1
                    print(f"docs_examples: {path}:{line}: {problem}", file=sys.stderr)
                continue
            if not re.search(r"^=# ", block, re.M):
                if kind:
                    sys.exit(f"docs_examples: {path}:{line}: `{kind}:` marks a block that is "
                             "not a psql transcript")
                continue  # not a psql transcript (a server log, a config file, a shell)
            if kind == "not run":
                skipped += 1
                print(f"docs_examples: {path}:{line}: not run ({note})")
                continue
            if kind == "run" and note != "numbers vary":
                sys.exit(f"docs_examples: {path}:{line}: unknown marker `run: {note}`")
            problems = run_transcript(block, kind == "run")
            ran += 1
            transcripts.append((block, kind == "run"))
            for problem in problems:
                failed += 1
                print(f"docs_examples: {path}:{line}: {problem}", file=sys.stderr)
    if ran == 0:
        sys.exit("docs_examples: no example found")
    # The check must be able to fail: change a shown `t` into `f` in the first transcript that
    # shows one, and the comparison must find it.
    for block, every_number in transcripts:
        changed = re.sub(r"^( t +\|| t$)", lambda m: m.group(1).replace("t", "f"), block,
                         count=1, flags=re.M)
        if changed != block:
            break
    else:
        sys.exit("docs_examples: no transcript shows a `t` to change, to check the check")
    if not run_transcript(changed, every_number):
        sys.exit("docs_examples: a transcript with a changed result still passed")
    if failed:
        sys.exit(f"docs_examples: {failed} difference(s) between the docs and the server")
    print(f"docs_examples: {ran} examples ran as shown, {skipped} marked not run; "
          "a changed result was caught")


if __name__ == "__main__":
    main(sys.argv[1:])
