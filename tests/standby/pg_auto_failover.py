#!/usr/bin/env python3
"""Fencing and leases across a pg_auto_failover failover (tests/standby/ha_story.py): a
monitor, a primary and a secondary on this machine (started by pg_auto_failover.sh), clients
on a multi-host string with target_session_attrs=read-write, and `pg_autoctl perform failover`.

Usage: pg_auto_failover.py PRIMARY_PORT SECONDARY_PORT (environment: AUTOCTL, the command that
runs pg_autoctl as postgres; MONITOR_PGDATA).
"""

import os
import shlex
import subprocess
import sys
import time

import psycopg


from ha_story import connect_read_write, tell

primary_port, secondary_port = sys.argv[1:3]
common = " host=localhost user=postgres dbname=postgres connect_timeout=5"
primary = f"port={primary_port}" + common
both = (f"host=localhost,localhost port={primary_port},{secondary_port} "
        "target_session_attrs=read-write user=postgres dbname=postgres connect_timeout=5")


def secondary_is_read_write():
    try:
        with psycopg.connect(f"port={secondary_port}" + common) as connection:
            return not connection.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    except psycopg.OperationalError:
        return False


def perform_failover():
    """`pg_autoctl perform failover`; the monitor may still refuse it for a moment after the
    nodes settle (seen once in CI: exit status 12), so up to 3 attempts, 5 s apart, unless the
    failover is under way anyway. Its output is shown if every attempt fails."""
    for attempt in range(3):
        done = subprocess.run([*shlex.split(os.environ["AUTOCTL"]), "perform", "failover",
                               "--pgdata", os.environ["MONITOR_PGDATA"]],
                              capture_output=True, text=True, timeout=120)
        if done.returncode == 0 or secondary_is_read_write():
            return
        print(f"pg_auto_failover: perform failover, attempt {attempt + 1}, exit status "
              f"{done.returncode}: {done.stderr.strip()[-2000:]}", file=sys.stderr)
        time.sleep(5)
    raise AssertionError("pg_autoctl perform failover failed 3 times")


first = connect_read_write(both)
port = first.execute("SELECT inet_server_port()").fetchone()[0]
assert str(port) == primary_port, f"the read-write server is on {port}, not {primary_port}"
first.close()
tell("pg_auto_failover", primary, both, perform_failover)
after = connect_read_write(both)
port = after.execute("SELECT inet_server_port()").fetchone()[0]
assert str(port) == secondary_port, f"after the failover the primary is on {port}"
print(f"pg_auto_failover: the primary moved from port {primary_port} to {port}")
after.close()
