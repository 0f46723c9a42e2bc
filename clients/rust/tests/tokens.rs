//! Token-owned locks (needs pglock preloaded): the keep-alive holds a lock past its TTL, a lost
//! lock is reported, and release frees it.

mod common;

use std::time::Duration;

use pglock_client::acquire;

#[tokio::test]
async fn the_keep_alive_holds_past_the_ttl_until_release() {
    let pool = common::pool().await;
    let name = "rust client: token kept";
    let held = acquire(&pool, name, Duration::from_secs(1), Some(Duration::ZERO))
        .await
        .unwrap()
        .expect("free");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let other = acquire(&pool, name, Duration::from_secs(1), Some(Duration::ZERO))
        .await
        .unwrap();
    assert!(other.is_none(), "expired although renewed");
    assert!(!held.is_lost());
    let token = held.token();
    assert!(held.release().await.unwrap());
    let next = acquire(&pool, name, Duration::from_secs(1), Some(Duration::ZERO))
        .await
        .unwrap()
        .expect("free after the release");
    assert!(next.token() > token, "tokens grow");
    assert!(next.release().await.unwrap());
}

#[tokio::test]
async fn a_lost_lock_is_reported() {
    let pool = common::pool().await;
    let name = "rust client: token lost";
    let mut held = acquire(&pool, name, Duration::from_secs(1), None)
        .await
        .unwrap()
        .expect("granted");
    // Someone with the token (the same role) releases it behind the holder's back.
    let released: bool = sqlx::query_scalar("SELECT pglock.release($1::text, $2)")
        .bind(name)
        .bind(held.token())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(released);
    tokio::time::timeout(Duration::from_secs(10), held.lost())
        .await
        .expect("the loss was noticed");
    assert!(held.is_lost());
    assert!(!held.release().await.unwrap(), "released twice");
}
