-- Names are converted to UTF-8 before hashing: a name's key depends on its characters alone,
-- never on the database encoding or on what follows the value in memory. Names come from
-- table rows with another column after them, short (inline, 1-byte header) and long (stored
-- out of line in TOAST), in every encoding class a database can have.
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE DATABASE pglock_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE DATABASE pglock_win1252 ENCODING 'WIN1252' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE DATABASE pglock_sql_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE DATABASE pglock_euc_jp ENCODING 'EUC_JP' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;

-- The keys in this UTF-8 database are the reference.
SELECT pglock.key('café') AS cafe, pglock.key(repeat('café', 200)) AS cafe_long,
       pglock.key('€uro') AS euro, pglock.key(repeat('€uro', 170)) AS euro_long,
       pglock.key('ロック') AS rokku, pglock.key(repeat('ロック', 110)) AS rokku_long \gset

-- Each database gets the same tables: names with other data right behind them, and the keys
-- the UTF-8 database gave. In rows with a long "other" the long names are moved out of line
-- into TOAST (no compression, toast_tuple_target = 128); short names stay inline.
\set make_names 'CREATE TABLE names (n text, other text); ALTER TABLE names ALTER COLUMN n SET STORAGE EXTERNAL, ALTER COLUMN other SET STORAGE EXTERNAL; ALTER TABLE names SET (toast_tuple_target = 128); CREATE TABLE expected (n text, key bigint);'
\set filler 'repeat(''0123456789'', 250)'
-- Every row locked; then per name: its rows, whether all are stored out of line (an external
-- uncompressed value's pg_column_size is its length, an inline one's adds its header), how
-- many distinct keys they give (1), whether that is the UTF-8 key, and the depth held() shows
-- under exactly that name.
\set check_names 'SELECT count(*) FILTER (WHERE NOT pglock.try_lock(n)) AS refused FROM names; SELECT left(names.n, 5) AS name, octet_length(names.n) AS bytes, count(*) AS rows, bool_and(pg_column_size(names.n) = octet_length(names.n)) AS out_of_line, count(DISTINCT pglock.key(names.n)) AS keys, bool_and(pglock.key(names.n) = e.key) AS same_key_as_in_utf8, max(h.depth) AS held_depth FROM names JOIN expected e ON e.n = names.n LEFT JOIN pglock.held() h ON h.name = names.n GROUP BY names.n ORDER BY 1, 2; SELECT count(*) AS held_rows FROM pglock.held(); SELECT pglock.unlock_all();'

\c pglock_latin1
SET client_encoding TO 'UTF8';
CREATE EXTENSION pglock;
:make_names
INSERT INTO names VALUES ('café', 'y'), ('café', 'yyyyyyyy'), ('café', repeat('z', 3000)),
                         (repeat('café', 200), :filler), (repeat('café', 200), :filler);
INSERT INTO expected VALUES ('café', :cafe), (repeat('café', 200), :cafe_long);
:check_names

\c pglock_win1252
SET client_encoding TO 'UTF8';
CREATE EXTENSION pglock;
:make_names
INSERT INTO names VALUES ('€uro', 'after'), ('€uro', 'other data'),
                         (repeat('€uro', 170), :filler), (repeat('€uro', 170), :filler);
INSERT INTO expected VALUES ('€uro', :euro), (repeat('€uro', 170), :euro_long);
:check_names

\c pglock_sql_ascii
SET client_encoding TO 'UTF8';
CREATE EXTENSION pglock;
:make_names
INSERT INTO names VALUES ('café', 'y'), ('café', 'yyyyyyyy'), ('café', repeat('z', 3000)),
                         ('€uro', 'x'), (repeat('café', 200), :filler), (repeat('café', 200), :filler);
INSERT INTO expected VALUES ('café', :cafe), (repeat('café', 200), :cafe_long), ('€uro', :euro);
:check_names
-- Bytes that are not UTF-8 cannot be hashed as UTF-8: 22021, and nothing is taken.
SELECT pglock.try_lock(convert_from('\xff'::bytea, 'SQL_ASCII'));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pglock.held();

\c pglock_euc_jp
SET client_encoding TO 'UTF8';
CREATE EXTENSION pglock;
:make_names
INSERT INTO names VALUES ('ロック', 'ア'), ('ロック', 'アイウエオ'),
                         (repeat('ロック', 110), :filler), (repeat('ロック', 110), :filler);
INSERT INTO expected VALUES ('ロック', :rokku), (repeat('ロック', 110), :rokku_long);
:check_names
-- The length limit counts UTF-8 bytes, whatever the database's own encoding: 1,026 here.
SELECT pglock.key(repeat('ロ', 342));
SELECT octet_length(repeat('ロ', 342)) AS bytes_in_euc_jp;

\c pglock_regress
DROP DATABASE pglock_latin1;
DROP DATABASE pglock_win1252;
DROP DATABASE pglock_sql_ascii;
DROP DATABASE pglock_euc_jp;
