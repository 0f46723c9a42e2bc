-- pglock 0.3.0 -> 0.4.0: locks owned by a token (acquire, acquire_shared, renew, release),
-- fence_ok for their tokens, and pglock.locks showing them (token, role, expiry).
\echo Use "ALTER EXTENSION pglock UPDATE TO '0.4.0'" to load this file. \quit

-- Locks owned by a token: held by prepared transactions of pglock's token worker, renewed and
-- released from any connection with the token.

CREATE FUNCTION pglock.acquire(
    name text,
    ttl interval,
    timeout interval DEFAULT NULL
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'acquire_name_wrapper';

CREATE FUNCTION pglock.acquire(
    key bigint,
    ttl interval,
    timeout interval DEFAULT NULL
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'acquire_key_wrapper';

CREATE FUNCTION pglock.acquire_shared(
    name text,
    ttl interval,
    timeout interval DEFAULT NULL
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'acquire_shared_name_wrapper';

CREATE FUNCTION pglock.acquire_shared(
    key bigint,
    ttl interval,
    timeout interval DEFAULT NULL
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'acquire_shared_key_wrapper';

CREATE FUNCTION pglock.renew(
    name text,
    token bigint,
    ttl interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'renew_token_name_wrapper';

CREATE FUNCTION pglock.renew(
    key bigint,
    token bigint,
    ttl interval DEFAULT NULL
) RETURNS boolean
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'renew_token_key_wrapper';

CREATE FUNCTION pglock.release(
    name text,
    token bigint
) RETURNS boolean
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'release_name_wrapper';

CREATE FUNCTION pglock.release(
    key bigint,
    token bigint
) RETURNS boolean
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'release_key_wrapper';

CREATE FUNCTION pglock.token_locks() RETURNS TABLE (
    key bigint,
    name text,
    token bigint,
    mode text,
    role oid,
    application_name text,
    client_addr text,
    since timestamp with time zone,
    expires_at timestamp with time zone,
    xid bigint
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'token_locks_wrapper';

-- pglock.locks: token-owned locks (no pid) with their name, token, role and expiry.
CREATE OR REPLACE VIEW pglock.locks AS
SELECT COALESCE(names.name, owned.name) AS name,
       l.key,
       l.mode,
       l.granted,
       l.pid,
       COALESCE(activity.application_name, owned.application_name) AS application_name,
       COALESCE(activity.client_addr, owned.client_addr::pg_catalog.inet) AS client_addr,
       activity.state,
       l.waitstart AS waiting_since,
       CASE WHEN NOT l.granted
            THEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) l.waitstart END AS wait_duration,
       CASE WHEN NOT l.granted THEN pg_catalog.pg_blocking_pids(l.pid) END AS blocked_by,
       COALESCE(lease.expires_at, owned.expires_at) AS lease_expires_at,
       owned.token,
       pg_catalog.pg_get_userbyid(owned.role) AS token_role
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
             lk.granted, lk.pid, lk.waitstart, lk.virtualtransaction
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
      AND l.mode OPERATOR(pg_catalog.=) ANY (ARRAY['exclusive', 'shared', 'upgradeable'])
LEFT JOIN (SELECT o.*, x.virtualtransaction
           FROM pglock.token_locks() o
           JOIN pg_catalog.pg_locks x
             ON x.locktype OPERATOR(pg_catalog.=) 'transactionid'
            AND x.transactionid::pg_catalog.text::pg_catalog.int8 OPERATOR(pg_catalog.=) o.xid) owned
       ON l.pid IS NULL AND l.granted AND owned.key OPERATOR(pg_catalog.=) l.key
      AND l.virtualtransaction OPERATOR(pg_catalog.=) owned.virtualtransaction;

COMMENT ON VIEW pglock.locks IS 'Every bigint-keyspace advisory lock in this database, held or awaited, with its name where known; token-owned locks (no pid) with their token, role and expiry.';

-- What each new function does (as in sql/finalize.sql).
COMMENT ON FUNCTION pglock.acquire(text, interval, interval) IS 'Takes the exclusive lock on a name for a new token, owned by no session: held until released with the token, or until ttl passes without a renewal. Waits at most timeout (NULL: no pglock deadline); NULL if not granted. Needs shared_preload_libraries and max_prepared_transactions.';
COMMENT ON FUNCTION pglock.acquire(bigint, interval, interval) IS 'Takes the exclusive lock on a key for a new token, owned by no session, for ttl unless renewed; waits at most timeout; NULL if not granted.';
COMMENT ON FUNCTION pglock.acquire_shared(text, interval, interval) IS 'Takes a shared lock on a name for a new token, owned by no session, for ttl unless renewed; waits at most timeout; NULL if not granted.';
COMMENT ON FUNCTION pglock.acquire_shared(bigint, interval, interval) IS 'Takes a shared lock on a key for a new token, owned by no session, for ttl unless renewed; waits at most timeout; NULL if not granted.';
COMMENT ON FUNCTION pglock.renew(text, bigint, interval) IS 'Extends the token-owned lock on a name by ttl from now (NULL: its own ttl), up to pglock.token_max_hold; false if the token no longer owns it.';
COMMENT ON FUNCTION pglock.renew(bigint, bigint, interval) IS 'Extends the token-owned lock on a key by ttl from now (NULL: its own ttl), up to pglock.token_max_hold; false if the token no longer owns it.';
COMMENT ON FUNCTION pglock.release(text, bigint) IS 'Releases the token-owned lock on a name, from any connection; returns once the lock is free; false if the token no longer owns it.';
COMMENT ON FUNCTION pglock.release(bigint, bigint) IS 'Releases the token-owned lock on a key, from any connection; returns once the lock is free; false if the token no longer owns it.';
COMMENT ON FUNCTION pglock.token_locks() IS 'The token-owned locks held in this database: key, name, token (to the role that took it), mode, role, application_name, client address, since and expiry; backs pglock.locks.';
COMMENT ON FUNCTION pglock.fence_ok(text, bigint) IS 'True only while this session holds the name under exactly this token, or a token-owned lock holds it under this token (then until the transaction ends): put it in the statement that writes.';
