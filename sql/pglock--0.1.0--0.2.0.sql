-- pglock 0.1.0 -> 0.2.0: the pglock.locks view (who holds what, with names across sessions
-- when pglock is preloaded) and the lock_names() function behind it.
\echo Use "ALTER EXTENSION pglock UPDATE TO '0.2.0'" to load this file. \quit

-- The names of advisory locks held or awaited by name that the current user may see.
CREATE FUNCTION pglock.lock_names() RETURNS TABLE (
    pid integer,
    key bigint,
    name text
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', 'lock_names_wrapper';

-- Every bigint-keyspace advisory lock in this database, held or awaited, with its name.
CREATE VIEW pglock.locks AS
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
             CASE lk.mode WHEN 'ExclusiveLock' THEN 'exclusive'
                          WHEN 'ShareLock' THEN 'shared'
                          ELSE lk.mode END AS mode,
             lk.granted, lk.pid, lk.waitstart
      FROM pg_catalog.pg_locks lk
      WHERE lk.locktype OPERATOR(pg_catalog.=) 'advisory'
        AND lk.objsubid OPERATOR(pg_catalog.=) 1
        AND lk.database OPERATOR(pg_catalog.=)
            (SELECT d.oid FROM pg_catalog.pg_database d
             WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())) l
LEFT JOIN pg_catalog.pg_stat_activity activity ON activity.pid OPERATOR(pg_catalog.=) l.pid
LEFT JOIN pglock.lock_names() names
       ON names.pid OPERATOR(pg_catalog.=) l.pid AND names.key OPERATOR(pg_catalog.=) l.key;

COMMENT ON VIEW pglock.locks IS 'Every bigint-keyspace advisory lock in this database, held or awaited, with its name where known.';
GRANT SELECT ON pglock.locks TO PUBLIC;
