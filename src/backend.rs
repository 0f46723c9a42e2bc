//! Safe reads of the backend's own globals: who and where this session is, the clock, the
//! transaction and parallel state. Every other module asks here instead of touching pg_sys.

use std::cell::{Cell, RefCell};

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
///
/// Once recovery has ended it never resumes for this backend (a server goes back to recovery
/// only through a restart), so a "no" is remembered and later calls cost one thread-local
/// read instead of a guarded call into PostgreSQL on every acquisition.
pub fn recovery_in_progress() -> bool {
    thread_local! {
        static RECOVERY_ENDED: Cell<bool> = const { Cell::new(false) };
    }
    if RECOVERY_ENDED.get() {
        return false;
    }
    // SAFETY: reads shared state under its own spinlock until recovery ends, then a local flag.
    let in_recovery = unsafe { pg_sys::RecoveryInProgress() };
    RECOVERY_ENDED.set(!in_recovery);
    in_recovery
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
    // What GetCurrentTimestamp() computes, read here directly: the call through pg_sys pays
    // for an error guard (sigsetjmp) that a clock read never needs, on every acquisition.
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    (now.tv_sec - POSTGRES_EPOCH_UNIX_SECONDS) * 1_000_000 + now.tv_nsec / 1_000
}

/// 2000-01-01 00:00:00 UTC, PostgreSQL's timestamp epoch, in Unix seconds.
const POSTGRES_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// The role this session connected as (pg_stat_activity's usesysid).
pub fn login_role() -> pg_sys::Oid {
    // SAFETY: set during backend start-up, never changed afterwards.
    unsafe { pg_sys::GetAuthenticatedUserId() }
}

/// Whether the current user may read what a session of `role` shows of itself: PostgreSQL's
/// rule for another session's query text in pg_stat_activity (the same role or one it is a
/// member of, a superuser, or a member of pg_read_all_stats).
pub fn may_read_stats_of(role: pg_sys::Oid) -> bool {
    has_privileges_of(role) || may_read_all_stats()
}

/// Whether the current user has the privileges of `role` (is it, is a member of it that
/// inherits, or is a superuser): PostgreSQL's rule for acting on another role's session, as
/// pg_cancel_backend applies it.
pub fn has_privileges_of(role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups through the role membership cache, inside a transaction.
    unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), role) }
}

/// Whether the current user may read every database's statistics (a superuser or a member of
/// pg_read_all_stats).
pub fn may_read_all_stats() -> bool {
    // SAFETY: catalog lookups through the role membership cache, inside a transaction.
    unsafe {
        pg_sys::has_privs_of_role(
            pg_sys::GetUserId(),
            pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS),
        )
    }
}

/// max_locks_per_transaction and the number of backend slots (MaxBackends): the shared lock
/// table holds their product, in locks.
pub fn lock_table_dimensions() -> (usize, usize) {
    // SAFETY: both are fixed before any backend runs.
    let (per_transaction, backends) = unsafe { (pg_sys::max_locks_per_xact, pg_sys::MaxBackends) };
    (per_transaction.max(1) as usize, backends.max(1) as usize)
}

/// Callbacks of one kind, in the order given.
type Callbacks = RefCell<Vec<fn()>>;

thread_local! {
    static AT_TRANSACTION_END: Callbacks = const { RefCell::new(Vec::new()) };
    static AT_STATEMENT_END: Callbacks = const { RefCell::new(Vec::new()) };
    static AT_EXIT: Callbacks = const { RefCell::new(Vec::new()) };
    /// The ExecutorEnd hook that was in place before pglock's (another extension's, or none).
    static PREVIOUS_EXECUTOR_END: Cell<pg_sys::ExecutorEnd_hook_type> = const { Cell::new(None) };
}

/// Calls `callback` at the end of every later statement that runs through the executor: each
/// top-level query, and each query a function runs inside one (PL/pgSQL's PERFORM, a query of
/// a SQL function). It runs once the statement has produced its rows and its executor has shut
/// down. A statement that ends in an ERROR does not get here (its transaction or subtransaction
/// is aborted: see [`at_every_transaction_end`]), nor does an expression PL/pgSQL evaluates
/// without the executor (`IF f() THEN`). Giving a callback again changes nothing.
pub fn at_every_statement_end(callback: fn()) {
    let first = AT_STATEMENT_END.with_borrow_mut(|callbacks| add_callback(callbacks, callback));
    if first {
        // SAFETY: chains pglock's hook in front of whatever was installed, for the rest of
        // this backend's life; the previous hook is called first, as every hook must.
        unsafe {
            PREVIOUS_EXECUTOR_END.set(pg_sys::ExecutorEnd_hook);
            pg_sys::ExecutorEnd_hook = Some(statement_end);
        }
    }
}

/// Calls `callback` at the end of every later transaction of this backend (commit, abort or
/// prepare), once PostgreSQL has decided it but before it releases the transaction's locks.
/// Callbacks run in the order they were first given; giving one again changes nothing.
pub fn at_every_transaction_end(callback: fn()) {
    let first = AT_TRANSACTION_END.with_borrow_mut(|callbacks| add_callback(callbacks, callback));
    if first {
        // SAFETY: registers a callback for the rest of this backend's life.
        unsafe { pg_sys::RegisterXactCallback(Some(transaction_event), std::ptr::null_mut()) };
    }
}

/// Calls `callback` when the backend exits, before PostgreSQL releases its session locks and
/// detaches shared memory. Giving one again changes nothing.
pub fn at_exit(callback: fn()) {
    let first = AT_EXIT.with_borrow_mut(|callbacks| add_callback(callbacks, callback));
    if first {
        // SAFETY: registers a callback for the rest of this backend's life.
        unsafe { pg_sys::before_shmem_exit(Some(exiting), pg_sys::Datum::from(0)) };
    }
}

/// Adds `callback` unless it is there; says whether the list was empty.
fn add_callback(callbacks: &mut Vec<fn()>, callback: fn()) -> bool {
    let first = callbacks.is_empty();
    if !callbacks
        .iter()
        .any(|&known| std::ptr::fn_addr_eq(known, callback))
    {
        callbacks.push(callback);
    }
    first
}

/// Runs the callbacks of `list`; a callback may register another meanwhile (it runs next time).
fn run_callbacks(list: &'static std::thread::LocalKey<Callbacks>) {
    let mut next = 0;
    while let Some(callback) = list.with_borrow(|callbacks| callbacks.get(next).copied()) {
        callback();
        next += 1;
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn exiting(_code: i32, _arg: pg_sys::Datum) {
    run_callbacks(&AT_EXIT);
}

#[pg_guard]
unsafe extern "C-unwind" fn statement_end(query: *mut pg_sys::QueryDesc) {
    // SAFETY: the executor hands a live QueryDesc to the hook chain, which ends it exactly once.
    unsafe {
        match PREVIOUS_EXECUTOR_END.get() {
            Some(previous) => previous(query),
            None => pg_sys::standard_ExecutorEnd(query),
        }
    }
    run_callbacks(&AT_STATEMENT_END);
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
        run_callbacks(&AT_TRANSACTION_END);
    }
}

/// The first row's first `N` columns of a read-only query, through SPI, inside a transaction.
/// Unlike pgrx's Spi::get_one, it takes no transaction ID (pgrx asks for one before any query
/// that may write): a hot standby has none to give, and a primary's would be wasted.
pub fn read_one<A: pgrx::FromDatum + pgrx::IntoDatum>(sql: &str) -> Option<A> {
    pgrx::Spi::connect(|client| client.select(sql, Some(1), &[])?.first().get_one::<A>())
        .ok()
        .flatten()
}

/// [`read_one`] for two columns.
pub fn read_two<A, B>(sql: &str) -> Option<(Option<A>, Option<B>)>
where
    A: pgrx::FromDatum + pgrx::IntoDatum,
    B: pgrx::FromDatum + pgrx::IntoDatum,
{
    pgrx::Spi::connect(|client| client.select(sql, Some(1), &[])?.first().get_two::<A, B>()).ok()
}
