//! Fencing tokens between sessions: each new holder's token is greater than the last, a
//! session's token means nothing to another session, and a holder whose session ended cannot
//! pass fence_ok() through a new session. Crashes and failover: tests/server/fencing_restart.sh
//! and tests/standby/failover.py (run by scripts/test.sh).

mod common;

use std::thread;

use common::{pid, session, wait_until_waiting};

fn fenced(client: &mut postgres::Client, sql: &str) -> Option<i64> {
    client.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn each_new_holder_gets_a_greater_token_and_only_the_holder_passes_the_fence() {
    let (mut a, mut b, mut observer) = (session(), session(), session());
    let token_a = fenced(&mut a, "SELECT pglock.lock_fenced('handover', '5 s')").unwrap();
    assert_eq!(
        fenced(&mut b, "SELECT pglock.try_lock_fenced('handover')"),
        None
    );
    let b_pid = pid(&mut b);
    let waiter = thread::spawn(move || {
        let token = fenced(&mut b, "SELECT pglock.lock_fenced('handover', '30 s')");
        (b, token)
    });
    wait_until_waiting(&mut observer, b_pid);
    let a_pid = pid(&mut a);
    observer
        .execute("SELECT pg_terminate_backend($1)", &[&a_pid])
        .unwrap();
    let (mut b, token_b) = waiter.join().unwrap();
    let token_b = token_b.expect("b got the lock once a's session ended");
    assert!(token_b > token_a, "{token_b} after {token_a}");
    // a's token is worth nothing anywhere now, not even through a new session of a's.
    let mut a_again = session();
    let (old_ok, new_ok): (bool, bool) = {
        let row = a_again
            .query_one(
                "SELECT pglock.fence_ok('handover', $1), pglock.fence_ok('handover', $2)",
                &[&token_a, &token_b],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(
        !old_ok && !new_ok,
        "only the holding session passes its fence"
    );
    let ok: bool = b
        .query_one("SELECT pglock.fence_ok('handover', $1)", &[&token_b])
        .unwrap()
        .get(0);
    assert!(ok);
    // Tokens grow across names and sessions alike.
    let later = fenced(
        &mut a_again,
        "SELECT pglock.try_lock_fenced('another-name')",
    )
    .unwrap();
    assert!(later > token_b);
}

/// With pglock preloaded, tokens come from ranges reserved in the WAL (tokens.rs): sessions
/// taking tokens at the same time, through several ranges, never get the same token twice, and
/// each session's tokens only go up; a token taken after another one was returned is greater.
#[test]
fn tokens_from_shared_ranges_are_unique_and_increasing_across_sessions() {
    const PER_SESSION: i64 = 3000;
    let workers: Vec<_> = (0..4)
        .map(|worker: i32| {
            thread::spawn(move || {
                let mut client = session();
                let tokens: Vec<i64> = client
                    .query_one(
                        "SELECT array_agg(t ORDER BY g) FROM (
                           SELECT g, pglock.try_lock_fenced(format('range:%s:%s', $1::int, g)) AS t
                           FROM generate_series(1, $2::bigint) g) s",
                        &[&worker, &PER_SESSION],
                    )
                    .unwrap()
                    .get(0);
                client.query_one("SELECT pglock.unlock_all()", &[]).unwrap();
                tokens
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut last_of_each = Vec::new();
    for worker in workers {
        let tokens = worker.join().unwrap();
        assert_eq!(tokens.len() as i64, PER_SESSION);
        assert!(
            tokens.windows(2).all(|pair| pair[0] < pair[1]),
            "a session's tokens went down"
        );
        last_of_each.push(*tokens.last().unwrap());
        all.extend(tokens);
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "two holds got the same token");
    let mut after = session();
    let later: i64 = after
        .query_one("SELECT pglock.try_lock_fenced('range:after')", &[])
        .unwrap()
        .get(0);
    assert!(later > *last_of_each.iter().max().unwrap());
}

/// Ways a fenced hold ends outside pglock inside an open transaction: (what comes before the
/// fenced call, the fenced call, how the hold ends).
const ENDINGS: [(&str, &str, &str); 3] = [
    (
        "SAVEPOINT s",
        "SELECT pglock.xact_lock_fenced(n) FROM fence_names WHERE id = 1",
        "ROLLBACK TO SAVEPOINT s",
    ),
    (
        "",
        "SELECT pglock.lock_fenced(n) FROM fence_names WHERE id = 1",
        "SELECT pg_advisory_unlock(pglock.key(n)) FROM fence_names WHERE id = 1",
    ),
    (
        "",
        "SELECT pglock.lock_fenced(n) FROM fence_names WHERE id = 1",
        "SELECT pg_advisory_unlock_all()",
    ),
];

/// A hold that ended outside pglock (a savepoint rollback, a built-in unlock) and is taken again
/// through pglock in the same transaction is a new hold: its token is new, greater than the one
/// another session got in between, and the old token no longer passes the fence. Run with and
/// without a held() call before the retake (held() sweeps what the registry kept, which must not
/// be what makes this pass), several rounds each. The name comes from a table row with other
/// data after it.
#[test]
fn a_hold_taken_again_after_it_ended_outside_pglock_gets_a_new_token() {
    let (mut a, mut b) = (session(), session());
    let name = "fence-retake-€";
    for client in [&mut a, &mut b] {
        client
            .execute(
                "CREATE TEMP TABLE fence_names AS SELECT 1 AS id, $1::text AS n, 'data after the name' AS other",
                &[&name],
            )
            .unwrap();
    }
    for (before, take, end) in ENDINGS {
        for sweep in [false, true] {
            for _round in 0..5 {
                a.batch_execute("BEGIN").unwrap();
                if !before.is_empty() {
                    a.batch_execute(before).unwrap();
                }
                let t1: i64 = a.query_one(take, &[]).unwrap().get(0);
                let since: String = a
                    .query_one(
                        "SELECT since::text FROM pglock.held() WHERE name = $1",
                        &[&name],
                    )
                    .unwrap()
                    .get(0);
                a.batch_execute(end).unwrap();
                let t2: i64 = b
                    .query_one(
                        "SELECT pglock.lock_fenced(n, '5 s') FROM fence_names WHERE id = 1",
                        &[],
                    )
                    .unwrap()
                    .get::<_, Option<i64>>(0)
                    .expect("b gets the lock a no longer holds");
                assert!(b
                    .query_one("SELECT pglock.unlock($1)", &[&name])
                    .unwrap()
                    .get::<_, bool>(0));
                if sweep {
                    a.query("SELECT * FROM pglock.held()", &[]).unwrap();
                }
                let row = a
                    .query_one(
                        "SELECT pglock.lock_fenced(n), pglock.fence_ok(n, $1), pglock.token(n)
                         FROM fence_names WHERE id = 1",
                        &[&t1],
                    )
                    .unwrap();
                let (t3, old_passes, current): (Option<i64>, bool, Option<i64>) =
                    (row.get(0), row.get(1), row.get(2));
                let t3 = t3.expect("a takes the free lock again");
                assert!(
                    t1 < t2 && t2 < t3,
                    "{take} / {end} (held() between: {sweep}): tokens {t1}, then {t2} to another \
                     session, then {t3} for a new hold"
                );
                assert!(!old_passes, "the ended hold's token {t1} passes the fence");
                assert_eq!(current, Some(t3));
                let new_passes: bool = a
                    .query_one("SELECT pglock.fence_ok($1, $2)", &[&name, &t3])
                    .unwrap()
                    .get(0);
                assert!(new_passes);
                // The new hold's start is its own, not the ended hold's.
                let rows: Vec<bool> = common::column(
                    &mut a,
                    "SELECT since > $2::text::timestamptz FROM pglock.held() WHERE name = $1",
                    &[&name, &since],
                );
                assert_eq!(rows, [true], "held() shows one row, begun by the new hold");
                a.batch_execute("COMMIT; SELECT pglock.unlock_all()")
                    .unwrap();
            }
        }
    }
}
