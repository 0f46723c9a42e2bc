-- Upgrades: install the previous version, ALTER EXTENSION ... UPDATE, and compare the result
-- with a fresh install of the current version, object by object. The listing of the fresh
-- install doubles as a snapshot of the schema: changing the schema changes this output, and
-- must come with a new sql/pglock--A--B.sql.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Every member of the extension with what defines it (a psql variable survives \c). Row types
-- of views are members from PostgreSQL 18 on; the view itself is listed.
\set describe_pglock 'CREATE TEMP VIEW pglock_schema AS SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS object, CASE d.classid WHEN ''pg_proc''::regclass THEN (SELECT pg_get_function_arguments(p.oid) || '' -> '' || pg_get_function_result(p.oid) || '' '' || p.provolatile::text || p.proparallel::text || CASE WHEN p.proisstrict THEN '' strict'' ELSE '''' END || CASE WHEN p.prosecdef THEN '' SECURITY DEFINER'' ELSE '''' END || '' '' || p.prosrc || '' '' || coalesce(p.proacl::text, ''default acl'') FROM pg_proc p WHERE p.oid = d.objid) WHEN ''pg_class''::regclass THEN (SELECT ''public may select: '' || has_table_privilege(''public'', c.oid, ''SELECT'') || '' '' || coalesce(obj_description(c.oid, ''pg_class''), '''') FROM pg_class c WHERE c.oid = d.objid) ELSE '''' END AS details, CASE d.classid WHEN ''pg_class''::regclass THEN pg_get_viewdef(d.objid) ELSE '''' END AS definition FROM pg_depend d WHERE d.refclassid = ''pg_extension''::regclass AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = ''pglock'') AND d.deptype = ''e'' AND d.classid <> ''pg_type''::regclass;'

CREATE DATABASE pglock_upgraded;
CREATE DATABASE pglock_fresh;

\c pglock_upgraded
CREATE EXTENSION pglock VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
ALTER EXTENSION pglock UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
:describe_pglock
SELECT md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) AS upgraded
FROM pglock_schema \gset

\c pglock_fresh
CREATE EXTENSION pglock;
SELECT extversion FROM pg_extension WHERE extname = 'pglock';
:describe_pglock
SELECT object, details FROM pglock_schema ORDER BY object;
SELECT md5(string_agg(object || ' ' || details || ' ' || definition, E'\n' ORDER BY object)) = :'upgraded'
       AS upgrade_matches_fresh_install
FROM pglock_schema;

\c pglock_regress
DROP DATABASE pglock_upgraded;
DROP DATABASE pglock_fresh;
