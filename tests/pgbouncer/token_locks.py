"""Locks owned by a token behind PgBouncer in transaction pooling mode; run by
tests/pgbouncer/pooler.sh with pglock preloaded (max_prepared_transactions > 0).

1. One lock through three transactions on different server connections: acquire in one, renew
   in another, release in a third; a second client waiting all along is granted at the release,
   not before.
2. Clients that reconnect for every statement, as serverless functions do: 8 workers for 20 s,
   each round acquire -> write a counter under fence_ok -> release, each step on a new
   connection. The counter only ever goes 0 -> 1 -> 0, and a write with a token after its
   release is refused. Every worker's exception fails the test; the rounds are counted.

Environment: as tests/pgbouncer/pooler.py (PGLOCK_SINGLE_DB, PGLOCK_WIDE_DB, PGLOCK_DIRECT_*).
"""

import os
import threading
import time

import psycopg

SINGLE_DB = os.environ["PGLOCK_SINGLE_DB"]
WIDE_DB = os.environ["PGLOCK_WIDE_DB"]
DIRECT = dict(host=os.environ["PGLOCK_DIRECT_HOST"], port=os.environ["PGLOCK_DIRECT_PORT"],
              dbname="postgres")


def pooled(dbname):
    # No server-side prepared statements: PgBouncer in transaction mode may not track them.
    return psycopg.connect(dbname=dbname, autocommit=True, prepare_threshold=None,
                           connect_timeout=5)


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


def backend_pid(conn):
    return one(conn, "SELECT pg_backend_pid()")


def across_transactions():
    name = "pooled token lock"
    # A pool of one server connection shared by two clients, and a second pool: the three
    # transactions below land on two different server connections at least.
    taker, renewer = pooled(SINGLE_DB), pooled(WIDE_DB)
    token = one(taker, "SELECT pglock.acquire(%s, '60 s', '0')", name)
    assert token is not None, "the lock was free"
    taker_pid = backend_pid(taker)
    assert backend_pid(renewer) != taker_pid, "the renewer is on another server connection"

    granted = {}

    def wait():
        with pooled(WIDE_DB) as waiter:
            granted["token"] = one(waiter, "SELECT pglock.acquire(%s, '60 s', '60 s')", name)
            granted["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    with psycopg.connect(**DIRECT, autocommit=True) as observer:
        deadline = time.monotonic() + 30
        while one(observer, "SELECT count(*) FROM pglock.locks WHERE key = pglock.key(%s) "
                            "AND NOT granted", name) != 1:
            assert time.monotonic() < deadline, "the waiter never queued"
            time.sleep(0.02)
    # The taker's server connection serves another transaction: the lock is the token's, not
    # that connection's.
    assert one(taker, "SELECT pglock.try_lock(%s)", name) is False
    assert one(renewer, "SELECT pglock.renew(%s, %s, '60 s')", name, token) is True
    time.sleep(0.3)
    assert "token" not in granted, "granted while the token still held the lock"
    with pooled(SINGLE_DB) as releaser:
        released_at = time.monotonic()
        assert one(releaser, "SELECT pglock.release(%s, %s)", name, token) is True
    waiter.join(60)
    assert not waiter.is_alive() and granted.get("token") is not None, "the waiter was not granted"
    assert granted["token"] > token
    assert granted["at"] >= released_at
    with pooled(WIDE_DB) as releaser:
        assert one(releaser, "SELECT pglock.release(%s, %s)", name, granted["token"]) is True
    taker.close()
    renewer.close()
    print("across transactions: acquire, renew and release on different server connections; "
          "the waiter was granted at the release")


def reconnecting_workers(workers=8, seconds=int(os.environ.get("PGLOCK_SOAK_SECONDS", "20"))):
    name = "serverless counter"
    with psycopg.connect(**DIRECT, autocommit=True) as setup:
        setup.execute("DROP TABLE IF EXISTS pooled_counter")
        setup.execute("CREATE TABLE pooled_counter (inside int NOT NULL, writes int NOT NULL)")
        setup.execute("INSERT INTO pooled_counter VALUES (0, 0)")
    errors, rounds, refused = [], [0] * workers, [0] * workers
    stop = time.monotonic() + seconds

    def step(sql, *args):
        # A new connection for every statement, as a serverless function makes.
        with pooled(WIDE_DB) as conn:
            return conn.execute(sql, args).fetchone()

    def work(me):
        try:
            while time.monotonic() < stop:
                token = step("SELECT pglock.acquire(%s, '10 s', '5 s')", name)[0]
                if token is None:
                    continue
                row = step("UPDATE pooled_counter SET inside = inside + 1, writes = writes + 1 "
                           "WHERE pglock.fence_ok(%s, %s) RETURNING inside", name, token)
                assert row == (1,), f"worker {me}: entered with the counter at {row}"
                row = step("UPDATE pooled_counter SET inside = inside - 1 "
                           "WHERE pglock.fence_ok(%s, %s) RETURNING inside", name, token)
                assert row == (0,), f"worker {me}: left with the counter at {row}"
                assert step("SELECT pglock.release(%s, %s)", name, token)[0] is True
                # The token is stale now: its write must be refused.
                row = step("UPDATE pooled_counter SET inside = inside + 100 "
                           "WHERE pglock.fence_ok(%s, %s) RETURNING inside", name, token)
                assert row is None, f"worker {me}: a stale token wrote ({row})"
                refused[me] += 1
                rounds[me] += 1
        except Exception as error:  # every failure fails the test
            errors.append(f"worker {me}: {error!r}")

    threads = [threading.Thread(target=work, args=(me,)) for me in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
        assert not thread.is_alive(), "a worker never finished"
    assert not errors, errors
    with psycopg.connect(**DIRECT, autocommit=True) as check:
        inside, writes = check.execute("SELECT inside, writes FROM pooled_counter").fetchone()
        assert inside == 0, f"the counter ended at {inside}"
        assert writes == sum(rounds), f"{writes} entries, {sum(rounds)} rounds"
        assert one(check, "SELECT count(*) FROM pglock.token_locks()") == 0, "a lock was left"
        check.execute("DROP TABLE pooled_counter")
    assert sum(rounds) >= workers, f"only {sum(rounds)} rounds in {seconds} s"
    print(f"reconnecting workers: {workers} workers, {sum(rounds)} rounds (per worker {rounds}), "
          f"the counter only 0 -> 1 -> 0, {sum(refused)} stale writes refused")


if __name__ == "__main__":
    across_transactions()
    reconnecting_workers()
    print("token_locks.py: all passed")
