//! pglock.stats across sessions (the test instance preloads pglock): known sequences of
//! operations give exactly the expected counts, counts survive a session's exit, the table
//! evicts at pglock.stats_max, pglock.track = off counts nothing, stats_reset forgets, and
//! names are shown by pg_stat_activity's rule.
//! A crash restart empties the table: tests/server/leases_restart.sh. Without preloading:
//! tests/pg_regress/sql/stats.sql.
//!
//! The tests share the server's statistics table (one resets all of it), so they run one at a
//! time, each on names of its own.

mod common;

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{pid, session, sqlstate, try_lock, unlock, wait_until_waiting};
use postgres::error::SqlState;
use postgres::Client;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The counters of one name in pglock.stats, or None when it has no row.
#[derive(Debug, PartialEq, Default)]
struct Row {
    acquisitions: i64,
    waited: i64,
    busy: i64,
    timeouts: i64,
    deadlocks: i64,
    cancels: i64,
    session_holds: i64,
    xact_holds: i64,
}

fn row_of(client: &mut Client, name: &str) -> Option<Row> {
    client
        .query_opt(
            "SELECT acquisitions, waited, busy, timeouts, deadlocks, cancels, session_holds,
                    xact_holds
             FROM pglock.stats WHERE database = current_database() AND name = $1",
            &[&name],
        )
        .unwrap()
        .map(|row| Row {
            acquisitions: row.get(0),
            waited: row.get(1),
            busy: row.get(2),
            timeouts: row.get(3),
            deadlocks: row.get(4),
            cancels: row.get(5),
            session_holds: row.get(6),
            xact_holds: row.get(7),
        })
}

fn times_of(client: &mut Client, name: &str) -> (f64, f64, f64, f64, bool) {
    let row = client
        .query_one(
            "SELECT total_wait_time, max_wait_time, max_session_hold_time, max_xact_hold_time,
                    first_acquired <= last_acquired AND last_acquired <= now()
             FROM pglock.stats WHERE database = current_database() AND name = $1",
            &[&name],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

fn reset(client: &mut Client, name: &str) {
    client
        .execute("SELECT pglock.stats_reset($1::text)", &[&name])
        .unwrap();
}

/// Waits (30 s at most) until `check` holds for the row of `name`.
fn eventually(client: &mut Client, name: &str, check: impl Fn(&Option<Row>) -> bool) {
    let start = Instant::now();
    loop {
        let row = row_of(client, name);
        if check(&row) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name}: still {row:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_known_sequence_across_sessions_gives_exact_counts() {
    let _serial = one_at_a_time();
    let (mut a, mut b, mut c, mut observer) = (session(), session(), session(), session());
    // The name comes from a table row with other data after it.
    for client in [&mut a, &mut b, &mut c] {
        client
            .batch_execute(
                "CREATE TEMP TABLE jobs (id int, name text, payload text);
                 INSERT INTO jobs VALUES (1, 'stats:exact', 'data after the name')",
            )
            .unwrap();
    }
    reset(&mut observer, "stats:exact");
    let from_row = "(SELECT name FROM jobs WHERE id = 1)";
    // a: two stacked acquisitions, one session hold (released by the second unlock).
    a.batch_execute(&format!(
        "SELECT pglock.try_lock({from_row}); SELECT pglock.lock({from_row}, '1 s')"
    ))
    .unwrap();
    // b: a try that finds it taken, and a wait that times out.
    let row = b
        .query_one(
            &format!("SELECT pglock.try_lock({from_row}), pglock.lock({from_row}, '50 ms')"),
            &[],
        )
        .unwrap();
    assert!(!row.get::<_, bool>(0) && !row.get::<_, bool>(1));
    // c: waits without a deadline until a lets go after 300 ms, then holds for 200 ms.
    let c_pid = pid(&mut c);
    let waiter = thread::spawn(move || {
        c.query_one(&format!("SELECT pglock.lock({from_row})"), &[])
            .unwrap();
        thread::sleep(Duration::from_millis(200));
        c.query_one(&format!("SELECT pglock.unlock({from_row})"), &[])
            .unwrap();
        c
    });
    wait_until_waiting(&mut observer, c_pid);
    thread::sleep(Duration::from_millis(300));
    a.batch_execute(&format!(
        "SELECT pglock.unlock({from_row}); SELECT pglock.unlock({from_row})"
    ))
    .unwrap();
    let mut c = waiter.join().unwrap();
    // c again: two stacked transaction-scope acquisitions, one transaction hold.
    c.batch_execute(&format!(
        "BEGIN; SELECT pglock.try_xact_lock({from_row}); SELECT pglock.xact_lock({from_row}, '1 s');
         SELECT pg_sleep(0.1); COMMIT"
    ))
    .unwrap();
    assert_eq!(
        row_of(&mut observer, "stats:exact"),
        Some(Row {
            acquisitions: 5,
            waited: 1,
            busy: 1,
            timeouts: 1,
            deadlocks: 0,
            cancels: 0,
            session_holds: 2,
            xact_holds: 1,
        })
    );
    let (total_wait, max_wait, max_session_hold, max_xact_hold, ordered) =
        times_of(&mut observer, "stats:exact");
    // c waited about 300 ms and b 50 ms; a held about 300 ms; c's transaction about 100 ms.
    assert!((300.0..30_000.0).contains(&total_wait), "{total_wait}");
    assert!((250.0..30_000.0).contains(&max_wait), "{max_wait}");
    assert!(
        (290.0..30_000.0).contains(&max_session_hold),
        "{max_session_hold}"
    );
    assert!((95.0..30_000.0).contains(&max_xact_hold), "{max_xact_hold}");
    assert!(ordered);
}

#[test]
fn deadlocks_and_cancels_during_a_wait_are_counted() {
    let _serial = one_at_a_time();
    let (mut a, mut b, mut observer) = (session(), session(), session());
    for name in ["stats:dl-1", "stats:dl-2", "stats:cancel"] {
        reset(&mut observer, name);
    }
    assert!(try_lock(&mut a, "stats:dl-1"));
    assert!(try_lock(&mut b, "stats:dl-2"));
    // Each waits for the other's lock; the deadlock victim lets go of everything, so that
    // the other is granted.
    let wait_for = |mut client: Client, name: &'static str| {
        thread::spawn(move || {
            let result = client
                .query_one("SELECT pglock.lock($1, '30 s')", &[&name])
                .map(|_| ());
            if result.is_err() {
                client.batch_execute("SELECT pglock.unlock_all()").unwrap();
            }
            (client, result)
        })
    };
    let a_pid = pid(&mut a);
    let first = wait_for(a, "stats:dl-2");
    wait_until_waiting(&mut observer, a_pid);
    let second = wait_for(b, "stats:dl-1");
    let (mut a, first) = first.join().unwrap();
    let (mut b, second) = second.join().unwrap();
    let victims: Vec<_> = [first, second]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert_eq!(victims.len(), 1, "exactly one victim");
    assert_eq!(
        sqlstate(&victims[0]),
        Some(&SqlState::T_R_DEADLOCK_DETECTED)
    );
    a.batch_execute("SELECT pglock.unlock_all()").unwrap();
    b.batch_execute("SELECT pglock.unlock_all()").unwrap();
    let dl1 = row_of(&mut observer, "stats:dl-1").unwrap();
    let dl2 = row_of(&mut observer, "stats:dl-2").unwrap();
    assert_eq!(dl1.deadlocks + dl2.deadlocks, 1, "{dl1:?} {dl2:?}");
    assert_eq!(dl1.waited + dl2.waited, 1, "{dl1:?} {dl2:?}");
    assert_eq!(dl1.cancels + dl2.cancels, 0);
    assert_eq!(dl1.acquisitions + dl2.acquisitions, 3, "{dl1:?} {dl2:?}");

    // A cancel while waiting, with and without a deadline of pglock's.
    assert!(try_lock(&mut a, "stats:cancel"));
    for call in [
        "SELECT pglock.lock('stats:cancel', '60 s')",
        "SELECT pglock.lock('stats:cancel')",
    ] {
        let b_pid = pid(&mut b);
        let waits = thread::spawn(move || {
            let result = b.query_one(call, &[]).map(|_| ());
            (b, result)
        });
        wait_until_waiting(&mut observer, b_pid);
        observer
            .execute("SELECT pg_cancel_backend($1)", &[&b_pid])
            .unwrap();
        let (back, result) = waits.join().unwrap();
        b = back;
        assert_eq!(
            sqlstate(&result.unwrap_err()),
            Some(&SqlState::QUERY_CANCELED)
        );
    }
    unlock(&mut a, "stats:cancel");
    assert_eq!(
        row_of(&mut observer, "stats:cancel"),
        Some(Row {
            acquisitions: 1,
            cancels: 2,
            session_holds: 1,
            ..Row::default()
        })
    );
}

#[test]
fn counts_survive_the_session_that_made_them_and_its_holds_end_with_it() {
    let _serial = one_at_a_time();
    let mut observer = session();
    reset(&mut observer, "stats:exit");
    {
        let mut short_lived = session();
        assert!(try_lock(&mut short_lived, "stats:exit"));
        thread::sleep(Duration::from_millis(100));
        // Dropped while holding: its backend exits, and the hold ends with it.
    }
    eventually(&mut observer, "stats:exit", |row| {
        *row == Some(Row {
            acquisitions: 1,
            session_holds: 1,
            ..Row::default()
        })
    });
    let (_, _, max_session_hold, _, _) = times_of(&mut observer, "stats:exit");
    assert!(max_session_hold >= 95.0, "{max_session_hold}");
}

#[test]
fn locks_taken_by_key_have_a_row_without_a_name() {
    let _serial = one_at_a_time();
    let mut client = session();
    let key: i64 = 0x5747_5a75_0000_0001;
    client
        .execute("SELECT pglock.stats_reset($1::bigint)", &[&key])
        .unwrap();
    client
        .batch_execute(&format!(
            "SELECT pglock.try_lock({key}::bigint); SELECT pglock.unlock({key}::bigint)"
        ))
        .unwrap();
    let row = client
        .query_one(
            "SELECT name IS NULL, acquisitions, session_holds FROM pglock.stats
             WHERE database = current_database() AND key = $1",
            &[&key],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (true, 1, 1)
    );
}

#[test]
fn the_table_evicts_the_least_used_at_its_bound() {
    let _serial = one_at_a_time();
    let mut client = session();
    let max: i64 = client
        .query_one("SELECT current_setting('pglock.stats_max')::bigint", &[])
        .unwrap()
        .get(0);
    client.batch_execute("SELECT pglock.stats_reset()").unwrap();
    // One name used 50 times, then max + 100 names used once each, in one statement.
    client
        .batch_execute(
            "SELECT count(*) FILTER (WHERE pglock.try_lock('stats:hot') AND pglock.unlock('stats:hot'))
             FROM generate_series(1, 50)",
        )
        .unwrap();
    let taken: i64 = client
        .query_one(
            "SELECT count(*) FILTER (WHERE pglock.try_lock('stats:cold-' || g)
                                       AND pglock.unlock('stats:cold-' || g))
             FROM generate_series(1, $1::bigint) g",
            &[&(max + 100)],
        )
        .unwrap()
        .get(0);
    assert_eq!(taken, max + 100);
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pglock.stats),
                    (pglock.status()->'stats'->>'entries')::bigint,
                    (pglock.status()->'stats'->>'evictions')::bigint,
                    (SELECT acquisitions FROM pglock.stats WHERE name = 'stats:hot')",
            &[],
        )
        .unwrap();
    let (rows, entries, evictions, hot): (i64, i64, i64, Option<i64>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(rows <= max, "{rows} rows for stats_max {max}");
    assert_eq!(rows, entries);
    // Every name counted since the reset is either in the table or was evicted.
    assert_eq!(entries + evictions, max + 101, "{entries} + {evictions}");
    assert_eq!(hot, Some(50), "the most used name stays");
    // A reset of everything empties the table and the eviction count.
    client.batch_execute("SELECT pglock.stats_reset()").unwrap();
    let row = client
        .query_one(
            "SELECT (pglock.status()->'stats'->>'entries')::bigint,
                    (pglock.status()->'stats'->>'evictions')::bigint",
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (0, 0));
}

#[test]
fn track_off_counts_nothing_and_reset_forgets_one_name() {
    let _serial = one_at_a_time();
    let mut client = session();
    reset(&mut client, "stats:untracked");
    reset(&mut client, "stats:forgotten");
    client
        .batch_execute(
            "SET pglock.track = off;
             SELECT pglock.try_lock('stats:untracked'); SELECT pglock.unlock('stats:untracked');
             RESET pglock.track;
             SELECT pglock.try_lock('stats:forgotten'); SELECT pglock.unlock('stats:forgotten')",
        )
        .unwrap();
    assert_eq!(row_of(&mut client, "stats:untracked"), None);
    assert!(row_of(&mut client, "stats:forgotten").is_some());
    reset(&mut client, "stats:forgotten");
    assert_eq!(row_of(&mut client, "stats:forgotten"), None);
    // Only superusers may change pglock.track.
    client
        .batch_execute("DROP ROLE IF EXISTS pglock_stats_user; CREATE ROLE pglock_stats_user LOGIN")
        .unwrap();
    let mut user = common::session_as("pglock_stats_user");
    let error = user
        .batch_execute("SET pglock.track = off")
        .expect_err("pglock.track is superuser-only");
    assert_eq!(sqlstate(&error), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
}

#[test]
fn names_follow_the_pg_stat_activity_rule_and_counts_are_for_everyone() {
    let _serial = one_at_a_time();
    let mut admin = session();
    common::fresh_login_roles(
        &mut admin,
        &["pglock_stats_app", "pglock_stats_other"],
        &["pglock_stats_monitor"],
    );
    reset(&mut admin, "stats:customer-4711");
    let mut app = common::session_as("pglock_stats_app");
    assert!(try_lock(&mut app, "stats:customer-4711"));
    assert!(unlock(&mut app, "stats:customer-4711"));
    let key: i64 = admin
        .query_one("SELECT pglock.key('stats:customer-4711')", &[])
        .unwrap()
        .get(0);
    let seen_by = |role: &str| -> (Option<String>, i64) {
        let mut client = common::session_as(role);
        let row = client
            .query_one(
                "SELECT name, acquisitions FROM pglock.stats
                 WHERE database = current_database() AND key = $1",
                &[&key],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    let named = (Some("stats:customer-4711".to_owned()), 1);
    assert_eq!(seen_by("pglock_stats_app"), named, "its own role");
    assert_eq!(seen_by("pglock_stats_monitor"), named, "pg_read_all_stats");
    assert_eq!(seen_by("postgres"), named, "a superuser");
    assert_eq!(
        seen_by("pglock_stats_other"),
        (None, 1),
        "another role: counts only"
    );
}

/// A hold ended outside pglock (a built-in unlock, a savepoint rollback) and taken again through
/// pglock in the same transaction counts as two holds, the ended one included, with and without
/// a held() call in between (held() sweeps what the registry kept).
#[test]
fn holds_that_end_outside_pglock_are_each_counted() {
    let _serial = one_at_a_time();
    let (mut a, mut observer) = (session(), session());
    a.batch_execute(
        "CREATE TEMP TABLE jobs (id int, name text, payload text);
         INSERT INTO jobs VALUES (1, 'stats:ended-outside', 'data after the name')",
    )
    .unwrap();
    reset(&mut observer, "stats:ended-outside");
    for sweep in ["", "SELECT count(*) FROM pglock.held();"] {
        a.batch_execute(&format!(
            "BEGIN;
             SELECT pglock.lock(name) FROM jobs WHERE id = 1;
             SELECT pg_advisory_unlock(pglock.key(name)) FROM jobs WHERE id = 1;
             {sweep}
             SELECT pglock.lock(name) FROM jobs WHERE id = 1;
             SELECT pglock.unlock(name) FROM jobs WHERE id = 1;
             SAVEPOINT s;
             SELECT pglock.xact_lock(name) FROM jobs WHERE id = 1;
             ROLLBACK TO SAVEPOINT s;
             {sweep}
             SELECT pglock.xact_lock(name) FROM jobs WHERE id = 1;
             COMMIT"
        ))
        .unwrap();
    }
    assert_eq!(
        row_of(&mut observer, "stats:ended-outside"),
        Some(Row {
            acquisitions: 8,
            session_holds: 4,
            xact_holds: 4,
            ..Row::default()
        })
    );
}

/// A connection to `database` of the test instance.
fn connect_to(database: &str) -> Client {
    let mut first = session();
    let port: String = first.query_one("SHOW port", &[]).unwrap().get(0);
    postgres::Config::new()
        .host("localhost")
        .port(port.parse().unwrap())
        .user(&pgrx_tests::get_pg_user())
        .dbname(database)
        .connect(postgres::NoTls)
        .unwrap_or_else(|error| panic!("connects to {database}: {error}"))
}

/// A name that a LATIN1 database cannot show (taken in a UTF-8 one) costs that one name there:
/// pglock.stats, its Prometheus query, status() and pglock.locks / lock_names() go on working,
/// with the row's counts and key intact and a NULL name. Names LATIN1 can show are shown.
#[test]
fn a_name_the_readers_encoding_cannot_show_is_null_and_breaks_nothing() {
    let _serial = one_at_a_time();
    let mut admin = session();
    admin
        .batch_execute("DROP DATABASE IF EXISTS pglock_latin1_stats")
        .unwrap();
    admin
        .batch_execute(
            "CREATE DATABASE pglock_latin1_stats ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'
             TEMPLATE template0",
        )
        .unwrap();
    let mut latin1 = connect_to("pglock_latin1_stats");
    latin1.batch_execute("CREATE EXTENSION pglock").unwrap();
    let (euro, cafe) = ("invoice-€-1", "café-stats");
    reset(&mut admin, euro);
    reset(&mut admin, cafe);
    // Taken in this UTF-8 database, by a session that keeps holding them.
    let mut holder = session();
    let holder_pid = pid(&mut holder);
    holder
        .execute(
            "CREATE TEMP TABLE names AS SELECT * FROM (VALUES (1, $1::text, 'after'), (2, $2::text, 'after')) v(id, n, other)",
            &[&euro, &cafe],
        )
        .unwrap();
    let taken: i64 = holder
        .query_one(
            "SELECT count(*) FILTER (WHERE pglock.try_lock(n)) FROM names",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(taken, 2);
    let (euro_key, cafe_key): (i64, i64) = {
        let row = holder
            .query_one("SELECT pglock.key($1), pglock.key($2)", &[&euro, &cafe])
            .unwrap();
        (row.get(0), row.get(1))
    };
    holder.batch_execute("SELECT 1").unwrap(); // a transaction end hands the counts on
                                               // In the LATIN1 database (a superuser reads every database's statistics).
    let rows = latin1
        .query(
            "SELECT key, name, acquisitions FROM pglock.stats WHERE key IN ($1, $2) ORDER BY name NULLS FIRST",
            &[&euro_key, &cafe_key],
        )
        .unwrap();
    let seen: Vec<(i64, Option<String>, i64)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        seen,
        [(euro_key, None, 1), (cafe_key, Some(cafe.to_owned()), 1)]
    );
    let counted: i64 = latin1
        .query_one("SELECT count(*) FROM pglock.stats", &[])
        .unwrap()
        .get(0);
    assert!(counted >= 2);
    latin1
        .query_one("SELECT pglock.status()", &[])
        .expect("status() works in the LATIN1 database");
    // The Prometheus queries read the view the same way.
    let queries = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/prometheus/queries.yaml"
    ))
    .unwrap();
    let mut checked = 0;
    for block in queries.split("query: ").skip(1) {
        let query = block
            .split("\n  metrics:")
            .next()
            .unwrap()
            .trim()
            .trim_start_matches('|')
            .trim();
        latin1
            .query(query, &[])
            .unwrap_or_else(|error| panic!("{query}: {error}"));
        checked += usize::from(query.contains("pglock.stats"));
    }
    assert!(checked > 0, "no Prometheus query reads pglock.stats");
    // The holder's names in this UTF-8 database are shown as they are.
    let names: Vec<Option<String>> = common::column(
        &mut admin,
        "SELECT name FROM pglock.locks WHERE pid = $1 ORDER BY key = $2",
        &[&holder_pid, &euro_key],
    );
    assert_eq!(names, [Some(cafe.to_owned()), Some(euro.to_owned())]);
    drop(latin1);
    holder.batch_execute("SELECT pglock.unlock_all()").unwrap();
    admin
        .batch_execute("DROP DATABASE pglock_latin1_stats WITH (FORCE)")
        .unwrap();
}

/// wait_released takes nothing: pglock.stats counts its waits (a timeout, a wait that ended
/// when the holder let go) and no acquisition or hold; an immediate return counts nothing; and
/// the waiter keeps no hold and shows no name afterwards.
#[test]
fn wait_released_counts_its_waits_and_no_hold() {
    let _serial = one_at_a_time();
    let (mut holder, mut waiter, mut observer) = (session(), session(), session());
    let name = "stats:wait-released";
    reset(&mut observer, name);
    let waiter_pid = pid(&mut waiter);
    let free: bool = waiter
        .query_one("SELECT pglock.wait_released($1)", &[&name])
        .unwrap()
        .get(0);
    assert!(free, "a free name returns at once");
    assert!(try_lock(&mut holder, name));
    let timed_out: bool = waiter
        .query_one("SELECT pglock.wait_released($1, '50 ms')", &[&name])
        .unwrap()
        .get(0);
    assert!(!timed_out);
    let wait = thread::spawn(move || {
        let released: bool = waiter
            .query_one("SELECT pglock.wait_released($1)", &[&name])
            .unwrap()
            .get(0);
        (waiter, released)
    });
    wait_until_waiting(&mut observer, waiter_pid);
    thread::sleep(Duration::from_millis(200));
    assert!(unlock(&mut holder, name));
    let (mut waiter, released) = wait.join().unwrap();
    assert!(released);
    assert_eq!(
        row_of(&mut observer, name),
        Some(Row {
            acquisitions: 1,
            waited: 1,
            timeouts: 1,
            session_holds: 1,
            ..Row::default()
        }),
        "the holder's one acquisition and hold; the waiter's two waits"
    );
    let held: i64 = waiter
        .query_one("SELECT count(*) FROM pglock.held()", &[])
        .unwrap()
        .get(0);
    assert_eq!(held, 0);
    assert_eq!(common::own_advisory_locks(&mut waiter), 0);
    let names: i64 = observer
        .query_one(
            "SELECT count(*) FROM pglock.lock_names() WHERE pid = $1",
            &[&waiter_pid],
        )
        .unwrap()
        .get(0);
    assert_eq!(names, 0, "the waiter's name went with its wait");
}
