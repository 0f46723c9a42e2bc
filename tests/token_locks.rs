//! Locks owned by a token (pglock.acquire / renew / release, fence_ok) between real sessions:
//! the lock outlives the session that took it and is renewed and released from others; it and
//! the session locks of its name exclude each other both ways; waiters are granted in arrival
//! order, within their timeout, cancellable; an unrenewed lock expires; stale and forged tokens
//! are refused; the caps hold. Restart, crash and failover: tests/server/token_locks_restart.sh
//! and tests/standby/failover.py; PgBouncer: tests/pgbouncer/pooler.py.
//!
//! The tests share the server's table of token-owned locks (one checks that it is left empty),
//! so they run one at a time.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::tokens::{acquire, fence_ok, one_at_a_time, release, renew};
use common::{code_and_message, running_or_ended, session};
use postgres::Client;

fn try_session_lock(client: &mut Client, name: &str) -> bool {
    let got: bool = client
        .query_one("SELECT pglock.try_lock($1)", &[&name])
        .unwrap()
        .get(0);
    if got {
        client
            .query_one("SELECT pglock.unlock($1)", &[&name])
            .unwrap();
    }
    got
}

/// Waits (at most 30 s) until `count` processes wait for `name`'s key in pg_locks.
fn wait_for_waiters(observer: &mut Client, name: &str, count: i64) {
    let start = Instant::now();
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pglock.locks WHERE key = pglock.key($1) AND NOT granted",
                &[&name],
            )
            .unwrap()
            .get(0);
        if waiting == count {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{waiting} waiters for {name}, never {count}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The token-owned locks held and waiting, from status().
fn table_use(client: &mut Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (s->'token_locks'->>'held')::bigint, (s->'token_locks'->>'waiting')::bigint
             FROM pglock.status() s",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// Waits (at most 30 s) until no token-owned lock is held or waited for.
fn wait_until_table_empty(observer: &mut Client) {
    let start = Instant::now();
    while table_use(observer) != (0, 0) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "entries left: {:?}",
            table_use(observer)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn token_owned_a_token_lock_outlives_its_session_and_excludes_session_locks_both_ways() {
    let _guard = one_at_a_time();
    let name = "token: outlives";
    let token = {
        let mut taker = session();
        acquire(&mut taker, name, "60 s", "0").expect("free, so granted")
    }; // the taker's session ends here
    let (mut other, mut plain) = (session(), session());
    assert!(!try_session_lock(&mut other, name), "held by the token");
    let builtin: bool = plain
        .query_one("SELECT pg_try_advisory_lock(pglock.key($1))", &[&name])
        .unwrap()
        .get(0);
    assert!(!builtin, "the built-in is refused too");
    assert_eq!(acquire(&mut other, name, "60 s", "0"), None);
    let row = other
        .query_one(
            "SELECT pid, mode, token, token_role = current_user, lease_expires_at > now()
             FROM pglock.locks WHERE key = pglock.key($1) AND granted",
            &[&name],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), None, "held by no process");
    assert_eq!(row.get::<_, String>(1), "exclusive");
    assert_eq!(row.get::<_, Option<i64>>(2), Some(token));
    assert!(row.get::<_, bool>(3));
    assert!(row.get::<_, bool>(4));
    assert!(fence_ok(&mut other, name, token));
    assert!(renew(&mut other, name, token));
    assert!(
        release(&mut other, name, token),
        "released from another session"
    );
    assert!(
        try_session_lock(&mut plain, name),
        "free at once after release"
    );
    assert!(
        !renew(&mut other, name, token),
        "a released token renews nothing"
    );
    assert!(!release(&mut other, name, token));
    assert!(!fence_ok(&mut other, name, token));

    // The other way: a session lock (the built-in's) keeps the token lock out.
    let builtin: bool = plain
        .query_one("SELECT pg_try_advisory_lock(pglock.key($1))", &[&name])
        .unwrap()
        .get(0);
    assert!(builtin);
    assert_eq!(acquire(&mut other, name, "60 s", "0"), None);
    assert_eq!(acquire(&mut other, name, "60 s", "200 ms"), None);
    plain
        .query_one("SELECT pg_advisory_unlock(pglock.key($1))", &[&name])
        .unwrap();
    let again = acquire(&mut other, name, "60 s", "0").expect("free again");
    assert!(again > token, "a later grant has a greater token");
    assert!(release(&mut other, name, again));
}

#[test]
fn token_owned_a_waiter_is_granted_when_the_session_lock_is_released_not_before() {
    let _guard = one_at_a_time();
    let name = "token: waits for a session lock";
    let mut holder = session();
    holder
        .query_one("SELECT pglock.lock($1)", &[&name])
        .unwrap();
    let (sender, receiver) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let mut client = session();
        let token = acquire(&mut client, name, "60 s", "60 s");
        sender.send(token).unwrap();
    });
    let mut observer = session();
    wait_for_waiters(&mut observer, name, 1);
    assert!(
        receiver.recv_timeout(Duration::from_millis(300)).is_err(),
        "granted while the session still holds it"
    );
    holder
        .query_one("SELECT pglock.unlock($1)", &[&name])
        .unwrap();
    let token = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("granted after the release")
        .expect("a token");
    waiter.join().unwrap();
    assert!(!try_session_lock(&mut holder, name));
    assert!(release(&mut observer, name, token));
}

#[test]
fn token_owned_waiters_are_granted_in_arrival_order() {
    let _guard = one_at_a_time();
    let name = "token: fairness";
    let mut owner = session();
    let first = acquire(&mut owner, name, "60 s", "0").unwrap();
    let (sender, receiver) = mpsc::channel();
    let mut threads = Vec::new();
    for arrival in 0..5 {
        let sender = sender.clone();
        threads.push(thread::spawn(move || {
            let mut client = session();
            // Five waiters of one role, each in the queue (beyond the default cap of four
            // waiter processes per role, a wait polls and keeps no place in the queue).
            client
                .batch_execute("SET pglock.max_token_waiters_per_role = 5")
                .unwrap();
            let token = acquire(&mut client, name, "60 s", "60 s").expect("granted in time");
            sender.send((arrival, token)).unwrap();
        }));
        // The next one arrives once this one is queued.
        wait_for_waiters(&mut owner, name, arrival + 1);
    }
    let mut current = first;
    let mut order = Vec::new();
    for _ in 0..5 {
        assert!(release(&mut owner, name, current));
        let (arrival, token) = receiver.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(token > current, "each grant's token is greater");
        order.push(arrival);
        current = token;
    }
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
    assert!(release(&mut owner, name, current));
}

#[test]
fn token_owned_an_unrenewed_lock_expires_and_the_next_waiter_gets_it() {
    let _guard = one_at_a_time();
    let name = "token: expiry";
    let mut client = session();
    let token = acquire(&mut client, name, "1 s", "0").unwrap();
    let started = Instant::now();
    let next = acquire(&mut client, name, "60 s", "30 s").expect("granted at the expiry");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "granted {waited:?} after a 1 s TTL"
    );
    assert!(next > token);
    assert!(!renew(&mut client, name, token), "the expired token");
    assert!(!release(&mut client, name, token));
    assert!(!fence_ok(&mut client, name, token));
    assert!(fence_ok(&mut client, name, next));
    assert!(release(&mut client, name, next));
}

#[test]
fn token_owned_a_renewed_lock_is_kept_past_its_ttl() {
    let _guard = one_at_a_time();
    let name = "token: renewed";
    let mut client = session();
    let token = acquire(&mut client, name, "1 s", "0").unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert!(renew(&mut client, name, token));
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !try_session_lock(&mut client, name),
        "still held after 3 TTLs"
    );
    assert!(client
        .query_one("SELECT pglock.renew($1, $2, '30 s')", &[&name, &token])
        .unwrap()
        .get::<_, bool>(0));
    assert!(release(&mut client, name, token));
    // Released for real after a renewal with another TTL (the prepared transaction is gone).
    assert!(
        try_session_lock(&mut client, name),
        "free after the release"
    );
}

#[test]
fn token_owned_shared_token_locks_coexist_and_exclude_exclusive_ones() {
    let _guard = one_at_a_time();
    let name = "token: shared";
    let mut client = session();
    let shared = |client: &mut Client| -> Option<i64> {
        client
            .query_one("SELECT pglock.acquire_shared($1, '60 s', '0')", &[&name])
            .unwrap()
            .get(0)
    };
    let a = shared(&mut client).unwrap();
    let b = shared(&mut client).unwrap();
    assert!(!try_session_lock(&mut client, name));
    assert_eq!(acquire(&mut client, name, "60 s", "0"), None);
    let shared_session: bool = client
        .query_one("SELECT pglock.try_lock_shared($1)", &[&name])
        .unwrap()
        .get(0);
    assert!(shared_session, "a shared session lock joins them");
    client
        .query_one("SELECT pglock.unlock_shared($1)", &[&name])
        .unwrap();
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM pglock.locks WHERE key = pglock.key($1) AND mode = 'shared' AND token IS NOT NULL",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "one row each, with its token");
    assert!(release(&mut client, name, a));
    assert!(release(&mut client, name, b));
    assert!(try_session_lock(&mut client, name));
}

#[test]
fn token_owned_a_release_waits_for_a_transaction_that_checked_the_token() {
    let _guard = one_at_a_time();
    let name = "token: fence";
    let mut writer = session();
    let token = acquire(&mut writer, name, "60 s", "0").unwrap();
    writer.batch_execute("BEGIN").unwrap();
    assert!(fence_ok(&mut writer, name, token));
    let (sender, receiver) = mpsc::channel();
    let releaser = thread::spawn(move || {
        let mut client = session();
        sender.send(release(&mut client, name, token)).unwrap();
    });
    assert!(
        receiver.recv_timeout(Duration::from_millis(500)).is_err(),
        "released while a transaction that saw the token valid is open"
    );
    writer.batch_execute("COMMIT").unwrap();
    assert!(receiver.recv_timeout(Duration::from_secs(30)).unwrap());
    releaser.join().unwrap();
    assert!(!fence_ok(&mut writer, name, token));
}

#[test]
fn token_owned_a_cancelled_or_timed_out_wait_leaves_nothing_behind() {
    let _guard = one_at_a_time();
    let name = "token: cancel";
    let mut holder = session();
    holder
        .query_one("SELECT pglock.lock($1)", &[&name])
        .unwrap();
    let mut observer = session();
    // A cancel, and statement_timeout, during the wait: 57014 both, no waiter left.
    for setup in ["", "SET statement_timeout = '300ms'"] {
        let mut client = session();
        if !setup.is_empty() {
            client.batch_execute(setup).unwrap();
        }
        let cancel = client.cancel_token();
        let canceller = thread::spawn(move || {
            if setup.is_empty() {
                thread::sleep(Duration::from_millis(300));
                cancel.cancel_query(postgres::NoTls).unwrap();
            }
        });
        let error = client
            .query_one("SELECT pglock.acquire($1, '60 s')", &[&name])
            .unwrap_err();
        canceller.join().unwrap();
        assert_eq!(code_and_message(&error).0, "57014", "{setup}: {error}");
        wait_for_waiters(&mut observer, name, 0);
    }
    // Many timeouts, some tiny, while the holder lets go and takes it back.
    let mut client = session();
    let mut granted = 0;
    for round in 0..60 {
        let timeout = format!("{} ms", round % 7);
        if round % 10 == 5 {
            holder
                .query_one("SELECT pglock.unlock($1)", &[&name])
                .unwrap();
        }
        if let Some(token) = acquire(&mut client, name, "60 s", &timeout) {
            granted += 1;
            assert!(release(&mut client, name, token));
        }
        if round % 10 == 5 {
            holder
                .query_one("SELECT pglock.lock($1)", &[&name])
                .unwrap();
        }
    }
    assert!(granted >= 1, "some tries found the key free");
    wait_for_waiters(&mut observer, name, 0);
    wait_until_table_empty(&mut observer);
    holder
        .query_one("SELECT pglock.unlock($1)", &[&name])
        .unwrap();
}

#[test]
fn token_owned_bad_input_is_refused_and_changes_nothing() {
    let _guard = one_at_a_time();
    let mut client = session();
    let cases = [
        ("SELECT pglock.acquire(NULL::text, '1 min')", "22004"),
        ("SELECT pglock.acquire('', '1 min')", "22023"),
        ("SELECT pglock.acquire('token: bad', NULL)", "22004"),
        ("SELECT pglock.acquire('token: bad', '0')", "22023"),
        ("SELECT pglock.acquire('token: bad', '-1 s')", "22023"),
        ("SELECT pglock.acquire('token: bad', '500 ms')", "22023"),
        ("SELECT pglock.acquire('token: bad', '2 hours')", "22023"),
        (
            "SELECT pglock.acquire('token: bad', '1 min', '-1 s')",
            "22023",
        ),
        ("SELECT pglock.renew('token: bad', NULL)", "22004"),
        ("SELECT pglock.renew('token: bad', 1, '0')", "22023"),
        ("SELECT pglock.release('token: bad', NULL)", "22004"),
        ("SELECT pglock.release(NULL::text, 1)", "22004"),
    ];
    for (sql, code) in cases {
        let error = client.query_one(sql, &[]).unwrap_err();
        assert_eq!(code_and_message(&error).0, code, "{sql}: {error}");
    }
    // A hold of the calling session's own: the wait would never end, so it is refused.
    client
        .query_one("SELECT pglock.lock('token: own')", &[])
        .unwrap();
    let error = client
        .query_one("SELECT pglock.acquire('token: own', '1 min', '10 s')", &[])
        .unwrap_err();
    assert_eq!(code_and_message(&error).0, "55P03", "{error}");
    assert_eq!(acquire(&mut client, "token: own", "60 s", "0"), None);
    client
        .query_one("SELECT pglock.unlock('token: own')", &[])
        .unwrap();
    let token = acquire(&mut client, "token: bad", "60 s", "0").unwrap();
    assert!(!renew(&mut client, "token: bad (another name)", token));
    assert!(!release(&mut client, "token: bad (another name)", token));
    assert!(!fence_ok(&mut client, "token: bad (another name)", token));
    assert!(
        !renew(&mut client, "token: bad", token + 1),
        "a forged token"
    );
    assert!(!release(&mut client, "token: bad", token - 1));
    assert!(release(&mut client, "token: bad", token));
}

#[test]
fn token_owned_the_per_role_cap_refuses_with_53400() {
    let _guard = one_at_a_time();
    let mut client = session();
    client
        .batch_execute("SET pglock.max_token_locks_per_role = 1")
        .unwrap();
    // Other tests' locks count too (the same role): take until refused.
    let mut tokens = Vec::new();
    let error = loop {
        let name = format!("token: cap {}", tokens.len());
        match client.query_one("SELECT pglock.acquire($1, '60 s', '0')", &[&name]) {
            Ok(row) => tokens.push((name, row.get::<_, i64>(0))),
            Err(error) => break error,
        }
        assert!(
            tokens.len() <= 1,
            "a second lock was granted under a cap of 1"
        );
    };
    let (code, message) = code_and_message(&error);
    assert_eq!(code, "53400", "{message}");
    for (name, token) in tokens {
        assert!(release(&mut client, &name, token));
    }
}

#[test]
fn token_owned_no_renewal_extends_a_hold_past_token_max_hold() {
    let _guard = one_at_a_time();
    let name = "token: max hold";
    let mut admin = session();
    admin
        .batch_execute("ALTER SYSTEM SET pglock.token_max_hold = '3s'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    // Put back even when an assertion below fails.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            let mut admin = session();
            let _ = admin.batch_execute("ALTER SYSTEM RESET pglock.token_max_hold");
            let _ = admin.batch_execute("SELECT pg_reload_conf()");
        }
    }
    let reset = Reset;
    let start = Instant::now();
    loop {
        // A new session reads the reloaded file.
        let seen: String = session()
            .query_one("SHOW pglock.token_max_hold", &[])
            .unwrap()
            .get(0);
        if seen == "3s" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never reloaded");
        thread::sleep(Duration::from_millis(20));
    }
    let mut client = session();
    let ttl_error = client
        .query_one("SELECT pglock.acquire($1, '4 s')", &[&name])
        .unwrap_err();
    assert_eq!(
        code_and_message(&ttl_error).0,
        "22023",
        "a TTL above the maximum hold"
    );
    let token = acquire(&mut client, name, "2 s", "0").unwrap();
    let taken = Instant::now();
    let mut renewed = 0;
    let mut cut_short = 0;
    let mut waiter = session();
    let (sender, receiver) = mpsc::channel();
    let waiting = thread::spawn(move || {
        sender
            .send(acquire(&mut waiter, name, "2 s", "30 s"))
            .unwrap();
    });
    // The holder renews all along; the hold ends at 3 s all the same, and the waiter gets it.
    let next = loop {
        if let Ok(next) = receiver.try_recv() {
            break next.expect("granted at the maximum hold");
        }
        // True while the 2 s asked fit under the 3 s bound; false once the bound cuts a renewal
        // short (the lock is still held to the bound, but its holder must not count on 2 s).
        if renew(&mut client, name, token) {
            assert_eq!(
                cut_short, 0,
                "a renewal granted in full after one was cut short"
            );
            renewed += 1;
        } else {
            cut_short += 1;
        }
        assert!(
            taken.elapsed() < Duration::from_secs(30),
            "held past the maximum"
        );
        thread::sleep(Duration::from_millis(100));
    };
    let held_for = taken.elapsed();
    waiting.join().unwrap();
    assert!(
        held_for >= Duration::from_millis(2500) && renewed >= 3 && cut_short >= 3,
        "the renewals kept it until the maximum ({held_for:?}, {renewed} renewals, {cut_short} cut short)"
    );
    assert!(!renew(&mut client, name, token));
    assert!(release(&mut client, name, next));
    drop(reset);
    let start = Instant::now();
    while session()
        .query_one("SHOW pglock.token_max_hold", &[])
        .unwrap()
        .get::<_, String>(0)
        != "1h"
    {
        assert!(start.elapsed() < Duration::from_secs(30), "never reset");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn token_owned_locks_are_counted_in_pglock_stats() {
    let _guard = one_at_a_time();
    let name = "token: counted";
    let mut client = session();
    client
        .query_one("SELECT pglock.stats_reset($1)", &[&name])
        .unwrap();
    let token = acquire(&mut client, name, "60 s", "0").unwrap();
    let mut other = session();
    assert_eq!(acquire(&mut other, name, "60 s", "0"), None, "busy");
    assert_eq!(
        acquire(&mut other, name, "60 s", "50 ms"),
        None,
        "timed out"
    );
    let (sender, receiver) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let mut waiter = session();
        sender
            .send(acquire(&mut waiter, name, "60 s", "30 s"))
            .unwrap();
    });
    wait_for_waiters(&mut client, name, 1);
    assert!(release(&mut client, name, token));
    let next = receiver
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap();
    waiter.join().unwrap();
    assert!(release(&mut client, name, next));
    let row = client
        .query_one(
            "SELECT acquisitions, waited, busy, timeouts, cancels, total_wait_time > 0
             FROM pglock.stats WHERE name = $1 AND database = current_database()",
            &[&name],
        )
        .unwrap();
    let counts: (i64, i64, i64, i64, i64, bool) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    // 0.4.0 counted the timeout a second time, as a cancel with its wait.
    assert_eq!(
        counts,
        (2, 1, 1, 1, 0, true),
        "acquisitions, waited, busy, timeouts, cancels, waited"
    );
}

#[test]
fn token_owned_every_cancel_of_a_waiting_acquire_surfaces_as_57014_and_leaves_nothing() {
    let _guard = one_at_a_time();
    let name = "token: cancel storm";
    let mut holder = session();
    holder
        .query_one("SELECT pglock.lock($1)", &[&name])
        .unwrap();
    let workers: Vec<_> = (0..4u64)
        .map(|worker| {
            thread::spawn(move || {
                let mut waiter = session();
                let waiter_pid: i32 = waiter
                    .query_one("SELECT pg_backend_pid()", &[])
                    .unwrap()
                    .get(0);
                let mut canceller = session();
                for round in 0..6u64 {
                    let tag = format!("/* worker {worker} round {round} */");
                    let statement = format!("{tag} SELECT pglock.acquire('{name}', '60 s')");
                    let pattern = format!("{tag}%");
                    let ended = Arc::new(AtomicBool::new(false));
                    let statement_ended = Arc::clone(&ended);
                    let cancel = thread::spawn(move || {
                        let seen = running_or_ended(
                            &mut canceller,
                            waiter_pid,
                            &pattern,
                            &statement_ended,
                        );
                        if seen {
                            // Land the cancel at varying points: before the worker answers,
                            // while the waiter process starts, while it waits.
                            thread::sleep(Duration::from_micros(
                                (worker * 7919 + round * 104_729) % 30_000,
                            ));
                            // pg_cancel_backend signals before it returns, and only while
                            // this round's statement runs: a cancel never lands on the next one.
                            canceller
                                .query_one(
                                    "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity
                                     WHERE pid = $1 AND state = 'active' AND query LIKE $2",
                                    &[&waiter_pid, &pattern],
                                )
                                .unwrap();
                        }
                        (canceller, seen)
                    });
                    let started = Instant::now();
                    let result = waiter.batch_execute(&statement);
                    let took = started.elapsed();
                    ended.store(true, Ordering::SeqCst);
                    let (returned, seen) = cancel.join().unwrap();
                    canceller = returned;
                    assert!(
                        seen,
                        "worker {worker}, round {round}: ended after {took:?}, unseen: {result:?}"
                    );
                    let error = result.expect_err("the cancel must end the acquire");
                    assert_eq!(
                        code_and_message(&error).0,
                        "57014",
                        "worker {worker}, round {round}: {error}"
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let mut observer = session();
    wait_for_waiters(&mut observer, name, 0);
    wait_until_table_empty(&mut observer);
    holder
        .query_one("SELECT pglock.unlock($1)", &[&name])
        .unwrap();
    // Nothing was granted behind the session's back: the name is free.
    let token = acquire(&mut observer, name, "60 s", "0").expect("free");
    assert!(release(&mut observer, name, token));
}
