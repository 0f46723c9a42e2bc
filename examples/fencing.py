#!/usr/bin/env python3
"""A holder that lost its lock without noticing cannot write: fencing tokens.

Worker A takes the lock 'report-file' with a fencing token and starts a long write. Its
session is terminated (an operator, a network partition, a failover: A does not know yet).
Worker B takes the lock with a greater token and writes. When A finally writes, with its old
token, the resource refuses it. Inside PostgreSQL the same check is pglock.fence_ok() in the
writing statement.
"""

import os
import tempfile

import psycopg

from _common import connect, say
from fenced_resource import FencedFile, StaleToken

resource = FencedFile(os.path.join(tempfile.mkdtemp(prefix="pglock-fencing."), "report.json"))

a = connect("worker-a")
a_pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]
token_a = a.execute("SELECT pglock.lock_fenced('report-file', '5 s')").fetchone()[0]
say("worker-a", f"holds report-file with token {token_a}; starts a long write")

b = connect("worker-b")
assert b.execute("SELECT pglock.try_lock_fenced('report-file')").fetchone()[0] is None
# A's session ends while A is busy elsewhere: its lock goes with it.
b.execute("SELECT pg_terminate_backend(%s)", (a_pid,))
token_b = b.execute("SELECT pglock.lock_fenced('report-file', '5 s')").fetchone()[0]
assert token_b > token_a, (token_a, token_b)
say("worker-b", f"took over with token {token_b}")
resource.write(token_b, "report by worker-b")

# A comes back with what it computed and its old token.
try:
    resource.write(token_a, "report by worker-a (stale)")
    raise AssertionError("the stale write was accepted")
except StaleToken as refused:
    say("worker-a", f"write refused: {refused}")
# A finds out its session is gone only when it next talks to PostgreSQL.
try:
    a.execute("SELECT 1")
    raise AssertionError("worker-a's session should be gone")
except psycopg.OperationalError:
    say("worker-a", "its session was terminated")

# Inside the database, fence_ok() makes the check part of the writing statement.
b.execute("DROP TABLE IF EXISTS example_reports")
b.execute("CREATE TABLE example_reports (id int PRIMARY KEY, body text)")
b.execute("INSERT INTO example_reports VALUES (1, 'draft')")
written = b.execute("UPDATE example_reports SET body = 'final' "
                    "WHERE id = 1 AND pglock.fence_ok('report-file', %s)", (token_b,)).rowcount
assert written == 1
stale = b.execute("UPDATE example_reports SET body = 'stale' "
                  "WHERE id = 1 AND pglock.fence_ok('report-file', %s)", (token_a,)).rowcount
assert stale == 0
assert resource.read() == {"highest_token": token_b, "value": "report by worker-b"}
b.execute("DROP TABLE example_reports")
print("ok: the stale holder's writes were refused, in the file and in the database")
