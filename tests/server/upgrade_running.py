"""Upgrading a running server, as docs/upgrading.md says: the new pglock.so is loaded (the
server preloads it and was restarted), a database still has 0.3.0's or 0.4.0's SQL, and
`ALTER EXTENSION pglock UPDATE` runs while locks are held. Asserted: the old SQL works with the
new library before the update; a session lock with a lease, taken before the update, is still
held after it, by the same session, and its lease still renews; a token-owned lock taken with
0.4.0's SQL is renewed and released with its token after the update; token-owned locks arrive
with 0.4.0 for a database that had 0.3.0; pglock.stats keeps its counts.

Needs the running throwaway cluster of scripts/cluster.sh with pglock preloaded and
max_prepared_transactions > 0 (libpq environment: PGHOST, PGPORT, PGUSER). Leaves it running,
without the databases it made.
"""

import psycopg

DATABASES = {"0.3.0": "pglock_upgrade_from_0_3", "0.4.0": "pglock_upgrade_from_0_4"}


def connect(dbname):
    return psycopg.connect(dbname=dbname, autocommit=True)


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


def main():
    admin = connect("postgres")
    for version, db in DATABASES.items():
        admin.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.execute(f"CREATE DATABASE {db}")
        with connect(db) as setup:
            setup.execute(f"CREATE EXTENSION pglock VERSION '{version}'")

    for version, db in DATABASES.items():
        holder, other, updater = connect(db), connect(db), connect(db)
        name = f"upgrade: held across it ({version})"
        # Before the update: the old SQL with the new library.
        assert one(holder, "SELECT pglock.lock(%s::text)", name) is True
        assert one(holder, "SELECT pglock.set_lease(%s::text, '1 min')", name) is True
        assert one(other, "SELECT pglock.try_lock(%s::text)", name) is False
        token = None
        if version == "0.4.0":
            token = one(holder, "SELECT pglock.acquire('upgrade: token', '1 min', '0')")
            assert token is not None, "0.4.0's acquire with the new library"
        else:
            has_acquire = one(updater, "SELECT count(*) FROM pg_proc WHERE proname = 'acquire'"
                                       " AND pronamespace = 'pglock'::regnamespace")
            assert has_acquire == 0, "0.3.0 has no token-owned locks"

        counted = one(other, "SELECT acquisitions FROM pglock.stats WHERE name = %s", name)
        assert counted == 1, f"pglock.stats before the update: {counted}"
        updater.execute("ALTER EXTENSION pglock UPDATE")
        assert one(updater, "SELECT extversion FROM pg_extension WHERE extname = 'pglock'") == \
            one(updater, "SELECT default_version FROM pg_available_extensions"
                         " WHERE name = 'pglock'")

        # After it: the same session still holds the lock, with its lease.
        depth = one(holder, "SELECT sum(depth) FROM pglock.held() WHERE name = %s", name)
        assert depth == 1, f"held() after the update: {depth}"
        assert one(other, "SELECT pglock.try_lock(%s::text)", name) is False, "lost in the update"
        assert one(holder, "SELECT pglock.renew(%s::text)", name) is True, "the lease"
        assert one(other, "SELECT acquisitions FROM pglock.stats WHERE name = %s", name) == 1, \
            "pglock.stats after the update"
        shown = one(other, "SELECT count(*) FROM pglock.locks WHERE name = %s AND granted", name)
        assert shown == 1, "pglock.locks after the update"
        if token is not None:
            assert one(other, "SELECT pglock.renew('upgrade: token', %s)", token) is True
            assert one(other, "SELECT pglock.release('upgrade: token', %s)", token) is True
        # Token-owned locks work in every database after the update.
        fresh = one(other, "SELECT pglock.acquire('upgrade: token after', '1 min', '0')")
        assert fresh is not None and (token is None or fresh > token)
        assert one(holder, "SELECT pglock.release('upgrade: token after', %s)", fresh) is True
        assert one(holder, "SELECT pglock.unlock(%s::text)", name) is True
        assert one(other, "SELECT pglock.try_lock(%s::text)", name) is True
        for conn in (holder, other, updater):
            conn.close()
        held = "a session lock with its lease" + (" and a token-owned lock" if token else "")
        print(f"upgrade_running: {version} -> the current version, {held} held across"
              " ALTER EXTENSION pglock UPDATE")

    for db in DATABASES.values():
        admin.execute(f"DROP DATABASE {db}")
    admin.close()


main()
