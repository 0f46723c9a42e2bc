-- pglock 0.4.0 -> 0.5.0: token-owned locks you can trust. renew, release and fence_ok act only
-- for a role that may act for the role that took the lock; renew is false when
-- pglock.token_max_hold cut it short; a release in the transaction that fenced the lock returns
-- at once: their comments say so. pglock.locks shows a waiting token acquire under its caller.
\echo Use "ALTER EXTENSION pglock UPDATE TO '0.5.0'" to load this file. \quit

-- The acquires of token-owned locks that wait, for pglock.locks: a waiting acquire is shown
-- under the pid of the session that called it, with its name (0.4.0 showed the waiter
-- process's pid and no name).
CREATE FUNCTION pglock.token_waiters() RETURNS TABLE (
    waiter_pid integer,
    key bigint,
    name text,
    pid integer,
    role oid
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'token_waiters_wrapper';

CREATE OR REPLACE VIEW pglock.locks AS
SELECT COALESCE(names.name, owned.name, waiting.name) AS name,
       l.key,
       l.mode,
       l.granted,
       COALESCE(waiting.pid, l.pid) AS pid,
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
LEFT JOIN pglock.token_waiters() waiting
       ON waiting.waiter_pid OPERATOR(pg_catalog.=) l.pid AND NOT l.granted
      AND waiting.key OPERATOR(pg_catalog.=) l.key
LEFT JOIN pg_catalog.pg_stat_activity activity
       ON activity.pid OPERATOR(pg_catalog.=) COALESCE(waiting.pid, l.pid)
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

COMMENT ON VIEW pglock.locks IS 'Every bigint-keyspace advisory lock in this database, held or awaited, with its name where known; token-owned locks (no pid) with their token, role and expiry, and a waiting token acquire under the pid of the session that called it.';


COMMENT ON FUNCTION pglock.fence_ok(text, bigint) IS 'True only while this session holds the name under exactly this token, or a token-owned lock that the current role may act for holds it under this token (then until the transaction ends, for pglock.token_fence_timeout at most after the lock''s end): put it in the statement that writes.';
COMMENT ON FUNCTION pglock.renew(text, bigint, interval) IS 'Extends the token-owned lock on a name by ttl from now (NULL: its own ttl), up to pglock.token_max_hold; false if the token no longer owns it, the current role may not act for the role that took it, or pglock.token_max_hold cut the extension short.';
COMMENT ON FUNCTION pglock.renew(bigint, bigint, interval) IS 'Extends the token-owned lock on a key by ttl from now (NULL: its own ttl), up to pglock.token_max_hold; false if the token no longer owns it, the current role may not act for the role that took it, or pglock.token_max_hold cut the extension short.';
COMMENT ON FUNCTION pglock.release(text, bigint) IS 'Releases the token-owned lock on a name, from any connection of a role that may act for the role that took it; returns once the lock is free (at the end of the transaction if it checked the token with fence_ok); false if the token no longer owns it.';
COMMENT ON FUNCTION pglock.release(bigint, bigint) IS 'Releases the token-owned lock on a key, from any connection of a role that may act for the role that took it; returns once the lock is free (at the end of the transaction if it checked the token with fence_ok); false if the token no longer owns it.';
COMMENT ON FUNCTION pglock.token_locks() IS 'The token-owned locks held in this database: key, name, token (to roles that may act for the role that took it), mode, role, application_name, client address (to those who may read that role''s statistics), since and expiry; backs pglock.locks.';
COMMENT ON FUNCTION pglock.token_waiters() IS 'The acquires of token-owned locks waiting in this database: the waiter process in the lock''s queue (its pid in pg_locks), the key, the name (to those who may read the role''s statistics), the session that called acquire and its role; backs pglock.locks.';
