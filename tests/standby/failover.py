#!/usr/bin/env python3
"""Fencing and leases across failover (tests/standby/ha_story.py), on the streaming standby of
scripts/test.sh made synchronous: the primary stops immediately and the standby is promoted.
Both servers preload pglock. Before the promotion, the standby runs the lease worker, which does
nothing there, and refuses set_lease.

Usage: failover.py PRIMARY_DATA STANDBY_DATA BINDIR (sockets and ports from the environment:
PRIMARY_HOST, PRIMARY_PORT, STANDBY_HOST, STANDBY_PORT).
"""

import os
import subprocess
import sys
import time

import psycopg

from ha_story import lease_worker_runs, tell

primary_data, standby_data, bindir = sys.argv[1:4]
common = " user=postgres dbname=postgres connect_timeout=5"
primary = f"host={os.environ['PRIMARY_HOST']} port={os.environ['PRIMARY_PORT']}" + common
standby = f"host={os.environ['STANDBY_HOST']} port={os.environ['STANDBY_PORT']}" + common
both = (f"host={os.environ['PRIMARY_HOST']},{os.environ['STANDBY_HOST']} "
        f"port={os.environ['PRIMARY_PORT']},{os.environ['STANDBY_PORT']} "
        "target_session_attrs=read-write") + common


def pg_ctl(data, *args):
    subprocess.run(["sudo", "-u", "postgres", f"{bindir}/pg_ctl", "-D", data, *args],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)


on_standby = psycopg.connect(standby, autocommit=True)
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


def stop_primary_and_promote():
    pg_ctl(primary_data, "stop", "-m", "immediate")
    pg_ctl(standby_data, "promote", "-w")


# The fact token-owned locks are to rest on (docs/design/token-locks.md, item 3): a prepared
# transaction's advisory lock outlives the failover. It is prepared on the primary (PREPARE waits
# for the synchronous standby), whose session then ends; after the promotion the new primary has
# the prepared transaction, and its lock excludes the built-ins until ROLLBACK PREPARED.
PREPARED_KEY, GID = 7_220_004, "pglock-design-failover"
with psycopg.connect(primary, autocommit=True) as owner:
    owner.execute("BEGIN")
    owner.execute("SELECT pg_advisory_xact_lock(%s)", (PREPARED_KEY,))
    owner.execute(f"PREPARE TRANSACTION '{GID}'")

tell("failover", primary, both, stop_primary_and_promote)

with psycopg.connect(both, autocommit=True) as promoted:
    assert promoted.execute("SELECT count(*) FROM pg_prepared_xacts WHERE gid = %s",
                            (GID,)).fetchone()[0] == 1, "the prepared transaction was lost"
    holders = promoted.execute(
        "SELECT pid, mode, granted FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
        "AND ((classid::bigint << 32) | objid::bigint) = %s", (PREPARED_KEY,)).fetchall()
    assert holders == [(None, "ExclusiveLock", True)], holders
    assert not promoted.execute("SELECT pg_try_advisory_lock(%s)",
                                (PREPARED_KEY,)).fetchone()[0], "the prepared lock was lost"
    promoted.execute(f"ROLLBACK PREPARED '{GID}'")
    assert promoted.execute("SELECT pg_try_advisory_lock(%s)", (PREPARED_KEY,)).fetchone()[0]
    print("failover: a prepared transaction's advisory lock held across the promotion")
