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


tell("failover", primary, both, stop_primary_and_promote)
