//! Lock names to advisory-lock keys, the derivation of the pglock extension's `pglock.key(name)`
//! and of sqlx's `PgAdvisoryLock::new(name)`: a name and its key are one lock for all three.

use hkdf::Hkdf;
use sha2::Sha256;

/// The HKDF `info` that sqlx and pglock derive keys with.
const KEY_INFO: &[u8] = b"SQLx (Rust) Postgres advisory lock";

/// The advisory-lock key of a name: HKDF-SHA256 of its UTF-8 bytes with no salt, the first 8
/// bytes of output read as a little-endian `i64`. `pg_advisory_lock(key(name))` from any client
/// is the same lock as `pglock.lock(name)`.
pub fn key(name: &str) -> i64 {
    let mut output = [0u8; 8];
    Hkdf::<Sha256>::new(None, name.as_bytes())
        .expand(KEY_INFO, &mut output)
        .expect("8 bytes is within HKDF-SHA256's output limit");
    i64::from_le_bytes(output)
}

/// A lock named by a string (the key is [`key`] of it, and `pglock.locks` shows the name) or
/// given by its bigint key (the built-ins' `pg_advisory_lock(key)`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LockKey {
    /// A name, passed to pglock's text functions.
    Name(String),
    /// A bigint key, passed to pglock's bigint functions.
    Key(i64),
}

impl LockKey {
    /// The bigint key, derived from the name if it is one.
    pub fn as_key(&self) -> i64 {
        match self {
            LockKey::Name(name) => key(name),
            LockKey::Key(key) => *key,
        }
    }

    /// The SQL cast that picks pglock's text or bigint form of a function.
    pub(crate) fn cast(&self) -> &'static str {
        match self {
            LockKey::Name(_) => "text",
            LockKey::Key(_) => "bigint",
        }
    }
}

impl From<&str> for LockKey {
    fn from(name: &str) -> Self {
        LockKey::Name(name.to_owned())
    }
}

impl From<String> for LockKey {
    fn from(name: String) -> Self {
        LockKey::Name(name)
    }
}

impl From<i64> for LockKey {
    fn from(key: i64) -> Self {
        LockKey::Key(key)
    }
}

impl std::fmt::Display for LockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockKey::Name(name) => write!(f, "{name:?}"),
            LockKey::Key(key) => write!(f, "key {key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_sqlx_s_published_example() {
        // sqlx's documentation of PgAdvisoryLock::new gives this name and key.
        assert_eq!(
            super::key("my first Postgres advisory lock!"),
            -5560419505042474287
        );
    }
}
