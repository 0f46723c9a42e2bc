-- pglock.max_locks_per_session keeps one session from filling the shared lock table.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- The settings exist once pglock is loaded (by preloading or by the first call).
LOAD 'pglock';
-- The default derives the cap from the lock table's size.
SHOW pglock.max_locks_per_session;

-- Only a superuser may change it.
CREATE ROLE pglock_limits_user;
SET ROLE pglock_limits_user;
SET pglock.max_locks_per_session = 100000;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE pglock_limits_user;

SET pglock.max_locks_per_session = 3;
SELECT pglock.try_lock('cap:1'), pglock.try_lock('cap:2'), pglock.try_lock_shared('cap:2');
-- A fourth distinct lock (key and mode) is refused, with the cap in DETAIL.
SELECT pglock.try_lock('cap:4');
\echo :LAST_ERROR_SQLSTATE
SELECT pglock.lock('cap:4', '1 second');
\echo :LAST_ERROR_SQLSTATE
-- Stacking on a lock already held takes no new entry: allowed at the cap.
SELECT pglock.try_lock('cap:1'), pglock.lock_shared('cap:2');
-- Locks released by any means make room again.
SELECT pg_advisory_unlock(pglock.key('cap:1')), pg_advisory_unlock(pglock.key('cap:1'));
SELECT pglock.try_lock('cap:4');
SELECT name, mode, depth FROM pglock.held() ORDER BY name, mode;
SELECT pglock.unlock_all();

-- With no cap, the lock manager's own limit is reached: 53200, with pglock's DETAIL and HINT,
-- and held()
-- still exact afterwards.
SET pglock.max_locks_per_session = 0;
SELECT count(*) FROM generate_series(1, 1000000) g WHERE pglock.try_lock('flood:' || g);
\echo :LAST_ERROR_SQLSTATE
SELECT (SELECT count(*) FROM pglock.held()) =
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())
       AS held_is_exact,
       (SELECT count(*) FROM pglock.held()) > 1000 AS many_held;
SELECT pglock.unlock_all() > 1000 AS released_them_all;
SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
RESET pglock.max_locks_per_session;
