#!/usr/bin/env python3
"""Fencing across failover, on the streaming standby of scripts/test.sh made synchronous:

1. session A holds a fenced lock on the primary and writes to the example resource;
2. the primary stops immediately and the standby is promoted;
3. A's connection fails;
4. B, connecting with a multi-host string and target_session_attrs=read-write, takes the same
   name on the new primary with a greater token and writes;
5. A's stale token is refused by the example resource.

Leases on the same two servers (both preload pglock): on the standby the lease worker runs and
does nothing, and set_lease is refused; after the promotion the worker ends a holder whose lease
runs out, and a waiter gets the lock.

Usage: failover.py PRIMARY_DATA STANDBY_DATA BINDIR (sockets and ports from the environment:
PRIMARY_HOST, PRIMARY_PORT, STANDBY_HOST, STANDBY_PORT).
"""

import os
import subprocess
import sys
import tempfile
import time

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from fenced_resource import FencedFile, StaleToken  # noqa: E402

primary_data, standby_data, bindir = sys.argv[1:4]
primary = f"host={os.environ['PRIMARY_HOST']} port={os.environ['PRIMARY_PORT']}"
standby = f"host={os.environ['STANDBY_HOST']} port={os.environ['STANDBY_PORT']}"
both = (f"host={os.environ['PRIMARY_HOST']},{os.environ['STANDBY_HOST']} "
        f"port={os.environ['PRIMARY_PORT']},{os.environ['STANDBY_PORT']} "
        "target_session_attrs=read-write")
common = " user=postgres dbname=postgres connect_timeout=5"


def pg_ctl(data, *args):
    subprocess.run(["sudo", "-u", "postgres", f"{bindir}/pg_ctl", "-D", data, *args],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)


resource = FencedFile(os.path.join(tempfile.mkdtemp(prefix="pglock-failover."), "state.json"))

a = psycopg.connect(primary + common, autocommit=True)
sync = a.execute("SELECT sync_state FROM pg_stat_replication").fetchall()
assert sync == [("sync",)], f"the standby is not synchronous: {sync}"
token_a = a.execute("SELECT pglock.lock_fenced('failover', '5 s')").fetchone()[0]
resource.write(token_a, "written by A on the old primary")
print(f"failover: A holds 'failover' with token {token_a}")


def lease_worker_runs(connection):
    return connection.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pglock lease worker'"
    ).fetchone()[0] == 1


on_standby = psycopg.connect(standby + common, autocommit=True)
deadline = time.time() + 30
while not lease_worker_runs(on_standby):
    assert time.time() < deadline, "no lease worker on the standby"
    time.sleep(0.1)
try:
    on_standby.execute("SELECT pglock.set_lease('failover', '1 s')")
    raise AssertionError("a lease was set on the standby")
except psycopg.errors.ReadOnlySqlTransaction:
    print("failover: the standby runs the lease worker and refuses leases")
on_standby.close()

pg_ctl(primary_data, "stop", "-m", "immediate")
pg_ctl(standby_data, "promote", "-w")
try:
    a.execute("SELECT 1")
    raise AssertionError("A's connection survived the primary")
except psycopg.OperationalError:
    print("failover: A's connection failed")

deadline = time.time() + 60
while True:
    try:
        b = psycopg.connect(both + common, autocommit=True)
        break
    except psycopg.OperationalError:
        assert time.time() < deadline, "no read-write server after the promotion"
        time.sleep(0.2)
assert b.execute("SELECT NOT pg_is_in_recovery()").fetchone()[0]
token_b = b.execute("SELECT pglock.lock_fenced('failover', '5 s')").fetchone()[0]
assert token_b is not None and token_b > token_a, (token_a, token_b)
resource.write(token_b, "written by B on the new primary")
print(f"failover: B took 'failover' on the new primary with token {token_b}")
try:
    resource.write(token_a, "written by A, stale")
    raise AssertionError("A's stale write was accepted")
except StaleToken as refused:
    print(f"failover: A's stale write refused: {refused}")
assert resource.read()["value"] == "written by B on the new primary"

# The lease worker on the promoted server: a holder that stops renewing is terminated.
assert lease_worker_runs(b), "no lease worker after the promotion"
c = psycopg.connect(both + common, autocommit=True)
assert c.execute("SELECT pglock.lock('lease-after-failover'), "
                 "pglock.set_lease('lease-after-failover', '1 s')").fetchone() == (True, True)
started = time.time()
d = psycopg.connect(both + common, autocommit=True)
granted = d.execute("SELECT pglock.lock('lease-after-failover', '30 s')").fetchone()[0]
assert granted, "the waiter timed out behind an expired lease"
try:
    c.execute("SELECT 1")
    raise AssertionError("the holder's session outlived its lease")
except psycopg.OperationalError:
    pass
print(f"failover: after the promotion the lease worker ended a stalled holder "
      f"({time.time() - started:.1f} s)")
b.close()
d.close()
