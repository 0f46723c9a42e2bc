//! Locks owned by a token (`pglock.acquire`): held by the server for a TTL, renewed by a task of
//! their own, released with the token from any connection of a pool.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::key::LockKey;
use crate::session::interval;
use crate::Error;

/// A token-owned lock that [`acquire`] took. A task renews it every third of its TTL until
/// [`release`](TokenLock::release); when a renewal finds it gone (released elsewhere, expired,
/// cut short by `pglock.token_max_hold`), or no renewal reaches the server for a whole TTL, the
/// lock is lost: [`lost`](TokenLock::lost) completes and [`is_lost`](TokenLock::is_lost) is true.
/// Dropped unreleased, it stops renewing and logs a warning: the lock stays held until its TTL
/// passes.
pub struct TokenLock {
    pool: PgPool,
    key: LockKey,
    token: i64,
    lost: watch::Receiver<bool>,
    keeper: Option<JoinHandle<()>>,
}

/// The SQL of `pglock.<function>(key, token)` for a key's form.
fn with_token(function: &str, key: &LockKey) -> String {
    format!("SELECT pglock.{function}($1::{}, $2)", key.cast())
}

async fn call_with_token(
    pool: &PgPool,
    function: &str,
    key: &LockKey,
    token: i64,
) -> Result<bool, Error> {
    let sql = with_token(function, key);
    let query = sqlx::query_scalar::<_, bool>(&sql);
    let query = match key {
        LockKey::Name(name) => query.bind(name.clone()),
        LockKey::Key(key) => query.bind(*key),
    };
    query.bind(token).fetch_one(pool).await
}

/// Takes the exclusive token-owned lock on `key` for `ttl` (at least a second), waiting at most
/// `timeout` (None: without a deadline of pglock's); `None` when it was not granted in time.
/// Needs pglock in `shared_preload_libraries` and `max_prepared_transactions` above 0. Each
/// statement runs on any connection of `pool`, so it works behind a transaction-mode pooler.
pub async fn acquire(
    pool: &PgPool,
    key: impl Into<LockKey>,
    ttl: Duration,
    timeout: Option<Duration>,
) -> Result<Option<TokenLock>, Error> {
    let key = key.into();
    let sql = format!(
        "SELECT pglock.acquire($1::{}, $2::text::interval, $3::text::interval)",
        key.cast()
    );
    let query = sqlx::query_scalar::<_, Option<i64>>(&sql);
    let query = match &key {
        LockKey::Name(name) => query.bind(name.clone()),
        LockKey::Key(key) => query.bind(*key),
    };
    let token = query
        .bind(interval(ttl))
        .bind(timeout.map(interval))
        .fetch_one(pool)
        .await?;
    let Some(token) = token else {
        return Ok(None);
    };
    let (lost_sender, lost) = watch::channel(false);
    let keeper = tokio::spawn(keep_alive(
        pool.clone(),
        key.clone(),
        token,
        ttl,
        Arc::new(lost_sender),
    ));
    Ok(Some(TokenLock {
        pool: pool.clone(),
        key,
        token,
        lost,
        keeper: Some(keeper),
    }))
}

/// Renews every third of `ttl` until a renewal finds the lock gone, or none succeeds for `ttl`.
async fn keep_alive(
    pool: PgPool,
    key: LockKey,
    token: i64,
    ttl: Duration,
    lost: Arc<watch::Sender<bool>>,
) {
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match call_with_token(&pool, "renew", &key, token).await {
            Ok(true) => last_renewed = Instant::now(),
            Err(_) if last_renewed.elapsed() < ttl => {}
            Ok(false) | Err(_) => {
                let _ = lost.send(true);
                return;
            }
        }
    }
}

impl TokenLock {
    /// The lock's fencing token: pass it to `pglock.fence_ok(name, token)` in the statements
    /// that write, so that they fail once the lock has passed on.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// The lock.
    pub fn key(&self) -> &LockKey {
        &self.key
    }

    /// Whether the keep-alive found the lock lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Completes when the lock is lost (never, while it holds): select on it beside the work.
    pub async fn lost(&mut self) {
        while !*self.lost.borrow_and_update() {
            if self.lost.changed().await.is_err() {
                // The keep-alive ended without losing the lock (it was released): wait forever.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Renews the lock by its TTL from now; false when it is gone.
    pub async fn renew(&self) -> Result<bool, Error> {
        call_with_token(&self.pool, "renew", &self.key, self.token).await
    }

    /// Stops the renewals and releases the lock; false when it had been lost already.
    pub async fn release(mut self) -> Result<bool, Error> {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        call_with_token(&self.pool, "release", &self.key, self.token).await
    }
}

impl Drop for TokenLock {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
            if !self.is_lost() {
                log::warn!(
                    "pglock: the token-owned lock {} (token {}) was dropped unreleased: it is no \
                     longer renewed, and stays held until its TTL passes (release it with \
                     TokenLock::release().await)",
                    self.key,
                    self.token
                );
            }
        }
    }
}
