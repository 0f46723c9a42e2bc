//! Key compatibility shown with the real library: Rust sqlx's `PgAdvisoryLock::new(name)` on one
//! connection and `pglock.try_lock(name)` on another exclude each other.

mod common;

use common::{session, try_lock, unlock};
use sqlx::postgres::{PgAdvisoryLock, PgAdvisoryLockKey, PgConnection};
use sqlx::{Connection, Either};

#[test]
fn sqlx_advisory_locks_and_pglock_exclude_each_other() {
    let name = "sqlx and pglock agree";
    // The synchronous postgres client runs its own runtime: sqlx gets a separate one, and the
    // two are never nested.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut pglock_session = session();
    let key: i64 = pglock_session
        .query_one("SELECT pglock.key($1)", &[&name])
        .unwrap()
        .get(0);
    let port: String = pglock_session.query_one("SHOW port", &[]).unwrap().get(0);
    let url = format!(
        "postgres://{}@localhost:{port}/{}",
        pgrx_tests::get_pg_user(),
        pgrx_tests::get_pg_dbname()
    );

    let sqlx_lock = PgAdvisoryLock::new(name);
    assert!(matches!(sqlx_lock.key(), PgAdvisoryLockKey::BigInt(k) if *k == key));

    // sqlx holds it: pglock is refused.
    let guard = runtime.block_on(async {
        let connection = PgConnection::connect(&url).await.expect("sqlx connects");
        match sqlx_lock.try_acquire(connection).await.unwrap() {
            Either::Left(guard) => guard,
            Either::Right(_) => panic!("sqlx could not take a free lock"),
        }
    });
    assert!(!try_lock(&mut pglock_session, name));
    let connection = runtime.block_on(guard.release_now()).unwrap();

    // pglock holds it: sqlx is refused, and gets it once pglock lets go.
    assert!(try_lock(&mut pglock_session, name));
    let connection = match runtime.block_on(sqlx_lock.try_acquire(connection)).unwrap() {
        Either::Left(_) => panic!("sqlx took a lock pglock holds"),
        Either::Right(connection) => connection,
    };
    assert!(unlock(&mut pglock_session, name));
    let acquired = runtime.block_on(sqlx_lock.try_acquire(connection)).unwrap();
    let Either::Left(guard) = acquired else {
        panic!("sqlx could not take the lock after pglock released it")
    };
    runtime.block_on(guard.release_now()).unwrap();
}
