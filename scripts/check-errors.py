"""docs/errors.md against the code: every error pglock raises has its row, and every row names an
error that pglock raises (or says it is PostgreSQL's).

    python3 scripts/check-errors.py

The errors are read from src/errors.rs, the one place pglock raises its own (its first line says
so): each ErrorReport::new gives a SQLSTATE (PgSqlErrorCode::ERRCODE_...) and a primary message.
A row of the page's table is `| SQLSTATE[, SQLSTATE] | when | message |`, the message cell holding
each primary message in backquotes (several separated by " / "). Rows whose message cell says
"PostgreSQL's" are errors PostgreSQL raises (a cancel, a deadlock), and need no match in the code;
so are errors whose message pglock passes on from PostgreSQL (lock_table_full). Exits 1 and says
what is missing on any difference.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT / "src" / "errors.rs"
PAGE = ROOT / "docs" / "errors.md"

# The PgSqlErrorCode names pglock uses, with their SQLSTATEs (PostgreSQL's errcodes.txt).
SQLSTATES = {
    "ERRCODE_NULL_VALUE_NOT_ALLOWED": "22004",
    "ERRCODE_INVALID_PARAMETER_VALUE": "22023",
    "ERRCODE_INVALID_TRANSACTION_STATE": "25000",
    "ERRCODE_READ_ONLY_SQL_TRANSACTION": "25006",
    "ERRCODE_CONFIGURATION_LIMIT_EXCEEDED": "53400",
    "ERRCODE_OUT_OF_MEMORY": "53200",
    "ERRCODE_PROGRAM_LIMIT_EXCEEDED": "54000",
    "ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE": "55000",
    "ERRCODE_LOCK_NOT_AVAILABLE": "55P03",
    "ERRCODE_INSUFFICIENT_PRIVILEGE": "42501",
}


def raised():
    """(function, SQLSTATE, message or None) for every ErrorReport::new of src/errors.rs."""
    text = CODE.read_text()
    found = []
    functions = list(re.finditer(r"^pub fn (\w+)", text, re.M))
    for index, function in enumerate(functions):
        end = functions[index + 1].start() if index + 1 < len(functions) else len(text)
        body = text[function.start():end]
        local = dict(re.findall(r"let (\w+) = PgSqlErrorCode::(\w+);", body))
        for report in re.finditer(r'ErrorReport::new\(\s*([\w:]+),\s*("(?:[^"\\]|\\.)*")?', body):
            code = report.group(1).split("::")[-1]
            code = local.get(code, code)
            if code not in SQLSTATES:
                sys.exit(f"check-errors: {function.group(1)}: add {code}'s SQLSTATE to this script")
            message = report.group(2)
            message = message[1:-1].replace('\\"', '"') if message else None
            found.append((function.group(1), SQLSTATES[code], message))
    return found


def rows():
    """(SQLSTATEs, messages, PostgreSQL's) for every row of the page's table."""
    found = []
    for line in PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.match(r"^[0-9A-Z]{5}", cells[0]):
            continue
        codes = {code.strip() for code in cells[0].split(",")}
        messages = set(re.findall(r"`([^`]+)`", cells[2]))
        found.append((codes, messages, "PostgreSQL's" in cells[2]))
    return found


def main():
    errors = raised()
    table = rows()
    problems = []
    for function, code, message in errors:
        if message is None:
            if function != "lock_table_full":
                problems.append(f"{function}: its message is not a literal; write it out")
            continue
        if not any(code in codes and message in messages for codes, messages, _ in table):
            problems.append(f"{code} `{message}` ({function}) has no row in docs/errors.md")
    known = {(code, message) for _, code, message in errors}
    for codes, messages, postgres in table:
        if postgres:
            continue
        for message in messages:
            if not any((code, message) in known for code in codes):
                problems.append(f"docs/errors.md: {'/'.join(sorted(codes))} `{message}` is not an error pglock raises")
    for problem in problems:
        print(f"check-errors: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-errors: {len(errors)} errors of src/errors.rs, each with its row in docs/errors.md")


main()
