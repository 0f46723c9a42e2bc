"""The Python client's token-owned locks against a real server with pglock preloaded (libpq
environment; run by scripts/test.sh in its preloaded step, through PgBouncer in transaction
mode when PGLOCK_WIDE_DB names its pool). Every check asserts; a worker's exception fails."""

import os
import threading
import time

import psycopg

import pglock

POOL = os.environ.get("PGLOCK_WIDE_DB")


def connect():
    # A new connection for each statement, as a serverless function makes.
    args = {"dbname": POOL, "prepare_threshold": None} if POOL else {}
    return psycopg.connect(autocommit=True, **args)


def one(sql, *args):
    with connect() as conn:
        return conn.execute(sql, args).fetchone()[0]


def test_acquire_holds_for_the_block_across_connections_and_releases_on_an_exception():
    name = "py:token"
    try:
        with pglock.acquire(connect, name, ttl=60, timeout=1) as held:
            assert held.token > 0
            assert one("SELECT pglock.try_lock(%s)", name) is False
            assert held.renew() is True and held.renew(ttl=30) is True
            assert one("SELECT token FROM pglock.locks WHERE key = pglock.key(%s)", name) == held.token
            raise RuntimeError("the block fails")
    except RuntimeError:
        pass
    assert one("SELECT count(*) FROM pglock.token_locks() WHERE key = pglock.key(%s)", name) == 0
    # Free for real (renewed with another TTL, then released): a transaction lock is granted.
    assert one("SELECT pg_try_advisory_xact_lock(pglock.key(%s))", name) is True
    assert held.renew() is False and held.release() is False


def test_a_timeout_raises_lock_not_acquired_and_takes_nothing():
    name = "py:token-busy"
    with pglock.acquire(connect, name, ttl=60) as first:
        try:
            with pglock.acquire(connect, name, ttl=60, timeout=0.2):
                raise AssertionError("granted while taken")
        except pglock.LockNotAcquired:
            pass
        assert one("SELECT count(*) FROM pglock.token_locks() WHERE key = pglock.key(%s)",
                   name) == 1
        assert first.token is not None


def test_workers_take_turns_and_tokens_grow():
    name, errors, tokens, inside, most = "py:token-turns", [], [], [0], [0]
    guard = threading.Lock()

    def worker():
        try:
            for _ in range(5):
                with pglock.acquire(connect, name, ttl=30, timeout=30) as held:
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                        tokens.append(held.token)
                    time.sleep(0.01)  # another holder at once would be counted meanwhile
                    with guard:
                        inside[0] -= 1
        except Exception as error:  # every failure fails the run
            errors.append(repr(error))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(tokens) == 20 and most[0] == 1, (len(tokens), most)
    assert len(set(tokens)) == 20, "a token was handed out twice"


def test_acquire_on_one_open_connection_leaves_it_open():
    name = "py:token on one connection"
    conn = connect()
    with pglock.acquire(conn, name, ttl=30, timeout=0) as held:
        assert held.renew() is True
        assert conn.closed is False, "the client closed the caller's connection"
        assert one("SELECT pglock.acquire(%s::text, '30 s', '0')", name) is None
    assert conn.closed is False
    token = one("SELECT pglock.acquire(%s::text, '30 s', '0')", name)
    assert token is not None, "not released at the block's end"
    assert one("SELECT pglock.release(%s::text, %s)", name, token) is True
    conn.close()


def test_keep_alive_holds_past_the_ttl_and_releases_at_the_end():
    name = "py:token kept alive"
    with pglock.acquire(connect, name, ttl=1, timeout=0, keep_alive=True) as held:
        time.sleep(2.5)  # two and a half TTLs: only the keep-alive's renewals keep it
        assert one("SELECT pglock.acquire(%s::text, '30 s', '0')", name) is None, "expired"
        assert not held.lost.is_set()
    token = one("SELECT pglock.acquire(%s::text, '30 s', '0')", name)
    assert token is not None, "not released at the block's end"
    assert one("SELECT pglock.release(%s::text, %s)", name, token) is True


def test_keep_alive_raises_lock_lost_in_the_block():
    name = "py:token lost"
    started = time.monotonic()
    try:
        with pglock.acquire(connect, name, ttl=1, timeout=0, keep_alive=True) as held:
            # Someone with the token (the same role) releases it behind the block's back.
            assert one("SELECT pglock.release(%s::text, %s)", name, held.token) is True
            while time.monotonic() - started < 20:
                time.sleep(0.02)
            raise AssertionError("the block ran on without its lock")
    except pglock.LockLost:
        pass
    assert time.monotonic() - started < 10, "noticed late"
    assert held.lost.is_set()


def test_asyncio_acquire_with_keep_alive():
    import asyncio

    import pglock.aio

    async def aconnect():
        args = {"dbname": POOL, "prepare_threshold": None} if POOL else {}
        return await psycopg.AsyncConnection.connect(autocommit=True, **args)

    async def main():
        name = "py:token asyncio"
        async with pglock.aio.acquire(aconnect, name, ttl=1, timeout=0, keep_alive=True) as held:
            await asyncio.sleep(2.5)
            assert one("SELECT pglock.acquire(%s::text, '30 s', '0')", name) is None, "expired"
        assert one("SELECT count(*) FROM pglock.token_locks() WHERE key = pglock.key(%s)",
                   name) == 0
        try:
            async with pglock.aio.acquire(aconnect, name, ttl=1, keep_alive=True) as held:
                assert one("SELECT pglock.release(%s::text, %s)", name, held.token) is True
                await asyncio.sleep(20)
                raise AssertionError("the block ran on without its lock")
        except pglock.LockLost:
            pass
        # The task goes on after LockLost: it was the keep-alive's cancel, not the caller's.
        await asyncio.sleep(0)
        return "done"

    assert asyncio.run(asyncio.wait_for(main(), 60)) == "done"


if __name__ == "__main__":
    tests = [value for name, value in sorted(globals().items()) if name.startswith("test_")]
    for test in tests:
        test()
    print(f"python client, token-owned locks: {len(tests)} tests passed")
