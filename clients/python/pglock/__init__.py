"""pglock for Python: context managers over the pglock extension's SQL functions, for psycopg 3.

    import pglock

    with pglock.lock(conn, "nightly-report", timeout=5):
        ...  # the lock is held here, and released on the way out, exception or not

    with pglock.try_lock(conn, "nightly-report") as acquired:
        if acquired:
            ...  # skip the work when another session is doing it

Session locks belong to the connection: use one that stays yours for the duration (not one
returned to a pool in between). `xact_lock` takes a transaction lock, released by the
transaction's end; use it inside `with conn.transaction():`.

Locks owned by a token belong to no connection (pglock preloaded, max_prepared_transactions > 0):

    with pglock.acquire(connect, "nightly-import", ttl=60, timeout=10, keep_alive=True) as held:
        ...          # held.token; renewed in the background; LockLost if it is lost

The same for asyncio and psycopg's AsyncConnection: `pglock.aio`.
"""

from __future__ import annotations

import ctypes
import threading
import time
import warnings
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional, Union

import psycopg
from psycopg.pq import TransactionStatus

__all__ = ["LockNotAcquired", "LockLost", "lock", "try_lock", "xact_lock", "key", "acquire",
           "TokenLock", "Timeout", "Connect"]

#: A timeout or TTL: seconds, a timedelta, or None (for a timeout: no deadline).
Timeout = Union[int, float, timedelta, None]
#: Where a token-owned lock's statements run: a function returning a new connection for each
#: (closed after it), or one open connection (used for each, left open).
Connect = Union[Callable[[], psycopg.Connection], psycopg.Connection]


class LockNotAcquired(Exception):
    """A waiting lock was not granted within its timeout."""


class LockLost(Exception):
    """A token-owned lock ended while its block ran: a renewal found it gone (expired, released
    with its token elsewhere, or cut short by pglock.token_max_hold), or could not reach the
    server before its TTL passed."""


def _interval(timeout: Timeout) -> Optional[timedelta]:
    """A timeout in seconds (int, float), a timedelta, or None (wait without a deadline)."""
    if timeout is None or isinstance(timeout, timedelta):
        return timeout
    return timedelta(seconds=timeout)


def _seconds(ttl: Timeout) -> float:
    if isinstance(ttl, timedelta):
        return ttl.total_seconds()
    if ttl is None:
        raise ValueError("a TTL is needed")
    return float(ttl)


def _scalar(conn: psycopg.Connection, query: str, params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _unlock(conn: psycopg.Connection, function: str, name: str,
            error: Optional[BaseException] = None) -> None:
    """Releases one session hold of `name`. A session lock outlives its transaction, so it is
    released even when the block's error left the transaction failed (a non-autocommit
    connection): the failed transaction, which can only be rolled back, is rolled back first,
    and the block's error is what the caller sees. Inside a `conn.transaction()` block the
    rollback is that block's to do: the lock cannot be released before it, which a warning
    and a note on the error say."""
    if conn.info.transaction_status == TransactionStatus.INERROR:
        try:
            conn.rollback()
        except psycopg.ProgrammingError:
            message = (f"pglock: session lock {name!r} is still held: the transaction failed "
                       "inside conn.transaction(), so it could not be released; the session "
                       "keeps it until it is unlocked or the connection closes")
            warnings.warn(message, RuntimeWarning, stacklevel=4)
            if error is not None:
                error.add_note(message)
            return
    _scalar(conn, f"SELECT pglock.un{function}(%s::text)", (name,))


@contextmanager
def lock(conn: psycopg.Connection, name: str, timeout: Timeout = None,
         shared: bool = False) -> Iterator[None]:
    """Holds the session lock `name` (exclusive, or shared) for the block, waiting at most
    `timeout` for it (None: until granted, or until the statement is cancelled); raises
    LockNotAcquired if it is not granted in time. Released when the block ends."""
    function = "lock_shared" if shared else "lock"
    if not _scalar(conn, f"SELECT pglock.{function}(%s::text, %s::interval)",
                   (name, _interval(timeout))):
        raise LockNotAcquired(f"{name!r} was not granted within {timeout!r}")
    try:
        yield
    except BaseException as error:
        _unlock(conn, function, name, error)
        raise
    _unlock(conn, function, name)


@contextmanager
def try_lock(conn: psycopg.Connection, name: str, shared: bool = False) -> Iterator[bool]:
    """Tries the session lock `name` once, without waiting, and yields whether it was taken;
    if it was, it is released when the block ends."""
    function = "lock_shared" if shared else "lock"
    acquired = bool(_scalar(conn, f"SELECT pglock.try_{function}(%s::text)", (name,)))
    try:
        yield acquired
    except BaseException as error:
        if acquired:
            _unlock(conn, function, name, error)
        raise
    if acquired:
        _unlock(conn, function, name)


def xact_lock(conn: psycopg.Connection, name: str, timeout: Timeout = None,
              shared: bool = False) -> None:
    """Takes the transaction lock `name`, waiting at most `timeout`; raises LockNotAcquired if it
    is not granted in time. The transaction's end releases it (there is no unlock)."""
    function = "xact_lock_shared" if shared else "xact_lock"
    if not _scalar(conn, f"SELECT pglock.{function}(%s::text, %s::interval)",
                   (name, _interval(timeout))):
        raise LockNotAcquired(f"{name!r} was not granted within {timeout!r}")


def key(conn: psycopg.Connection, name: str) -> int:
    """The advisory-lock key of `name`: pg_advisory_lock(key) takes the same lock."""
    return int(_scalar(conn, "SELECT pglock.key(%s::text)", (name,)))


class TokenLock:
    """A lock owned by a token, as `acquire` yields it: `token` is its fencing token; `renew`
    and `release` work from a new connection each time (`connect` is called for each), or on
    the one connection `acquire` was given. `lost` is set once a keep-alive found it gone."""

    def __init__(self, connect: Connect, name: str, token: Optional[int], shared: bool):
        self.connect, self.name, self.token, self.shared = connect, name, token, shared
        self.lost = threading.Event()

    def _call(self, query: str, params: Any) -> Any:
        if isinstance(self.connect, psycopg.Connection):
            return _scalar(self.connect, query, params)
        conn = self.connect()
        try:
            return _scalar(conn, query, params)
        finally:
            conn.close()

    def renew(self, ttl: Timeout = None) -> bool:
        """Extends the lock by `ttl` seconds from now (None: the TTL it was taken with); False
        when the token no longer owns it (it expired, or was released), or when
        pglock.token_max_hold cut the renewal short (the lock is ending: stop the work)."""
        return bool(self._call("SELECT pglock.renew(%s::text, %s, %s::interval)",
                               (self.name, self.token, _interval(ttl))))

    def release(self) -> bool:
        """Releases the lock; False when the token no longer owned it."""
        return bool(self._call("SELECT pglock.release(%s::text, %s)", (self.name, self.token)))


def _raise_in(thread_id: int, error: Optional[type]) -> None:
    """Raises `error` in thread `thread_id` at its next Python instruction (a call blocked in C,
    such as a query, returns first); None takes back one not raised yet."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(error) if error is not None else None)


class _KeepAlive(threading.Thread):
    """Renews `held` every third of its TTL until stopped. When a renewal says the lock is gone,
    or none reached the server for a whole TTL, it sets `held.lost` and raises LockLost in the
    thread that runs the block."""

    def __init__(self, held: TokenLock, ttl: float, owner: int):
        super().__init__(name=f"pglock keep-alive {held.name!r}", daemon=True)
        self.held, self.ttl, self.owner = held, ttl, owner
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        last_renewed = _now()
        while not self.stop.wait(self.ttl / 3):
            try:
                if self.held.renew():
                    last_renewed = _now()
                    continue
            except psycopg.OperationalError as error:  # the server out of reach: try again
                self.error = error
                if _now() - last_renewed < self.ttl:
                    continue
            if not self.stop.is_set():
                self.held.lost.set()
                _raise_in(self.owner, LockLost)
            return


def _now() -> float:
    return time.monotonic()


@contextmanager
def acquire(connect: Connect, name: str, ttl: Timeout, timeout: Timeout = None,
            shared: bool = False, keep_alive: bool = False) -> Iterator[TokenLock]:
    """Holds the lock `name` owned by a new token for the block: released on the way out,
    exception or not, unless it expired first (its TTL, `ttl` seconds, passed without a
    renewal). Waits at most `timeout` (None: until granted); raises LockNotAcquired if it is
    not granted in time. `connect` is either a function, called for a new connection for each
    statement and the connection closed after it, as a client behind a transaction-mode pooler
    or a serverless function would; or an open psycopg connection, used for every statement and
    left open (in autocommit mode, or each statement's transaction is the caller's to end).

    With `keep_alive`, a thread renews the lock every third of its TTL while the block runs,
    and if the lock is lost, raises LockLost in the block (at its next Python instruction: a
    query in progress finishes first); the block's end stops it, then releases the lock. Give
    it a `connect` function, or an autocommit connection that the block does not use at the
    same time for a transaction."""
    function = "acquire_shared" if shared else "acquire"
    held = TokenLock(connect, name, None, shared)
    held.token = held._call(f"SELECT pglock.{function}(%s::text, %s::interval, %s::interval)",
                            (name, _interval(ttl), _interval(timeout)))
    if held.token is None:
        raise LockNotAcquired(f"{name!r} was not granted within {timeout!r}")
    keeper = None
    if keep_alive:
        keeper = _KeepAlive(held, _seconds(ttl), threading.get_ident())
        keeper.start()
    try:
        yield held
    except LockLost:
        raise
    except BaseException:
        _stop(keeper)
        if not held.lost.is_set():
            held.release()
        raise
    lost = _stop(keeper)
    if lost:
        raise LockLost(f"token-owned lock {name!r} (token {held.token}) was lost")
    held.release()


def _stop(keeper: Optional[_KeepAlive]) -> bool:
    """Stops the keep-alive; whether it found the lock lost."""
    if keeper is None:
        return False
    keeper.stop.set()
    keeper.join()
    # A LockLost raised after the block ended is taken back.
    if keeper.held.lost.is_set():
        _raise_in(threading.get_ident(), None)
        return True
    return False
