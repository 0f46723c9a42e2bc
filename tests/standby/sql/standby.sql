-- Run against a real streaming standby of the regress cluster (see scripts/test.sh).
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT pg_is_in_recovery();

-- Taking a lock is refused: it would coordinate with nobody on the primary.
SELECT pglock.try_lock('on-standby');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.lock_shared('on-standby', '1 second');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT pglock.xact_lock(42);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- Reading and releasing need no permission.
SELECT pglock.key('my first Postgres advisory lock!');
SELECT pglock.unlock('on-standby'), pglock.unlock_all(), count(*) FROM pglock.held();

-- Standby-local locks on purpose.
SET pglock.allow_on_standby = on;
SELECT pglock.try_lock('on-standby'), pglock.lock('on-standby', '1 second');
SELECT name, mode, scope, depth FROM pglock.held();
SELECT pglock.unlock_all();
RESET pglock.allow_on_standby;

-- The 0.3.0 functions: taking is refused as above, looking works.
SELECT pglock.lock_all(ARRAY['on-standby', 'also-on-standby']);
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.acquire_slot('on-standby', 2, '0');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.get_lock('on-standby', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.is_free('on-standby'), pglock.is_used_lock('on-standby'),
       count(*) AS holders FROM pglock.holders('on-standby');
-- A fencing token is a WAL position: refused even with standby-local locks allowed.
SET pglock.allow_on_standby = on;
SELECT pglock.try_lock_fenced('on-standby');
SELECT pglock.lock_upgradeable('on-standby', '1 second'), pglock.is_free('on-standby');
SELECT name, mode FROM pglock.held();
SELECT pglock.unlock_all();
RESET pglock.allow_on_standby;
-- status() reads the catalog and pg_locks without a transaction ID, which a standby cannot
-- assign (0.4.0 failed here with XX000, and every Prometheus status metric with it).
SELECT (s->>'in_recovery')::bool AS in_recovery, s->>'sql_version' IS NOT NULL AS has_sql_version,
       (s->'lock_table'->>'all_locks')::int > 0 AS sees_pg_locks
FROM pglock.status() s;
