-- MariaDB 10.11's own tests of its user-level locks (mysql-test/main/func_misc.test: GET_LOCK,
-- RELEASE_LOCK, IS_FREE_LOCK, IS_USED_LOCK, RELEASE_ALL_LOCKS), the single-session cases,
-- restated for pglock. Where MariaDB answers differently a comment gives MariaDB's answer; the
-- docs/api.md's MySQL table says why pglock answers as MySQL 8.0 or PostgreSQL do. The cases that
-- need two sessions (hand-over, a holder elsewhere, a killed wait, deadlock, fractional
-- timeouts) are in tests/shapes.rs. MariaDB's table-lock cases (LOCK TABLES, FLUSH TABLES WITH
-- READ LOCK) have no PostgreSQL counterpart and are left out.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- An unused lock is nobody's and free; taken, it is this session's.
SELECT pglock.is_used_lock('test') AS used_by, pglock.is_free_lock('test') AS free;
SELECT pglock.get_lock('test', 0);
SELECT pglock.is_free_lock('test') AS free, pglock.is_used_lock('test') = pg_backend_pid() AS mine;
-- One release per level, then nobody holds it: NULL.
SELECT pglock.release_lock('test') AS first, pglock.release_lock('test') AS second;
-- Three levels need three releases; a fourth finds nobody.
SELECT pglock.get_lock('test', 0), pglock.get_lock('test', 0), pglock.get_lock('test', 0);
SELECT pglock.release_lock('test'), pglock.release_lock('test'), pglock.release_lock('test'),
       pglock.release_lock('test');
-- Several names at once.
SELECT pglock.get_lock('test1', 0), pglock.get_lock('test2', 0), pglock.get_lock('test3', 0);
SELECT pglock.release_lock('test1'), pglock.release_lock('test2'), pglock.release_lock('test3');
-- The end of a transaction releases none of them.
BEGIN;
SELECT pglock.get_lock('test1', 0), pglock.get_lock('test2', 0);
ROLLBACK;
SELECT pglock.release_lock('test1'), pglock.release_lock('test2');
-- A result used in an expression (MariaDB's (1 LIKE GET_LOCK('foo', 0)) - 2 is -1).
SELECT (pglock.get_lock('foo', 0)::text LIKE '1')::int - 2 AS expression;
SELECT pglock.release_lock('foo');
-- Long names. MariaDB allows 192 bytes (192 ASCII characters, or 64 of three bytes each) and
-- refuses 193 with ER_TOO_LONG_IDENT in all four functions; MySQL 8.0 and pglock allow 64
-- characters of any size.
SELECT pglock.get_lock(repeat('a', 64), 0) AS got,
       pglock.is_used_lock(repeat('a', 64)) = pg_backend_pid() AS mine,
       pglock.is_free_lock(repeat('a', 64)) AS free,
       pglock.release_lock(repeat('a', 64)) AS released;
SELECT pglock.get_lock(repeat('€', 64), 0) AS got_192_bytes,
       pglock.release_lock(repeat('€', 64)) AS released;
SELECT pglock.get_lock(repeat('a', 65), 0);
SELECT pglock.is_used_lock(repeat('a', 65));
SELECT pglock.is_free_lock(repeat('a', 65));
SELECT pglock.release_lock(repeat('a', 65));
-- Timeouts. MariaDB returns NULL with warning 1411 for a NULL or negative timeout and waits for
-- nothing; MySQL 8.0 and pglock wait forever for a negative one (granted at once here), and
-- pglock refuses NULL.
SELECT pglock.get_lock('ul1', -1) AS negative, pglock.release_lock('ul1');
SELECT pglock.get_lock('ul1', NULL);
-- NULL and empty names. MariaDB returns NULL without an error; MySQL 8.0 raises
-- ER_USER_LOCK_WRONG_NAME; pglock raises 22004 and 22023.
SELECT pglock.is_free_lock(NULL);
SELECT pglock.get_lock(NULL, 0);
SELECT pglock.get_lock('', 0);
-- release_all_locks(): nothing held gives 0; one lock 1; fifteen names 15 (one row each in
-- pglock.locks); five names stacked 1 to 5 deep give 15, the sum of the levels, from 5 rows.
SELECT pglock.release_all_locks() AS none_held;
SELECT pglock.get_lock('l1', 10);
SELECT pglock.release_all_locks() AS one;
CREATE TEMP TABLE lock_names (id int, name text, other text);
INSERT INTO lock_names SELECT g, format('l%s', lpad(g::text, 2, '0')), 'data after the name'
FROM generate_series(1, 15) g;
SELECT count(*) FILTER (WHERE pglock.get_lock(name, 10) = 1) AS taken FROM lock_names;
SELECT count(*) AS rows_shown FROM pglock.locks WHERE pid = pg_backend_pid();
SELECT pglock.release_all_locks() AS fifteen_names;
SELECT count(*) AS rows_shown FROM pglock.locks WHERE pid = pg_backend_pid();
SELECT count(*) FILTER (WHERE pglock.get_lock(name, 10) = 1) AS taken
FROM lock_names, generate_series(1, id) level WHERE id <= 5;
SELECT count(*) AS rows_shown FROM pglock.locks WHERE pid = pg_backend_pid();
SELECT pglock.release_all_locks() AS fifteen_levels;
SELECT count(*) AS rows_shown FROM pglock.locks WHERE pid = pg_backend_pid();
