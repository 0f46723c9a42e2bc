#!/usr/bin/env python3
"""Fencing across failover, on the streaming standby of scripts/test.sh made synchronous:

1. session A holds a fenced lock on the primary and writes to the example resource;
2. the primary stops immediately and the standby is promoted;
3. A's connection fails;
4. B, connecting with a multi-host string and target_session_attrs=read-write, takes the same
   name on the new primary with a greater token and writes;
5. A's stale token is refused by the example resource.

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
b.close()
