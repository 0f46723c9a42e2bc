-- held() stays true however a lock went away.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- pg_advisory_unlock() on the key, one hold at a time.
SELECT pglock.lock('x'), pglock.lock('x');
SELECT pg_advisory_unlock(pglock.key('x'));
SELECT name, depth FROM pglock.held();
SELECT pg_advisory_unlock(pglock.key('x'));
SELECT count(*) FROM pglock.held();

-- Stacking through the built-ins counts too: depth is what the session really holds.
SELECT pglock.lock('x'), pg_advisory_lock(pglock.key('x'));
SELECT name, depth FROM pglock.held();
SELECT pglock.unlock('x'), pglock.unlock('x'), pglock.unlock('x');

-- pg_advisory_unlock_all()
SELECT pglock.lock('x'), pglock.lock_shared('y');
SELECT pg_advisory_unlock_all();
SELECT count(*) FROM pglock.held();

-- DISCARD ALL
SELECT pglock.lock('x');
DISCARD ALL;
SELECT count(*) FROM pglock.held();

-- COMMIT and ROLLBACK end transaction holds; session holds stay.
BEGIN;
SELECT pglock.xact_lock('t'), pglock.lock('s');
COMMIT;
SELECT name, scope FROM pglock.held();
BEGIN;
SELECT pglock.xact_lock('t');
ROLLBACK;
SELECT name, scope FROM pglock.held();
SELECT pglock.unlock('s');

-- ROLLBACK TO SAVEPOINT ends the holds taken since the savepoint, and only those.
BEGIN;
SELECT pglock.xact_lock('t');
SAVEPOINT sp;
SELECT pglock.xact_lock('t'), pglock.xact_lock('u');
SELECT name, depth FROM pglock.held() ORDER BY name;
ROLLBACK TO SAVEPOINT sp;
SELECT name, depth FROM pglock.held() ORDER BY name;
COMMIT;
SELECT count(*) FROM pglock.held();

-- A session lock taken inside a savepoint that rolls back stays, as for pg_advisory_lock.
BEGIN;
SAVEPOINT sp;
SELECT pglock.lock('kept');
ROLLBACK TO SAVEPOINT sp;
COMMIT;
SELECT name, scope, depth FROM pglock.held();
SELECT pglock.unlock('kept');

-- since is the start of the current hold.
SELECT pglock.lock('since');
SELECT since AS first_since FROM pglock.held() \gset
SELECT pg_sleep(0.01);
SELECT pglock.lock('since');
SELECT since = :'first_since' AS unchanged_by_stacking FROM pglock.held();
SELECT pglock.unlock_all();
SELECT pglock.lock('since');
SELECT since > :'first_since' AS new_hold_new_since FROM pglock.held();
SELECT pglock.unlock_all();

-- Many names: held() lists each once, and released ones go.
SELECT count(*) FILTER (WHERE pglock.try_lock('many:' || g)) FROM generate_series(1, 500) g;
SELECT count(*) FILTER (WHERE pglock.unlock('many:' || g)) FROM generate_series(1, 500, 2) g;
SELECT count(*), min(depth), max(depth) FROM pglock.held();
SELECT pglock.unlock_all();
SELECT count(*) FROM pglock.held();

-- A hold that ended and was taken again outside pglock is not pglock's: it carries no old row.
-- Session scope: released and re-taken with the built-ins, in later statements.
SELECT pglock.lock('retaken');
SELECT count(*) AS rows_before FROM pglock.held();
SELECT pg_advisory_unlock(pglock.key('retaken'));
SELECT pg_advisory_lock(pglock.key('retaken'));
SELECT count(*) AS pglock_rows_after_builtin_retake FROM pglock.held();
SELECT pg_advisory_unlock(pglock.key('retaken'));
-- Transaction scope: the transaction ended, a new one takes the key with the built-in.
BEGIN;
SELECT pglock.xact_lock('retaken');
COMMIT;
BEGIN;
SELECT pg_advisory_xact_lock(pglock.key('retaken'));
SELECT count(*) AS pglock_rows_in_next_transaction FROM pglock.held();
COMMIT;

-- held() lists the holds pglock took (with the depth the session really has in that mode and
-- scope); a hold begun by a built-in in another scope or mode is not listed. unlock_all()
-- releases every session-level advisory lock and counts the session rows of held() it ended.
BEGIN;
SELECT pglock.xact_lock('k3');
SELECT pg_advisory_lock(pglock.key('k3'));
SELECT name, scope, depth FROM pglock.held();
COMMIT;
SELECT count(*) AS pglock_rows FROM pglock.held();
SELECT count(*) AS session_advisory_locks FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid();
SELECT pglock.unlock_all();
SELECT pglock.lock('k5'), pg_advisory_lock_shared(pglock.key('k5'));
SELECT name, mode, scope, depth FROM pglock.held();
SELECT pglock.unlock_all();
SELECT count(*) AS advisory_locks_left FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid();

-- An unlock inside a savepoint is not undone by ROLLBACK TO: releases are not transactional.
SELECT pglock.lock('sp-unlock');
BEGIN;
SAVEPOINT sp;
SELECT pglock.unlock('sp-unlock');
ROLLBACK TO SAVEPOINT sp;
COMMIT;
SELECT count(*) AS held_after_rollback_to FROM pglock.held();

-- The name a lock shows is the name of the pglock call that began its current hold: a key
-- first locked by name, released, then locked by key, shows no name (the same rule in held()
-- and pglock.locks).
SELECT pglock.lock('named-then-keyed'), pglock.unlock('named-then-keyed');
SELECT pglock.lock(pglock.key('named-then-keyed'));
SELECT name IS NULL AS no_name_in_held FROM pglock.held();
SELECT name IS NULL AS no_name_in_locks FROM pglock.locks WHERE pid = pg_backend_pid();
SELECT pglock.unlock_all();
