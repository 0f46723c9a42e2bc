//! Keys: a name's key is sqlx's PgAdvisoryLock key and the server's pglock.key(), and a lock this
//! crate takes and one sqlx's PgAdvisoryLock takes exclude each other, both ways.

mod common;

use pglock_client::{key, try_lock, LockKey};
use sqlx::postgres::{PgAdvisoryLock, PgAdvisoryLockKey};
use sqlx::Either;

#[test]
fn a_name_s_key_is_sqlx_s() {
    let long = "x".repeat(1000);
    for name in ["", "a", "job:42", "naïve ümlaut", "日本語", long.as_str()] {
        assert_eq!(
            PgAdvisoryLock::new(name).key(),
            &PgAdvisoryLockKey::BigInt(key(name)),
            "{name:?}"
        );
        assert_eq!(LockKey::from(name).as_key(), key(name));
    }
    assert_eq!(LockKey::from(42i64).as_key(), 42);
}

#[tokio::test]
async fn the_server_derives_the_same_keys() {
    let pool = common::pool().await;
    for name in ["a", "job:42", "naïve ümlaut", "日本語"] {
        let server: i64 = sqlx::query_scalar("SELECT pglock.key($1::text)")
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(server, key(name), "{name:?}");
    }
}

#[tokio::test]
async fn sqlx_s_advisory_lock_and_this_crate_exclude_each_other_both_ways() {
    let pool = common::pool().await;
    let name = "rust client: sqlx agrees";
    let sqlx_lock = PgAdvisoryLock::new(name);
    // sqlx holds it: this crate is refused.
    let Either::Left(sqlx_guard) = sqlx_lock
        .try_acquire(pool.acquire().await.unwrap())
        .await
        .unwrap()
    else {
        panic!("sqlx could not take a free lock")
    };
    let refused = try_lock(pool.acquire().await.unwrap(), name).await.unwrap();
    assert!(
        matches!(refused, Either::Right(_)),
        "taken while sqlx holds it"
    );
    sqlx_guard.release_now().await.unwrap();
    // This crate holds it (by name, and by the same key): sqlx is refused.
    let Either::Left(guard) = try_lock(pool.acquire().await.unwrap(), name).await.unwrap() else {
        panic!("a free lock was refused")
    };
    let refused = sqlx_lock
        .try_acquire(pool.acquire().await.unwrap())
        .await
        .unwrap();
    assert!(
        matches!(refused, Either::Right(_)),
        "sqlx took a lock this crate holds"
    );
    let by_key = try_lock(pool.acquire().await.unwrap(), key(name))
        .await
        .unwrap();
    assert!(
        matches!(by_key, Either::Right(_)),
        "the bigint key is another lock"
    );
    guard.release().await.unwrap();
    let Either::Left(sqlx_guard) = sqlx_lock
        .try_acquire(pool.acquire().await.unwrap())
        .await
        .unwrap()
    else {
        panic!("sqlx could not take the lock once released")
    };
    sqlx_guard.release_now().await.unwrap();
}
