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
