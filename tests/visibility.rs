//! Who may read another session's lock names (pglock preloaded, as in the test instance): the
//! rule of pg_stat_activity's query text. Everyone sees the lock itself, as pg_locks shows it.

mod common;

use common::{pid, session, session_as, try_lock};
use postgres::Client;

/// (rows for the holder's lock in pglock.locks, the names among them, rows of lock_names() for
/// the holder's pid) as `viewer` sees them.
fn view_of(viewer: &mut Client, holder: i32, key: i64) -> (i64, Vec<Option<String>>, i64) {
    let rows = viewer
        .query(
            "SELECT name FROM pglock.locks WHERE pid = $1 AND key = $2",
            &[&holder, &key],
        )
        .unwrap();
    let function_rows: i64 = viewer
        .query_one(
            "SELECT count(*) FROM pglock.lock_names() WHERE pid = $1",
            &[&holder],
        )
        .unwrap()
        .get(0);
    (
        rows.len() as i64,
        rows.iter().map(|row| row.get(0)).collect(),
        function_rows,
    )
}

#[test]
fn another_sessions_lock_names_follow_the_pg_stat_activity_rule() {
    let mut admin = session();
    common::fresh_login_roles(
        &mut admin,
        &["pglock_app", "pglock_nobody"],
        &["pglock_monitor"],
    );
    let name = "customer-4711-refund";
    let mut holder = session_as("pglock_app");
    assert!(try_lock(&mut holder, name));
    let holder_pid = pid(&mut holder);
    let key: i64 = admin
        .query_one("SELECT pglock.key($1)", &[&name])
        .unwrap()
        .get(0);
    let named = (1, vec![Some(name.to_owned())], 1);
    let unnamed = (1, vec![None], 0);

    // A role with nothing but LOGIN sees the lock, not its name.
    assert_eq!(
        view_of(&mut session_as("pglock_nobody"), holder_pid, key),
        unnamed
    );
    // So does a superuser who switched to such a role: the check is on the current user.
    admin.batch_execute("SET ROLE pglock_nobody").unwrap();
    assert_eq!(view_of(&mut admin, holder_pid, key), unnamed);
    admin.batch_execute("RESET ROLE").unwrap();
    // The same role, a member of pg_read_all_stats, and a superuser see the name.
    assert_eq!(
        view_of(&mut session_as("pglock_app"), holder_pid, key),
        named
    );
    assert_eq!(
        view_of(&mut session_as("pglock_monitor"), holder_pid, key),
        named
    );
    assert_eq!(view_of(&mut admin, holder_pid, key), named);

    drop(holder);
    admin
        .batch_execute("DROP ROLE pglock_app; DROP ROLE pglock_nobody; DROP ROLE pglock_monitor;")
        .unwrap();
}

/// What ends a wait with an ERROR.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Cancel,
    StatementTimeout,
    LockTimeout,
    Deadlock,
}

/// A wait for a name that ends in an ERROR (a cancel, statement_timeout, lock_timeout, a
/// deadlock), with a deadline of pglock's or without, withdraws the name it published: other
/// sessions no longer see it in lock_names(), and a later hold of the same key taken with the
/// built-ins shows with a NULL name in pglock.locks.
#[test]
fn a_wait_that_ends_in_an_error_withdraws_its_name() {
    let (mut waiter, mut observer) = (session(), session());
    let name = "wait-ends-in-error";
    waiter
        .batch_execute(
            "CREATE TEMP TABLE wait_names AS
             SELECT 1 AS id, 'wait-ends-in-error'::text AS n, 'data after the name' AS other",
        )
        .unwrap();
    let key: i64 = observer
        .query_one("SELECT pglock.key($1)", &[&name])
        .unwrap()
        .get(0);
    let waiter_pid = pid(&mut waiter);
    for ending in [
        Ending::Cancel,
        Ending::StatementTimeout,
        Ending::LockTimeout,
        Ending::Deadlock,
    ] {
        for timeout in ["NULL", "'30 s'"] {
            if matches!(ending, Ending::LockTimeout) && timeout != "NULL" {
                continue; // pglock's own deadline sets lock_timeout aside
            }
            let mut holder = session();
            assert!(try_lock(&mut holder, name));
            match ending {
                Ending::StatementTimeout => waiter.batch_execute("SET statement_timeout = '300ms'"),
                Ending::LockTimeout => waiter.batch_execute("SET lock_timeout = '300ms'"),
                Ending::Deadlock => {
                    waiter.batch_execute("SELECT pglock.lock('wait-ends-in-error:other')")
                }
                Ending::Cancel => Ok(()),
            }
            .unwrap();
            let wait = std::thread::spawn(move || {
                let result = waiter.query_one(
                    &format!("SELECT pglock.lock(n, {timeout}) FROM wait_names WHERE id = 1"),
                    &[],
                );
                (waiter, result.map(|_| ()))
            });
            common::wait_until_waiting(&mut observer, waiter_pid);
            let published: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pglock.lock_names() WHERE pid = $1 AND name = $2",
                    &[&waiter_pid, &name],
                )
                .unwrap()
                .get(0);
            assert_eq!(published, 1, "a waiter's name is published");
            let holder = match ending {
                Ending::Cancel => {
                    observer
                        .execute("SELECT pg_cancel_backend($1)", &[&waiter_pid])
                        .unwrap();
                    Ok(holder)
                }
                // The waiter checks for a deadlock after 1 s, the holder only after 60 s: the
                // waiter is the victim, and the holder is granted once the victim lets go.
                Ending::Deadlock => Err(std::thread::spawn(move || {
                    holder
                        .batch_execute("SET deadlock_timeout = '60s'")
                        .unwrap();
                    holder
                        .query_one(
                            "SELECT pglock.lock('wait-ends-in-error:other', '30 s')",
                            &[],
                        )
                        .unwrap();
                    holder
                })),
                _ => Ok(holder),
            };
            let (back, result) = wait.join().unwrap();
            waiter = back;
            let error = result.expect_err("the wait ends in an ERROR");
            let expected = match ending {
                Ending::Cancel | Ending::StatementTimeout => "57014",
                Ending::LockTimeout => "55P03",
                Ending::Deadlock => "40P01",
            };
            assert_eq!(
                error.code().map(|code| code.code()),
                Some(expected),
                "{ending:?}, timeout {timeout}: {error:?}"
            );
            waiter
                .batch_execute(
                    "RESET statement_timeout; RESET lock_timeout; SELECT pglock.unlock_all()",
                )
                .unwrap();
            let mut holder = holder.unwrap_or_else(|partner| partner.join().unwrap());
            let published: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pglock.lock_names() WHERE pid = $1",
                    &[&waiter_pid],
                )
                .unwrap()
                .get(0);
            assert_eq!(
                published, 0,
                "{ending:?}, timeout {timeout}: the name outlived its wait"
            );
            // The holder lets go; the waiter takes the key with the built-ins.
            holder.batch_execute("SELECT pglock.unlock_all()").unwrap();
            waiter
                .query_one("SELECT pg_advisory_lock($1)", &[&key])
                .unwrap();
            let names: Vec<Option<String>> = common::column(
                &mut observer,
                "SELECT name FROM pglock.locks WHERE pid = $1 AND key = $2",
                &[&waiter_pid, &key],
            );
            assert_eq!(
                names,
                [None],
                "{ending:?}, timeout {timeout}: a built-in hold shows the failed wait's name"
            );
            waiter
                .batch_execute("SELECT pg_advisory_unlock_all()")
                .unwrap();
        }
    }
}

const MAKE_HOLD_NAMES: &str = "CREATE TEMP TABLE hold_names AS
    SELECT 1 AS id, 'renamed-by-key'::text AS n, 'data after the name' AS other";

/// A named hold that ends outside pglock (a built-in unlock, pg_advisory_unlock_all, DISCARD
/// ALL) and is taken again by key through pglock is a new hold without a name: other sessions
/// see a NULL name, inside the same transaction too, with and without a held() call between.
#[test]
fn a_hold_taken_again_by_key_after_a_named_one_ended_outside_pglock_has_no_name() {
    let (mut holder, mut observer) = (session(), session());
    holder.batch_execute(MAKE_HOLD_NAMES).unwrap();
    let holder_pid = pid(&mut holder);
    let key: i64 = observer
        .query_one("SELECT pglock.key('renamed-by-key')", &[])
        .unwrap()
        .get(0);
    for (in_transaction, end) in [
        (
            true,
            "SELECT pg_advisory_unlock(pglock.key(n)) FROM hold_names",
        ),
        (true, "SELECT pg_advisory_unlock_all()"),
        (false, "DISCARD ALL"),
    ] {
        for sweep in ["", "SELECT count(*) FROM pglock.held()"] {
            if in_transaction {
                holder.batch_execute("BEGIN").unwrap();
            }
            holder
                .batch_execute("SELECT pglock.lock(n) FROM hold_names WHERE id = 1")
                .unwrap();
            holder.batch_execute(end).unwrap();
            if end == "DISCARD ALL" {
                // DISCARD ALL dropped the temporary table too.
                holder.batch_execute(MAKE_HOLD_NAMES).unwrap();
            }
            if !sweep.is_empty() {
                holder.batch_execute(sweep).unwrap();
            }
            holder
                .batch_execute("SELECT pglock.lock(pglock.key(n)) FROM hold_names WHERE id = 1")
                .unwrap();
            let names: Vec<Option<String>> = common::column(
                &mut observer,
                "SELECT name FROM pglock.locks WHERE pid = $1 AND key = $2",
                &[&holder_pid, &key],
            );
            assert_eq!(names, [None], "{end} / {sweep}");
            if in_transaction {
                holder.batch_execute("COMMIT").unwrap();
            }
            holder.batch_execute("SELECT pglock.unlock_all()").unwrap();
        }
    }
}

/// More names than the name map shows at once (8 per millisecond): the rest are shown by the
/// end of their statement, a nested one (PL/pgSQL's PERFORM) included, or by the end of the
/// transaction when the statement fails; names of locks released before then are never shown,
/// and transaction holds show while their transaction is open.
#[test]
fn names_taken_in_a_burst_are_shown_by_the_end_of_their_statement() {
    let (mut holder, mut observer) = (session(), session());
    holder
        .batch_execute(
            "CREATE TEMP TABLE burst_names AS
             SELECT g AS id, 'burst-' || g AS n, 'data after the name ' || g AS other
             FROM generate_series(1, 12) g",
        )
        .unwrap();
    let holder_pid = pid(&mut holder);
    let shown = |observer: &mut Client| -> Vec<String> {
        common::column(
            observer,
            "SELECT name FROM pglock.locks WHERE pid = $1 AND name LIKE 'burst-%' ORDER BY name",
            &[&holder_pid],
        )
    };
    let mut all: Vec<String> = (1..=12).map(|g| format!("burst-{g}")).collect();
    all.sort();

    for round in 0..5 {
        // One statement takes twelve session holds.
        let taken: i64 = holder
            .query_one(
                "SELECT count(*) FILTER (WHERE pglock.try_lock(n)) FROM burst_names",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(taken, 12);
        assert_eq!(
            shown(&mut observer),
            all,
            "round {round}: after the statement"
        );
        assert_eq!(
            holder
                .query_one("SELECT pglock.unlock_all()", &[])
                .unwrap()
                .get::<_, i32>(0),
            12
        );
        assert!(
            shown(&mut observer).is_empty(),
            "round {round}: after unlock_all"
        );

        // A statement that fails after taking them: session holds outlive it, and so do
        // their names, shown as its transaction ends. (No ORDER BY: a sort would compute the
        // division for every row before the first try_lock.)
        let error = holder
            .query(
                "SELECT pglock.try_lock(n), 1 / (12 - id) FROM burst_names",
                &[],
            )
            .expect_err("division by zero at the last row");
        assert_eq!(
            common::sqlstate(&error),
            Some(&postgres::error::SqlState::DIVISION_BY_ZERO)
        );
        assert_eq!(
            common::own_advisory_locks(&mut holder),
            12,
            "round {round}: held after it"
        );
        assert_eq!(
            shown(&mut observer),
            all,
            "round {round}: after the failed statement"
        );
        holder.batch_execute("SELECT pglock.unlock_all()").unwrap();

        // Taken and released in one statement: never shown, nothing left over.
        holder
            .batch_execute(
                "SELECT count(*) FILTER (WHERE pglock.try_lock(n) AND pglock.unlock(n))
                 FROM burst_names",
            )
            .unwrap();
        let published: i64 = observer
            .query_one(
                "SELECT count(*) FROM pglock.lock_names() WHERE pid = $1",
                &[&holder_pid],
            )
            .unwrap()
            .get(0);
        assert_eq!(published, 0, "round {round}: released in the statement");

        // Transaction holds show while the transaction is open, and go with it.
        holder
            .batch_execute("BEGIN; SELECT pglock.try_xact_lock(n) FROM burst_names")
            .unwrap();
        assert_eq!(
            shown(&mut observer),
            all,
            "round {round}: transaction holds"
        );
        holder.batch_execute("COMMIT").unwrap();
        assert!(
            shown(&mut observer).is_empty(),
            "round {round}: after COMMIT"
        );
    }

    // Inside a PL/pgSQL block the names show once its PERFORM ends, while the block goes on.
    let waiter = std::thread::spawn(move || {
        let result = holder.batch_execute(
            "DO $$ BEGIN
               PERFORM pglock.try_lock(n) FROM burst_names;
               PERFORM pg_sleep(30);
             END $$",
        );
        (holder, result)
    });
    let started = std::time::Instant::now();
    while shown(&mut observer) != all {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the block's names were not shown while it ran: {:?}",
            shown(&mut observer)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let active: String = observer
        .query_one(
            "SELECT state FROM pg_stat_activity WHERE pid = $1",
            &[&holder_pid],
        )
        .unwrap()
        .get(0);
    assert_eq!(active, "active", "the block still runs");
    observer
        .execute("SELECT pg_cancel_backend($1)", &[&holder_pid])
        .unwrap();
    let (mut holder, result) = waiter.join().unwrap();
    assert_eq!(
        result.as_ref().err().and_then(common::sqlstate),
        Some(&postgres::error::SqlState::QUERY_CANCELED),
        "{result:?}"
    );
    holder.batch_execute("SELECT pglock.unlock_all()").unwrap();
    assert!(shown(&mut observer).is_empty());
}
