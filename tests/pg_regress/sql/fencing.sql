-- Fencing tokens in one session; across sessions, crashes and failover see tests/fencing.rs,
-- tests/server/fencing_restart.sh and tests/standby/failover.py.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Every new fenced hold gets a greater token; stacking joins the hold and keeps its token.
SELECT pglock.lock_fenced('fence-a', '1 s') AS a1 \gset
SELECT pglock.lock_fenced('fence-a') = :a1 AS stacked_keeps_token,
       pglock.token('fence-a') = :a1 AS token_is_the_holds;
SELECT pglock.try_lock_fenced('fence-b') AS b1 \gset
SELECT :b1 > :a1 AS later_is_greater;
SELECT pglock.fence_ok('fence-a', :a1) AS current_ok, pglock.fence_ok('fence-a', :a1 - 1) AS other_refused,
       pglock.fence_ok('fence-b', :a1) AS other_name_refused;
SELECT name, mode, depth FROM pglock.held();

-- The token goes with the hold: once released, nothing matches, and the next hold gets a new one.
SELECT pglock.unlock('fence-a'), pglock.unlock('fence-a');
SELECT pglock.token('fence-a') IS NULL AS no_token, pglock.fence_ok('fence-a', :a1) AS stale_refused;
SELECT pglock.lock_fenced('fence-a') > :b1 AS new_hold_greater;
SELECT pglock.unlock_all();
SELECT pglock.fence_ok('fence-b', :b1) AS released_by_unlock_all;

-- A plain hold has no token until a fenced acquisition joins it.
SELECT pglock.lock('fence-c');
SELECT pglock.token('fence-c') IS NULL AS plain_has_none;
SELECT pglock.lock_fenced('fence-c') = pglock.token('fence-c') AS joined;
SELECT pglock.unlock('fence-c'), pglock.unlock('fence-c');

-- Transaction scope: the token ends with the transaction.
BEGIN;
SELECT pglock.xact_lock_fenced('fence-x', '1 s') AS x1 \gset
SELECT pglock.try_xact_lock_fenced('fence-x') = :x1 AS stacked,
       pglock.fence_ok('fence-x', :x1) AS ok_inside;
COMMIT;
SELECT pglock.fence_ok('fence-x', :x1) AS ok_after_commit;

-- The write and the check in one statement.
CREATE TEMP TABLE fenced_resource (id int PRIMARY KEY, value text, token bigint);
INSERT INTO fenced_resource VALUES (1, 'initial', 0);
SELECT pglock.lock_fenced('fence-r') AS r1 \gset
UPDATE fenced_resource SET value = 'by the holder', token = :r1
WHERE id = 1 AND pglock.fence_ok('fence-r', :r1);
SELECT pglock.unlock('fence-r');
UPDATE fenced_resource SET value = 'by a stale holder'
WHERE id = 1 AND pglock.fence_ok('fence-r', :r1);
SELECT value, token = :r1 AS written_with_token FROM fenced_resource;

-- Bad input.
SELECT pglock.lock_fenced('fence-a', '-1 s');
SELECT pglock.fence_ok('fence-a', NULL);
SELECT pglock.lock_fenced(NULL);
SELECT count(*) FROM pglock.held();
