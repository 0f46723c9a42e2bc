//! The lock-manager facts that the design of token-owned locks rests on
//! (docs/design/token-locks.md, "To verify first"), proved against the test instance before
//! anything is built on them: a prepared transaction holding RowExclusiveLock (RowShareLock) on
//! a key's advisory tag excludes the built-ins' exclusive and shared locks (the exclusive ones
//! only) after its session is gone, coexists with another holder of the same mode, and a hold
//! can pass between a session and a prepared transaction with no instant at which the key is
//! free. The modes are taken with test-only functions (schema `tests`, src/lib.rs).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::session;
use postgres::Client;

fn take(client: &mut Client, key: i64, mode: &str, session_level: bool) -> bool {
    client
        .query_one(
            "SELECT tests.take_advisory_in_mode($1, $2, $3)",
            &[&key, &mode, &session_level],
        )
        .unwrap()
        .get(0)
}

/// Gives back one session-scope RowExclusiveLock hold taken by `take`; true if there was one.
fn release(client: &mut Client, key: i64) -> bool {
    client
        .query_one(
            "SELECT tests.release_advisory_in_mode($1, 'RowExclusiveLock')",
            &[&key],
        )
        .unwrap()
        .get(0)
}

fn try_builtin(client: &mut Client, function: &str, key: i64) -> bool {
    let got: bool = client
        .query_one(&format!("SELECT {function}($1)"), &[&key])
        .unwrap()
        .get(0);
    if got {
        let unlock = function.replace("pg_try_advisory_lock", "pg_advisory_unlock");
        client
            .query_one(&format!("SELECT {unlock}($1)"), &[&key])
            .unwrap();
    }
    got
}

/// Prepares a transaction that holds `mode` on `key`, from a session that then disconnects.
fn prepare_holding(key: i64, mode: &str, gid: &str) {
    let mut owner = session();
    owner.batch_execute("BEGIN").unwrap();
    assert!(
        take(&mut owner, key, mode, false),
        "{gid}: {mode} is free to take"
    );
    owner
        .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
        .unwrap();
}

/// Rolls back prepared transactions an earlier, failed run left behind (the test instance's
/// data directory outlives a run), so that their gids and locks are free.
fn clean_up(client: &mut Client, prefix: &str) {
    let gids: Vec<String> = common::column(
        client,
        "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)",
        &[&prefix],
    );
    for gid in gids {
        finish(client, &gid);
    }
}

fn finish(client: &mut Client, gid: &str) {
    client
        .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
        .unwrap();
}

#[test]
fn a_prepared_transactions_token_mode_excludes_session_locks_and_not_its_own_kind() {
    let mut other = session();
    clean_up(&mut other, "pglock-design-r");
    let key = 7_220_001_i64;

    // RowExclusiveLock: excludes both built-ins, from a transaction whose session is gone.
    prepare_holding(key, "RowExclusiveLock", "pglock-design-re-1");
    assert!(!try_builtin(&mut other, "pg_try_advisory_lock", key));
    assert!(!try_builtin(&mut other, "pg_try_advisory_lock_shared", key));
    let pglock_got: bool = other
        .query_one("SELECT pglock.try_lock($1::bigint)", &[&key])
        .unwrap()
        .get(0);
    assert!(!pglock_got, "pglock's own exclusive lock is excluded too");
    let rows: Vec<(Option<i32>, String, bool)> = other
        .query(
            "SELECT pid, mode, granted FROM pg_locks WHERE locktype = 'advisory'
             AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1",
            &[&key],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(rows, [(None, "RowExclusiveLock".to_owned(), true)]);
    // A second holder of the same mode takes it while the first still holds it.
    prepare_holding(key, "RowExclusiveLock", "pglock-design-re-2");
    finish(&mut other, "pglock-design-re-1");
    assert!(
        !try_builtin(&mut other, "pg_try_advisory_lock", key),
        "the second still holds"
    );
    finish(&mut other, "pglock-design-re-2");
    assert!(
        try_builtin(&mut other, "pg_try_advisory_lock", key),
        "free once both are gone"
    );

    // RowShareLock: excludes the exclusive built-in, not the shared one.
    prepare_holding(key, "RowShareLock", "pglock-design-rs-1");
    assert!(!try_builtin(&mut other, "pg_try_advisory_lock", key));
    assert!(try_builtin(&mut other, "pg_try_advisory_lock_shared", key));
    prepare_holding(key, "RowShareLock", "pglock-design-rs-2");
    finish(&mut other, "pglock-design-rs-1");
    assert!(!try_builtin(&mut other, "pg_try_advisory_lock", key));
    finish(&mut other, "pglock-design-rs-2");
    assert!(try_builtin(&mut other, "pg_try_advisory_lock", key));
}

/// A session's RowExclusiveLock handed to a prepared transaction and back, 200 times, while a
/// third session tries the exclusive built-in as fast as it can: it never gets the key.
#[test]
fn a_token_mode_hold_passes_between_a_session_and_a_prepared_transaction_with_no_gap() {
    let key = 7_220_002_i64;
    clean_up(&mut session(), "pglock-design-handover-");
    let (mut client, mut worker) = (session(), session());
    assert!(take(&mut client, key, "RowExclusiveLock", true));
    // Only now, with the key held, does the prober start.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut prober = session();
            let (mut tries, mut got) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                tries += 1;
                if try_builtin(&mut prober, "pg_try_advisory_lock", key) {
                    got += 1;
                }
            }
            (tries, got)
        })
    };
    for round in 0..200 {
        let gid = format!("pglock-design-handover-{round}");
        // Session to prepared transaction: the worker takes the mode while the client holds it,
        // prepares, and only then does the client let go.
        worker.batch_execute("BEGIN").unwrap();
        assert!(
            take(&mut worker, key, "RowExclusiveLock", false),
            "round {round}"
        );
        worker
            .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
            .unwrap();
        let released = release(&mut client, key);
        assert!(released, "round {round}");
        // And back: the client takes it again beside the prepared holder, which then ends.
        assert!(
            take(&mut client, key, "RowExclusiveLock", true),
            "round {round}"
        );
        finish(&mut worker, &gid);
    }
    stop.store(true, Ordering::Relaxed);
    let (tries, got) = prober.join().unwrap();
    assert_eq!(got, 0, "the key was free at some hand-over ({tries} tries)");
    assert!(
        tries >= 100,
        "the prober ran during the hand-overs ({tries} tries)"
    );
    assert!(release(&mut client, key));
    assert!(try_builtin(&mut client, "pg_try_advisory_lock", key));
}

/// What the pglock worker would do, done by a background worker: it prepares a transaction
/// holding RowExclusiveLock beside a session's hold of the same mode (a hand-over), the key stays
/// taken for the built-ins once the session lets go, and the worker's ROLLBACK PREPARED frees it.
#[test]
fn a_background_worker_prepares_and_finishes_a_token_mode_hold() {
    let key = 7_220_003_i64;
    let mut client = session();
    clean_up(&mut client, "pglock-design-worker-");
    let mut other = session();
    assert!(take(&mut client, key, "RowExclusiveLock", true));
    client
        .execute(
            "SELECT tests.two_phase_in_worker('prepare', $1, 'RowExclusiveLock', 'pglock-design-worker-1')",
            &[&key],
        )
        .unwrap();
    let prepared: i64 = other
        .query_one(
            "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'pglock-design-worker-1'
             AND database = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(prepared, 1, "the worker's transaction is prepared");
    let released = release(&mut client, key);
    assert!(released);
    assert!(
        !try_builtin(&mut other, "pg_try_advisory_lock", key),
        "held by the worker's transaction"
    );
    assert!(!try_builtin(&mut other, "pg_try_advisory_lock_shared", key));
    client
        .execute(
            "SELECT tests.two_phase_in_worker('finish', $1, 'RowExclusiveLock', 'pglock-design-worker-1')",
            &[&key],
        )
        .unwrap();
    assert!(
        try_builtin(&mut other, "pg_try_advisory_lock", key),
        "free after ROLLBACK PREPARED"
    );
}

/// Why the hand-over of the first design does not work, and token-owned locks are held in the
/// built-ins' own modes instead (docs/design/token-locks.md, "What building it showed"): a
/// request that conflicts with no granted hold still queues behind an earlier waiter whose mode
/// it conflicts with (PostgreSQL checks the queue's wait mask first). So a process taking
/// RowExclusiveLock beside a session's RowExclusiveLock is refused as soon as a session waits
/// for the key with pg_advisory_lock: the hand-over would wait behind that waiter, which waits
/// for the very hold being handed over.
#[test]
fn a_compatible_request_still_queues_behind_a_conflicting_waiter() {
    let key = 7_220_010_i64;
    let (mut holder, mut other) = (session(), session());
    assert!(take(&mut holder, key, "RowExclusiveLock", true));
    // Nobody waits: a second RowExclusiveLock is granted beside the first.
    other.batch_execute("BEGIN").unwrap();
    assert!(take(&mut other, key, "RowExclusiveLock", false));
    other.batch_execute("ROLLBACK").unwrap();
    // A session waits for the exclusive built-in (it conflicts with RowExclusiveLock).
    let waiter = std::thread::spawn(move || {
        let mut waiter = session();
        waiter
            .query_one("SELECT pg_advisory_lock($1)", &[&key])
            .unwrap();
        waiter
            .query_one("SELECT pg_advisory_unlock($1)", &[&key])
            .unwrap();
    });
    let start = std::time::Instant::now();
    loop {
        let waiting: i64 = other
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                 AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1",
                &[&key],
            )
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(30));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    other.batch_execute("BEGIN").unwrap();
    assert!(
        !take(&mut other, key, "RowExclusiveLock", false),
        "compatible with every granted hold, and refused all the same: the waiter is ahead"
    );
    other.batch_execute("ROLLBACK").unwrap();
    assert!(release(&mut holder, key));
    waiter.join().unwrap();
}
