-- The end of the install script (src/lib.rs pulls it in after every other object).

-- The schema is created by CREATE EXTENSION (pglock.control names it); every role may use it,
-- as every role may call the built-in advisory lock functions.
GRANT USAGE ON SCHEMA pglock TO PUBLIC;

-- What each function does, for \df+ pglock.* (repeated in sql/pglock--0.2.0--0.3.0.sql; the
-- upgrade test checks that a fresh install and an upgraded one agree).
COMMENT ON FUNCTION pglock.key(text) IS 'The advisory-lock key of a name (HKDF-SHA256, the key Rust sqlx uses): pg_advisory_lock(pglock.key(name)) is the same lock.';
COMMENT ON FUNCTION pglock.try_lock(text) IS 'Takes the exclusive session lock on a name if it is free (or already this session''s), never waiting; true if taken.';
COMMENT ON FUNCTION pglock.try_lock(bigint) IS 'Takes the exclusive session lock on a key if it is free, never waiting: pg_try_advisory_lock(key).';
COMMENT ON FUNCTION pglock.lock(text, interval) IS 'Takes the exclusive session lock on a name, waiting in the lock queue at most timeout (NULL: no pglock deadline); false on timeout.';
COMMENT ON FUNCTION pglock.lock(bigint, interval) IS 'Takes the exclusive session lock on a key, waiting at most timeout; false on timeout.';
COMMENT ON FUNCTION pglock.try_lock_shared(text) IS 'Takes a shared session lock on a name if no exclusive holder is in the way, never waiting.';
COMMENT ON FUNCTION pglock.try_lock_shared(bigint) IS 'Takes a shared session lock on a key if no exclusive holder is in the way, never waiting.';
COMMENT ON FUNCTION pglock.lock_shared(text, interval) IS 'Takes a shared session lock on a name, waiting at most timeout; false on timeout.';
COMMENT ON FUNCTION pglock.lock_shared(bigint, interval) IS 'Takes a shared session lock on a key, waiting at most timeout; false on timeout.';
COMMENT ON FUNCTION pglock.try_xact_lock(text) IS 'Takes the exclusive lock on a name until the transaction ends, never waiting.';
COMMENT ON FUNCTION pglock.try_xact_lock(bigint) IS 'Takes the exclusive lock on a key until the transaction ends, never waiting.';
COMMENT ON FUNCTION pglock.xact_lock(text, interval) IS 'Takes the exclusive lock on a name until the transaction ends, waiting at most timeout.';
COMMENT ON FUNCTION pglock.xact_lock(bigint, interval) IS 'Takes the exclusive lock on a key until the transaction ends, waiting at most timeout.';
COMMENT ON FUNCTION pglock.try_xact_lock_shared(text) IS 'Takes a shared lock on a name until the transaction ends, never waiting.';
COMMENT ON FUNCTION pglock.try_xact_lock_shared(bigint) IS 'Takes a shared lock on a key until the transaction ends, never waiting.';
COMMENT ON FUNCTION pglock.xact_lock_shared(text, interval) IS 'Takes a shared lock on a name until the transaction ends, waiting at most timeout.';
COMMENT ON FUNCTION pglock.xact_lock_shared(bigint, interval) IS 'Takes a shared lock on a key until the transaction ends, waiting at most timeout.';
COMMENT ON FUNCTION pglock.unlock(text) IS 'Releases one exclusive session hold of a name; false if the session has none.';
COMMENT ON FUNCTION pglock.unlock(bigint) IS 'Releases one exclusive session hold of a key; false if the session has none.';
COMMENT ON FUNCTION pglock.unlock_shared(text) IS 'Releases one shared session hold of a name; false if the session has none.';
COMMENT ON FUNCTION pglock.unlock_shared(bigint) IS 'Releases one shared session hold of a key; false if the session has none.';
COMMENT ON FUNCTION pglock.unlock_all() IS 'Releases every session-level advisory lock of the session (pglock''s and the built-ins''); returns how many session rows of held() went.';
COMMENT ON FUNCTION pglock.held() IS 'The locks this session holds through pglock: name, key, mode, scope, depth and since when.';
COMMENT ON FUNCTION pglock.lock_names() IS 'The names of advisory locks held or awaited by name that the current user may see; backs the pglock.locks view.';
COMMENT ON FUNCTION pglock.try_lock_all(text[]) IS 'Takes the exclusive session lock on every name, in key order, or on none; never waits.';
COMMENT ON FUNCTION pglock.try_lock_all(bigint[]) IS 'Takes the exclusive session lock on every key, in key order, or on none; never waits.';
COMMENT ON FUNCTION pglock.lock_all(text[], interval) IS 'Takes the exclusive session lock on every name, in key order, within one timeout for all; on timeout or error nothing this call took stays.';
COMMENT ON FUNCTION pglock.lock_all(bigint[], interval) IS 'Takes the exclusive session lock on every key, in key order, within one timeout for all; all or nothing.';
COMMENT ON FUNCTION pglock.try_lock_all_shared(text[]) IS 'Takes a shared session lock on every name or on none; never waits.';
COMMENT ON FUNCTION pglock.try_lock_all_shared(bigint[]) IS 'Takes a shared session lock on every key or on none; never waits.';
COMMENT ON FUNCTION pglock.lock_all_shared(text[], interval) IS 'Takes a shared session lock on every name, in key order, within one timeout for all; all or nothing.';
COMMENT ON FUNCTION pglock.lock_all_shared(bigint[], interval) IS 'Takes a shared session lock on every key, in key order, within one timeout for all; all or nothing.';
COMMENT ON FUNCTION pglock.try_xact_lock_all(text[]) IS 'Takes the exclusive lock on every name until the transaction ends, or on none; never waits.';
COMMENT ON FUNCTION pglock.try_xact_lock_all(bigint[]) IS 'Takes the exclusive lock on every key until the transaction ends, or on none; never waits.';
COMMENT ON FUNCTION pglock.xact_lock_all(text[], interval) IS 'Takes the exclusive lock on every name until the transaction ends, within one timeout; all or nothing.';
COMMENT ON FUNCTION pglock.xact_lock_all(bigint[], interval) IS 'Takes the exclusive lock on every key until the transaction ends, within one timeout; all or nothing.';
COMMENT ON FUNCTION pglock.try_xact_lock_all_shared(text[]) IS 'Takes a shared lock on every name until the transaction ends, or on none; never waits.';
COMMENT ON FUNCTION pglock.try_xact_lock_all_shared(bigint[]) IS 'Takes a shared lock on every key until the transaction ends, or on none; never waits.';
COMMENT ON FUNCTION pglock.xact_lock_all_shared(text[], interval) IS 'Takes a shared lock on every name until the transaction ends, within one timeout; all or nothing.';
COMMENT ON FUNCTION pglock.xact_lock_all_shared(bigint[], interval) IS 'Takes a shared lock on every key until the transaction ends, within one timeout; all or nothing.';
COMMENT ON FUNCTION pglock.unlock_all(text[]) IS 'Releases one exclusive session hold of each distinct name; returns how many were held.';
COMMENT ON FUNCTION pglock.unlock_all(bigint[]) IS 'Releases one exclusive session hold of each distinct key; returns how many were held.';
COMMENT ON FUNCTION pglock.unlock_all_shared(text[]) IS 'Releases one shared session hold of each distinct name; returns how many were held.';
COMMENT ON FUNCTION pglock.unlock_all_shared(bigint[]) IS 'Releases one shared session hold of each distinct key; returns how many were held.';
COMMENT ON FUNCTION pglock.wait_released(text, interval) IS 'Waits in the lock queue until nobody holds the name exclusively, taking nothing; false if that did not happen within timeout.';
COMMENT ON FUNCTION pglock.wait_released_shared(text, interval) IS 'Waits in the lock queue until nobody holds the name in any mode, taking nothing; false on timeout.';
COMMENT ON FUNCTION pglock.is_free(text) IS 'Whether nobody, this session included, holds the name in any mode right now (a snapshot: taking the lock is the only safe check).';
COMMENT ON FUNCTION pglock.holders(text) IS 'Who holds the name right now: pid, mode, and scope (known for this session and prepared transactions only).';
COMMENT ON FUNCTION pglock.lock_upgradeable(text, interval) IS 'Takes an upgradeable session hold: it coexists with shared holders and excludes other upgradeable and exclusive ones.';
COMMENT ON FUNCTION pglock.upgrade(text, interval) IS 'Makes this session''s upgradeable hold exclusive, waiting at most timeout for shared holders to leave.';
COMMENT ON FUNCTION pglock.downgrade(text) IS 'Gives back the exclusive hold an upgrade took, keeping the upgradeable hold; false if not upgraded.';
COMMENT ON FUNCTION pglock.unlock_upgradeable(text) IS 'Releases one upgradeable hold of the name; false if the session has none.';
COMMENT ON FUNCTION pglock.acquire_slot(text, integer, interval) IS 'Takes one of slots slots of the name for the session, waiting in arrival order at most timeout: the slot number, or NULL.';
COMMENT ON FUNCTION pglock.xact_acquire_slot(text, integer, interval) IS 'Takes one of slots slots of the name until the transaction ends: the slot number, or NULL on timeout.';
COMMENT ON FUNCTION pglock.release_slot(text, integer) IS 'Releases one session hold of a slot; false if the session does not hold it.';
COMMENT ON FUNCTION pglock.lock_fenced(text, interval) IS 'Takes the exclusive session lock like lock() and returns its fencing token, greater than every token returned before; NULL on timeout.';
COMMENT ON FUNCTION pglock.try_lock_fenced(text) IS 'Takes the exclusive session lock if free and returns its fencing token; NULL if not taken.';
COMMENT ON FUNCTION pglock.xact_lock_fenced(text, interval) IS 'Takes the exclusive lock until the transaction ends and returns its fencing token; NULL on timeout.';
COMMENT ON FUNCTION pglock.try_xact_lock_fenced(text) IS 'Takes the exclusive lock until the transaction ends if free and returns its fencing token; NULL if not taken.';
COMMENT ON FUNCTION pglock.token(text) IS 'The fencing token of this session''s current fenced hold of the name, or NULL.';
COMMENT ON FUNCTION pglock.fence_ok(text, bigint) IS 'True only while this session holds the name under exactly this token: put it in the statement that writes.';
COMMENT ON FUNCTION pglock.get_lock(text, double precision) IS 'MySQL''s GET_LOCK: 1 when the exclusive session lock was taken within timeout_seconds (negative: no limit), 0 on timeout.';
COMMENT ON FUNCTION pglock.release_lock(text) IS 'MySQL''s RELEASE_LOCK: 1 released, 0 held by another session, NULL held by nobody.';
COMMENT ON FUNCTION pglock.is_free_lock(text) IS 'MySQL''s IS_FREE_LOCK: 1 if nobody holds the name, else 0.';
COMMENT ON FUNCTION pglock.is_used_lock(text) IS 'MySQL''s IS_USED_LOCK: the pid of the session holding the name, or NULL.';
COMMENT ON FUNCTION pglock.release_all_locks() IS 'MySQL''s RELEASE_ALL_LOCKS: releases every session lock and returns how many holds (stack levels) pglock had counted.';
COMMENT ON FUNCTION pglock.set_lease(text, interval) IS 'Gives this session''s hold of a name a lease: unless renewed within it, the lease worker ends the session (pglock.lease_action); NULL removes the lease; false if not held. Needs shared_preload_libraries.';
COMMENT ON FUNCTION pglock.set_lease(bigint, interval) IS 'Gives this session''s hold of a key a lease: unless renewed within it, the lease worker ends the session (pglock.lease_action); NULL removes the lease; false if not held. Needs shared_preload_libraries.';
COMMENT ON FUNCTION pglock.renew(text) IS 'Extends this session''s lease on a name by its length from now; false if the session has no lease on it.';
COMMENT ON FUNCTION pglock.renew(bigint) IS 'Extends this session''s lease on a key by its length from now; false if the session has no lease on it.';
COMMENT ON FUNCTION pglock.leases() IS 'Every lease in this database: holder pid, key, length and expiry; backs pglock.locks.lease_expires_at.';
