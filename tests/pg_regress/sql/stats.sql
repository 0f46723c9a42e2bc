-- Statistics per lock without shared_preload_libraries (this cluster does not preload pglock):
-- refused with 55000 and a HINT, as pg_stat_statements is. With preloading: tests/stats.rs,
-- and tests/server/leases_restart.sh for a crash restart.
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT * FROM pglock.stats;
SELECT pglock.stats_reset();
SELECT pglock.stats_reset('some-name');
SELECT pglock.stats_reset(42);
-- Bad arguments are refused before anything else.
SELECT pglock.stats_reset('');
SELECT pglock.stats_reset(NULL::bigint);
-- Locks work as ever, and status() shows no statistics table.
SELECT pglock.lock('counted'), pglock.unlock('counted');
SELECT pglock.status()->'stats' AS stats, pglock.status()->'settings'->'track' AS track;
-- Only superusers may reset statistics unless granted; everyone may read them.
CREATE ROLE pglock_stats_reader;
SET ROLE pglock_stats_reader;
SELECT pglock.stats_reset();
SELECT has_table_privilege('pglock.stats', 'SELECT') AS may_read;
RESET ROLE;
DROP ROLE pglock_stats_reader;
-- The statistics query of contrib/prometheus/queries.yaml gives no rows here, not an error.
SELECT count(*) AS rows FROM pglock.stats WHERE (SELECT (pglock.status()->>'preloaded')::boolean);
