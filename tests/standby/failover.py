#!/usr/bin/env python3
"""Fencing, leases and token-owned locks across failover (tests/standby/ha_story.py), on the streaming standby of
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


# A lock owned by a token outlives the failover: its prepared transaction is made on the primary
# (PREPARE waits for the synchronous standby); after the promotion the new primary's token worker
# reads it back, the lock excludes session locks, and its token renews and releases it. The
# standby refuses token-owned locks before the promotion.
with psycopg.connect(standby, autocommit=True) as before:
    try:
        before.execute("SELECT pglock.acquire('failover-token', '5 min', '0')")
        raise AssertionError("a token-owned lock was taken on the standby")
    except psycopg.errors.ReadOnlySqlTransaction:
        print("failover: the standby refuses token-owned locks")
with psycopg.connect(primary, autocommit=True) as owner:
    TOKEN = owner.execute("SELECT pglock.acquire('failover-token', '5 min', '0')").fetchone()[0]
    assert TOKEN is not None

tell("failover", primary, both, stop_primary_and_promote)

with psycopg.connect(both, autocommit=True) as promoted:
    deadline = time.time() + 60
    while True:
        try:
            promoted.execute("SELECT pglock.renew('no such lock', 1)")
            break
        except psycopg.errors.ObjectNotInPrerequisiteState:
            assert time.time() < deadline, "no token worker on the promoted standby"
            time.sleep(0.1)
    assert not promoted.execute("SELECT pglock.try_lock('failover-token')").fetchone()[0], \
        "the token-owned lock was lost"
    shown = promoted.execute("SELECT pid, mode, token FROM pglock.locks "
                             "WHERE key = pglock.key('failover-token')").fetchall()
    assert shown == [(None, "exclusive", TOKEN)], shown
    assert promoted.execute("SELECT pglock.renew('failover-token', %s)", (TOKEN,)).fetchone()[0]
    assert promoted.execute("SELECT pglock.release('failover-token', %s)", (TOKEN,)).fetchone()[0]
    after = promoted.execute("SELECT pglock.acquire('failover-token', '1 min', '0')").fetchone()[0]
    assert after is not None and after > TOKEN, (after, TOKEN)
    assert promoted.execute("SELECT pglock.release('failover-token', %s)", (after,)).fetchone()[0]
    print(f"failover: the token-owned lock held across the promotion, renewed and released with "
          f"token {TOKEN}; the next token {after} is greater")
