#!/usr/bin/env bash
# Random SQL against every function: sqlsmith (Debian's package) generates queries over the
# whole catalog, pglock's functions and view included, against a throwaway cluster with pglock
# preloaded and tables whose text, bigint, interval and array columns feed pglock's arguments.
# A run with a fixed seed and one with a random seed, at the same time, PGLOCK_SQLSMITH_SECONDS
# each (default 30; set it higher to soak). Fails on a server crash (`terminated by signal` in the server log), a
# Rust panic, or an XX000 raised by pglock (a Rust source location in the verbose log); and
# unless sqlsmith's queries call pglock's functions that take names and arrays (counted in its
# query log) and some of them really run (pg_stat_user_functions). The random-seed run leaves
# the catalog's relations out, so that more expressions come from the seeded tables.
#
# Usage: tests/server/sqlsmith.sh PG_CONFIG
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
pg_config=${1:?usage: $0 PG_CONFIG}
seconds=${PGLOCK_SQLSMITH_SECONDS:-30}
bindir=$("$pg_config" --bindir)
dir=$(postgres_dir sqlsmith)
fail() { echo "sqlsmith: $*" >&2; exit 1; }
cleanup() {
  sudo -u postgres "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${PGLOCK_KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT

sudo -u postgres "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
# Every statement bounded; errors logged with SQLSTATE and source location; pglock preloaded.
sudo -u postgres "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o "\
 -c listen_addresses='' -k $dir -p 5450 -c fsync=off -c shared_preload_libraries=pglock\
 -c statement_timeout=2s -c lock_timeout=1s -c log_error_verbosity=verbose\
 -c log_min_messages=error -c log_min_error_statement=panic -c log_line_prefix='%e '\
 -c track_functions=all" \
  start >/dev/null
sql() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p 5450 -U postgres -d smith "$@"; }
"$bindir/createdb" -h "$dir" -p 5450 -U postgres smith
sql <<'SQL'
CREATE EXTENSION pglock;
CREATE TABLE jobs (id int PRIMARY KEY, name text, key bigint, timeout interval, note text);
INSERT INTO jobs
SELECT g, 'job-' || g, pglock.key('job-' || g), (g % 7) * interval '3 ms', repeat('x', g % 50)
FROM generate_series(1, 50) g;
INSERT INTO jobs VALUES (51, '', 0, interval '-1 s', NULL), (52, NULL, NULL, NULL, 'nulls'),
                        (53, repeat('é', 600), -1, interval '100 years', 'long name');
CREATE TABLE batches (id int PRIMARY KEY, names text[], keys bigint[], slots int);
INSERT INTO batches
SELECT g, ARRAY['job-' || g, 'job-' || (g + 1), NULL], ARRAY[g, g + 1]::bigint[], g % 5
FROM generate_series(1, 20) g;
INSERT INTO batches VALUES (21, '{}', '{}', 0), (22, NULL, NULL, NULL);
SQL

run() { # SEED
  # sqlsmith runs until killed; its queries go to a file for counting.
  timeout --signal=INT "$seconds" sqlsmith --target="host=$dir port=5450 user=postgres dbname=smith" \
    --seed="$1" ${2:-} --dump-all-queries >"$dir/queries-$1.sql" 2>"$dir/sqlsmith-$1.log" || true
  local calls array_calls text_calls
  # Calls with arguments: the array functions (lock_all and its family, unlock_all(array)),
  # and the rest, which take a name or a key.
  # (grep finds nothing in a short run: that is a count of 0, not a failure of the pipeline.)
  calls=$({ grep -Po 'pglock\.[a-z_]+\((?!\))' "$dir/queries-$1.sql" || true; } | wc -l)
  array_calls=$({ grep -Po 'pglock\.(try_)?(xact_)?(un)?lock_all(_shared)?\((?!\))' \
    "$dir/queries-$1.sql" || true; } | wc -l)
  text_calls=$((calls - array_calls))
  echo "sqlsmith: seed $1${2:+ ($2)}: $(grep -c ';$' "$dir/queries-$1.sql" || true) queries," \
    "$calls calls of pglock functions with arguments ($text_calls by name or key, $array_calls with arrays)"
  ((text_calls > 0 && array_calls > 0)) ||
    fail "seed $1 generated no call of pglock's functions taking a name or an array"
}
# The two runs go at the same time, each with its own connection: most of their queries wait
# (on locks, statement_timeout, pg_sleep), so they share two cores without slowing each other,
# and pglock sees two sessions' random calls interleave.
# Both are waited for before anything is judged (the EXIT trap removes the cluster).
run 42 &
fixed=$!
run "$((RANDOM + 43))" --exclude-catalog &
random=$!
status=0
wait "$fixed" || status=1
wait "$random" || status=1
if ((status != 0)); then
  # A run that failed may have met a crash: say so, since that would be the cause.
  grep -m3 "terminated by signal" "$dir/server.log" >&2 || true
  exit 1
fi

# What really ran (pg_stat_user_functions counts calls of C functions with track_functions =
# all), not only what was generated: functions taking a name (text) and taking arrays.
# A backend flushes its function counts when it exits: wait until sqlsmith's have (at most 30 s).
for _ in $(seq 300); do
  [ "$(sql -At -c "SELECT count(*) FROM pg_stat_activity
                   WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")" = 0 ] && break
  sleep 0.1
done
executed=$(sql -At -c "
  SELECT count(*) FILTER (WHERE p.proargtypes[0] = 'text'::regtype) || ' ' ||
         count(*) FILTER (WHERE p.proargtypes[0] IN ('text[]'::regtype, 'bigint[]'::regtype)) || ' ' ||
         coalesce(sum(s.calls), 0)
  FROM pg_stat_user_functions s JOIN pg_proc p ON p.oid = s.funcid
  WHERE s.schemaname = 'pglock'")
read -r by_name by_array calls <<<"$executed"
echo "sqlsmith: executed $calls calls of $((by_name + by_array)) pglock functions: $by_name taking a name, $by_array taking an array"
((calls > 0)) || fail "no pglock function was executed"

grep -q "terminated by signal" "$dir/server.log" &&
  fail "the server crashed: $(grep -m3 'terminated by signal' "$dir/server.log")"
grep -qi "panicked at\|rust panic" "$dir/server.log" &&
  fail "a Rust panic: $(grep -m3 -i 'panicked at\|rust panic' "$dir/server.log")"
# With log_error_verbosity = verbose, each error's LOCATION line names its source and carries
# the error's own SQLSTATE in the line prefix (%e); pglock's sources are Rust files. Matching
# the LOCATION line itself, not lines near an XX000, keeps PostgreSQL's own XX000s (sqlsmith
# reaches internal errors in core functions) from being blamed on a pglock error logged next.
if grep -q '^XX000 LOCATION:.*\.rs:' "$dir/server.log"; then
  fail "pglock raised XX000: $(grep -B2 '^XX000 LOCATION:.*\.rs:' "$dir/server.log" | head -8)"
fi
echo "sqlsmith: no crash, no panic, no XX000 from pglock"
