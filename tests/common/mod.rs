//! Helpers shared by the multi-session test binaries: connections to the test instance that
//! `cargo pgrx test` starts (with pglock preloaded), and the statements every test needs.
#![allow(dead_code)]

use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::Client;

/// A new connection to the test instance (started on first use).
pub fn session() -> Client {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        // Any pg_test function starts the framework; this one does nothing else.
        // The same settings as pg_test::postgresql_conf_options() in src/lib.rs.
        let settings = vec![
            "shared_preload_libraries = 'pglock'",
            "max_locks_per_transaction = 256",
            "pglock.max_leases = 10001",
            "max_prepared_transactions = 40",
            "pglock.max_token_locks = 30",
            "max_worker_processes = 40",
        ];
        pgrx_tests::run_test("sessions_can_start", None, settings).expect("test instance starts");
    });
    pgrx_tests::client()
        .expect("connects to the test instance")
        .0
}

pub fn pid(client: &mut Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

pub fn bool_of(client: &mut Client, sql: &str, name: &str) -> bool {
    client.query_one(sql, &[&name]).unwrap().get(0)
}

pub fn try_lock(client: &mut Client, name: &str) -> bool {
    bool_of(client, "SELECT pglock.try_lock($1)", name)
}

pub fn unlock(client: &mut Client, name: &str) -> bool {
    bool_of(client, "SELECT pglock.unlock($1)", name)
}

/// Blocks until `pid` is waiting for an advisory lock (at most 30 s).
pub fn wait_until_waiting(observer: &mut Client, pid: i32) {
    let start = Instant::now();
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = $1",
                &[&pid],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pid {pid} never started waiting"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Blocks until `pid` runs a statement whose text matches the LIKE `pattern` (at most 30 s):
/// tag each statement of a loop, so that a canceller waits for this one and not the last.
pub fn wait_until_running(observer: &mut Client, pid: i32, pattern: &str) {
    assert!(running_or_ended(
        observer,
        pid,
        pattern,
        &std::sync::atomic::AtomicBool::new(false)
    ));
}

/// Polls until `pid` runs a statement matching the LIKE `pattern` (true) or `ended` is set
/// (false); at most 30 s.
pub fn running_or_ended(
    observer: &mut Client,
    pid: i32,
    pattern: &str,
    ended: &std::sync::atomic::AtomicBool,
) -> bool {
    let start = Instant::now();
    while !ended.load(std::sync::atomic::Ordering::SeqCst) {
        let active: bool = observer
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_stat_activity
                 WHERE pid = $1 AND state = 'active' AND query LIKE $2)",
                &[&pid, &pattern],
            )
            .unwrap()
            .get(0);
        if active {
            return true;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pid {pid} never ran {pattern}"
        );
        thread::sleep(Duration::from_millis(2));
    }
    false
}

pub fn sqlstate(error: &postgres::Error) -> Option<&SqlState> {
    error.code()
}

/// Creates login roles afresh (dropping any left by an earlier run): `plain` ones, and
/// `monitors`, members of pg_read_all_stats.
pub fn fresh_login_roles(admin: &mut Client, plain: &[&str], monitors: &[&str]) {
    for role in plain.iter().chain(monitors) {
        admin
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"
            ))
            .unwrap();
    }
    for role in monitors {
        admin
            .batch_execute(&format!("GRANT pg_read_all_stats TO {role}"))
            .unwrap();
    }
}

/// A new connection to the test instance as another role (the instance trusts local logins).
pub fn session_as(role: &str) -> Client {
    let mut first = session();
    let port: String = first.query_one("SHOW port", &[]).unwrap().get(0);
    postgres::Config::new()
        .host("localhost")
        .port(port.parse().unwrap())
        .user(role)
        .dbname(pgrx_tests::get_pg_dbname())
        .connect(postgres::NoTls)
        .unwrap_or_else(|error| panic!("connects as {role}: {error}"))
}

/// The server's major version times 10000 (server_version_num).
pub fn server_version_num(client: &mut Client) -> i32 {
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .unwrap()
        .get(0);
    version.parse().unwrap()
}

/// The SQLSTATE and primary message of a failed statement.
pub fn code_and_message(error: &postgres::Error) -> (String, String) {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("a server error, not {error:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// How many advisory locks (held or awaited, any keyspace) this session has in pg_locks,
/// which sees every hold, not only the ones pglock recorded.
pub fn own_advisory_locks(client: &mut impl postgres::GenericClient) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

/// The first column of every row that `sql` returns.
pub fn column<T: postgres::types::FromSqlOwned>(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Vec<T> {
    client
        .query(sql, params)
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Locks owned by a token, for tests/token_locks.rs and tests/token_trust.rs.
pub mod tokens {
    use postgres::Client;

    /// `pglock.acquire(name, ttl, timeout)`: the token, or None when not granted in time.
    pub fn acquire(client: &mut Client, name: &str, ttl: &str, timeout: &str) -> Option<i64> {
        client
            .query_one(
                "SELECT pglock.acquire($1, $2::text::interval, $3::text::interval)",
                &[&name, &ttl, &timeout],
            )
            .unwrap()
            .get(0)
    }

    fn call_bool(client: &mut Client, sql: &str, name: &str, token: i64) -> bool {
        client.query_one(sql, &[&name, &token]).unwrap().get(0)
    }

    /// `pglock.release(name, token)`.
    pub fn release(client: &mut Client, name: &str, token: i64) -> bool {
        call_bool(client, "SELECT pglock.release($1, $2)", name, token)
    }

    /// `pglock.renew(name, token)`.
    pub fn renew(client: &mut Client, name: &str, token: i64) -> bool {
        call_bool(client, "SELECT pglock.renew($1, $2)", name, token)
    }

    /// `pglock.fence_ok(name, token)`.
    pub fn fence_ok(client: &mut Client, name: &str, token: i64) -> bool {
        call_bool(client, "SELECT pglock.fence_ok($1, $2)", name, token)
    }

    /// The tests of one binary share the server's table of token-owned locks (and its
    /// settings): each takes this first, so that they run one at a time.
    pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
