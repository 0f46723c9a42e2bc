-- pglock 0.2.0 -> 0.3.0: lock shapes (many locks at once, waiting for a release, who holds a
-- lock, upgradeable locks, semaphores, MySQL's GET_LOCK family), fencing tokens, and
-- pglock.locks showing upgradeable holds and semaphore slots.
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

-- pglock.locks: upgradeable holds (RowShareLock on the key), waits for an upgrade intent, and
-- semaphore slots and their queue.
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
       CASE WHEN NOT l.granted THEN pg_catalog.pg_blocking_pids(l.pid) END AS blocked_by
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
       ON names.pid OPERATOR(pg_catalog.=) l.pid AND names.key OPERATOR(pg_catalog.=) l.key;

