-- Names are converted to UTF-8 before hashing: the key does not depend on the database encoding.
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE DATABASE pglock_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE DATABASE pglock_sql_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
SELECT pglock.key('café') AS utf8_key \gset

\c pglock_latin1
SET client_encoding TO 'UTF8';
CREATE EXTENSION pglock;
SELECT pglock.key('café') = :utf8_key AS same_key_as_in_utf8;
SELECT pglock.try_lock('café');
SELECT name, name = 'café' AS round_trip, key = :utf8_key AS key_ok FROM pglock.held();
SELECT pglock.unlock_all();

\c pglock_sql_ascii
SET client_encoding TO 'UTF8';
CREATE EXTENSION pglock;
SELECT pglock.key('café') = :utf8_key AS same_key_as_in_utf8;
-- Bytes that are not UTF-8 cannot be hashed as UTF-8: 22021, and nothing is taken.
SELECT pglock.try_lock(convert_from('\xff'::bytea, 'SQL_ASCII'));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pglock.held();

\c pglock_regress
DROP DATABASE pglock_latin1;
DROP DATABASE pglock_sql_ascii;
