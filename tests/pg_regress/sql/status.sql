-- pglock.status() in a cluster without preloading: every field is there, and the ones that
-- need preloading are null. With preloading: tests/sessions.rs.
SELECT pg_catalog.jsonb_pretty(pglock.status()
         #- '{lock_table,advisory_locks}' #- '{lock_table,all_locks}'
         #- '{lock_table,capacity}' #- '{lock_table,backends}'
         #- '{lock_table,max_locks_per_transaction}'
         #- '{settings,max_locks_per_session_in_force}') AS status;
-- The version is the library's, and this database's SQL is the same.
SELECT pglock.status()->>'version' = extversion AS same_version,
       pglock.status()->>'sql_version' = extversion AS sql_version
FROM pg_extension WHERE extname = 'pglock';
-- The lock table counts what pg_locks shows.
SELECT pglock.lock('status-a'), pglock.lock('status-b');
SELECT (pglock.status()->'lock_table'->>'advisory_locks')::int
         = (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory') AS counts_advisory,
       (pglock.status()->'lock_table'->>'capacity')::int
         = current_setting('max_locks_per_transaction')::int
           * (pglock.status()->'lock_table'->>'backends')::int AS capacity;
SELECT pglock.unlock_all();
