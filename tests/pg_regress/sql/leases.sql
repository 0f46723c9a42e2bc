-- Leases without shared_preload_libraries (this cluster does not preload pglock): refused with
-- 55000 and a HINT, as pg_stat_statements is. With preloading: tests/leases.rs, and
-- tests/server/leases_restart.sh and tests/standby/failover.py for crashes and promotion.
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT pglock.lock('leased');
SELECT pglock.set_lease('leased', '10 s');
SELECT pglock.set_lease(pglock.key('leased'), '10 s');
SELECT pglock.renew('leased');
-- Bad arguments are refused before anything else.
SELECT pglock.set_lease(NULL::text, '10 s');
SELECT pglock.set_lease('', '10 s');
SELECT pglock.set_lease('leased', '0 s');
SELECT pglock.set_lease('leased', '-5 min');
SELECT pglock.renew(NULL::bigint);
-- Nothing to show, and the view has the column all the same.
SELECT count(*) AS leases FROM pglock.leases();
SELECT name, mode, lease_expires_at FROM pglock.locks WHERE pid = pg_backend_pid();
SELECT pglock.unlock('leased');
