//! The server the tests run against: DATABASE_URL (clients/rust/test.sh sets it).
#![allow(dead_code)]

use sqlx::PgPool;

/// A pool of connections to the server.
pub async fn pool() -> PgPool {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names a server with pglock");
    PgPool::connect(&url).await.expect("connects")
}

/// Whether `name` is free: a try from a connection of its own, given back at once.
pub async fn is_free(pool: &PgPool, name: &str) -> bool {
    let mut conn = pool.acquire().await.unwrap();
    let free: bool = sqlx::query_scalar("SELECT pglock.try_lock($1::text)")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    if free {
        let _: bool = sqlx::query_scalar("SELECT pglock.unlock($1::text)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    }
    free
}
