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
