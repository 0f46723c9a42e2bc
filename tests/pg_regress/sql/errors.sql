-- Bad input: a clear error with a specific SQLSTATE, and nothing changed.
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT pglock.key(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.try_lock(NULL::text);
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.try_lock(NULL::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.lock(NULL::text, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.unlock(NULL::text);
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.xact_lock_shared(NULL::bigint);
\echo :LAST_ERROR_SQLSTATE

SELECT pglock.key('');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.lock('');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.unlock_shared('');
\echo :LAST_ERROR_SQLSTATE

SELECT pglock.key(repeat('x', 1025));
\echo :LAST_ERROR_SQLSTATE
-- The limit counts UTF-8 bytes: 342 three-byte characters are 1026 bytes.
SELECT pglock.try_lock(repeat('€', 342));
\echo :LAST_ERROR_SQLSTATE

SELECT pglock.lock('negative', '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.xact_lock(1, '-1 microsecond');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.lock('negative', '1 day -25 hours');
\echo :LAST_ERROR_SQLSTATE

-- None of the above took anything.
SELECT count(*) FROM pglock.held();
SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();

-- A failed call aborts the transaction as any error does and takes nothing; session locks
-- taken before it stay, as for pg_advisory_lock.
BEGIN;
SELECT pglock.lock('in-transaction');
SELECT pglock.lock('', '1 second');
ROLLBACK;
SELECT name, depth FROM pglock.held();
SELECT pglock.unlock_all();

-- Parallel mode. The functions are PARALLEL RESTRICTED, so the planner runs them in the
-- leader, which may take locks (as with the built-ins). Forcing a parallel plan (the setting
-- was renamed in PostgreSQL 16) puts the leader in parallel mode for the whole query.
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                       THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', false) AS forced;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
CREATE TABLE parallel_probe AS SELECT g FROM generate_series(1, 1000) g;
ANALYZE parallel_probe;
SELECT pglock.try_lock('leader'), pg_try_advisory_lock(1), count(*) FROM parallel_probe;
SELECT pglock.lock('leader'), pglock.lock('leader', '0'), count(*) FROM parallel_probe;
SELECT pglock.unlock('leader'), pglock.unlock('leader'), pglock.unlock('leader'), pg_advisory_unlock(1), count(*) FROM parallel_probe;
-- A wait with a timeout needs a subtransaction, which parallel mode forbids: 25000, even when
-- the lock is free, so that the outcome does not depend on other sessions.
SELECT pglock.lock('leader', '1 second'), count(*) FROM parallel_probe;
\echo :LAST_ERROR_SQLSTATE
-- A function wrongly marked PARALLEL SAFE runs in a worker: refused with 25000.
SELECT pglock.unlock_all();
SET parallel_leader_participation = off;
CREATE FUNCTION lock_in_worker(name text) RETURNS boolean LANGUAGE plpgsql PARALLEL SAFE
AS $$ BEGIN RETURN pglock.try_lock(name); END $$;
SELECT count(*) FROM parallel_probe WHERE g = 1 AND lock_in_worker('worker');
\echo :LAST_ERROR_SQLSTATE
-- held() in a worker would read the worker's own lock table, not the session's: 25000 too.
CREATE FUNCTION held_in_worker() RETURNS bigint LANGUAGE plpgsql PARALLEL SAFE
AS $$ BEGIN RETURN (SELECT count(*) FROM pglock.held()); END $$;
SELECT pglock.lock('leader');
SELECT count(*) FROM parallel_probe WHERE g = 1 AND held_in_worker() >= 0;
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.unlock_all();
SELECT count(*) FROM pglock.held();
RESET ALL;
DROP FUNCTION lock_in_worker(text);
DROP FUNCTION held_in_worker();
DROP TABLE parallel_probe;

-- Locks owned by a token need pglock preloaded (this instance does not preload it): 55000 with
-- the HINT, and nothing taken. Input is checked first, as everywhere.
SELECT pglock.acquire('token-owned', '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.acquire_shared(7::bigint, '1 minute', '0');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.renew('token-owned', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.release('token-owned', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.acquire('token-owned', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.acquire('', '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.fence_ok('token-owned', 1) AS no_token_owns_it;
SELECT count(*) AS token_locks FROM pglock.token_locks();
SELECT count(*) AS held FROM pglock.held();
