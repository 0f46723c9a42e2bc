-- pglock 0.2.0 -> 0.3.0: lock shapes (many locks at once, waiting for a release, who holds a
-- lock, upgradeable locks, semaphores, MySQL's GET_LOCK family), fencing tokens, leases,
-- status(), statistics per lock (pglock.stats), and pglock.locks showing upgradeable holds,
-- semaphore slots and leases.
\echo Use "ALTER EXTENSION pglock UPDATE TO '0.3.0'" to load this file. \quit

-- Many locks at once, all or nothing, in ascending key order under one deadline.

CREATE FUNCTION pglock.try_lock_all(
    names text[]
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_lock_all_names_wrapper';

CREATE FUNCTION pglock.try_lock_all(
    keys bigint[]
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_lock_all_keys_wrapper';

CREATE FUNCTION pglock.lock_all(
    names text[],
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_all_names_wrapper';

CREATE FUNCTION pglock.lock_all(
    keys bigint[],
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_all_keys_wrapper';

CREATE FUNCTION pglock.try_lock_all_shared(
    names text[]
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_lock_all_shared_names_wrapper';

CREATE FUNCTION pglock.try_lock_all_shared(
    keys bigint[]
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_lock_all_shared_keys_wrapper';

CREATE FUNCTION pglock.lock_all_shared(
    names text[],
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_all_shared_names_wrapper';

CREATE FUNCTION pglock.lock_all_shared(
    keys bigint[],
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_all_shared_keys_wrapper';

CREATE FUNCTION pglock.try_xact_lock_all(
    names text[]
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_xact_lock_all_names_wrapper';

CREATE FUNCTION pglock.try_xact_lock_all(
    keys bigint[]
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_xact_lock_all_keys_wrapper';

CREATE FUNCTION pglock.xact_lock_all(
    names text[],
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'xact_lock_all_names_wrapper';

CREATE FUNCTION pglock.xact_lock_all(
    keys bigint[],
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'xact_lock_all_keys_wrapper';

CREATE FUNCTION pglock.try_xact_lock_all_shared(
    names text[]
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_xact_lock_all_shared_names_wrapper';

CREATE FUNCTION pglock.try_xact_lock_all_shared(
    keys bigint[]
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_xact_lock_all_shared_keys_wrapper';

CREATE FUNCTION pglock.xact_lock_all_shared(
    names text[],
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'xact_lock_all_shared_names_wrapper';

CREATE FUNCTION pglock.xact_lock_all_shared(
    keys bigint[],
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'xact_lock_all_shared_keys_wrapper';

CREATE FUNCTION pglock.unlock_all(
    names text[]
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'unlock_all_names_wrapper';

CREATE FUNCTION pglock.unlock_all(
    keys bigint[]
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'unlock_all_keys_wrapper';

CREATE FUNCTION pglock.unlock_all_shared(
    names text[]
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'unlock_all_shared_names_wrapper';

CREATE FUNCTION pglock.unlock_all_shared(
    keys bigint[]
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'unlock_all_shared_keys_wrapper';

-- Looking without taking.

CREATE FUNCTION pglock.wait_released(
    name text,
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'wait_released_wrapper';

CREATE FUNCTION pglock.wait_released_shared(
    name text,
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'wait_released_shared_wrapper';

CREATE FUNCTION pglock.is_free(
    name text
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'is_free_wrapper';

CREATE FUNCTION pglock.holders(
    name text
) RETURNS TABLE (
    pid integer,
    mode text,
    scope text
)
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'holders_wrapper';

-- Upgradeable locks.

CREATE FUNCTION pglock.lock_upgradeable(
    name text,
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_upgradeable_wrapper';

CREATE FUNCTION pglock.upgrade(
    name text,
    timeout interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'upgrade_wrapper';

CREATE FUNCTION pglock.downgrade(
    name text
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'downgrade_wrapper';

CREATE FUNCTION pglock.unlock_upgradeable(
    name text
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'unlock_upgradeable_wrapper';

-- Semaphores: at most N holders of a name.

CREATE FUNCTION pglock.acquire_slot(
    name text,
    slots integer,
    timeout interval DEFAULT NULL
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'acquire_slot_wrapper';

CREATE FUNCTION pglock.xact_acquire_slot(
    name text,
    slots integer,
    timeout interval DEFAULT NULL
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'xact_acquire_slot_wrapper';

CREATE FUNCTION pglock.release_slot(
    name text,
    slot integer
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'release_slot_wrapper';

-- Fencing tokens: a number with each fenced hold, greater than every token returned before.

CREATE FUNCTION pglock.lock_fenced(
    name text,
    timeout interval DEFAULT NULL
) RETURNS bigint
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_fenced_wrapper';

CREATE FUNCTION pglock.try_lock_fenced(
    name text
) RETURNS bigint
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_lock_fenced_wrapper';

CREATE FUNCTION pglock.xact_lock_fenced(
    name text,
    timeout interval DEFAULT NULL
) RETURNS bigint
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'xact_lock_fenced_wrapper';

CREATE FUNCTION pglock.try_xact_lock_fenced(
    name text
) RETURNS bigint
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'try_xact_lock_fenced_wrapper';

CREATE FUNCTION pglock.token(
    name text
) RETURNS bigint
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'token_wrapper';

CREATE FUNCTION pglock.fence_ok(
    name text,
    token bigint
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'fence_ok_wrapper';

-- Leases: a holder that stops renewing loses its lock (needs shared_preload_libraries).
CREATE FUNCTION pglock.set_lease(
    name text,
    lease interval
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'set_lease_wrapper';

CREATE FUNCTION pglock.set_lease(
    key bigint,
    lease interval
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'set_lease_key_wrapper';

CREATE FUNCTION pglock.renew(
    name text
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'renew_wrapper';

CREATE FUNCTION pglock.renew(
    key bigint
) RETURNS boolean
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'renew_key_wrapper';

CREATE FUNCTION pglock.leases() RETURNS TABLE (
    pid integer,
    key bigint,
    lease interval,
    expires_at timestamp with time zone
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'leases_wrapper';

-- One report of whether pglock is healthy here.
CREATE FUNCTION pglock.status() RETURNS jsonb
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'status_wrapper';

-- Statistics per lock across sessions (needs shared_preload_libraries).

CREATE FUNCTION pglock.lock_stats() RETURNS TABLE (
    database oid,
    key bigint,
    name text,
    acquisitions bigint,
    waited bigint,
    busy bigint,
    timeouts bigint,
    deadlocks bigint,
    cancels bigint,
    total_wait_time double precision,
    max_wait_time double precision,
    session_holds bigint,
    total_session_hold_time double precision,
    max_session_hold_time double precision,
    xact_holds bigint,
    total_xact_hold_time double precision,
    max_xact_hold_time double precision,
    first_acquired timestamp with time zone,
    last_acquired timestamp with time zone
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_stats_wrapper';

CREATE FUNCTION pglock.stats_reset(
    key bigint
) RETURNS void
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'stats_reset_key_wrapper';

CREATE FUNCTION pglock.stats_reset(
    name text DEFAULT NULL
) RETURNS void
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'stats_reset_name_wrapper';

CREATE VIEW pglock.stats AS
SELECT d.datname AS database, s.key, s.name,
       s.acquisitions, s.waited, s.busy, s.timeouts, s.deadlocks, s.cancels,
       s.total_wait_time, s.max_wait_time,
       s.session_holds, s.total_session_hold_time, s.max_session_hold_time,
       s.xact_holds, s.total_xact_hold_time, s.max_xact_hold_time,
       s.first_acquired, s.last_acquired
FROM pglock.lock_stats() s
LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) s.database;

COMMENT ON VIEW pglock.stats IS 'Statistics per lock across sessions since the last reset: acquisitions, waits, timeouts, deadlocks, cancels, wait and hold times (ms). Needs shared_preload_libraries.';
GRANT SELECT ON pglock.stats TO PUBLIC;
REVOKE ALL ON FUNCTION pglock.stats_reset(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pglock.stats_reset(bigint) FROM PUBLIC;

-- MySQL's user-level lock functions.

CREATE FUNCTION pglock.get_lock(
    name text,
    timeout_seconds double precision
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'get_lock_wrapper';

CREATE FUNCTION pglock.release_lock(
    name text
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'release_lock_wrapper';

CREATE FUNCTION pglock.is_free_lock(
    name text
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'is_free_lock_wrapper';

CREATE FUNCTION pglock.is_used_lock(
    name text
) RETURNS integer
VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'is_used_lock_wrapper';

CREATE FUNCTION pglock.release_all_locks() RETURNS integer
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'release_all_locks_wrapper';

-- pglock.locks: upgradeable holds (RowShareLock on the key), waits for an upgrade intent,
-- semaphore slots and their queue, and when a hold's lease expires.
CREATE OR REPLACE VIEW pglock.locks AS
SELECT names.name,
       l.key,
       l.mode,
       l.granted,
       l.pid,
       activity.application_name,
       activity.client_addr,
       activity.state,
       l.waitstart AS waiting_since,
       CASE WHEN NOT l.granted
            THEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) l.waitstart END AS wait_duration,
       CASE WHEN NOT l.granted THEN pg_catalog.pg_blocking_pids(l.pid) END AS blocked_by,
       lease.expires_at AS lease_expires_at
FROM (SELECT (lk.classid::pg_catalog.int8 OPERATOR(pg_catalog.<<) 32)
               OPERATOR(pg_catalog.|) lk.objid::pg_catalog.int8 AS key,
             CASE WHEN lk.objsubid OPERATOR(pg_catalog.=) 3 THEN 'upgradeable'
                  WHEN lk.objsubid OPERATOR(pg_catalog.>=) 256
                   AND lk.objsubid OPERATOR(pg_catalog.%) 256 OPERATOR(pg_catalog.=) 255
                  THEN pg_catalog.format('queue for %s slots', lk.objsubid OPERATOR(pg_catalog./) 256)
                  WHEN lk.objsubid OPERATOR(pg_catalog.>=) 256
                  THEN pg_catalog.format('slot %s of %s', lk.objsubid OPERATOR(pg_catalog.%) 256,
                                         lk.objsubid OPERATOR(pg_catalog./) 256)
                  WHEN lk.mode OPERATOR(pg_catalog.=) 'ExclusiveLock' THEN 'exclusive'
                  WHEN lk.mode OPERATOR(pg_catalog.=) 'ShareLock' THEN 'shared'
                  WHEN lk.mode OPERATOR(pg_catalog.=) 'RowShareLock' THEN 'upgradeable'
                  ELSE lk.mode END AS mode,
             lk.granted, lk.pid, lk.waitstart
      FROM pg_catalog.pg_locks lk
      WHERE lk.locktype OPERATOR(pg_catalog.=) 'advisory'
        AND (lk.objsubid OPERATOR(pg_catalog.=) 1
             OR (lk.objsubid OPERATOR(pg_catalog.=) 3 AND NOT lk.granted)
             OR (lk.objsubid OPERATOR(pg_catalog.>=) 256
                 AND (lk.objsubid OPERATOR(pg_catalog.%) 256 OPERATOR(pg_catalog.<>) 255
                      OR NOT lk.granted)))
        AND lk.database OPERATOR(pg_catalog.=)
            (SELECT d.oid FROM pg_catalog.pg_database d
             WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())) l
LEFT JOIN pg_catalog.pg_stat_activity activity ON activity.pid OPERATOR(pg_catalog.=) l.pid
LEFT JOIN pglock.lock_names() names
       ON names.pid OPERATOR(pg_catalog.=) l.pid AND names.key OPERATOR(pg_catalog.=) l.key
LEFT JOIN pglock.leases() lease
       ON lease.pid OPERATOR(pg_catalog.=) l.pid AND lease.key OPERATOR(pg_catalog.=) l.key
      AND l.granted
      AND l.mode OPERATOR(pg_catalog.=) ANY (ARRAY['exclusive', 'shared', 'upgradeable']);

-- What each function does, for \df+ pglock.* (as sql/finalize.sql says it in a fresh install).
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
COMMENT ON FUNCTION pglock.status() IS 'pglock''s health at a glance, as jsonb: versions, preloading, settings, how full the lock table, the name map, the lease table and the statistics table are, and where fencing tokens come from.';
COMMENT ON FUNCTION pglock.lock_stats() IS 'The rows of pglock.stats: this database''s, and every database''s for members of pg_read_all_stats. Needs shared_preload_libraries.';
COMMENT ON FUNCTION pglock.stats_reset(text) IS 'Forgets the statistics of one name in this database, or, with no name, of every lock in every database. Superusers only unless granted.';
COMMENT ON FUNCTION pglock.stats_reset(bigint) IS 'Forgets the statistics of one key in this database. Superusers only unless granted.';
