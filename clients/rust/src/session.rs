//! Session locks on a connection the caller owns: each taking function consumes the connection
//! and hands it back inside a guard (or, when the lock was not taken, as it was), as sqlx's
//! `PgAdvisoryLock` does.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use sqlx::{Either, PgConnection};

use crate::key::LockKey;
use crate::Error;

/// A timeout as a PostgreSQL interval, in the text form the server parses.
pub(crate) fn interval(duration: Duration) -> String {
    format!("{} microseconds", duration.as_micros())
}

/// Runs `SELECT pglock.<function>(key[, timeout])` and returns its boolean.
async fn call(
    conn: &mut PgConnection,
    function: &str,
    key: &LockKey,
    timeout: Option<Duration>,
) -> Result<bool, Error> {
    let sql = match timeout {
        Some(_) => format!(
            "SELECT pglock.{function}($1::{}, $2::text::interval)",
            key.cast()
        ),
        None => format!("SELECT pglock.{function}($1::{})", key.cast()),
    };
    let mut query = sqlx::query_scalar::<_, bool>(&sql);
    query = match key {
        LockKey::Name(name) => query.bind(name.clone()),
        LockKey::Key(key) => query.bind(*key),
    };
    if let Some(timeout) = timeout {
        query = query.bind(interval(timeout));
    }
    query.fetch_one(conn).await
}

/// A session lock this crate took on connection `C`. Release it with
/// [`release`](LockGuard::release), which hands the connection back. Dropped while still held,
/// it logs a warning: the lock then stays held by the connection's session until that session
/// ends, and a pooled connection goes back to its pool still holding it.
///
/// The guard derefs to the connection, so the work can run on it while the lock is held.
pub struct LockGuard<C: AsMut<PgConnection>> {
    conn: Option<C>,
    key: LockKey,
}

impl<C: AsMut<PgConnection>> LockGuard<C> {
    /// The lock this guard holds.
    pub fn key(&self) -> &LockKey {
        &self.key
    }

    /// Releases the lock (one hold of it: holds stack) and returns the connection.
    pub async fn release(mut self) -> Result<C, Error> {
        let mut conn = self
            .conn
            .take()
            .expect("a guard has its connection until released");
        call(conn.as_mut(), "unlock", &self.key, None).await?;
        Ok(conn)
    }

    /// Returns the connection and leaves the lock held by its session, without a warning.
    pub fn leak(mut self) -> C {
        self.conn
            .take()
            .expect("a guard has its connection until released")
    }
}

impl<C: AsMut<PgConnection>> Deref for LockGuard<C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.conn
            .as_ref()
            .expect("a guard has its connection until released")
    }
}

impl<C: AsMut<PgConnection>> DerefMut for LockGuard<C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn
            .as_mut()
            .expect("a guard has its connection until released")
    }
}

impl<C: AsMut<PgConnection>> AsMut<PgConnection> for LockGuard<C> {
    fn as_mut(&mut self) -> &mut PgConnection {
        self.deref_mut().as_mut()
    }
}

impl<C: AsMut<PgConnection>> Drop for LockGuard<C> {
    fn drop(&mut self) {
        if self.conn.is_some() {
            log::warn!(
                "pglock: the session lock {} was dropped while held: it stays held until its \
                 connection's session ends (release it with LockGuard::release().await, or \
                 keep it on purpose with leak())",
                self.key
            );
        }
    }
}

/// Takes the exclusive session lock on `key`, waiting for it in PostgreSQL's queue without a
/// deadline of pglock's (the session's `statement_timeout` and a cancel still end the wait).
pub async fn lock<C: AsMut<PgConnection>>(
    mut conn: C,
    key: impl Into<LockKey>,
) -> Result<LockGuard<C>, Error> {
    let key = key.into();
    call(conn.as_mut(), "lock", &key, None).await?;
    Ok(LockGuard {
        conn: Some(conn),
        key,
    })
}

/// Takes the exclusive session lock on `key` if it is free, without waiting: the guard, or the
/// connection back when another session holds it.
pub async fn try_lock<C: AsMut<PgConnection>>(
    mut conn: C,
    key: impl Into<LockKey>,
) -> Result<Either<LockGuard<C>, C>, Error> {
    let key = key.into();
    if call(conn.as_mut(), "try_lock", &key, None).await? {
        Ok(Either::Left(LockGuard {
            conn: Some(conn),
            key,
        }))
    } else {
        Ok(Either::Right(conn))
    }
}

/// Takes the exclusive session lock on `key`, waiting at most `timeout` in PostgreSQL's queue:
/// the guard, or the connection back (usable: a timed-out wait leaves nothing behind) when it
/// was not granted in time.
pub async fn lock_timeout<C: AsMut<PgConnection>>(
    mut conn: C,
    key: impl Into<LockKey>,
    timeout: Duration,
) -> Result<Either<LockGuard<C>, C>, Error> {
    let key = key.into();
    if call(conn.as_mut(), "lock", &key, Some(timeout)).await? {
        Ok(Either::Left(LockGuard {
            conn: Some(conn),
            key,
        }))
    } else {
        Ok(Either::Right(conn))
    }
}
