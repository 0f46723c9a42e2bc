#![doc = include_str!("../README.md")]

mod key;
mod session;
mod token;

pub use key::{key, LockKey};
pub use session::{lock, lock_timeout, try_lock, LockGuard};
pub use token::{acquire, TokenLock};

/// What a call can fail with: sqlx's errors, as sqlx returns them.
pub type Error = sqlx::Error;
