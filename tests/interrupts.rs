//! Timed waits against everything else that can interrupt a backend: pglock's own deadline must
//! never swallow, delay or relabel anybody else's interrupt. Each race runs many times with tiny
//! timeouts; bounds on time are generous (seconds where the failure is minutes or never).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{code_and_message, pid, server_version_num, session, try_lock, wait_until_running};

/// A statement that keeps timing out on `name` (held elsewhere) for `seconds`, then returns
/// normally: if it ever returns, whatever should have stopped it was lost.
fn timing_out_for(name: &str, seconds: u32) -> String {
    format!(
        "DO $$ BEGIN
           WHILE clock_timestamp() < statement_timestamp() + interval '{seconds} s' LOOP
             PERFORM pglock.lock('{name}', '1 microsecond');
           END LOOP;
         END $$"
    )
}

#[test]
fn drop_database_is_not_held_up_by_a_session_whose_waits_keep_timing_out() {
    let mut holder = session();
    assert!(try_lock(&mut holder, "busy-barrier"));
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut looper = session();
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(90) {
                let row = looper
                    .query_one(
                        "SELECT count(*) FILTER (WHERE pglock.lock('busy-barrier', '1 ms'))
                         FROM generate_series(1, 50)",
                        &[],
                    )
                    .unwrap();
                assert_eq!(row.get::<_, i64>(0), 0, "the lock is held elsewhere");
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    let mut admin = session();
    for round in 0..15 {
        let name = format!("pglock_barrier_{round}");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let start = Instant::now();
        admin
            .batch_execute(&format!("DROP DATABASE {name}"))
            .unwrap();
        let took = start.elapsed();
        // DROP DATABASE waits until every backend absorbed its ProcSignalBarrier.
        assert!(
            took < Duration::from_secs(5),
            "round {round}: DROP DATABASE took {took:?} while a session's waits timed out"
        );
    }
    stop.store(true, Ordering::Relaxed);
    looper.join().unwrap();
}

#[test]
fn statement_timeout_is_never_lost_or_relabelled_by_a_timed_wait() {
    let mut holder = session();
    assert!(try_lock(&mut holder, "busy-statement-timeout"));
    let mut waiter = session();
    waiter
        .batch_execute("SET statement_timeout = '200ms'")
        .unwrap();
    for round in 0..20 {
        let result = waiter.query_one(
            "SELECT count(*) FROM generate_series(1, 200000) g
             WHERE pglock.lock('busy-statement-timeout', '1 microsecond')",
            &[],
        );
        let error = result.expect_err("statement_timeout must end the statement");
        assert_eq!(
            code_and_message(&error),
            (
                "57014".to_owned(),
                "canceling statement due to statement timeout".to_owned()
            ),
            "round {round}"
        );
    }
}

#[test]
fn every_cancel_of_a_timing_out_session_surfaces_as_57014() {
    let mut holder = session();
    assert!(try_lock(&mut holder, "busy-cancel"));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            thread::spawn(move || {
                let mut waiter = session();
                let waiter_pid = pid(&mut waiter);
                let mut canceller = session();
                for round in 0..6 {
                    // The client returns on the ErrorResponse, before the backend reports
                    // itself idle, so the last round's DO may still show as active: tag each
                    // round's statement so that the canceller waits for this one.
                    let tag = format!("/* worker {worker} round {round} */");
                    let statement = format!("{tag} {}", timing_out_for("busy-cancel", 20));
                    let pattern = format!("{tag}%");
                    let token = waiter.cancel_token();
                    let cancel = thread::spawn(move || {
                        wait_until_running(&mut canceller, waiter_pid, &pattern);
                        // Land the cancel at varying points of the wait loop.
                        thread::sleep(Duration::from_micros(
                            (worker * 7919 + round * 104_729) as u64 % 30_000,
                        ));
                        if round % 2 == 0 {
                            canceller
                                .query_one("SELECT pg_cancel_backend($1)", &[&waiter_pid])
                                .unwrap();
                        } else {
                            token.cancel_query(postgres::NoTls).unwrap();
                        }
                        canceller
                    });
                    let result = waiter.batch_execute(&statement);
                    canceller = cancel.join().unwrap();
                    let error = result.expect_err("the cancel must end the statement");
                    assert_eq!(
                        code_and_message(&error),
                        (
                            "57014".to_owned(),
                            "canceling statement due to user request".to_owned()
                        ),
                        "worker {worker}, round {round}"
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

#[test]
fn transaction_timeout_ends_a_session_whose_waits_keep_timing_out() {
    let mut holder = session();
    if server_version_num(&mut holder) < 170000 {
        eprintln!("transaction_timeout exists from PostgreSQL 17 on");
        return;
    }
    assert!(try_lock(&mut holder, "busy-transaction-timeout"));
    for round in 0..8 {
        let mut waiter = session();
        waiter
            .batch_execute("SET transaction_timeout = '300ms'; BEGIN")
            .unwrap();
        let start = Instant::now();
        let result = waiter.batch_execute(&timing_out_for("busy-transaction-timeout", 20));
        let took = start.elapsed();
        let error = result.expect_err("transaction_timeout must end the session");
        // The server sends FATAL 25P04 and closes the connection; the client may see the close
        // before it reads the message. Either way the session ended instead of looping on.
        match error.as_db_error() {
            Some(db) => assert_eq!(db.code().code(), "25P04", "round {round}: {error:?}"),
            None => assert!(error.is_closed(), "round {round}: {error:?}"),
        }
        assert!(
            took < Duration::from_secs(10),
            "round {round}: the session ran {took:?} past its transaction_timeout"
        );
    }
}

/// The DETAIL of a failed statement, if any.
fn detail_of(error: &postgres::Error) -> Option<String> {
    error
        .as_db_error()
        .and_then(|db| db.detail().map(str::to_owned))
}

#[test]
fn errors_reach_the_client_as_postgresql_raised_them_with_rust_backtrace_set() {
    let mut holder = session();
    // scripts/test.sh starts the test instance with RUST_BACKTRACE=1; without it this test
    // would prove nothing.
    let in_server_environment: bool = holder
        .query_one(
            // The postmaster's: a backend overwrites its own environment with its ps title.
            "SELECT position('RUST_BACKTRACE=1'::bytea IN pg_read_binary_file(
                 '/proc/' || split_part(pg_read_file('postmaster.pid'), E'\n', 1) || '/environ')) > 0",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        in_server_environment,
        "run the tests through scripts/test.sh, which sets RUST_BACKTRACE=1 for the server"
    );
    assert!(try_lock(&mut holder, "verbatim"));
    let mut waiter = session();
    // lock_timeout during a wait without pglock's deadline: 55P03, no DETAIL.
    waiter.batch_execute("SET lock_timeout = '100ms'").unwrap();
    let error = waiter
        .query_one("SELECT pglock.lock('verbatim')", &[])
        .unwrap_err();
    assert_eq!(
        code_and_message(&error),
        (
            "55P03".to_owned(),
            "canceling statement due to lock timeout".to_owned()
        )
    );
    assert_eq!(detail_of(&error), None);
    // statement_timeout during a wait with and without pglock's deadline: 57014, no DETAIL.
    waiter
        .batch_execute("RESET lock_timeout; SET statement_timeout = '100ms'")
        .unwrap();
    for sql in [
        "SELECT pglock.lock('verbatim')",
        "SELECT pglock.lock('verbatim', '1 minute')",
    ] {
        let error = waiter.query_one(sql, &[]).unwrap_err();
        assert_eq!(code_and_message(&error).0, "57014", "{sql}");
        assert_eq!(detail_of(&error), None, "{sql}");
    }
    waiter.batch_execute("RESET statement_timeout").unwrap();
    // A deadlock, in both kinds of wait: PostgreSQL's own DETAIL, and nothing appended.
    for timeout in ["NULL", "'1 minute'"] {
        let error = deadlock_victims_error(timeout);
        assert_eq!(code_and_message(&error).0, "40P01");
        let detail = detail_of(&error).expect("a deadlock has PostgreSQL's DETAIL");
        assert!(detail.starts_with("Process "), "{detail}");
        assert!(
            !detail.contains("pgrx") && !detail.contains("pglock::"),
            "a Rust backtrace in PostgreSQL's DETAIL: {detail}"
        );
    }
}

/// Two sessions that wait for each other's lock with `timeout`; returns the victim's error.
fn deadlock_victims_error(timeout: &str) -> postgres::Error {
    let (x, y) = (
        format!("verbatim-x-{timeout}"),
        format!("verbatim-y-{timeout}"),
    );
    let (mut a, mut b, mut observer) = (session(), session(), session());
    let a_pid = pid(&mut a);
    assert!(try_lock(&mut a, &x));
    assert!(try_lock(&mut b, &y));
    let wait_for = |mut client: postgres::Client, name: String| {
        let sql = format!("SELECT pglock.lock($1, {timeout})");
        thread::spawn(move || {
            let result = client.query_one(&sql, &[&name]).map(|_| ());
            // The victim gives up what it holds, so that the other side is granted.
            client.batch_execute("SELECT pglock.unlock_all()").unwrap();
            result
        })
    };
    let a_waits = wait_for(a, y);
    common::wait_until_waiting(&mut observer, a_pid);
    let b_waits = wait_for(b, x);
    match (a_waits.join().unwrap(), b_waits.join().unwrap()) {
        (Err(error), Ok(())) | (Ok(()), Err(error)) => error,
        other => panic!("exactly one deadlock victim expected: {other:?}"),
    }
}

/// The psql of the test instance's PostgreSQL.
fn psql_of(client: &mut postgres::Client) -> std::path::PathBuf {
    let bindir: String = client
        .query_one("SELECT setting FROM pg_config WHERE name = 'BINDIR'", &[])
        .unwrap()
        .get(0);
    std::path::Path::new(&bindir).join("psql")
}

/// Waits (at most `limit`) until `check` is true; false if it never was.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A session waiting in pglock.lock() whose client process is killed (SIGKILL) notices within a
/// few seconds (pglock.client_check_interval, 1 s by default, with client_connection_check_interval
/// off as it is by default): it leaves the lock's queue and ends, while the lock is still held,
/// so a dead client is never granted it later; and when the lock is freed right after the kill,
/// before any check, the grant that reaches the dead client's session is given up, and the next
/// waiter gets the lock. Waits with and without a deadline.
#[test]
fn a_waiter_whose_client_is_killed_leaves_the_queue() {
    let (mut holder, mut observer, mut next) = (session(), session(), session());
    let psql = psql_of(&mut observer);
    let port: String = observer.query_one("SHOW port", &[]).unwrap().get(0);
    let name = "client-gone";
    for (round, (freed_at_once, timeout)) in [
        (false, "NULL"),
        (false, "'10 min'"),
        (true, "NULL"),
        (true, "'10 min'"),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(try_lock(&mut holder, name));
        let application = format!("pglock-orphan-{round}");
        let mut client = std::process::Command::new(&psql)
            .args(["-X", "-q", "-h", "localhost", "-p", &port])
            .args([
                "-U",
                &pgrx_tests::get_pg_user(),
                "-d",
                pgrx_tests::get_pg_dbname(),
            ])
            .arg("-c")
            .arg(format!("SELECT pglock.lock('{name}', {timeout})"))
            .env("PGAPPNAME", &application)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("psql starts");
        let mut orphan = None;
        assert!(
            within(Duration::from_secs(30), || {
                orphan = observer
                    .query_opt(
                        "SELECT pid FROM pg_stat_activity
                         WHERE application_name = $1 AND wait_event_type = 'Lock'",
                        &[&application],
                    )
                    .unwrap()
                    .map(|row| row.get::<_, i32>(0));
                orphan.is_some()
            }),
            "psql's session never waited"
        );
        let orphan = orphan.unwrap();
        client.kill().unwrap(); // SIGKILL
        client.wait().unwrap();
        let gone = |observer: &mut postgres::Client| {
            observer
                .query_one(
                    "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1",
                    &[&orphan],
                )
                .unwrap()
                .get::<_, bool>(0)
        };
        if freed_at_once {
            assert!(common::unlock(&mut holder, name));
        } else {
            assert!(
                within(Duration::from_secs(15), || gone(&mut observer)),
                "round {round}: the session of a killed client still waits"
            );
            let still_held: bool = holder
                .query_one("SELECT count(*) = 1 FROM pglock.held()", &[])
                .unwrap()
                .get(0);
            assert!(still_held);
            assert!(common::unlock(&mut holder, name));
        }
        let granted: bool = next
            .query_one("SELECT pglock.lock($1, '15 s')", &[&name])
            .unwrap()
            .get(0);
        assert!(granted, "round {round}: the next waiter never got the lock");
        assert!(
            within(Duration::from_secs(15), || gone(&mut observer)),
            "round {round}: the session of a killed client lives on"
        );
        assert!(common::unlock(&mut next, name));
    }
}
