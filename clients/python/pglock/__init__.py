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
"""

from contextlib import contextmanager
from datetime import timedelta

__all__ = ["LockNotAcquired", "lock", "try_lock", "xact_lock", "key"]


class LockNotAcquired(Exception):
    """A waiting lock was not granted within its timeout."""


def _interval(timeout):
    """A timeout in seconds (int, float), a timedelta, or None (wait without a deadline)."""
    if timeout is None or isinstance(timeout, timedelta):
        return timeout
    return timedelta(seconds=timeout)


def _scalar(conn, query, params):
    return conn.execute(query, params).fetchone()[0]


@contextmanager
def lock(conn, name, timeout=None, shared=False):
    """Holds the session lock `name` (exclusive, or shared) for the block, waiting at most
    `timeout` for it (None: until granted, or until the statement is cancelled); raises
    LockNotAcquired if it is not granted in time. Released when the block ends."""
    function = "lock_shared" if shared else "lock"
    if not _scalar(conn, f"SELECT pglock.{function}(%s::text, %s::interval)",
                   (name, _interval(timeout))):
        raise LockNotAcquired(f"{name!r} was not granted within {timeout!r}")
    try:
        yield
    finally:
        _scalar(conn, f"SELECT pglock.un{function}(%s::text)", (name,))


@contextmanager
def try_lock(conn, name, shared=False):
    """Tries the session lock `name` once, without waiting, and yields whether it was taken;
    if it was, it is released when the block ends."""
    function = "lock_shared" if shared else "lock"
    acquired = _scalar(conn, f"SELECT pglock.try_{function}(%s::text)", (name,))
    try:
        yield acquired
    finally:
        if acquired:
            _scalar(conn, f"SELECT pglock.un{function}(%s::text)", (name,))


def xact_lock(conn, name, timeout=None, shared=False):
    """Takes the transaction lock `name`, waiting at most `timeout`; raises LockNotAcquired if it
    is not granted in time. The transaction's end releases it (there is no unlock)."""
    function = "xact_lock_shared" if shared else "xact_lock"
    if not _scalar(conn, f"SELECT pglock.{function}(%s::text, %s::interval)",
                   (name, _interval(timeout))):
        raise LockNotAcquired(f"{name!r} was not granted within {timeout!r}")


def key(conn, name):
    """The advisory-lock key of `name`: pg_advisory_lock(key) takes the same lock."""
    return _scalar(conn, "SELECT pglock.key(%s::text)", (name,))
