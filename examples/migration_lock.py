#!/usr/bin/env python3
"""Wait for a migration lock, with a timeout.

Node A migrates the schema. Node B starts a moment later, waits up to 10 seconds for the lock,
then finds the migration done and skips it. Node C, with only 200 ms to spare, gives up
cleanly: its transaction is still usable and it reports the timeout.
"""

import time

from _common import connect, run_all, say

setup = connect("setup")
setup.execute("DROP TABLE IF EXISTS example_migrations")
setup.execute("CREATE TABLE example_migrations (version int PRIMARY KEY)")


def migrate(name, timeout, outcome):
    def work():
        conn = connect(name)
        with conn.transaction():
            got = conn.execute("SELECT pglock.xact_lock('migrations', %s::interval)",
                               (timeout,)).fetchone()[0]
            if not got:
                # The transaction is untouched: still usable after the timeout.
                conn.execute("SELECT 1")
                say(name, f"no migration lock within {timeout}: giving up")
                outcome[name] = "timed out"
                return
            if conn.execute("SELECT count(*) FROM example_migrations").fetchone()[0]:
                say(name, "got the lock; version 1 is already there: nothing to do")
                outcome[name] = "skipped"
                return
            say(name, "got the lock, migrating to version 1 (2 seconds)")
            time.sleep(2)
            conn.execute("INSERT INTO example_migrations VALUES (1)")
            outcome[name] = "migrated"
        say(name, "committed: lock released")
    return work


outcome = {}


def later(seconds, work):
    def run():
        time.sleep(seconds)
        work()
    return run


run_all(migrate("node-a", "10 seconds", outcome),
        later(0.3, migrate("node-b", "10 seconds", outcome)),
        later(0.3, migrate("node-c", "200 milliseconds", outcome)))
assert outcome == {"node-a": "migrated", "node-b": "skipped", "node-c": "timed out"}, outcome
assert setup.execute("SELECT count(*) FROM example_migrations").fetchone()[0] == 1
setup.execute("DROP TABLE example_migrations")
print("ok: migrated once, the second node skipped, the impatient one timed out")
