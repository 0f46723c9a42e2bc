"""The Python client against a real server (libpq environment: PGHOST, PGPORT, PGUSER; pglock
created in the database). Run by scripts/test.sh; every check asserts, and a worker thread's
exception fails the run."""

import threading
import time
import warnings

import psycopg

import pglock


def connect():
    return psycopg.connect(autocommit=True)


def free_for(conn, name):
    """Whether `conn` can take `name` right now (a try, given back at once)."""
    with pglock.try_lock(conn, name) as acquired:
        return acquired


def held(conn, name):
    return conn.execute("SELECT coalesce(sum(depth), 0) FROM pglock.held() WHERE name = %s",
                        (name,)).fetchone()[0]


def test_lock_holds_for_the_block_and_releases_on_an_exception():
    a, b = connect(), connect()
    with pglock.lock(a, "py:block", timeout=1):
        assert held(a, "py:block") == 1
        with pglock.try_lock(b, "py:block") as acquired:
            assert acquired is False
    assert held(a, "py:block") == 0
    try:
        with pglock.lock(a, "py:block"):
            raise ValueError("work failed")
    except ValueError:
        pass
    assert held(a, "py:block") == 0, "released on the way out of a failed block"


def test_a_timeout_raises_lock_not_acquired_and_takes_nothing():
    a, b = connect(), connect()
    with pglock.lock(a, "py:timeout"):
        started = time.monotonic()
        try:
            with pglock.lock(b, "py:timeout", timeout=0.1):
                raise AssertionError("granted while held elsewhere")
        except pglock.LockNotAcquired:
            pass
        assert time.monotonic() - started < 20
    assert held(b, "py:timeout") == 0


def test_shared_locks_coexist_and_exclude_an_exclusive_one():
    a, b, c = connect(), connect(), connect()
    with pglock.lock(a, "py:shared", shared=True), pglock.lock(b, "py:shared", shared=True):
        assert free_for(c, "py:shared") is False
    assert free_for(c, "py:shared") is True


def test_xact_lock_lasts_until_the_transaction_ends():
    a, b = connect(), connect()
    with a.transaction():
        pglock.xact_lock(a, "py:xact", timeout=1)
        assert free_for(b, "py:xact") is False
    assert free_for(b, "py:xact") is True


def test_the_key_is_the_advisory_lock_of_the_name():
    a, b = connect(), connect()
    with pglock.lock(a, "py:key"):
        k = pglock.key(b, "py:key")
        assert b.execute("SELECT pg_try_advisory_lock(%s)", (k,)).fetchone()[0] is False


def test_workers_take_turns():
    count, inside, most, errors = [0], [0], [0], []
    guard = threading.Lock()

    def worker():
        try:
            conn = connect()
            for _ in range(20):
                with pglock.lock(conn, "py:turns", timeout=30):
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0.001)
                    with guard:
                        inside[0] -= 1
                        count[0] += 1
        except BaseException as error:  # a worker's failure fails the test
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert most[0] == 1 and count[0] == 120, (most, count)


def test_lock_all_takes_a_list_with_a_cast():
    conn = connect()
    names = ["py:all-1", "py:all-2"]
    # Untyped, a list matches both lock_all(text[]) and lock_all(bigint[]).
    try:
        conn.execute("SELECT pglock.lock_all(%s, '1 s')", (names,))
        raise AssertionError("an untyped list was accepted")
    except psycopg.errors.AmbiguousFunction:
        pass
    assert conn.execute("SELECT pglock.lock_all(%s::text[], '1 s')", (names,)).fetchone()[0]
    assert [held(conn, name) for name in names] == [1, 1]
    assert conn.execute("SELECT pglock.unlock_all(%s::text[])", (names,)).fetchone()[0]
    assert [held(conn, name) for name in names] == [0, 0]
    conn.close()


def test_an_sql_error_in_a_transaction_releases_the_lock_and_surfaces_as_itself():
    # A non-autocommit connection: the block's SQL error leaves the transaction failed, where
    # no unlock could run (0.4.0 left the lock held and raised InFailedSqlTransaction).
    a, b = psycopg.connect(), connect()
    try:
        with pglock.lock(a, "py:failed transaction", timeout=1):
            a.execute("SELECT 1 / 0")
        raise AssertionError("no error")
    except psycopg.errors.DivisionByZero:
        pass
    assert free_for(b, "py:failed transaction") is True, "the lock outlived the block"
    assert held(a, "py:failed transaction") == 0
    # Inside conn.transaction() the rollback is that block's: the lock cannot be released
    # before it, and the error says so, still as itself.
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            with a.transaction():
                with pglock.lock(a, "py:failed transaction"):
                    a.execute("SELECT 1 / 0")
            raise AssertionError("no error")
        except psycopg.errors.DivisionByZero as error:
            assert any("still held" in note for note in getattr(error, "__notes__", [])), error
    assert [w.category for w in warned] == [RuntimeWarning], warned
    assert held(a, "py:failed transaction") == 1
    a.execute("SELECT pglock.unlock_all()")
    a.commit()
    assert free_for(b, "py:failed transaction") is True
    a.close()


if __name__ == "__main__":
    tests = [value for name, value in sorted(globals().items()) if name.startswith("test_")]
    for test in tests:
        test()
    print(f"python client: {len(tests)} tests passed")
