//! Safe reads of the backend's own globals: who and where this session is, the clock, the
//! transaction and parallel state. Every other module asks here instead of touching pg_sys.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

/// This backend's process id.
pub fn pid() -> i32 {
    // SAFETY: set once when the backend starts, only read afterwards.
    unsafe { pg_sys::MyProcPid }
}

/// The OID of the database this session is connected to.
pub fn database_id() -> u32 {
    // SAFETY: set once during backend start-up, before any SQL function can run.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// Whether the database is UTF8-encoded (then text needs no conversion to be UTF-8).
pub fn database_is_utf8() -> bool {
    // SAFETY: the database encoding is fixed once the backend has connected.
    unsafe { pg_sys::GetDatabaseEncoding() == pg_sys::pg_enc::PG_UTF8 as i32 }
}

/// Whether this server is a hot standby (or still in crash recovery).
pub fn recovery_in_progress() -> bool {
    // SAFETY: reads shared state under its own spinlock until recovery ends, then a local flag.
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Whether this process is a parallel worker (not the leader).
pub fn is_parallel_worker() -> bool {
    // SAFETY: set once when a parallel worker starts; -1 in every other backend.
    unsafe { pg_sys::ParallelWorkerNumber >= 0 }
}

/// Whether the current transaction is in parallel mode (leader or worker).
pub fn in_parallel_mode() -> bool {
    // SAFETY: reads backend-local transaction state.
    unsafe { pg_sys::IsInParallelMode() }
}

/// The current time, as PostgreSQL's timestamptz microseconds.
pub fn now() -> pg_sys::TimestampTz {
    // SAFETY: reads the clock; no other effect.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// The role this session connected as (pg_stat_activity's usesysid).
pub fn login_role() -> pg_sys::Oid {
    // SAFETY: set during backend start-up, never changed afterwards.
    unsafe { pg_sys::GetAuthenticatedUserId() }
}

/// Whether the current user may read what a session of `role` shows of itself: PostgreSQL's
/// rule for another session's query text in pg_stat_activity (the same role or one it is a
/// member of, a superuser, or a member of pg_read_all_stats).
pub fn may_read_stats_of(role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups through the role membership cache, inside a transaction.
    unsafe {
        let me = pg_sys::GetUserId();
        pg_sys::has_privs_of_role(me, role)
            || pg_sys::has_privs_of_role(me, pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS))
    }
}

/// max_locks_per_transaction and the number of backend slots (MaxBackends): the shared lock
/// table holds their product, in locks.
pub fn lock_table_dimensions() -> (usize, usize) {
    // SAFETY: both are fixed before any backend runs.
    let (per_transaction, backends) = unsafe { (pg_sys::max_locks_per_xact, pg_sys::MaxBackends) };
    (per_transaction.max(1) as usize, backends.max(1) as usize)
}

thread_local! {
    static AT_TRANSACTION_END: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// Calls `callback` at the end of every later transaction of this backend (commit, abort or
/// prepare), once PostgreSQL has decided it but before it releases the transaction's locks.
/// One callback per backend: a later call replaces it.
pub fn at_every_transaction_end(callback: fn()) {
    if AT_TRANSACTION_END.replace(Some(callback)).is_none() {
        // SAFETY: registers a callback for the rest of this backend's life.
        unsafe { pg_sys::RegisterXactCallback(Some(transaction_event), std::ptr::null_mut()) };
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn transaction_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    if matches!(
        event,
        XACT_EVENT_COMMIT | XACT_EVENT_ABORT | XACT_EVENT_PREPARE
    ) {
        if let Some(callback) = AT_TRANSACTION_END.get() {
            callback();
        }
    }
}
