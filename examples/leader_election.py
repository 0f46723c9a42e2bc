#!/usr/bin/env python3
"""Leader election with failover when the leader's session dies.

Three candidates keep asking for the leader lock with a short timeout. One leads; when its
session dies (here: terminated by an administrator), PostgreSQL releases the lock and a
waiting candidate takes over within moments. There is never more than one leader.
"""

import threading
import time

import psycopg

from _common import connect, run_all, say

stop = threading.Event()
terms = []  # (candidate, start time) for every leadership term


def candidate(name):
    def work():
        conn = connect(name)
        while not stop.is_set():
            try:
                if conn.execute("SELECT pglock.lock('leader:billing', '200 milliseconds')").fetchone()[0]:
                    if stop.is_set():  # the demo is over: hand the lock back, don't lead
                        conn.execute("SELECT pglock.unlock('leader:billing')")
                        break
                    terms.append((name, time.time()))
                    say(name, "I am the leader")
                    while not stop.is_set():
                        conn.execute("SELECT 1")  # leader's work; fails once the session dies
                        time.sleep(0.1)
                    conn.execute("SELECT pglock.unlock('leader:billing')")
            except psycopg.OperationalError:
                say(name, "my session died; reconnecting as a candidate")
                conn = connect(name)
        conn.close()
    return work


def administrator():
    admin = connect("admin")
    for _ in range(2):
        time.sleep(1.5)
        leaders = admin.execute(
            "SELECT pid, application_name FROM pglock.locks "
            "WHERE key = pglock.key('leader:billing') AND granted").fetchall()
        assert len(leaders) == 1, leaders
        pid, name = leaders[0]
        say("admin", f"terminating the leader's session ({name})")
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(1.5)
    stop.set()


run_all(candidate("cand-1"), candidate("cand-2"), candidate("cand-3"), administrator)
# One term to begin with, and a new one after each of the two terminations.
assert len(terms) == 3, terms
print(f"ok: {len(terms)} terms, failover after each termination")
