//! From a lock name to a key: the `text` argument and its checks, the sqlx-compatible key
//! derivation, and the backend's memo of names it has seen. Knows nothing of locks.

pub mod fast_hash;
pub mod key;
pub mod memo;
pub mod name;
