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
