#!/usr/bin/env python3
"""A job that runs across many short connections, as a serverless function does, with one lock
owned by a token.

Three invocations of the same import job start at once behind PgBouncer in transaction mode
(PGDATABASE names a pool; every statement below opens a connection of its own and closes it).
Each asks for the lock with pglock.acquire; the one that gets it keeps only the token, runs the
job in steps, renews the lock with the token and writes under fence_ok, each step on a new
connection, then releases. The others wait for it in line and run after it. No two ever run at
once, and a write with a token that no longer owns the lock is refused.

Needs pglock in shared_preload_libraries and max_prepared_transactions > 0. The suite runs it
through tests/pgbouncer/pooler.sh.
"""

import os
import time

import psycopg

from _common import run_all, say

POOL = os.environ.get("PGLOCK_WIDE_DB", os.environ.get("PGDATABASE", "postgres"))


def statement(sql, *args):
    """One statement on a connection of its own, as a serverless invocation makes."""
    with psycopg.connect(dbname=POOL, autocommit=True, prepare_threshold=None) as conn:
        cursor = conn.execute(sql, args)
        row = cursor.fetchone() if cursor.description else None
        return None if row is None else row[0]


statement("CREATE TABLE IF NOT EXISTS import_runs (id serial, job text, step int, running int)")
statement("TRUNCATE import_runs")
statement("CREATE TABLE IF NOT EXISTS import_state (job text PRIMARY KEY, running int NOT NULL)")
statement("INSERT INTO import_state VALUES ('import', 0) ON CONFLICT (job) DO UPDATE SET running = 0")


def invocation(name):
    def run():
        token = statement("SELECT pglock.acquire('job:import', '30 s', '60 s')")
        assert token is not None, f"{name} waited 60 s"
        say(name, f"got the lock with token {token}")
        running = statement("UPDATE import_state SET running = running + 1 "
                            "WHERE job = 'import' AND pglock.fence_ok('job:import', %s) "
                            "RETURNING running", token)
        assert running == 1, f"{name} found {running} runs going"
        for step in range(3):
            assert statement("SELECT pglock.renew('job:import', %s)", token), "lost the lock"
            statement("INSERT INTO import_runs (job, step, running) "
                      "SELECT %s, %s, running FROM import_state "
                      "WHERE job = 'import' AND pglock.fence_ok('job:import', %s) RETURNING id",
                      name, step, token)
            time.sleep(0.2)
        statement("UPDATE import_state SET running = running - 1 "
                  "WHERE job = 'import' AND pglock.fence_ok('job:import', %s) RETURNING running",
                  token)
        assert statement("SELECT pglock.release('job:import', %s)", token)
        say(name, "done, released")
        # The token no longer owns the lock: a late write with it is refused.
        late = statement("UPDATE import_state SET running = running + 100 "
                         "WHERE job = 'import' AND pglock.fence_ok('job:import', %s) "
                         "RETURNING running", token)
        assert late is None, f"{name}: a stale token wrote"
    return run


run_all(invocation("lambda-1"), invocation("lambda-2"), invocation("lambda-3"))
steps = statement("SELECT count(*) FROM import_runs WHERE running = 1")
overlaps = statement("SELECT count(*) FROM import_runs WHERE running <> 1")
assert steps == 9 and overlaps == 0, (steps, overlaps)
assert statement("SELECT running FROM import_state WHERE job = 'import'") == 0
statement("DROP TABLE import_runs, import_state")
print("ok: three invocations ran one at a time across 30 short connections")
