"""pglock.aio against a real server (libpq environment; pglock created in the database): the
session and transaction locks over psycopg's AsyncConnection. Run by scripts/test.sh; the token
locks' async API is tested in test_token_locks.py, on a preloaded server."""

import asyncio

import psycopg

import pglock
import pglock.aio


async def connect():
    return await psycopg.AsyncConnection.connect(autocommit=True)


async def held(conn, name):
    cursor = await conn.execute(
        "SELECT coalesce(sum(depth), 0) FROM pglock.held() WHERE name = %s", (name,))
    return (await cursor.fetchone())[0]


async def test_lock_and_try_lock():
    a, b = await connect(), await connect()
    async with pglock.aio.lock(a, "py-aio:block", timeout=1):
        assert await held(a, "py-aio:block") == 1
        async with pglock.aio.try_lock(b, "py-aio:block") as acquired:
            assert acquired is False
    assert await held(a, "py-aio:block") == 0
    try:
        async with pglock.aio.lock(b, "py-aio:block"):
            raise ValueError("work failed")
    except ValueError:
        pass
    assert await held(b, "py-aio:block") == 0, "released on the way out of a failed block"
    async with pglock.aio.lock(a, "py-aio:block"):
        try:
            async with pglock.aio.lock(b, "py-aio:block", timeout=0.1):
                raise AssertionError("granted while held elsewhere")
        except pglock.LockNotAcquired:
            pass
    assert await pglock.aio.key(a, "py-aio:block") == await pglock.aio.key(b, "py-aio:block")
    await a.close()
    await b.close()


async def test_an_sql_error_in_a_transaction_releases_the_lock():
    a, b = await psycopg.AsyncConnection.connect(), await connect()
    try:
        async with pglock.aio.lock(a, "py-aio:failed"):
            await a.execute("SELECT 1 / 0")
        raise AssertionError("no error")
    except psycopg.errors.DivisionByZero:
        pass
    async with pglock.aio.try_lock(b, "py-aio:failed") as acquired:
        assert acquired, "the lock outlived the block"
    await a.close()
    await b.close()


async def test_xact_lock_lasts_until_the_transaction_ends():
    a, b = await psycopg.AsyncConnection.connect(), await connect()
    async with a.transaction():
        await pglock.aio.xact_lock(a, "py-aio:xact")
        async with pglock.aio.try_lock(b, "py-aio:xact") as acquired:
            assert acquired is False
    async with pglock.aio.try_lock(b, "py-aio:xact") as acquired:
        assert acquired is True
    await a.close()
    await b.close()


if __name__ == "__main__":
    tests = [value for name, value in sorted(globals().items()) if name.startswith("test_")]
    for test in tests:
        asyncio.run(asyncio.wait_for(test(), 60))
    print(f"python client, asyncio: {len(tests)} tests passed")
