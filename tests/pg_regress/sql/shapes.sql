-- Lock shapes in one session: many locks at once, looking without taking, upgradeable locks,
-- and the MySQL-compatible functions. Behaviour between sessions is in tests/shapes.rs.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Names come from table rows, with other data behind them in each row.
CREATE TEMP TABLE jobs (id int, name text, payload text);
INSERT INTO jobs VALUES (1, 'job-b', repeat('x', 3000)), (2, 'job-a', 'tail'),
                        (3, 'job-b', 'duplicate'), (4, 'job-c', repeat('é', 2000));

-- lock_all: duplicates count once, and every distinct name is held once.
SELECT pglock.lock_all(array_agg(name ORDER BY id)) FROM jobs;
SELECT name, mode, scope, depth FROM pglock.held();
-- unlock_all(names) gives back one hold of each distinct name held, and counts them.
SELECT pglock.unlock_all(ARRAY['job-a', 'job-b', 'job-b', 'job-c', 'not-held']);
SELECT count(*) FROM pglock.held();

-- An empty array takes nothing and succeeds.
SELECT pglock.lock_all('{}'::text[]), pglock.try_lock_all('{}'::bigint[]);
SELECT count(*) FROM pglock.held();

-- Holds from before the call are untouched and stack.
SELECT pglock.lock('job-a');
SELECT pglock.try_lock_all(ARRAY['job-a', 'job-b']);
SELECT name, depth FROM pglock.held();
SELECT pglock.unlock_all(ARRAY['job-a', 'job-b']), pglock.unlock('job-a');

-- Bad input changes nothing: the whole array is checked before anything is taken.
SELECT pglock.lock_all(ARRAY['job-a', NULL]);
SELECT pglock.lock_all(ARRAY['job-a', '']);
SELECT pglock.lock_all(NULL::text[]);
SELECT pglock.lock_all(ARRAY[1, NULL]::bigint[]);
SELECT pglock.lock_all(ARRAY(SELECT 'n' || g FROM generate_series(1, 1001) g));
SELECT pglock.lock_all(ARRAY['job-a'], '-1 s');
SELECT count(*) FROM pglock.held();

-- Keys, shared mode, and transaction scope.
SELECT pglock.lock_all_shared(ARRAY[3, 1, 2]::bigint[], '1 s');
SELECT key, mode, scope, depth FROM pglock.held();
SELECT pglock.unlock_all_shared(ARRAY[1, 2, 3]::bigint[]);
BEGIN;
SELECT pglock.xact_lock_all(ARRAY['job-a', 'job-b'], '1 s'),
       pglock.try_xact_lock_all_shared(ARRAY['job-c']);
SELECT name, mode, scope FROM pglock.held();
-- unlock_all(names) releases session holds only, as unlock() does.
SELECT pglock.unlock_all(ARRAY['job-a']);
COMMIT;
SELECT count(*) FROM pglock.held();

-- The same locks as the built-ins and the single-lock functions.
SELECT pglock.lock_all(ARRAY['job-a']);
SELECT pg_try_advisory_lock(pglock.key('job-a')) AS builtin_stacks,
       pglock.is_free('job-a') AS free;
SELECT pg_advisory_unlock(pglock.key('job-a')), pglock.unlock('job-a');

-- is_free and holders: this session's own holds, by scope.
SELECT pglock.is_free('job-a');
SELECT pglock.lock('job-a'), pglock.lock_shared('job-a');
BEGIN;
SELECT pglock.xact_lock('job-a');
SELECT pid = pg_backend_pid() AS me, mode, scope FROM pglock.holders('job-a');
COMMIT;
SELECT pglock.is_free('job-a');
SELECT pglock.unlock('job-a'), pglock.unlock_shared('job-a');
SELECT pglock.is_free('job-a'), count(*) AS holders FROM pglock.holders('job-a');

-- wait_released never waits for this session's own holds, and takes nothing.
SELECT pglock.lock('job-a');
SELECT pglock.wait_released('job-a', '1 s'), pglock.wait_released_shared('job-a', '0');
SELECT name, mode, depth FROM pglock.held();
SELECT pglock.unlock('job-a');

-- Upgradeable: one row in held(); an upgrade adds an exclusive hold, a downgrade removes it.
SELECT pglock.lock_upgradeable('doc', '1 s');
SELECT name, mode, scope, depth FROM pglock.held();
SELECT mode, granted FROM pglock.locks WHERE pid = pg_backend_pid();
SELECT pglock.upgrade('doc', '1 s');
SELECT name, mode, depth FROM pglock.held();
SELECT pglock.downgrade('doc'), pglock.downgrade('doc');
SELECT name, mode, depth FROM pglock.held();
SELECT pglock.unlock_upgradeable('doc'), pglock.unlock_upgradeable('doc');
SELECT count(*) FROM pglock.held();
SELECT count(*) AS advisory_locks_left FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid();
-- Only an upgradeable hold can be upgraded or downgraded.
SELECT pglock.upgrade('doc');
SELECT pglock.lock('doc');
SELECT pglock.downgrade('doc');
SELECT pglock.unlock('doc');

-- Semaphores: slots are numbered from 0; one session may hold several.
SELECT pglock.acquire_slot('pool', 2), pglock.acquire_slot('pool', 2, '0');
SELECT name, mode, scope, depth FROM pglock.held();
SELECT pglock.acquire_slot('pool', 2, '10 ms');
SELECT name, mode, granted FROM pglock.locks WHERE pid = pg_backend_pid() ORDER BY mode;
-- Every caller must agree on the count, this session too.
SELECT pglock.acquire_slot('pool', 3, '0');
SELECT pglock.release_slot('pool', 1), pglock.release_slot('pool', 1), pglock.release_slot('pool', 5);
SELECT pglock.release_slot('pool', 0), pglock.release_slot('pool', 0);
-- Released slots are taken again, and the queue lock is never left behind.
SELECT pglock.acquire_slot('pool', 2, '0'), pglock.release_slot('pool', 0);
SELECT count(*) AS advisory_locks_left FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid();
-- Transaction scope.
BEGIN;
SELECT pglock.xact_acquire_slot('pool', 3, '1 s');
SELECT name, mode, scope FROM pglock.held();
SELECT pglock.release_slot('pool', 0);
COMMIT;
SELECT count(*) AS advisory_locks_left FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid();
-- Bad input.
SELECT pglock.acquire_slot('pool', 0);
SELECT pglock.acquire_slot('pool', 101);
SELECT pglock.acquire_slot('pool', NULL);
SELECT pglock.acquire_slot('pool', 1, '-1 s');
SELECT pglock.release_slot('pool', NULL);
SELECT pglock.release_slot('never-used', 0);

-- MySQL's functions: the same keyspace as pglock.lock().
SELECT pglock.get_lock('job-a', 0), pglock.get_lock('job-a', -1), pglock.get_lock('job-a', 1.5);
SELECT pglock.is_free_lock('job-a'), pglock.is_used_lock('job-a') = pg_backend_pid() AS mine;
SELECT pglock.unlock('job-a');
SELECT pglock.release_lock('job-a'), pglock.release_lock('job-a'), pglock.release_lock('job-a');
SELECT pglock.is_free_lock('job-a'), pglock.is_used_lock('job-a');
-- release_all_locks counts every level of a stacked hold.
SELECT pglock.get_lock('job-a', 0), pglock.get_lock('job-a', 0), pglock.get_lock('job-b', 0);
SELECT pglock.release_all_locks(), pglock.release_all_locks();
-- MySQL's 64-character limit, and the inputs MySQL has no answer for.
SELECT pglock.get_lock(repeat('é', 64), 0), pglock.release_lock(repeat('é', 64));
SELECT pglock.get_lock(repeat('é', 65), 0);
SELECT pglock.release_lock('');
SELECT pglock.is_used_lock(NULL);
SELECT pglock.get_lock('job-a', NULL);
SELECT pglock.get_lock('job-a', 'NaN');
SELECT count(*) FROM pglock.held();
