"""The story both failover tests tell (tests/standby/failover.py with a plain streaming
standby, tests/standby/pg_auto_failover.py with pg_auto_failover):

1. session A holds a fenced lock on the primary and writes to the example resource;
2. the cluster fails over (`fail_over`, given by the test);
3. A's connection fails;
4. B, connecting with a multi-host string and target_session_attrs=read-write, takes the same
   name on the new primary with a greater token and writes;
5. A's stale token is refused by the example resource;
6. on the new primary the lease worker ends a holder that stops renewing, and a waiter gets
   the lock.
"""

import os
import sys
import tempfile
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from fenced_resource import FencedFile, StaleToken  # noqa: E402


def connect_read_write(conninfo, within=60):
    """The first read-write server of a multi-host string, retried while there is none."""
    deadline = time.time() + within
    while True:
        try:
            connection = psycopg.connect(conninfo, autocommit=True)
            if not connection.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                return connection
            connection.close()
        except psycopg.OperationalError:
            pass
        assert time.time() < deadline, f"no read-write server within {within} s"
        time.sleep(0.2)


def lease_worker_runs(connection):
    return connection.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pglock lease worker'"
    ).fetchone()[0] == 1


def tell(test, primary, read_write, fail_over):
    """primary: conninfo of the current primary; read_write: a multi-host conninfo with
    target_session_attrs=read-write; fail_over(): makes another server the primary."""
    with tempfile.TemporaryDirectory(prefix=f"pglock-{test}.") as directory:
        tell_with(FencedFile(os.path.join(directory, "state.json")), test, primary, read_write,
                  fail_over)


def tell_with(resource, test, primary, read_write, fail_over):

    a = psycopg.connect(primary, autocommit=True)
    sync = {row[0] for row in a.execute("SELECT sync_state FROM pg_stat_replication")}
    assert sync & {"sync", "quorum"}, f"no synchronous standby: {sync}"
    token_a = a.execute("SELECT pglock.lock_fenced('failover', '5 s')").fetchone()[0]
    resource.write(token_a, "written by A on the old primary")
    print(f"{test}: A holds 'failover' with token {token_a}")

    fail_over()
    try:
        a.execute("SELECT 1")
        raise AssertionError("A's connection survived the failover")
    except psycopg.OperationalError:
        print(f"{test}: A's connection failed")

    b = connect_read_write(read_write)
    token_b = b.execute("SELECT pglock.lock_fenced('failover', '5 s')").fetchone()[0]
    assert token_b is not None and token_b > token_a, (token_a, token_b)
    resource.write(token_b, "written by B on the new primary")
    print(f"{test}: B took 'failover' on the new primary with token {token_b}")
    try:
        resource.write(token_a, "written by A, stale")
        raise AssertionError("A's stale write was accepted")
    except StaleToken as refused:
        print(f"{test}: A's stale write refused: {refused}")
    assert resource.read()["value"] == "written by B on the new primary"

    # The lease worker on the new primary: a holder that stops renewing is terminated.
    assert lease_worker_runs(b), "no lease worker on the new primary"
    c = connect_read_write(read_write)
    assert c.execute("SELECT pglock.lock('lease-after-failover'), "
                     "pglock.set_lease('lease-after-failover', '1 s')").fetchone() == (True, True)
    started = time.time()
    d = connect_read_write(read_write)
    granted = d.execute("SELECT pglock.lock('lease-after-failover', '30 s')").fetchone()[0]
    assert granted, "the waiter timed out behind an expired lease"
    try:
        c.execute("SELECT 1")
        raise AssertionError("the holder's session outlived its lease")
    except psycopg.OperationalError:
        pass
    print(f"{test}: on the new primary the lease worker ended a stalled holder "
          f"({time.time() - started:.1f} s)")
    for connection in (b, d):
        connection.close()
