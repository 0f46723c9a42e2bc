//! Locks owned by a token (pglock.acquire): held by prepared transactions, so that they outlive
//! the session that took them and are renewed or released from any connection that has the
//! token. docs/design/token-locks.md gives the reasons; in short:
//!
//! - A token-owned lock is ExclusiveLock (exclusive) or ShareLock (shared) on the key's advisory
//!   tag, the built-ins' own modes, held by a prepared transaction: so it and every session lock
//!   of the key exclude each other both ways, it shows in pg_locks (with no pid), and its
//!   waiters queue in PostgreSQL's own queue, in arrival order, beside the built-ins' waiters.
//!   Two-phase commit is PostgreSQL's only way to hand a lock from one process to another, and
//!   it makes the lock survive a restart, a crash and the promotion of a standby.
//! - A SQL function cannot prepare its caller's transaction, so background workers take and
//!   prepare: the token worker tries each new request without waiting, and ends locks (release,
//!   expiry); when the key is taken, a waiter process (a dynamic background worker) waits in the
//!   lock's queue on the caller's behalf, while the caller's session sleeps on a condition
//!   variable until it is granted or the caller's timeout passes.
//! - The table in shared memory (pglock.max_token_locks entries, one LWLock) says who owns what:
//!   renew and fence_ok read and write only the table.
//!
//! Every entry goes Free -> Asked -> (Refused -> Waiting ->) Granting -> Held -> Ending -> Free.
//! The session that asked owns the entry until it is Held; a session that gives up (timeout,
//! cancel, exit) marks it abandoned, and whoever next moves it frees it or ends the lock.
//!
//! Files, one role each: `table` (the entries and their states), `acquire` (a session asking and
//! waiting), `holding` (renew, release, fence_ok and the listings), `record` (the prepared
//! transaction and its GID), `worker` (the token worker) and `waiter` (waiter processes).

mod acquire;
mod holding;
mod record;
mod table;
mod waiter;
mod worker;

pub use acquire::{acquire, Request};
pub use holding::{fence_holds, occupancy, release, renew, visible, waiting};
pub use table::{attach, max_prepared_transactions, request_lwlock, shmem_size};
pub use worker::register_worker;
