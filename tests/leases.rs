//! Leases between sessions: a holder that stops renewing is terminated by the lease worker and
//! a waiter gets the lock; a holder that renews keeps it; pglock.lease_action = log terminates
//! nobody; a lease goes with its lock however the lock is released; 10,000 leases at once.
//! Crash restart and promotion: tests/server/leases_restart.sh and tests/standby/failover.py.
//!
//! The tests share the server's lease table and its pglock.lease_action, so they run one at a
//! time.

mod common;

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{code_and_message, pid, session, try_lock};
use postgres::Client;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Waits for the other tests of this file to finish, and for the sessions they dropped to be
/// gone with their leases, so that each test starts from an empty lease table.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut observer = session();
    let start = Instant::now();
    while lease_count(&mut observer) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "leases of ended sessions remain"
        );
        thread::sleep(Duration::from_millis(20));
    }
    guard
}

fn is_alive(client: &mut Client) -> bool {
    client.simple_query("SELECT 1").is_ok()
}

fn lease_count(client: &mut Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM pglock.leases()", &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_holder_whose_lease_runs_out_is_terminated_and_a_waiter_gets_the_lock() {
    let _serial = one_at_a_time();
    let (mut holder, mut waiter) = (session(), session());
    // The name comes from a table row with other data after it.
    holder
        .batch_execute(
            "CREATE TEMP TABLE jobs (id int, name text, payload text);
             INSERT INTO jobs VALUES (1, 'lease:stalled', 'more data after the name');
             SET application_name = 'stalled-holder'",
        )
        .unwrap();
    assert!(try_lock(&mut holder, "lease:stalled"));
    let holder_pid = pid(&mut holder);
    let start = Instant::now();
    let set: bool = holder
        .query_one(
            "SELECT pglock.set_lease(name, '1 s') FROM jobs WHERE id = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(set);
    let expires: (i32, bool) = {
        let row = waiter
            .query_one(
                "SELECT pid, lease_expires_at > now() FROM pglock.locks WHERE name = 'lease:stalled'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(expires, (holder_pid, true));
    // The holder stops renewing; the waiter queues in the lock manager.
    let granted: bool = waiter
        .query_one("SELECT pglock.lock('lease:stalled', '30 s')", &[])
        .unwrap()
        .get(0);
    let elapsed = start.elapsed();
    assert!(granted);
    assert!(
        elapsed >= Duration::from_millis(900),
        "the holder lost the lock before its lease ran out: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_secs(2),
        "the holder was not terminated within lease + 1 s: {elapsed:?}"
    );
    assert!(!is_alive(&mut holder), "the holder's session was ended");
    let gone: i64 = waiter
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&holder_pid],
        )
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);
    assert_eq!(
        lease_count(&mut waiter),
        0,
        "the ended session's lease is gone"
    );
}

#[test]
fn a_holder_renewing_every_300ms_keeps_a_1s_lease_for_10s() {
    let _serial = one_at_a_time();
    let (mut holder, mut other) = (session(), session());
    assert!(try_lock(&mut holder, "lease:renewed"));
    let set: bool = holder
        .query_one("SELECT pglock.set_lease('lease:renewed', '1 s')", &[])
        .unwrap()
        .get(0);
    assert!(set);
    let start = Instant::now();
    let mut renewals = 0;
    while start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(300));
        let renewed: bool = holder
            .query_one("SELECT pglock.renew('lease:renewed')", &[])
            .unwrap()
            .get(0);
        assert!(renewed, "renewal {renewals} was refused");
        renewals += 1;
    }
    assert!(renewals >= 30, "{renewals} renewals");
    assert!(is_alive(&mut holder));
    assert!(
        !try_lock(&mut other, "lease:renewed"),
        "the holder still holds it"
    );
    let depth: i32 = holder
        .query_one(
            "SELECT depth FROM pglock.held() WHERE name = 'lease:renewed'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(depth, 1);
    assert!(common::unlock(&mut holder, "lease:renewed"));
    assert_eq!(lease_count(&mut other), 0, "unlock ended the lease");
}

/// ALTER SYSTEM `change`, then a reload, and time for the worker to take it in (it reads the
/// file when it next wakes after the reload's SIGHUP).
fn set_lease_action(admin: &mut Client, change: &str) {
    admin
        .batch_execute(&format!("ALTER SYSTEM {change}"))
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    thread::sleep(Duration::from_millis(500));
}

#[test]
fn lease_action_log_terminates_nobody() {
    let _serial = one_at_a_time();
    let (mut admin, mut holder) = (session(), session());
    set_lease_action(&mut admin, "SET pglock.lease_action = 'log'");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(try_lock(&mut holder, "lease:logged"));
        holder
            .query_one("SELECT pglock.set_lease('lease:logged', '300 ms')", &[])
            .unwrap();
        thread::sleep(Duration::from_secs(2));
        assert!(is_alive(&mut holder), "log terminated the holder");
        let expired: bool = admin
            .query_one(
                "SELECT lease_expires_at < now() FROM pglock.locks WHERE name = 'lease:logged'",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(expired, "the expired lease still shows");
        // A renewal makes it current again.
        let renewed: bool = holder
            .query_one("SELECT pglock.renew('lease:logged')", &[])
            .unwrap()
            .get(0);
        assert!(renewed);
        assert!(common::unlock(&mut holder, "lease:logged"));
    }));
    set_lease_action(&mut admin, "RESET pglock.lease_action");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// However a lock goes (pglock.unlock, pg_advisory_unlock, the end of a transaction-scope
/// hold), its lease goes with it: taking the key again later, without a lease, is safe.
#[test]
fn a_lease_ends_with_its_lock_however_the_lock_is_released() {
    let _serial = one_at_a_time();
    let (mut by_unlock, mut by_builtin, mut by_commit) = (session(), session(), session());
    let key = |client: &mut Client, name: &str| -> i64 {
        client
            .query_one("SELECT pglock.key($1)", &[&name])
            .unwrap()
            .get(0)
    };

    assert!(try_lock(&mut by_unlock, "lease:unlocked"));
    by_unlock
        .query_one("SELECT pglock.set_lease('lease:unlocked', '1 s')", &[])
        .unwrap();
    assert!(common::unlock(&mut by_unlock, "lease:unlocked"));
    assert!(try_lock(&mut by_unlock, "lease:unlocked"));

    let builtin_key = key(&mut by_builtin, "lease:builtin");
    by_builtin
        .query_one("SELECT pg_advisory_lock($1)", &[&builtin_key])
        .unwrap();
    let set: bool = by_builtin
        .query_one(
            "SELECT pglock.set_lease($1::bigint, '1 s')",
            &[&builtin_key],
        )
        .unwrap()
        .get(0);
    assert!(set, "a lock taken with the built-ins can have a lease");
    by_builtin
        .query_one("SELECT pg_advisory_unlock($1)", &[&builtin_key])
        .unwrap();
    by_builtin
        .query_one("SELECT pg_advisory_lock($1)", &[&builtin_key])
        .unwrap();

    let commit_key = key(&mut by_commit, "lease:committed");
    by_commit
        .batch_execute(
            "BEGIN;
             SELECT pglock.xact_lock('lease:committed');
             SELECT pglock.set_lease('lease:committed', '1 s');
             COMMIT",
        )
        .unwrap();
    by_commit
        .query_one("SELECT pg_advisory_lock($1)", &[&commit_key])
        .unwrap();

    let mut observer = session();
    assert_eq!(
        lease_count(&mut observer),
        0,
        "every lease ended with its lock"
    );
    thread::sleep(Duration::from_secs(2));
    for (what, client) in [
        ("pglock.unlock", &mut by_unlock),
        ("pg_advisory_unlock", &mut by_builtin),
        ("the end of a transaction", &mut by_commit),
    ] {
        assert!(
            is_alive(client),
            "a lease outlived its lock released by {what}"
        );
    }
}

#[test]
fn set_lease_and_renew_answer_for_what_this_session_holds() {
    let _serial = one_at_a_time();
    let mut client = session();
    let bool_of =
        |client: &mut Client, sql: &str| -> bool { client.query_one(sql, &[]).unwrap().get(0) };
    assert!(!bool_of(
        &mut client,
        "SELECT pglock.set_lease('lease:not-held', '1 min')"
    ));
    assert!(!bool_of(
        &mut client,
        "SELECT pglock.renew('lease:not-held')"
    ));
    assert!(try_lock(&mut client, "lease:api"));
    assert!(
        !bool_of(&mut client, "SELECT pglock.renew('lease:api')"),
        "no lease yet"
    );
    for bad in ["'0 s'", "'-1 s'"] {
        let error = client
            .query_one(&format!("SELECT pglock.set_lease('lease:api', {bad})"), &[])
            .unwrap_err();
        assert_eq!(
            code_and_message(&error),
            ("22023".to_owned(), "lease must be positive".to_owned())
        );
    }
    assert_eq!(lease_count(&mut client), 0, "a refused lease sets nothing");
    assert!(bool_of(
        &mut client,
        "SELECT pglock.set_lease('lease:api', '1 min')"
    ));
    // The key overload is the same lease: one row, replaced.
    assert!(bool_of(
        &mut client,
        "SELECT pglock.set_lease(pglock.key('lease:api'), '1 hour')"
    ));
    let (count, length): (i64, String) = {
        let row = client
            .query_one(
                "SELECT count(*), max(lease)::text FROM pglock.leases() WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((count, length.as_str()), (1, "01:00:00"));
    let before: std::time::SystemTime = client
        .query_one("SELECT expires_at FROM pglock.leases()", &[])
        .unwrap()
        .get(0);
    thread::sleep(Duration::from_millis(20));
    assert!(bool_of(&mut client, "SELECT pglock.renew('lease:api')"));
    let after: std::time::SystemTime = client
        .query_one("SELECT expires_at FROM pglock.leases()", &[])
        .unwrap()
        .get(0);
    assert!(after > before, "renew moves the expiry on");
    // NULL removes the lease and keeps the lock.
    assert!(bool_of(
        &mut client,
        "SELECT pglock.set_lease('lease:api', NULL)"
    ));
    assert_eq!(lease_count(&mut client), 0);
    assert!(!bool_of(&mut client, "SELECT pglock.renew('lease:api')"));
    assert!(common::unlock(&mut client, "lease:api"));
}

/// 10,000 leases from ten sessions: a short lease among them still ends its holder in time,
/// the table refuses one lease more than pglock.max_leases (10,001 in the test instance), and
/// a session's leases go when it exits.
#[test]
fn ten_thousand_leases() {
    let _serial = one_at_a_time();
    let mut holders: Vec<Client> = (0..10).map(|_| session()).collect();
    for (index, holder) in holders.iter_mut().enumerate() {
        let leased: i64 = holder
            .query_one(
                "SELECT count(*) FROM generate_series(1, 1000) g
                 WHERE pglock.try_lock(format('many:%s:%s', $1::int, g))
                   AND pglock.set_lease(format('many:%s:%s', $1::int, g), '1 hour')",
                &[&(index as i32)],
            )
            .unwrap()
            .get(0);
        assert_eq!(leased, 1000);
    }
    let mut observer = session();
    assert_eq!(lease_count(&mut observer), 10_000);

    let (mut short, mut waiter) = (session(), session());
    assert!(try_lock(&mut short, "many:short"));
    let start = Instant::now();
    short
        .query_one("SELECT pglock.set_lease('many:short', '1 s')", &[])
        .unwrap();
    assert!(try_lock(&mut waiter, "many:spare"));
    let error = waiter
        .query_one("SELECT pglock.set_lease('many:spare', '1 s')", &[])
        .unwrap_err();
    assert_eq!(
        code_and_message(&error),
        ("53400".to_owned(), "too many lock leases".to_owned())
    );
    let granted: bool = waiter
        .query_one("SELECT pglock.lock('many:short', '30 s')", &[])
        .unwrap()
        .get(0);
    assert!(granted);
    assert!(
        start.elapsed() <= Duration::from_secs(2),
        "among 10,000 leases the short one ended its holder late: {:?}",
        start.elapsed()
    );
    assert!(!is_alive(&mut short));
    assert!(
        holders.iter_mut().all(is_alive),
        "only the expired lease's holder was ended"
    );

    holders.truncate(5);
    let start = Instant::now();
    while lease_count(&mut observer) != 5_000 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the exited sessions' leases remain"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// pglock.status() with pglock preloaded: the lease table, the worker, the name map and token
/// ranges are reported, and the counts follow what sessions do.
#[test]
fn status_reports_the_lease_table_and_the_name_map() {
    let _serial = one_at_a_time();
    let (mut holder, mut observer) = (session(), session());
    let status = |client: &mut Client, path: &str| -> String {
        client
            .query_one(&format!("SELECT pglock.status() #>> '{{{path}}}'"), &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(status(&mut observer, "preloaded"), "true");
    assert_eq!(status(&mut observer, "fencing,token_source"), "ranges");
    assert_eq!(status(&mut observer, "leases,worker_running"), "true");
    assert_eq!(status(&mut observer, "leases,capacity"), "10001");
    assert_eq!(status(&mut observer, "settings,lease_action"), "terminate");
    let before: i64 = status(&mut observer, "leases,active").parse().unwrap();
    assert_eq!(before, 0);
    let names_before: i64 = status(&mut observer, "name_map,names_published")
        .parse()
        .unwrap();
    assert!(try_lock(&mut holder, "status:leased"));
    holder
        .query_one("SELECT pglock.set_lease('status:leased', '1 hour')", &[])
        .unwrap();
    assert_eq!(
        status(&mut observer, "leases,active")
            .parse::<i64>()
            .unwrap(),
        before + 1
    );
    assert!(
        status(&mut observer, "name_map,names_published")
            .parse::<i64>()
            .unwrap()
            > names_before
    );
    assert!(common::unlock(&mut holder, "status:leased"));
    assert_eq!(
        status(&mut observer, "leases,active")
            .parse::<i64>()
            .unwrap(),
        before
    );
}

/// A lease belongs to the hold it was set on. When that hold ends outside pglock inside a
/// transaction (a built-in unlock, pg_advisory_unlock_all) and pglock takes the lock again in
/// the same transaction, the new hold has no lease: nothing is enforced on it later. With and
/// without a held() call between (held() sweeps what the registry kept).
#[test]
fn a_lease_ends_with_a_hold_that_ends_outside_pglock_within_a_transaction() {
    let _serial = one_at_a_time();
    let (mut holder, mut observer) = (session(), session());
    holder
        .batch_execute(
            "CREATE TEMP TABLE lease_names AS
             SELECT 1 AS id, 'lease:retaken'::text AS n, 'data after the name' AS other",
        )
        .unwrap();
    for end in [
        "SELECT pg_advisory_unlock(pglock.key(n)) FROM lease_names WHERE id = 1",
        "SELECT pg_advisory_unlock_all()",
    ] {
        for sweep in ["", "SELECT count(*) FROM pglock.held();"] {
            holder
                .batch_execute(&format!(
                    "BEGIN;
                     SELECT pglock.lock(n) FROM lease_names WHERE id = 1;
                     SELECT pglock.set_lease(n, '500 ms') FROM lease_names WHERE id = 1;
                     {end};
                     {sweep}
                     SELECT pglock.lock(n) FROM lease_names WHERE id = 1;"
                ))
                .unwrap();
            assert_eq!(
                lease_count(&mut observer),
                0,
                "{end} / {sweep}: the ended hold's lease carried over to the new hold"
            );
            holder.batch_execute("COMMIT").unwrap();
            thread::sleep(Duration::from_millis(1500));
            assert!(
                is_alive(&mut holder),
                "{end} / {sweep}: the holder was terminated for a lease it no longer had"
            );
            holder.batch_execute("SELECT pglock.unlock_all()").unwrap();
        }
    }
}

/// An expiry that was only logged (pglock.lease_action = log) is enforced once the action in
/// force is terminate again: the holder that is still there is terminated, and its lock goes.
#[test]
fn a_lease_only_logged_is_enforced_once_the_action_is_terminate() {
    let _serial = one_at_a_time();
    let (mut admin, mut holder, mut other) = (session(), session(), session());
    set_lease_action(&mut admin, "SET pglock.lease_action = 'log'");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(try_lock(&mut holder, "lease:logged-then-enforced"));
        holder
            .query_one(
                "SELECT pglock.set_lease('lease:logged-then-enforced', '200 ms')",
                &[],
            )
            .unwrap();
        thread::sleep(Duration::from_millis(1500));
        assert!(is_alive(&mut holder), "log terminated the holder");
    }));
    set_lease_action(&mut admin, "RESET pglock.lease_action");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let start = Instant::now();
    while is_alive(&mut holder) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the logged lease was never enforced under terminate"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let start = Instant::now();
    while !try_lock(&mut other, "lease:logged-then-enforced") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the lock never went"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(common::unlock(&mut other, "lease:logged-then-enforced"));
}
