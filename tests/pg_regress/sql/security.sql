-- A trusted extension: a database owner who is not a superuser can install it. Its functions
-- run as the caller, and objects planted earlier in search_path change nothing.
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE ROLE pglock_db_owner LOGIN;
CREATE DATABASE pglock_trusted OWNER pglock_db_owner;
\c pglock_trusted pglock_db_owner
SELECT rolsuper FROM pg_roles WHERE rolname = current_user;

-- Hostile look-alikes of what pglock's SQL uses, first in search_path.
CREATE FUNCTION public.evil_shift(bigint, integer) RETURNS bigint
LANGUAGE sql AS 'SELECT 0::bigint';
CREATE OPERATOR public.<< (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = public.evil_shift);
CREATE FUNCTION public.evil_or(bigint, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
CREATE OPERATOR public.| (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.evil_or);
CREATE FUNCTION public.pg_blocking_pids(integer) RETURNS integer[]
LANGUAGE sql AS 'SELECT ARRAY[-1]';
CREATE FUNCTION public.current_database() RETURNS name LANGUAGE sql AS $$SELECT 'evil'::name$$;
SET search_path = public, pg_catalog;

CREATE EXTENSION pglock;
SELECT e.extversion, r.rolname AS installed_by
FROM pg_extension e JOIN pg_roles r ON r.oid = e.extowner WHERE e.extname = 'pglock';
SELECT count(*) AS security_definer_functions
FROM pg_proc WHERE pronamespace = 'pglock'::regnamespace AND prosecdef;

SELECT pglock.try_lock('trusted');
SELECT name, key = pglock.key('trusted') AS right_key, mode, granted, pid = pg_backend_pid() AS mine
FROM pglock.locks;
-- The functions that read pg_locks (holders, is_free, the MySQL ones) and the lock shapes.
SELECT pid = pg_backend_pid() AS mine, mode, scope FROM pglock.holders('trusted');
SELECT pglock.is_free('trusted'), pglock.is_used_lock('trusted') = pg_backend_pid() AS mine,
       pglock.release_lock('trusted');
SELECT pglock.lock_all(ARRAY['trusted-a', 'trusted-b']), pglock.lock_upgradeable('trusted-u'),
       pglock.acquire_slot('trusted-s', 2);
SELECT name, mode, granted FROM pglock.locks ORDER BY name, mode;
SELECT pglock.unlock_all();

\c pglock_regress postgres
DROP DATABASE pglock_trusted;
DROP ROLE pglock_db_owner;
