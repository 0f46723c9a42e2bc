//! Session locks through guards, against a real server.

mod common;

use std::time::{Duration, Instant};

use pglock_client::{lock, lock_timeout, try_lock};
use sqlx::Either;

#[tokio::test]
async fn a_guard_holds_until_released_and_hands_the_connection_back() {
    let pool = common::pool().await;
    let name = "rust client: guard";
    let guard = lock(pool.acquire().await.unwrap(), name).await.unwrap();
    assert_eq!(guard.key(), &name.into());
    assert!(!common::is_free(&pool, name).await);
    let mut conn = guard.release().await.unwrap();
    assert!(common::is_free(&pool, name).await);
    // The connection works on after the release.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_timed_wait_returns_the_connection_and_leaves_nothing() {
    let pool = common::pool().await;
    let name = "rust client: timeout";
    let Either::Left(guard) = try_lock(pool.acquire().await.unwrap(), name).await.unwrap() else {
        panic!("a free lock was refused")
    };
    let started = Instant::now();
    let waited = lock_timeout(
        pool.acquire().await.unwrap(),
        name,
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let Either::Right(mut conn) = waited else {
        panic!("granted while held")
    };
    assert!(started.elapsed() >= Duration::from_millis(150));
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM pglock.held()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(held, 0, "a timed-out wait left a hold");
    // Granted once the holder lets go.
    let waiter = tokio::spawn(lock_timeout(conn, name, Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    guard.release().await.unwrap();
    let Either::Left(second) = waiter.await.unwrap().unwrap() else {
        panic!("not granted after the release")
    };
    second.release().await.unwrap();
}

#[tokio::test]
async fn a_dropped_guard_leaves_the_lock_with_its_session_and_leak_keeps_it() {
    let pool = common::pool().await;
    let name = "rust client: dropped";
    let mut owner = pool.acquire().await.unwrap().detach();
    {
        let guard = lock(&mut owner, name).await.unwrap();
        drop(guard); // logs a warning; the lock stays with `owner`'s session
    }
    assert!(
        !common::is_free(&pool, name).await,
        "the session still holds it"
    );
    let kept = lock(&mut owner, name).await.unwrap().leak();
    let released: i32 = sqlx::query_scalar("SELECT pglock.unlock_all()")
        .fetch_one(&mut *kept)
        .await
        .unwrap();
    assert_eq!(released, 1, "one name, held twice");
    assert!(common::is_free(&pool, name).await);
}
