-- The single-session behaviour of every function. Two-session behaviour lives in
-- tests/sessions.rs.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Keys: the sqlx derivation, independent of everything but the name.
SELECT pglock.key('my first Postgres advisory lock!');
SELECT pglock.key('nightly-report') = pglock.key('nightly-report') AS stable,
       pglock.key('nightly-report') <> pglock.key('Nightly-report') AS case_sensitive;
SELECT pglock.key(repeat('x', 1024)) IS NOT NULL AS longest_name_accepted;

-- Session scope, exclusive, stacking.
SELECT pglock.try_lock('jobs:42');
SELECT pglock.lock('jobs:42');
SELECT pglock.lock('jobs:42', '1 second');
SELECT name, key = pglock.key(name) AS key_matches, mode, scope, depth, since <= now() AS since_ok
FROM pglock.held();
SELECT pglock.unlock('jobs:42'), pglock.unlock('jobs:42');
SELECT name, mode, scope, depth FROM pglock.held();
SELECT pglock.unlock('jobs:42');
-- A lock not held: false, and no WARNING (unlike pg_advisory_unlock).
SELECT pglock.unlock('jobs:42');
SELECT pglock.unlock_shared('jobs:42');
SELECT count(*) FROM pglock.held();

-- A zero timeout is a try; a lock this session holds is granted at once, whatever the timeout.
SELECT pglock.lock('zero', '0');
SELECT pglock.lock('zero', '0 seconds');
SELECT depth FROM pglock.held() WHERE name = 'zero';
SELECT pglock.unlock_all();

-- Shared and exclusive are separate holds of one key.
SELECT pglock.try_lock_shared('config'), pglock.lock_shared('config', '1 second'), pglock.try_lock('config');
SELECT name, mode, scope, depth FROM pglock.held() ORDER BY mode;
SELECT pglock.unlock('config'), pglock.unlock_shared('config');
SELECT name, mode, scope, depth FROM pglock.held();
SELECT pglock.unlock_all();

-- The key overloads take the same lock as the built-ins; their name in held() is NULL.
SELECT pglock.try_lock(42::bigint), pglock.lock(42, '1 second'), pglock.try_lock_shared(42), pglock.lock_shared(42);
SELECT name, key, mode, scope, depth FROM pglock.held() ORDER BY mode;
SELECT pg_advisory_unlock(42);
SELECT name, key, mode, depth FROM pglock.held() ORDER BY mode;
SELECT pglock.unlock(42), pglock.unlock(42), pglock.unlock_shared(42), pglock.unlock_shared(42), pglock.unlock_shared(42);
SELECT count(*) FROM pglock.held();

-- A name and its key are one lock.
SELECT pglock.try_lock('by-name');
SELECT pglock.try_lock(pglock.key('by-name'));
SELECT name, depth FROM pglock.held();
SELECT pglock.unlock(pglock.key('by-name')), pglock.unlock('by-name');

-- Transaction scope.
BEGIN;
SELECT pglock.try_xact_lock('tx'), pglock.xact_lock('tx', '1 second'), pglock.xact_lock('tx');
SELECT pglock.try_xact_lock_shared('tx'), pglock.xact_lock_shared('tx', '1 second'), pglock.xact_lock_shared('tx');
SELECT pglock.try_xact_lock(7), pglock.xact_lock(7, '0'), pglock.try_xact_lock_shared(7), pglock.xact_lock_shared(7, NULL);
SELECT name, key = pglock.key('tx') AS named_key, mode, scope, depth FROM pglock.held() ORDER BY name, mode;
-- unlock() and unlock_all() release session holds only.
SELECT pglock.unlock('tx'), pglock.unlock_all();
SELECT count(*) FROM pglock.held();
COMMIT;
SELECT count(*) FROM pglock.held();

-- One key held in both scopes: one row each.
BEGIN;
SELECT pglock.lock('both'), pglock.xact_lock('both'), pglock.lock('both');
SELECT name, scope, depth FROM pglock.held() ORDER BY scope;
COMMIT;
SELECT name, scope, depth FROM pglock.held() ORDER BY scope;
SELECT pglock.unlock_all();

-- unlock_all() returns how many rows of held() it released (not holds); like
-- pg_advisory_unlock_all() it also releases session advisory locks taken by other means.
SELECT pglock.lock('a'), pglock.lock('a'), pglock.lock_shared('a'), pglock.lock('b'), pg_advisory_lock(99);
SELECT pglock.unlock_all();
SELECT count(*) AS advisory_locks_left FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
SELECT pglock.unlock_all();

-- Names are UTF-8 text of any kind.
SELECT pglock.try_lock('日本語 ロック'), pglock.try_lock(E'tab\there'), pglock.try_lock(' ');
SELECT name, depth FROM pglock.held() ORDER BY name;
SELECT pglock.unlock_all();

-- Every function is callable by an ordinary role.
CREATE ROLE pglock_regress_user;
SET ROLE pglock_regress_user;
SELECT pglock.try_lock('as-user'), pglock.lock('as-user', '1 second'), pglock.unlock('as-user'), pglock.unlock_all();
RESET ROLE;
DROP ROLE pglock_regress_user;
