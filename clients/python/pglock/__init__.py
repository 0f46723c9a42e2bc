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

    with pglock.acquire(connect, "nightly-import", ttl=60, timeout=10) as held:
        ...          # held.token; held.renew() extends it; any connection may be used
"""

import warnings
from contextlib import contextmanager
from datetime import timedelta

import psycopg
from psycopg.pq import TransactionStatus

__all__ = ["LockNotAcquired", "lock", "try_lock", "xact_lock", "key", "acquire", "TokenLock"]


class LockNotAcquired(Exception):
    """A waiting lock was not granted within its timeout."""


def _interval(timeout):
    """A timeout in seconds (int, float), a timedelta, or None (wait without a deadline)."""
    if timeout is None or isinstance(timeout, timedelta):
        return timeout
    return timedelta(seconds=timeout)


def _scalar(conn, query, params):
    return conn.execute(query, params).fetchone()[0]


def _unlock(conn, function, name, error=None):
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
    except BaseException as error:
        _unlock(conn, function, name, error)
        raise
    _unlock(conn, function, name)


@contextmanager
def try_lock(conn, name, shared=False):
    """Tries the session lock `name` once, without waiting, and yields whether it was taken;
    if it was, it is released when the block ends."""
    function = "lock_shared" if shared else "lock"
    acquired = _scalar(conn, f"SELECT pglock.try_{function}(%s::text)", (name,))
    try:
        yield acquired
    except BaseException as error:
        if acquired:
            _unlock(conn, function, name, error)
        raise
    if acquired:
        _unlock(conn, function, name)


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


class TokenLock:
    """A lock owned by a token, as `acquire` yields it: `token` is its fencing token; `renew`
    and `release` work from a new connection each time (`connect` is called for each), or on
    the one connection `acquire` was given."""

    def __init__(self, connect, name, token, shared):
        self.connect, self.name, self.token, self.shared = connect, name, token, shared

    def _call(self, query, params):
        if isinstance(self.connect, psycopg.Connection):
            return _scalar(self.connect, query, params)
        conn = self.connect()
        try:
            return _scalar(conn, query, params)
        finally:
            conn.close()

    def renew(self, ttl=None):
        """Extends the lock by `ttl` seconds from now (None: the TTL it was taken with); False
        when the token no longer owns it (it expired, or was released), or when
        pglock.token_max_hold cut the renewal short (the lock is ending: stop the work)."""
        return self._call("SELECT pglock.renew(%s::text, %s, %s::interval)",
                          (self.name, self.token, _interval(ttl)))

    def release(self):
        """Releases the lock; False when the token no longer owned it."""
        return self._call("SELECT pglock.release(%s::text, %s)", (self.name, self.token))


@contextmanager
def acquire(connect, name, ttl, timeout=None, shared=False):
    """Holds the lock `name` owned by a new token for the block: released on the way out,
    exception or not, unless it expired first (its TTL, `ttl` seconds, passed without a
    renewal). Waits at most `timeout` (None: until granted); raises LockNotAcquired if it is
    not granted in time. `connect` is either a function, called for a new connection for each
    statement and the connection closed after it, as a client behind a transaction-mode pooler
    or a serverless function would; or an open psycopg connection, used for every statement and
    left open (in autocommit mode, or each statement's transaction is the caller's to end)."""
    function = "acquire_shared" if shared else "acquire"
    lock = TokenLock(connect, name, None, shared)
    lock.token = lock._call(f"SELECT pglock.{function}(%s::text, %s::interval, %s::interval)",
                            (name, _interval(ttl), _interval(timeout)))
    if lock.token is None:
        raise LockNotAcquired(f"{name!r} was not granted within {timeout!r}")
    try:
        yield lock
    finally:
        lock.release()
