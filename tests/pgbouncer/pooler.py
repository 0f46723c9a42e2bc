"""pglock behind PgBouncer in transaction pooling mode; run by tests/pgbouncer/pooler.sh.

Shows, asserting every step, that transaction-scope locks work through the pooler and that
session-scope locks do not: a session lock stays on a server connection that PgBouncer hands
to other clients.

Environment: the libpq variables (PGHOST, PGPORT, PGUSER) point at PgBouncer;
PGLOCK_POOLED_DB names its pool of two server connections, PGLOCK_SINGLE_DB its pool of one;
PGLOCK_DIRECT_HOST and PGLOCK_DIRECT_PORT reach the server itself, bypassing PgBouncer.
"""

import os

import psycopg

POOLED_DB = os.environ["PGLOCK_POOLED_DB"]
SINGLE_DB = os.environ["PGLOCK_SINGLE_DB"]
DIRECT_HOST = os.environ["PGLOCK_DIRECT_HOST"]
DIRECT_PORT = os.environ["PGLOCK_DIRECT_PORT"]


class Client:
    """One connection, in autocommit mode; prints each statement and what it returned."""

    def __init__(self, label, **connect_args):
        self.label = label
        self.conn = psycopg.connect(autocommit=True, connect_timeout=5, **connect_args)
        self.conn.add_notice_handler(
            lambda notice: say(label, f"  ({notice.severity}: {notice.message_primary})")
        )

    def run(self, sql, note="", rows=False):
        """Runs sql; returns its one value (or row), or with rows=True the list of them."""
        cursor = self.conn.execute(sql)
        if cursor.description is None:
            result = None
        else:
            found = [row[0] if len(row) == 1 else row for row in cursor.fetchall()]
            result = found if rows else found[0]
        shown = "" if result is None else f" -> {sql_text(result)}"
        say(self.label, f"{sql}{shown}{'   ' + note if note else ''}")
        return result

    def close(self):
        self.conn.close()


def pooled(label, dbname):
    # prepare_threshold=None: no server-side prepared statements. PgBouncer before 1.21 does not
    # track them in transaction mode: a statement prepared on one server connection is unknown
    # on the next.
    return Client(label, dbname=dbname, prepare_threshold=None)


def direct():
    return Client("server", host=DIRECT_HOST, port=DIRECT_PORT, dbname="postgres")


def say(who, what):
    print(f"{who:>7}: {what}", flush=True)


def sql_text(value):
    """A value as psql would show it: true/false, NULL, (a,b), [rows]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "NULL"
    if isinstance(value, tuple):
        return "(" + ", ".join(sql_text(v) for v in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(sql_text(v) for v in value) + "]"
    return str(value)


def expect(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {sql_text(expected)}, got {sql_text(actual)}")


HOLDERS = "SELECT pid FROM pglock.locks WHERE key = pglock.key('{}')"
HELD = "SELECT name, depth FROM pglock.held()"


def transaction_locks_work():
    print("\n== Transaction-scope locks through PgBouncer (pool_mode = transaction)")
    server = direct()
    a = pooled("A", POOLED_DB)
    b = pooled("B", POOLED_DB)

    a.run("BEGIN")
    expect(a.run("SELECT pglock.xact_lock('pooled-job', '5 seconds')"), True, "A's xact_lock")
    a_backend = a.run("SELECT pg_backend_pid()", "(A's server connection, pinned until COMMIT)")
    b.run("BEGIN")
    b_backend = b.run("SELECT pg_backend_pid()", "(B's, a different one)")
    expect(b_backend != a_backend, True, "A and B on different server connections")
    expect(b.run("SELECT pglock.try_xact_lock('pooled-job')"), False, "B's try while A holds it")
    expect(
        server.run(HOLDERS.format("pooled-job"), rows=True),
        [a_backend],
        "holders during A's transaction",
    )
    a.run("COMMIT")
    expect(b.run("SELECT pglock.try_xact_lock('pooled-job')"), True, "B's try after A's COMMIT")
    b.run("COMMIT")
    expect(
        server.run(HOLDERS.format("pooled-job"), rows=True),
        [],
        "rows for pooled-job after both COMMITs",
    )
    print("OK: the lock excluded B while A's transaction ran, and COMMIT released it.")
    for client in (a, b, server):
        client.close()


def session_lock_is_shared_with_other_clients():
    print("\n== Session-scope locks: A's lock stays on a server connection shared with B")
    print(f"   (database {SINGLE_DB}: a pool of one server connection, so A and B share it)")
    server = direct()
    a = pooled("A", SINGLE_DB)
    b = pooled("B", SINGLE_DB)

    expect(a.run("SELECT pglock.lock('pooled-report')"), True, "A's lock")
    [holder] = server.run(
        HOLDERS.format("pooled-report"), "(the server backend holding it)", rows=True
    )
    b_backend = b.run("SELECT pg_backend_pid()", "(B runs on that same backend)")
    expect(b_backend, holder, "B's backend")
    expect(
        b.run(HELD, "(B, which took nothing, holds A's lock)", rows=True),
        [("pooled-report", 1)],
        "held() in B",
    )
    expect(
        b.run("SELECT pglock.try_lock('pooled-report')", "(mutual exclusion broken)"),
        True,
        "B's try_lock while A holds the lock",
    )
    expect(b.run(HELD, rows=True), [("pooled-report", 2)], "held() in B after its try_lock")

    # Clean up through the same pool: its one server connection holds both acquisitions.
    expect(
        b.run("SELECT pglock.unlock_all()", "(one row of held(), both acquisitions)"),
        1,
        "unlock_all through the single pool",
    )
    expect(server.run(HOLDERS.format("pooled-report"), rows=True), [], "holders after unlock_all")
    print("OK (as documented): B got the lock A holds, and saw it in held().")
    for client in (a, b, server):
        client.close()


def session_unlock_runs_elsewhere():
    print("\n== Session-scope locks: A's unlock runs on another server connection")
    print(f"   (database {POOLED_DB}: a pool of two server connections)")
    server = direct()
    a = pooled("A", POOLED_DB)
    b = pooled("B", POOLED_DB)
    c = pooled("C", POOLED_DB)

    expect(a.run("SELECT pglock.lock('pooled-report')"), True, "A's lock")
    [holder] = server.run(
        HOLDERS.format("pooled-report"), "(the server backend holding it)", rows=True
    )

    # B and C each open a transaction: that occupies both server connections of the pool, so
    # one of them sits on the lock's backend. That one stays open; the other commits, leaving
    # A only the server connection that does not hold its lock.
    b.run("BEGIN")
    c.run("BEGIN")
    b_backend = b.run("SELECT pg_backend_pid()")
    c_backend = c.run("SELECT pg_backend_pid()")
    expect(holder in (b_backend, c_backend), True, "one of B and C on the lock's backend")
    pinner, other = (b, c) if b_backend == holder else (c, b)
    other.run("COMMIT", f"({pinner.label} keeps the lock's backend busy)")

    unlocked, a_backend = a.run(
        "SELECT pglock.unlock('pooled-report'), pg_backend_pid()",
        "(on the other server connection)",
    )
    expect(unlocked, False, "A's unlock")
    expect(a_backend != holder, True, "A's unlock on a backend not holding the lock")
    expect(
        server.run(HOLDERS.format("pooled-report"), "(still held)", rows=True),
        [holder],
        "holders after A's unlock",
    )

    # The client that happens to be on the lock's backend can release it; it does, to clean up.
    expect(pinner.run(HELD, rows=True), [("pooled-report", 1)], f"held() in {pinner.label}")
    expect(
        pinner.run("SELECT pglock.unlock('pooled-report')", "(releases A's lock)"),
        True,
        f"{pinner.label}'s unlock",
    )
    pinner.run("COMMIT")
    expect(server.run(HOLDERS.format("pooled-report"), rows=True), [], "holders at the end")
    print("OK (as documented): A's unlock returned false and the lock stayed held.")
    for client in (a, b, c, server):
        client.close()


transaction_locks_work()
session_lock_is_shared_with_other_clients()
session_unlock_runs_elsewhere()
print("\npooler: all checks passed")
