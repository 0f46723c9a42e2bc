"""pglock for asyncio, over psycopg 3's AsyncConnection: the same calls as `pglock`, awaited.

    import pglock.aio

    async with pglock.aio.lock(aconn, "nightly-report", timeout=5):
        ...

    async with pglock.aio.acquire(connect, "nightly-import", ttl=60, keep_alive=True) as held:
        ...  # renewed by a task; the block is cancelled and LockLost raised if it is lost
"""

from __future__ import annotations

import asyncio
import warnings
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union

import psycopg
from psycopg.pq import TransactionStatus

from . import LockLost, LockNotAcquired, Timeout, _interval, _seconds

__all__ = ["lock", "try_lock", "xact_lock", "key", "acquire", "AsyncTokenLock", "AsyncConnect",
           "LockLost", "LockNotAcquired"]

#: A coroutine function returning a new AsyncConnection for each statement (closed after it),
#: or one open AsyncConnection (used for each, left open).
AsyncConnect = Union[Callable[[], Awaitable[psycopg.AsyncConnection]], psycopg.AsyncConnection]


async def _scalar(conn: psycopg.AsyncConnection, query: str, params: Any) -> Any:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    return row[0] if row else None


async def _unlock(conn: psycopg.AsyncConnection, function: str, name: str,
                  error: Optional[BaseException] = None) -> None:
    """As pglock's: a failed transaction is rolled back first, unless a `conn.transaction()`
    block owns it (then the lock stays held, said by a warning and a note on the error)."""
    if conn.info.transaction_status == TransactionStatus.INERROR:
        try:
            await conn.rollback()
        except psycopg.ProgrammingError:
            message = (f"pglock: session lock {name!r} is still held: the transaction failed "
                       "inside conn.transaction(), so it could not be released")
            warnings.warn(message, RuntimeWarning, stacklevel=4)
            if error is not None:
                error.add_note(message)
            return
    await _scalar(conn, f"SELECT pglock.un{function}(%s::text)", (name,))


@asynccontextmanager
async def lock(conn: psycopg.AsyncConnection, name: str, timeout: Timeout = None,
               shared: bool = False) -> AsyncIterator[None]:
    """Holds the session lock `name` for the block, waiting at most `timeout`; raises
    LockNotAcquired if it is not granted in time. Released when the block ends."""
    function = "lock_shared" if shared else "lock"
    if not await _scalar(conn, f"SELECT pglock.{function}(%s::text, %s::interval)",
                         (name, _interval(timeout))):
        raise LockNotAcquired(f"{name!r} was not granted within {timeout!r}")
    try:
        yield
    except BaseException as error:
        await _unlock(conn, function, name, error)
        raise
    await _unlock(conn, function, name)


@asynccontextmanager
async def try_lock(conn: psycopg.AsyncConnection, name: str,
                   shared: bool = False) -> AsyncIterator[bool]:
    """Tries the session lock `name` once and yields whether it was taken; released at the end
    if it was."""
    function = "lock_shared" if shared else "lock"
    acquired = bool(await _scalar(conn, f"SELECT pglock.try_{function}(%s::text)", (name,)))
    try:
        yield acquired
    except BaseException as error:
        if acquired:
            await _unlock(conn, function, name, error)
        raise
    if acquired:
        await _unlock(conn, function, name)


async def xact_lock(conn: psycopg.AsyncConnection, name: str, timeout: Timeout = None,
                    shared: bool = False) -> None:
    """Takes the transaction lock `name`, waiting at most `timeout`; the transaction's end
    releases it."""
    function = "xact_lock_shared" if shared else "xact_lock"
    if not await _scalar(conn, f"SELECT pglock.{function}(%s::text, %s::interval)",
                         (name, _interval(timeout))):
        raise LockNotAcquired(f"{name!r} was not granted within {timeout!r}")


async def key(conn: psycopg.AsyncConnection, name: str) -> int:
    """The advisory-lock key of `name`."""
    return int(await _scalar(conn, "SELECT pglock.key(%s::text)", (name,)))


class AsyncTokenLock:
    """A lock owned by a token, as `acquire` yields it; `lost` is set once a keep-alive found
    it gone."""

    def __init__(self, connect: AsyncConnect, name: str, token: Optional[int], shared: bool):
        self.connect, self.name, self.token, self.shared = connect, name, token, shared
        self.lost = asyncio.Event()

    async def _call(self, query: str, params: Any) -> Any:
        if isinstance(self.connect, psycopg.AsyncConnection):
            return await _scalar(self.connect, query, params)
        conn = await self.connect()
        try:
            return await _scalar(conn, query, params)
        finally:
            await conn.close()

    async def renew(self, ttl: Timeout = None) -> bool:
        """Extends the lock by `ttl` from now (None: its own TTL); False when it is gone or
        pglock.token_max_hold cut the renewal short."""
        return bool(await self._call("SELECT pglock.renew(%s::text, %s, %s::interval)",
                                     (self.name, self.token, _interval(ttl))))

    async def release(self) -> bool:
        """Releases the lock; False when the token no longer owned it."""
        return bool(await self._call("SELECT pglock.release(%s::text, %s)",
                                     (self.name, self.token)))


async def _keep_alive(held: AsyncTokenLock, ttl: float, block: asyncio.Task) -> None:
    """Renews `held` every third of its TTL; when it is gone (or no renewal reached the server
    for a whole TTL), sets `held.lost` and cancels the block's task."""
    loop = asyncio.get_running_loop()
    last_renewed = loop.time()
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            if await held.renew():
                last_renewed = loop.time()
                continue
        except psycopg.OperationalError:
            if loop.time() - last_renewed < ttl:
                continue
        held.lost.set()
        block.cancel()
        return


@asynccontextmanager
async def acquire(connect: AsyncConnect, name: str, ttl: Timeout, timeout: Timeout = None,
                  shared: bool = False, keep_alive: bool = False) -> AsyncIterator[AsyncTokenLock]:
    """Holds the lock `name` owned by a new token for the block, as `pglock.acquire` does. With
    `keep_alive`, a task renews it every third of its TTL; if the lock is lost, the block's task
    is cancelled and the block ends with LockLost."""
    function = "acquire_shared" if shared else "acquire"
    held = AsyncTokenLock(connect, name, None, shared)
    held.token = await held._call(
        f"SELECT pglock.{function}(%s::text, %s::interval, %s::interval)",
        (name, _interval(ttl), _interval(timeout)))
    if held.token is None:
        raise LockNotAcquired(f"{name!r} was not granted within {timeout!r}")
    keeper = None
    if keep_alive:
        block = asyncio.current_task()
        assert block is not None, "acquire runs in a task"
        keeper = asyncio.create_task(_keep_alive(held, _seconds(ttl), block))
    try:
        yield held
    except asyncio.CancelledError:
        await _stop(keeper)
        if held.lost.is_set():
            # The keep-alive's cancel, not the caller's: the task goes on, with LockLost.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise LockLost(f"token-owned lock {name!r} (token {held.token}) was lost") from None
        await held.release()
        raise
    except BaseException:
        await _stop(keeper)
        if not held.lost.is_set():
            await held.release()
        raise
    await _stop(keeper)
    if held.lost.is_set():
        raise LockLost(f"token-owned lock {name!r} (token {held.token}) was lost")
    await held.release()


async def _stop(keeper: Optional[asyncio.Task]) -> None:
    if keeper is None or keeper.done():
        return
    keeper.cancel()
    try:
        await keeper
    except asyncio.CancelledError:
        pass
