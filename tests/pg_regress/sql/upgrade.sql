-- Upgrades: install the previous version, ALTER EXTENSION ... UPDATE, and compare the result
-- with a fresh install of the current version, object by object. The listing of the fresh
-- install doubles as a snapshot of the schema: changing the schema changes this output, and
-- must come with a new sql/pglock--A--B.sql.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Every member of the extension with what defines it, functions with their comments (a psql
-- variable survives \c). Row types of views are members from PostgreSQL 18 on; the view itself
-- is listed.
\set describe_pglock 'CREATE TEMP VIEW pglock_schema AS SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object, CASE d.classid WHEN ''pg_proc''::regclass THEN (SELECT pg_get_function_arguments(p.oid) || '' -> '' || pg_get_function_result(p.oid) || '' '' || p.provolatile::text || p.proparallel::text || CASE WHEN p.proisstrict THEN '' strict'' ELSE '''' END || CASE WHEN p.prosecdef THEN '' SECURITY DEFINER'' ELSE '''' END || '' '' || p.prosrc || '' '' || coalesce(p.proacl::text, ''default acl'') || '' -- '' || coalesce(obj_description(p.oid, ''pg_proc''), ''no comment'') FROM pg_proc p WHERE p.oid = d.objid) WHEN ''pg_class''::regclass THEN (SELECT ''public may select: '' || has_table_privilege(''public'', c.oid, ''SELECT'') || '' '' || coalesce(obj_description(c.oid, ''pg_class''), '''') FROM pg_class c WHERE c.oid = d.objid) ELSE '''' END AS details, CASE d.classid WHEN ''pg_class''::regclass THEN pg_get_viewdef(d.objid) ELSE '''' END AS definition FROM pg_depend d WHERE d.refclassid = ''pg_extension''::regclass AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = ''pglock'') AND d.deptype = ''e'' AND d.classid <> ''pg_type''::regclass;'

-- What an older version's SQL does with the current pglock.so, as it must keep working between
-- a package upgrade and ALTER EXTENSION ... UPDATE: take, stack, list and release by name and
-- by key, in both scopes.
\set exercise_old_sql 'SELECT pglock.lock(''old-sql''), pglock.try_lock(''old-sql''), pglock.try_lock_shared(7::bigint), pglock.lock(8::bigint, ''1 s''); SELECT name, key, mode, scope, depth FROM pglock.held() ORDER BY key, mode; SELECT pglock.unlock(''old-sql''), pglock.unlock(''old-sql''), pglock.unlock(''old-sql''), pglock.unlock_shared(7::bigint), pglock.unlock_all(); BEGIN; SELECT pglock.try_xact_lock(''old-xact''), pglock.xact_lock_shared(9::bigint, ''1 s''); SELECT name, mode, scope, depth FROM pglock.held() ORDER BY key; COMMIT; SELECT count(*) AS held_after_commit FROM pglock.held();'

CREATE DATABASE pglock_upgraded;
CREATE DATABASE pglock_upgraded_from_0_2;
CREATE DATABASE pglock_upgraded_from_0_3;
CREATE DATABASE pglock_upgraded_from_0_4;
CREATE DATABASE pglock_fresh;

-- 0.1.0 -> 0.2.0 -> 0.3.0 -> 0.4.0 -> 0.5.0.
\c pglock_upgraded
CREATE EXTENSION pglock VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
:exercise_old_sql
ALTER EXTENSION pglock UPDATE TO '0.2.0';
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
:exercise_old_sql
SELECT pglock.lock('old-view');
SELECT name, mode, granted FROM pglock.locks WHERE pid = pg_backend_pid();
SELECT pglock.unlock('old-view');
ALTER EXTENSION pglock UPDATE TO '0.3.0';
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
:exercise_old_sql
ALTER EXTENSION pglock UPDATE TO '0.4.0';
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
:exercise_old_sql
ALTER EXTENSION pglock UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
:describe_pglock
SELECT md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) AS upgraded
FROM pglock_schema \gset

-- 0.2.0 -> 0.3.0 -> 0.4.0 -> 0.5.0, from a fresh 0.2.0 install.
\c pglock_upgraded_from_0_2
CREATE EXTENSION pglock VERSION '0.2.0';
:exercise_old_sql
ALTER EXTENSION pglock UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
:describe_pglock
SELECT md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) AS upgraded_from_0_2
FROM pglock_schema \gset

-- 0.3.0 -> 0.4.0 -> 0.5.0, from a fresh 0.3.0 install: its SQL (the view, fencing, leases'
-- renew) keeps working with the new pglock.so until the update, and the token-owned locks
-- arrive with it.
\c pglock_upgraded_from_0_3
CREATE EXTENSION pglock VERSION '0.3.0';
:exercise_old_sql
SELECT pglock.lock('old-0.3-view');
SELECT name, mode, granted, lease_expires_at FROM pglock.locks WHERE pid = pg_backend_pid();
SELECT pglock.fence_ok('old-0.3-view', pglock.lock_fenced('old-0.3-view')) AS fenced_hold_passes;
SELECT pglock.unlock_all();
SELECT count(*) AS token_functions_before FROM pg_proc
WHERE pronamespace = 'pglock'::regnamespace AND proname IN ('acquire', 'release', 'token_locks');
ALTER EXTENSION pglock UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
SELECT count(*) AS token_functions_after FROM pg_proc
WHERE pronamespace = 'pglock'::regnamespace AND proname IN ('acquire', 'release', 'token_locks');
:describe_pglock
SELECT md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) AS upgraded_from_0_3
FROM pglock_schema \gset

-- 0.4.0 -> 0.5.0, from a fresh 0.4.0 install: its SQL keeps working with the new pglock.so
-- until the update (the token-owned lock functions answer as before: this cluster does not
-- preload pglock), and the update brings the comments that say who may renew and release.
\c pglock_upgraded_from_0_4
CREATE EXTENSION pglock VERSION '0.4.0';
:exercise_old_sql
SELECT pglock.fence_ok('old-0.4', pglock.lock_fenced('old-0.4')) AS fenced_hold_passes;
SELECT pglock.unlock_all();
SELECT pglock.acquire('old-0.4-token', '10 s', '0');
SELECT pglock.release('old-0.4-token', 1);
SELECT obj_description('pglock.renew(text, bigint, interval)'::regprocedure, 'pg_proc')
       LIKE '%cut the extension short%' AS renew_comment_of_0_5;
ALTER EXTENSION pglock UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
SELECT obj_description('pglock.renew(text, bigint, interval)'::regprocedure, 'pg_proc')
       LIKE '%cut the extension short%' AS renew_comment_of_0_5;
:describe_pglock
SELECT md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) AS upgraded_from_0_4
FROM pglock_schema \gset

\c pglock_fresh
CREATE EXTENSION pglock;
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
:describe_pglock
SELECT object, details FROM pglock_schema ORDER BY object;
SELECT md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) = :'upgraded'
       AS upgrade_matches_fresh_install,
       md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) = :'upgraded_from_0_2'
       AS upgrade_from_0_2_matches_fresh_install,
       md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) = :'upgraded_from_0_3'
       AS upgrade_from_0_3_matches_fresh_install,
       md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) = :'upgraded_from_0_4'
       AS upgrade_from_0_4_matches_fresh_install
FROM pglock_schema;

\c pglock_regress
DROP DATABASE pglock_upgraded;
DROP DATABASE pglock_upgraded_from_0_2;
DROP DATABASE pglock_upgraded_from_0_3;
DROP DATABASE pglock_upgraded_from_0_4;
DROP DATABASE pglock_fresh;
